"""Dagster resources: the replica, the notification store, the job bus, the senders and the
pipeline's settings, each a typed ``ConfigurableResource``.

``resources_from_env`` is the one place where the environment chooses them. Secrets (the
databases' passwords, SendGrid's and Mandrill's keys, the SMS gateway's token) are bound with ``EnvVar``, so
the UI shows the variable's name, never its value, and they are resolved when a run starts.
Each resource holds at most one connection per execution (a run's step, a sensor's tick),
opened on first use and closed when the execution ends; outside Dagster, a resource is a
context manager that does the same.
"""

import os
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from dagster import ConfigurableResource, EnvVar, InitResourceContext
from pydantic import PrivateAttr

from darwin_notify_assets.bus.base import InProcessBus, JobBus
from darwin_notify_assets.config import (
    MANDRILL_API_KEY_ENV,
    REPLICA_PASSWORD_ENV,
    SENDGRID_API_KEY_ENV,
    STORE_PASSWORD_ENV,
    TWILIO_AUTH_TOKEN_ENV,
    UNSUBSCRIBE_SECRET_ENV,
    Settings,
)
from darwin_notify_assets.delivery.failover import select_email_sender
from darwin_notify_assets.delivery.senders import Sender, build_senders
from darwin_notify_assets.domain.model import load_model
from darwin_notify_assets.domain.pipeline import Runtime
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.storage.replica import ReplicaReader
from darwin_notify_assets.storage.store import NotificationStore

# Store URLs whose schema this process has already created or checked.
_SCHEMA_READY: set[str] = set()
_SCHEMA_LOCK = threading.Lock()


class _Lifecycle:
    """Context-manager methods shared by the resources (``teardown_after_execution`` closes)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self.close()


class ReplicaResource(_Lifecycle, ConfigurableResource["ReplicaResource"]):
    """darwin.Cloud's read-only replica (opened read-only, verified on connect)."""

    url: str
    password: str | None = None
    # The source model's path; empty selects the sample darwin.Cloud's.
    source_model: str = ""
    # The folder of merge-field queries; empty selects the sample's.
    merge_fields_dir: str = ""

    _reader: ReplicaReader | None = PrivateAttr(default=None)

    def open(self) -> ReplicaReader:
        """A new connection, for a worker thread of its own."""
        return ReplicaReader.open(
            self.url,
            password=self.password,
            model=load_model(self.source_model),
            merge_fields_dir=self.merge_fields_dir or None,
        )

    @property
    def reader(self) -> ReplicaReader:
        """This execution's connection."""
        if self._reader is None:
            self._reader = self.open()
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class StoreResource(_Lifecycle, ConfigurableResource["StoreResource"]):
    """The notification store. Its schema is created or checked once per process."""

    url: str
    password: str | None = None

    _store: NotificationStore | None = PrivateAttr(default=None)

    def open(self) -> NotificationStore:
        store = NotificationStore.open(self.url, password=self.password)
        with _SCHEMA_LOCK:
            if self.url not in _SCHEMA_READY:
                store.ensure_schema()
                _SCHEMA_READY.add(self.url)
        return store

    @property
    def store(self) -> NotificationStore:
        if self._store is None:
            self._store = self.open()
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class JobBusResource(_Lifecycle, ConfigurableResource["JobBusResource"]):
    """The job bus: Kafka when bootstrap servers are given, else an in-process bus."""

    kafka_bootstrap: str = ""
    topic_prefix: str = "darwin-notify"
    partitions: int = 6

    _bus: JobBus | None = PrivateAttr(default=None)

    @property
    def bus(self) -> JobBus:
        if self._bus is None:
            if self.kafka_bootstrap:
                from darwin_notify_assets.bus.kafka import KafkaBus

                self._bus = KafkaBus(
                    self.kafka_bootstrap,
                    topic_prefix=self.topic_prefix,
                    partitions=self.partitions,
                    group_prefix=self.topic_prefix,
                )
            else:
                self._bus = InProcessBus()
        return self._bus

    def close(self) -> None:
        if self._bus is not None:
            self._bus.close()
            self._bus = None


