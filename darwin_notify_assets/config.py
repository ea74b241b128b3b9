"""Settings, read from the environment in this one place.

Every part is chosen by configuration alone: with no variables set, darwin-notify runs on the
embedded default (SQLite files and a file outbox under ``DARWIN_NOTIFY_HOME``, an in-process
bus); the README's table lists what selects PostgreSQL or SQL Server, Kafka, SendGrid and the
SMS gateway. Secrets are read by name when a connection is opened and never kept here.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from darwin_notify_assets.errors import ConfigurationError

if TYPE_CHECKING:
    from darwin_notify_assets.delivery.rules import SendRules

PREFIX = "DARWIN_NOTIFY_"

# Names of the environment variables holding secrets; their values are never stored.
REPLICA_PASSWORD_ENV = "DARWIN_NOTIFY_REPLICA_PASSWORD"
STORE_PASSWORD_ENV = "DARWIN_NOTIFY_STORE_PASSWORD"
SENDGRID_API_KEY_ENV = "DARWIN_NOTIFY_SENDGRID_API_KEY"
TWILIO_AUTH_TOKEN_ENV = "DARWIN_NOTIFY_TWILIO_AUTH_TOKEN"
UNSUBSCRIBE_SECRET_ENV = "DARWIN_NOTIFY_UNSUBSCRIBE_SECRET"
MANDRILL_API_KEY_ENV = "DARWIN_NOTIFY_MANDRILL_API_KEY"
MANDRILL_WEBHOOK_KEY_ENV = "DARWIN_NOTIFY_MANDRILL_WEBHOOK_KEY"

EMAIL_PROVIDERS = ("sendgrid", "mandrill")


def check_email_provider(provider: str, failover: str) -> None:
    """Raise ConfigurationError unless the two settings name known, different providers."""
    if provider not in EMAIL_PROVIDERS:
        raise ConfigurationError(
            f"DARWIN_NOTIFY_EMAIL_PROVIDER must be one of {', '.join(EMAIL_PROVIDERS)}, "
            f"not {provider!r}"
        )
    if failover and failover not in EMAIL_PROVIDERS:
        raise ConfigurationError(
            f"DARWIN_NOTIFY_EMAIL_FAILOVER must be empty or one of {', '.join(EMAIL_PROVIDERS)}, "
            f"not {failover!r}"
        )
    if failover == provider:
        raise ConfigurationError(
            f"DARWIN_NOTIFY_EMAIL_FAILOVER names the first provider ({provider}) again"
        )


@dataclass(frozen=True)
class Settings:
    home: str = ".demo"
    replica_url: str = ""
    store_url: str = ""
    outbox_dir: str = ""
    kafka_bootstrap: str = ""
    kafka_topic_prefix: str = "darwin-notify"
    kafka_partitions: int = 6
    kafka_connect_timeout_seconds: int = 300
    sendgrid_host: str = ""
    # The first email provider (sendgrid | mandrill) and the one a message the first provably
    # did not take fails over to (empty: none); delivery/failover.py.
    email_provider: str = "sendgrid"
    email_failover: str = ""
    mandrill_host: str = ""
    sms_base_url: str = ""
    twilio_account_sid: str = ""
    email_from: str = "notifications@darwin-notify.example"
    sms_from: str = "+13125550100"
    window_minutes: int = 5
    partition_start: str = "2026-01-01-00:00"
    lookback_minutes: int = 10
    grace_seconds: int = 30
    inline_workers: int = 2
    render_batch: int = 500
    send_batch: int = 100
    send_concurrency: int = 8
    send_request_group: int = 0
    sms_max_segments: int = 10
    email_rate_per_second: int = 0
    sms_rate_per_second: int = 0
    provider_timeout_seconds: int = 10
    stage_timeout_seconds: int = 1800
    sending_expiry_seconds: int = 300
    reconcile_hours: int = 24
    # A path to the source model (docs/source-model.md); empty selects the sample darwin.Cloud.
    source_model: str = ""
    # The folder of merge-field queries (NAME.sql, in the replica's dialect); empty selects
    # the sample's, darwin_notify_assets/sample/merge_fields/<dialect>.
    merge_fields_dir: str = ""
    # The webhook service: the base URL providers and recipients reach it at (Twilio signs
    # the URL it called; unsubscribe links start with it), SendGrid's Event Webhook public key
    # (base64 DER, as SendGrid shows it; not a secret), and how old a signed event may be.
    webhook_public_url: str = ""
    sendgrid_webhook_public_key: str = ""
    webhook_tolerance_seconds: int = 300
    sms_help_answer: str = "darwin-notify notifications. Reply STOP to stop, START to resume."
    unsubscribe_mailto: str = ""
    # A sent message with no provider event after this long is listed as without delivery.
    delivery_event_grace_seconds: int = 3600
    # Quiet hours per channel, local to the recipient (``21:00-08:00``; empty: none), and a
    # cap of messages per recipient per local day (0: none); delivery/rules.py. A recipient
    # without a valid time zone is decided in the default zone.
    quiet_hours_email: str = ""
    quiet_hours_sms: str = ""
    daily_cap_email: int = 0
    daily_cap_sms: int = 0
    default_time_zone: str = "UTC"

    def __post_init__(self) -> None:
        home = Path(self.home)
        if not self.replica_url:
            object.__setattr__(self, "replica_url", f"sqlite:///{home / 'darwin.db'}")
        if not self.store_url:
            object.__setattr__(self, "store_url", f"sqlite:///{home / 'store.db'}")
        if not self.outbox_dir:
            object.__setattr__(self, "outbox_dir", str(home / "outbox"))
        if self.send_request_group < 0:
            raise ConfigurationError(
                "DARWIN_NOTIFY_SEND_REQUEST_GROUP must be 0 (four times the send threads) or "
                f"more, not {self.send_request_group}"
            )
        if self.sms_max_segments < 1:
            raise ConfigurationError(
                f"DARWIN_NOTIFY_SMS_MAX_SEGMENTS must be at least 1, not {self.sms_max_segments}"
            )
        if self.window_minutes <= 0 or 60 % self.window_minutes:
            raise ConfigurationError(
                f"DARWIN_NOTIFY_WINDOW_MINUTES must divide an hour, not {self.window_minutes}"
            )
        check_email_provider(self.email_provider, self.email_failover)
        self.send_rules  # noqa: B018 - raises ConfigurationError for a bad quiet-hours setting
        try:
            datetime.strptime(self.partition_start, "%Y-%m-%d-%H:%M")
        except ValueError:
            raise ConfigurationError(
                f"DARWIN_NOTIFY_PARTITION_START must look like 2026-01-01-00:00, "
                f"not {self.partition_start!r}"
            ) from None

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, overrides: Mapping[str, object] | None = None
    ) -> "Settings":
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = int(raw) if f.type is int else raw
            except ValueError:
                raise ConfigurationError(f"{PREFIX}{f.name.upper()} must be a number") from None
        values.update(overrides or {})
        return cls(**values)

    @property
    def send_rates(self) -> dict[str, int]:
        """Requests a second each channel's provider takes from every worker together."""
        return {"email": self.email_rate_per_second, "sms": self.sms_rate_per_second}

    @property
    def send_rules(self) -> "SendRules":
        """Quiet hours and daily caps per channel, as the claim applies them."""
        from darwin_notify_assets.delivery.rules import SendRules

        return SendRules.from_values(
            {"email": self.quiet_hours_email, "sms": self.quiet_hours_sms},
            {"email": self.daily_cap_email, "sms": self.daily_cap_sms},
            self.default_time_zone,
        )

    @property
    def lookback(self) -> timedelta:
        return timedelta(minutes=self.lookback_minutes)

    @property
    def grace(self) -> timedelta:
        return timedelta(seconds=self.grace_seconds)

    @property
    def uses_kafka(self) -> bool:
        return bool(self.kafka_bootstrap)

    @property
    def uses_sendgrid(self) -> bool:
        return bool(os.environ.get(SENDGRID_API_KEY_ENV))

    @property
    def uses_sms_gateway(self) -> bool:
        return bool(self.twilio_account_sid and os.environ.get(TWILIO_AUTH_TOKEN_ENV))
