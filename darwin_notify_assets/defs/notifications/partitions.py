"""Partitions: one per UTC day; a run processes some or all of its day's change windows.

Five-minute windows as partitions would reach Dagster's advised limit (about 100,000 per
asset) within a year; days stay at about 3,650 a decade. A run names the windows it
processes in the tag ``darwin_notify/windows``: one window (``14:05``) or a range of window
starts (``14:05..15:55``), as the sensor and ``darwin-notify run`` set it, or a person in the
launchpad to rerun one window. A run without the tag (a partition launched from the UI, a
backfill) processes every window of its day that had ended, plus grace, when the run was
created. Every write is insert-if-absent, so processing a window again changes nothing.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from dagster import DailyPartitionsDefinition

from darwin_notify_assets.config import Settings
from darwin_notify_assets.domain.windows import PARTITION_FORMAT, Window
from darwin_notify_assets.errors import ConfigurationError

WINDOWS_TAG = "darwin_notify/windows"
DAY_FORMAT = "%Y-%m-%d"


def notification_days_for(settings: Settings) -> DailyPartitionsDefinition:
    return DailyPartitionsDefinition(
        start_date=settings.partition_start[:10],
        fmt=DAY_FORMAT,
        timezone="UTC",
        # Today is a partition: its windows are processed as the day goes.
        end_offset=1,
    )


notification_days = notification_days_for(Settings.from_env())


def day_of(window: Window) -> str:
    return window.start.strftime(DAY_FORMAT)


def windows_tag(windows: Sequence[Window]) -> str:
    """The tag value naming ``windows`` (consecutive, of one day)."""
    first, last = windows[0], windows[-1]
    if first == last:
        return f"{first.start:%H:%M}"
    return f"{first.start:%H:%M}..{last.start:%H:%M}"


def windows_of_run(
    day: str,
    tag: str | None,
    window_minutes: int,
    created: datetime,
    grace: timedelta,
) -> list[Window]:
    """The windows a run of ``day`` processes: those its tag names, or else every window of
    the day whose end plus grace had passed when the run was created."""
    start = datetime.strptime(day, DAY_FORMAT)
    every = [
        Window.containing(start + timedelta(minutes=m), window_minutes)
        for m in range(0, 24 * 60, window_minutes)
    ]
    if not tag:
        return [w for w in every if w.end + grace <= created]
    first, _, last = tag.partition("..")
    by_time = {f"{w.start:%H:%M}": w for w in every}
    by_key = {w.partition_key: w for w in every}
    chosen = []
    for part in (first, last or first):
        window = by_time.get(part.strip()) or by_key.get(part.strip())
        if window is None:
            raise ConfigurationError(
                f"tag {WINDOWS_TAG}={tag!r} does not name {window_minutes}-minute windows of "
                f"{day} (use 14:05 or 14:05..15:55)"
            )
        chosen.append(window)
    lo, hi = chosen
    if hi.start < lo.start:
        raise ConfigurationError(f"tag {WINDOWS_TAG}={tag!r}: the range ends before it starts")
    return [w for w in every if lo.start <= w.start <= hi.start]


def run_created_at(timestamp: float | datetime) -> datetime:
    """A run record's creation time as naive UTC."""
    if isinstance(timestamp, datetime):
        moment = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
    else:
        moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.astimezone(UTC).replace(tzinfo=None)


def window_keys_by_day(keys: Sequence[str]) -> dict[str, list[str]]:
    """Window keys grouped by their day, in order."""
    days: dict[str, list[str]] = {}
    for key in keys:
        days.setdefault(datetime.strptime(key, PARTITION_FORMAT).strftime(DAY_FORMAT), []).append(
            key
        )
    return days