class SendersResource(ConfigurableResource["SendersResource"]):
    """The providers: SendGrid or Mandrill (with the other as failover, if configured) and a
    Twilio-compatible SMS gateway when their credentials are given, else the file outbox."""

    outbox_dir: str
    email_from: str = "notifications@darwin-notify.example"
    sms_from: str = "+13125550100"
    sendgrid_api_key: str | None = None
    sendgrid_host: str = ""
    twilio_account_sid: str = ""
    twilio_auth_token: str | None = None
    sms_base_url: str = ""
    timeout_seconds: int = 10
    pool_size: int = 8
    webhook_public_url: str = ""
    unsubscribe_secret: str | None = None
    unsubscribe_mailto: str = ""
    email_provider: str = "sendgrid"
    email_failover: str = ""
    mandrill_api_key: str | None = None
    mandrill_host: str = ""

    def make(self) -> dict[str, Sender]:
        """A new sender per channel (each send worker has its own connections)."""
        senders = build_senders(
            outbox_dir=self.outbox_dir,
            email_from=self.email_from,
            sms_from=self.sms_from,
            sendgrid_api_key=self.sendgrid_api_key,
            sendgrid_host=self.sendgrid_host,
            twilio_account_sid=self.twilio_account_sid,
            twilio_auth_token=self.twilio_auth_token,
            sms_base_url=self.sms_base_url,
            timeout=self.timeout_seconds,
            pool_size=self.pool_size,
            webhook_public_url=self.webhook_public_url,
            unsubscribe_secret=self.unsubscribe_secret,
            unsubscribe_mailto=self.unsubscribe_mailto,
        )
        return select_email_sender(
            senders,
            provider=self.email_provider,
            failover=self.email_failover,
            mandrill_api_key=self.mandrill_api_key,
            mandrill_host=self.mandrill_host,
            email_from=self.email_from,
            timeout=self.timeout_seconds,
            pool_size=self.pool_size,
            webhook_public_url=self.webhook_public_url,
            unsubscribe_secret=self.unsubscribe_secret,
            unsubscribe_mailto=self.unsubscribe_mailto,
        )


class PipelineResource(ConfigurableResource["PipelineResource"]):
    """How windows are cut and processed: window length, lookback, grace, workers, batches."""

    home: str = ".demo"
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
    stage_timeout_seconds: int = 1800
    sending_expiry_seconds: int = 300
    reconcile_hours: int = 24
    # Quiet hours (``21:00-08:00``, local to the recipient) and daily caps per channel.
    quiet_hours_email: str = ""
    quiet_hours_sms: str = ""
    daily_cap_email: int = 0
    daily_cap_sms: int = 0
    default_time_zone: str = "UTC"

    def settings(self, **connections: Any) -> Settings:
        return Settings(**self.model_dump(), **connections)

    def window(self, partition_key: str) -> Window:
        return Window.from_key(partition_key, self.window_minutes)


def runtime(
    pipeline: PipelineResource,
    replica: ReplicaResource,
    store: StoreResource,
    bus: JobBusResource | None = None,
    senders: SendersResource | None = None,
) -> Runtime:
    """The stages' view of the resources: their connections, and factories for workers.

    The runtime borrows the resources' connections; closing it leaves them to the resources.
    """
    settings = pipeline.settings(
        replica_url=replica.url,
        store_url=store.url,
        kafka_bootstrap=bus.kafka_bootstrap if bus else "",
    )
    return Runtime(
        settings=settings,
        replica_factory=replica.open,
        store_factory=store.open,
        bus=bus.bus if bus else InProcessBus(),
        senders_factory=senders.make if senders else dict,
        _replica=replica.reader,
        _store=store.store,
        owned=False,
    )


def _secret(name: str, env: Mapping[str, str]) -> EnvVar | None:
    return EnvVar(name) if env.get(name) else None


def resources_from_env(
    env: Mapping[str, str] | None = None, **overrides: Any
) -> dict[str, ConfigurableResource[Any]]:
    """The resources the ``DARWIN_NOTIFY_*`` environment describes (README, Configuration).

    ``overrides`` replaces a resource by name (``senders=...``), as tests do with doubles.
    """
    env = os.environ if env is None else env
    s = Settings.from_env(env)
    pipeline_fields = PipelineResource.model_fields
    resources: dict[str, ConfigurableResource[Any]] = {
        "pipeline": PipelineResource(**{k: getattr(s, k) for k in pipeline_fields}),
        "replica": ReplicaResource(
            url=s.replica_url,
            password=_secret(REPLICA_PASSWORD_ENV, env),
            source_model=s.source_model,
            merge_fields_dir=s.merge_fields_dir,
        ),
        "store": StoreResource(url=s.store_url, password=_secret(STORE_PASSWORD_ENV, env)),
        "bus": JobBusResource(
            kafka_bootstrap=s.kafka_bootstrap,
            topic_prefix=s.kafka_topic_prefix,
            partitions=s.kafka_partitions,
        ),
        "senders": SendersResource(
            outbox_dir=s.outbox_dir,
            email_from=s.email_from,
            sms_from=s.sms_from,
            sendgrid_api_key=_secret(SENDGRID_API_KEY_ENV, env),
            sendgrid_host=s.sendgrid_host,
            twilio_account_sid=s.twilio_account_sid,
            twilio_auth_token=_secret(TWILIO_AUTH_TOKEN_ENV, env),
            sms_base_url=s.sms_base_url,
            timeout_seconds=s.provider_timeout_seconds,
            pool_size=s.send_concurrency,
            webhook_public_url=s.webhook_public_url,
            unsubscribe_secret=_secret(UNSUBSCRIBE_SECRET_ENV, env),
            unsubscribe_mailto=s.unsubscribe_mailto,
            email_provider=s.email_provider,
            email_failover=s.email_failover,
            mandrill_api_key=_secret(MANDRILL_API_KEY_ENV, env),
            mandrill_host=s.mandrill_host,
        ),
    }
    resources.update(overrides)
    return resources
