"""Quiet hours and daily caps: when a claimed message may go, in its recipient's local time.

Both are decided at the claim (``NotificationStore.claim``), not at rendering: a message
rendered in the afternoon and claimed at 22:00 is held by the quiet hours of 22:00. A message
held becomes ``deferred`` with the UTC time it may go; the delivery step queues it again then
(``NotificationStore.release_deferred``). Nothing here reads a database: the store hands the
claimable rows and a recipient's sends of the day, and applies what this module decides.

The recipient's time zone is the one rendering stored on the message (from the source model's
``time_zone`` of its recipient kind). A message without one, or with a name that is not an
IANA time zone, is decided in ``DARWIN_NOTIFY_DEFAULT_TIME_ZONE`` (UTC unless set), and the
deferral's reason says so.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from darwin_notify_assets.domain.zones import zone_info
from darwin_notify_assets.errors import ConfigurationError

CHANNELS = ("email", "sms")

_HOURS = re.compile(r"^\s*([01]\d|2[0-3]):([0-5]\d)\s*-\s*([01]\d|2[0-3]):([0-5]\d)\s*$")


@dataclass(frozen=True)
class QuietHours:
    """Local hours in which nothing is sent: ``[start, end)``, across midnight when
    ``start > end`` (``21:00-08:00``)."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str, setting: str) -> "QuietHours":
        match = _HOURS.match(text)
        if not match:
            raise ConfigurationError(
                f"{setting} must look like 21:00-08:00 (local hours, 24-hour clock), not {text!r}"
            )
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if (h1, m1) == (h2, m2):
            raise ConfigurationError(f"{setting}={text!r} starts and ends at the same time")
        return cls(time(h1, m1), time(h2, m2))

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def contains(self, local: datetime) -> bool:
        t = local.time().replace(second=0, microsecond=0)
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def end_after(self, local: datetime) -> datetime:
        """The local end of the quiet period that ``local`` is in (aware, in its zone)."""
        day = local.date()
        if self.start > self.end and local.time() >= self.start:
            day += timedelta(days=1)
        return datetime.combine(day, self.end, tzinfo=local.tzinfo)


@dataclass(frozen=True)
class ChannelRules:
    quiet: QuietHours | None = None
    #: Messages a recipient (address) may be sent on the channel per local day; 0: no cap.
    daily_cap: int = 0


@dataclass(frozen=True)
class Claimable:
    """What the claim knows of a queued message when it applies the rules."""

    message_id: int
    channel: str
    to_address: str | None
    time_zone: str | None


@dataclass(frozen=True)
class Deferral:
    message_id: int
    #: Naive UTC, like every timestamp of the store.
    until: datetime
    reason: str


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class SendRules:
    """Quiet hours and daily caps per channel (``DARWIN_NOTIFY_QUIET_HOURS_<CHANNEL>``,
    ``DARWIN_NOTIFY_DAILY_CAP_<CHANNEL>``); none unless configured."""

    channels: Mapping[str, ChannelRules] = field(default_factory=dict)
    default_zone: str = "UTC"

    def __post_init__(self) -> None:
        if zone_info(self.default_zone) is None:
            raise ConfigurationError(
                f"DARWIN_NOTIFY_DEFAULT_TIME_ZONE must be an IANA time zone (like "
                f"America/Chicago), not {self.default_zone!r}"
            )

    @classmethod
    def from_values(
        cls,
        quiet_hours: Mapping[str, str],
        daily_caps: Mapping[str, int],
        default_zone: str = "UTC",
    ) -> "SendRules":
        channels = {}
        for channel in CHANNELS:
            text = quiet_hours.get(channel, "")
            cap = int(daily_caps.get(channel, 0) or 0)
            if cap < 0:
                raise ConfigurationError(
                    f"DARWIN_NOTIFY_DAILY_CAP_{channel.upper()} must be 0 (no cap) or more, "
                    f"not {cap}"
                )
            quiet = (
                QuietHours.parse(text, f"DARWIN_NOTIFY_QUIET_HOURS_{channel.upper()}")
                if text
                else None
            )
            if quiet or cap:
                channels[channel] = ChannelRules(quiet, cap)
        return cls(channels, default_zone or "UTC")

    @property
    def active(self) -> bool:
        return bool(self.channels)

    def capped(self, channel: str) -> int:
        rules = self.channels.get(channel)
        return rules.daily_cap if rules else 0

    def zone(self, name: str | None) -> tuple[ZoneInfo, str | None]:
        """The recipient's zone, or the default one with why it was used."""
        if name and (found := zone_info(name.strip())) is not None:
            return found, None
        fallback = zone_info(self.default_zone)
        assert fallback is not None
        why = (
            f"time zone {name!r} is not an IANA name" if name else "the recipient has no time zone"
        )
        return fallback, f"{why}; decided in {self.default_zone} (DARWIN_NOTIFY_DEFAULT_TIME_ZONE)"

    def day_start(self, name: str | None, now: datetime) -> datetime:
        """The start of the recipient's local day that contains ``now`` (naive UTC), in UTC."""
        zone, _ = self.zone(name)
        local = now.replace(tzinfo=UTC).astimezone(zone)
        return _utc(datetime.combine(local.date(), time(0), tzinfo=zone))

    def decide(
        self,
        messages: Iterable[Claimable],
        now: datetime,
        sent_today: Mapping[tuple[str, str], Sequence[datetime]] | None = None,
    ) -> list[Deferral]:
        """The messages of ``messages`` that may not go at ``now`` (naive UTC), with when they
        may. ``sent_today`` holds, per ``(channel, address)``, the times (naive UTC) of that
        recipient's messages already sending or sent since the start of the earliest local
        day concerned; the batch's own admitted messages count too, in id order."""
        out: list[Deferral] = []
        admitted: dict[tuple[str, str], int] = {}
        aware_now = now.replace(tzinfo=UTC)
        for m in sorted(messages, key=lambda m: m.message_id):
            rules = self.channels.get(m.channel)
            if rules is None:
                continue
            zone, note = self.zone(m.time_zone)
            local = aware_now.astimezone(zone)
            where = f"{zone.key}" + (f" ({note})" if note else "")
            if rules.quiet and rules.quiet.contains(local):
                until = _utc(rules.quiet.end_after(local))
                out.append(
                    Deferral(
                        m.message_id,
                        until,
                        f"quiet hours {rules.quiet} for {m.channel} in {where}; "
                        f"may go from {until:%Y-%m-%d %H:%M} UTC",
                    )
                )
                continue
            if not rules.daily_cap or not m.to_address:
                continue
            key = (m.channel, m.to_address)
            start = _utc(datetime.combine(local.date(), time(0), tzinfo=zone))
            before = sum(1 for at in (sent_today or {}).get(key, ()) if at >= start)
            if before + admitted.get(key, 0) < rules.daily_cap:
                admitted[key] = admitted.get(key, 0) + 1
                continue
            next_day = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=zone)
            # through UTC and back: a midnight that does not exist (a DST gap) becomes one that does
            next_day = next_day.astimezone(UTC).astimezone(zone)
            if rules.quiet and rules.quiet.contains(next_day):
                next_day = rules.quiet.end_after(next_day)
            until = _utc(next_day)
            out.append(
                Deferral(
                    m.message_id,
                    until,
                    f"daily cap of {rules.daily_cap} {m.channel} message(s) per recipient "
                    f"reached in {where}; may go from {until:%Y-%m-%d %H:%M} UTC",
                )
            )
        return out
