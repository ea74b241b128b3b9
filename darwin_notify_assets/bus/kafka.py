"""The job bus on Apache Kafka, through kafka-python.

Each job kind has its own topic, ``<prefix>.render-jobs`` and ``<prefix>.send-jobs``. A
published batch of jobs goes round robin over the topic's partitions, starting from a random
one, so that every worker of a group gets a share of one window's jobs; the job's key (its
window's partition key) is carried as the record key but does not choose the partition. Jobs
are therefore not ordered, neither within a window nor across windows, and nothing relies on
their order: a job names ids, and its handler reads their state from the store. Workers of a
kind form one consumer group, ``<group prefix>.<kind>``; Kafka spreads the topic's partitions
over the group's members and moves them to the survivors when a member stops or dies.

Delivery is at least once. The producer is idempotent, so its own retries never write a
message twice. A consumer commits a record's offset only after the handler returned, one
record at a time; a handler that raises leaves its record uncommitted, and the consumer seeks
back to it and retries after a growing pause. A worker that dies between the handler's
database write and the commit hands the record to the next owner of its partition, which
runs it again: handlers are idempotent, the bus does not deduplicate. A message that is not a
job is logged and committed, so it never blocks its partition.

Typical use::

    bus = KafkaBus.from_settings(settings)
    bus.publish(make_jobs(JobKind.RENDER, window.partition_key, ids, 500))
    bus.consume(JobKind.RENDER, handler, stop)   # in each worker
    bus.close()
"""

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from typing import TypeVar

from kafka import (
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    OffsetAndMetadata,
    OffsetSpec,
    TopicPartition,
)
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from darwin_notify_assets.bus.base import BadJob, Handler, Job, JobBus, JobKind
from darwin_notify_assets.config import Settings
from darwin_notify_assets.errors import ConfigurationError, DarwinNotifyError

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_LEGAL_TOPIC = re.compile(r"[A-Za-z0-9._-]+")
_TOPIC_SUFFIX = {JobKind.RENDER: "render-jobs", JobKind.SEND: "send-jobs"}


class KafkaBusError(DarwinNotifyError):
    """Kafka did not accept or answer a request of the job bus."""


class _Outage:
    """Consecutive retriable failures of a consumer's polls: the pause before the next poll,
    doubling to 15 s, and the end of patience after ``limit`` seconds of them."""

    def __init__(self, limit: float):
        self.limit = limit
        self.since: float | None = None
        self.pause = 1.0

    def failed(self, exc: KafkaError, where: str) -> float:
        now = time.monotonic()
        if self.since is None:
            self.since = now
        if now - self.since >= self.limit:
            raise KafkaBusError(
                f"Kafka at {where} unreachable for {self.limit:g} s: {_describe(exc)}"
            ) from exc
        pause, self.pause = self.pause, min(self.pause * 2, 15.0)
        log.warning("lost Kafka at %s (%s); polling again in %.0f s", where, _describe(exc), pause)
        return pause

    def over(self) -> None:
        self.since, self.pause = None, 1.0


class _Outcome(Enum):
    HANDLED = "handled"
    HANDLED_UNCOMMITTED = "handled, commit failed"
    SKIPPED = "skipped"
    SKIPPED_UNCOMMITTED = "skipped, commit failed"
    FAILED = "failed"


class KafkaBus(JobBus):
    """A :class:`JobBus` on Kafka topics, one per job kind, consumed by consumer groups.

    Nothing connects until the first call that needs the broker. Topics are created on first
    use with the configured partition count; existing topics are used as they are.

    Args:
        bootstrap_servers: ``host:port`` of one or more brokers, as a list or comma-separated.
        topic_prefix: Start of the topic names, ``<prefix>.render-jobs`` and
            ``<prefix>.send-jobs``.
        partitions: Partitions of a topic created by the bus; at most this many workers of a
            kind share the work.
        group_prefix: Start of the consumer group ids, ``<group prefix>.<kind>``.
        client_id: Client id the broker sees in its logs and quotas.
        replication_factor: Replication factor of a topic created by the bus.
        linger_ms: How long the producer waits to fill a batch.
        batch_size: Bytes the producer gathers per partition before it sends; a job of 500
            ids is about 4.5 kB, so the client's 16 kB default would send three at a time.
        compression_type: Producer compression, ``"gzip"`` or ``None``. Gzip is the default:
            a window's ids compress several-fold, and on a local broker jobs of 500 ids were
            published about 1.7 times as fast with gzip as without.
        max_poll_records: Records one poll hands to the handler loop; small, so a member that
            must give up its partitions in a rebalance finishes its batch quickly.
        poll_timeout_ms: Longest wait of one poll, so ``stop`` is noticed within it.
        session_timeout_ms: Silence after which the group drops a member and hands its
            partitions to the others.
        heartbeat_interval_ms: Heartbeat period; at most a third of the session timeout.
        max_poll_interval_ms: Longest a member may spend between polls (its handlers' work on
            one batch) before the group takes its partitions away.
        retry_backoff: Pause in seconds after the first failure of a handler; it doubles with
            each consecutive failure.
        retry_backoff_max: Longest pause between attempts, in seconds.
        publish_timeout: Seconds ``publish`` waits for the broker to acknowledge all jobs.
        bootstrap_timeout_ms: How long a new client waits for a first broker connection.
        reconnect_backoff_max_ms: Longest pause between attempts to reach a broker that went
            away. The client's default of 30 s left workers idle for up to half a minute
            after a broker restart of a few seconds; 1 s is the Java client's default.
        connect_timeout: How long, in seconds, ``consume`` keeps trying to reach the brokers
            before its first job: a worker started while a broker restarts waits for it
            instead of exiting.
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        topic_prefix: str = "darwin-notify",
        partitions: int = 6,
        group_prefix: str = "darwin-notify",
        client_id: str = "darwin-notify",
        *,
        replication_factor: int = 1,
        linger_ms: int = 5,
        batch_size: int = 256 * 1024,
        compression_type: str | None = "gzip",
        max_poll_records: int = 10,
        poll_timeout_ms: int = 500,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1_000,
        max_poll_interval_ms: int = 300_000,
        retry_backoff: float = 0.5,
        retry_backoff_max: float = 30.0,
        publish_timeout: float = 60.0,
        bootstrap_timeout_ms: int = 30_000,
        reconnect_backoff_max_ms: int = 1_000,
        connect_timeout: float = 300.0,
    ):
        servers = (
            [s.strip() for s in bootstrap_servers.split(",")]
            if isinstance(bootstrap_servers, str)
            else [s.strip() for s in bootstrap_servers]
        )
        self.bootstrap_servers = [s for s in servers if s]
        if not self.bootstrap_servers:
            raise ConfigurationError("DARWIN_NOTIFY_KAFKA_BOOTSTRAP names no broker")
        for name, value in (("topic prefix", topic_prefix), ("group prefix", group_prefix)):
            if not _LEGAL_TOPIC.fullmatch(value) or len(value) > 200:
                raise ConfigurationError(
                    f"Kafka {name} {value!r} may only hold letters, digits, '.', '_' and '-'"
                )
        if partitions < 1 or replication_factor < 1:
            raise ConfigurationError("Kafka partitions and replication factor must be at least 1")
        if compression_type not in (None, "gzip"):
            raise ConfigurationError(
                f"Kafka compression must be gzip or none, not {compression_type!r}"
            )
        self.topic_prefix = topic_prefix
        self.partitions = partitions
        self.group_prefix = group_prefix
        self.client_id = client_id
        self.replication_factor = replication_factor
        self.linger_ms = linger_ms
        self.batch_size = batch_size
        self.compression_type = compression_type
        self.max_poll_records = max_poll_records
        self.poll_timeout_ms = poll_timeout_ms
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        self.publish_timeout = publish_timeout
        self.bootstrap_timeout_ms = bootstrap_timeout_ms
        self.connect_timeout = connect_timeout
        self.reconnect_backoff_max_ms = reconnect_backoff_max_ms
        self._lock = threading.RLock()
        self._producer: KafkaProducer | None = None
        self._admin: KafkaAdminClient | None = None
        self._topics_ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> "KafkaBus":
        """The bus the settings describe (``DARWIN_NOTIFY_KAFKA_*``).

        The consumer groups take the topic prefix too, so deployments (or test runs) with
        their own topics never share a group: a dead member of one would otherwise stall the
        other's rebalances, and a rewind would be refused while the other's workers run.
        """
        if not settings.kafka_bootstrap:
            raise ConfigurationError("DARWIN_NOTIFY_KAFKA_BOOTSTRAP is not set")
        return cls(
            settings.kafka_bootstrap,
            topic_prefix=settings.kafka_topic_prefix,
            partitions=settings.kafka_partitions,
            group_prefix=settings.kafka_topic_prefix,
            connect_timeout=settings.kafka_connect_timeout_seconds,
        )

    @property
    def _where(self) -> str:
        return ",".join(self.bootstrap_servers)

    def topic(self, kind: JobKind) -> str:
        """The topic carrying jobs of ``kind``."""
        return f"{self.topic_prefix}.{_TOPIC_SUFFIX[JobKind(kind)]}"

    def topic_names(self) -> dict[JobKind, str]:
        """The bus's topics by job kind."""
        return {kind: self.topic(kind) for kind in JobKind}

    def group_id(self, kind: JobKind) -> str:
        """The consumer group of the workers for ``kind``."""
        return f"{self.group_prefix}.{JobKind(kind)}"

    # ------------------------------------------------------------------ clients

    def _admin_client(self) -> KafkaAdminClient:
        with self._lock:
            if self._admin is None:
                self._admin = self._connect(
                    "connect an admin client",
                    lambda: KafkaAdminClient(
                        bootstrap_servers=self.bootstrap_servers,
                        client_id=f"{self.client_id}-admin",
                        bootstrap_timeout_ms=self.bootstrap_timeout_ms,
                        reconnect_backoff_max_ms=self.reconnect_backoff_max_ms,
                    ),
                )
            return self._admin

    def _producer_client(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                publish_ms = int(self.publish_timeout * 1000)
                self._producer = self._connect(
                    "connect a producer",
                    lambda: KafkaProducer(
                        bootstrap_servers=self.bootstrap_servers,
                        client_id=self.client_id,
                        enable_idempotence=True,
                        acks="all",
                        linger_ms=self.linger_ms,
                        batch_size=self.batch_size,
                        compression_type=self.compression_type,
                        allow_auto_create_topics=False,
                        max_block_ms=publish_ms,
                        # Must cover linger and one request; the default is two minutes.
                        delivery_timeout_ms=max(publish_ms, 30_000 + self.linger_ms + 1),
                        bootstrap_timeout_ms=self.bootstrap_timeout_ms,
                        reconnect_backoff_max_ms=self.reconnect_backoff_max_ms,
                    ),
                )
            return self._producer

    def _new_consumer(self, kind: JobKind) -> KafkaConsumer:
        return self._connect(
            f"connect a {kind} consumer",
            lambda: KafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                client_id=self.client_id,
                group_id=self.group_id(kind),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                allow_auto_create_topics=False,
                max_poll_records=self.max_poll_records,
                session_timeout_ms=self.session_timeout_ms,
                heartbeat_interval_ms=self.heartbeat_interval_ms,
                max_poll_interval_ms=self.max_poll_interval_ms,
                bootstrap_timeout_ms=self.bootstrap_timeout_ms,
                reconnect_backoff_max_ms=self.reconnect_backoff_max_ms,
            ),
        )

    def _connect(self, what: str, make: Callable[[], _T]) -> _T:
        try:
            return make()
        except KafkaError as exc:
            raise KafkaBusError(
                f"could not {what} to Kafka at {self._where}: {_describe(exc)}"
            ) from exc

    def _admin_call(
        self, what: str, call: Callable[[KafkaAdminClient], _T], timeout: float = 15.0
    ) -> _T:
        """Run an admin request, retrying retriable errors (a coordinator still loading)."""
        admin = self._admin_client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self._lock:
                    return call(admin)
            except KafkaError as exc:
                if not exc.retriable or time.monotonic() >= deadline:
                    raise KafkaBusError(
                        f"could not {what} on Kafka at {self._where}: {_describe(exc)}"
                    ) from exc
                log.debug("retrying %s after %s", what, exc)
            time.sleep(0.2)

    # ------------------------------------------------------------------ topics

    def ensure_topics(self) -> None:
        """Create the bus's topics unless they exist; wait until each partition has a leader."""
        if self._topics_ready:
            return
        with self._lock:
            if self._topics_ready:
                return
            names = list(self.topic_names().values())
            spec = {
                name: {
                    "num_partitions": self.partitions,
                    "replication_factor": self.replication_factor,
                }
                for name in names
            }
            result = self._admin_call(
                "create topics", lambda a: a.create_topics(spec, raise_errors=False)
            )
            for topic in result["topics"]:
                code = topic["error_code"]
                if code == 0:
                    log.info(
                        "created Kafka topic %s with %d partitions", topic["name"], self.partitions
                    )
                elif code != TopicAlreadyExistsError.errno:
                    raise KafkaBusError(
                        f"could not create Kafka topic {topic['name']} at {self._where}: "
                        f"error {code}: {topic.get('error_message')}"
                    )
            self._admin_call(
                "wait for topic metadata",
                lambda a: a.wait_for_topics(names, timeout_ms=self.bootstrap_timeout_ms),
            )
            described_topics = self._admin_call(
                "describe topics", lambda a: a.describe_topics(names)
            )
            for described in described_topics:
                count = len(described.get("partitions") or [])
                if count != self.partitions:
                    log.warning(
                        "Kafka topic %s has %d partitions, not the configured %d; "
                        "using it as it is",
                        described["name"],
                        count,
                        self.partitions,
                    )
            self._topics_ready = True

    def _partitions_of(self, topic: str, timeout: float = 15.0) -> list[TopicPartition]:
        described = self._admin_call(
            "describe topics", lambda a: a.describe_topics([topic]), timeout
        )
        return sorted(
            TopicPartition(topic, p["partition_index"])
            for t in described
            for p in t.get("partitions") or []
        )

    def delete_topics(self) -> None:
        """Delete the bus's topics and every job in them (tests and decommissioning)."""
        names = list(self.topic_names().values())
        result = self._admin_call(
            "delete topics", lambda a: a.delete_topics(names, raise_errors=False)
        )
        for topic in result["topics"]:
            code = topic["error_code"]
            if code not in (0, UnknownTopicOrPartitionError.errno):
                raise KafkaBusError(
                    f"could not delete Kafka topic {topic['name']} at {self._where}: "
                    f"error {code}: {topic.get('error_message')}"
                )
        with self._lock:
            self._topics_ready = False

    def delete_groups(self) -> None:
        """Delete the bus's consumer groups and their committed offsets; they must be empty."""
        groups = [self.group_id(kind) for kind in JobKind]
        result = self._admin_call("delete groups", lambda a: a.delete_groups(groups))
        failed = {g: r for g, r in result.items() if r not in ("OK", "GroupIdNotFoundError")}
        if failed:
            raise KafkaBusError(
                f"could not delete Kafka consumer groups at {self._where}: {failed}"
            )

    # ------------------------------------------------------------------ publish

    def publish(self, jobs: Iterable[Job]) -> int:
        """Send jobs over the topic's partitions; returns once the broker acknowledged each.

        Raises:
            KafkaBusError: A job was not acknowledged. Some of the jobs may have been
                written; publishing them again is safe, because handlers are idempotent.
        """
        producer: KafkaProducer | None = None
        futures = []
        # Round robin over each topic's partitions from a random one: every worker of the
        # group gets its share of a window's jobs, so none finishes long before the others.
        partitions: dict[str, list[int]] = {}
        start = random.randrange(1 << 16)
        try:
            for n, job in enumerate(jobs):
                if producer is None:
                    self.ensure_topics()
                    producer = self._producer_client()
                topic = self.topic(job.kind)
                if topic not in partitions:
                    partitions[topic] = sorted(producer.partitions_for(topic) or [0])
                choices = partitions[topic]
                futures.append(
                    producer.send(
                        topic,
                        value=job.encode(),
                        key=job.key,
                        partition=choices[(start + n) % len(choices)],
                    )
                )
            if producer is None:
                return 0
            producer.flush(timeout=self.publish_timeout)
            for future in futures:
                future.get(timeout=0)
        except KafkaError as exc:
            raise KafkaBusError(
                f"Kafka at {self._where} did not acknowledge all of {len(futures)} jobs: "
                f"{_describe(exc)}"
            ) from exc
        log.debug("published %d jobs", len(futures))
        return len(futures)

    # ------------------------------------------------------------------ consume

    def _connect_consumer(self, kind: JobKind, stop: threading.Event) -> KafkaConsumer | None:
        """The topics ensured and a consumer for ``kind``, trying again while the brokers
        cannot be reached, up to ``connect_timeout``; None if ``stop`` is set meanwhile."""
        deadline = time.monotonic() + self.connect_timeout
        pause = 1.0
        while True:
            try:
                self.ensure_topics()
                return self._new_consumer(kind)
            except KafkaBusError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                log.warning("%s; trying again in %.0f s", exc, min(pause, left))
                if stop.wait(min(pause, left)):
                    return None
                pause = min(pause * 2, 15.0)

    def consume(self, kind: JobKind, handler: Handler, stop: threading.Event) -> int:
        """Run ``handler`` on jobs of ``kind`` until ``stop`` is set; returns jobs handled.

        Until it has a consumer it keeps trying to reach the brokers, for ``connect_timeout``
        seconds, and so it does when the brokers go away while it consumes. Each record's offset is committed, synchronously, right after its handler
        returned.
        A handler that raises is retried on the same record after a pause that doubles with
        each consecutive failure, up to ``retry_backoff_max``; records behind it on its
        partition wait. Records polled but not handled when ``stop`` is set stay uncommitted
        and go to the partition's next owner.
        """
        kind = JobKind(kind)
        consumer = self._connect_consumer(kind, stop)
        if consumer is None:
            return 0
        handled = 0
        failures = 0
        try:
            consumer.subscribe([self.topic(kind)])
            outage = _Outage(self.connect_timeout)
            while not stop.is_set():
                try:
                    batches = consumer.poll(timeout_ms=self.poll_timeout_ms)
                except KafkaError as exc:
                    # A broker restart or a network cut: the consumer reconnects by itself.
                    if not exc.retriable:
                        raise
                    pause = outage.failed(exc, self._where)
                    stop.wait(pause)
                    continue
                outage.over()
                failed = False
                for tp, records in batches.items():
                    for record in records:
                        if stop.is_set():
                            break
                        outcome = self._process(consumer, kind, tp, record, handler, failures)
                        if outcome in (_Outcome.HANDLED, _Outcome.HANDLED_UNCOMMITTED):
                            handled += 1
                            failures = 0
                        if outcome is _Outcome.FAILED:
                            failed = True
                            break
                        if outcome in (_Outcome.HANDLED_UNCOMMITTED, _Outcome.SKIPPED_UNCOMMITTED):
                            # After a rebalance the rest of this batch may belong to another
                            # member; fetch again from where this one stands.
                            _rewind(consumer, tp, record.offset + 1)
                            break
                if failed:
                    failures += 1
                    stop.wait(min(self.retry_backoff * 2 ** (failures - 1), self.retry_backoff_max))
        finally:
            consumer.close(autocommit=False)
        return handled

    def _process(
        self,
        consumer: KafkaConsumer,
        kind: JobKind,
        tp: TopicPartition,
        record: ConsumerRecord,
        handler: Handler,
        failures: int,
    ) -> _Outcome:
        where = f"{tp.topic}[{tp.partition}]@{record.offset}"
        try:
            job = Job.decode(record.value)
            if job.kind != kind:
                raise BadJob(f"a {job.kind} job on the {kind} topic")
        except Exception as exc:  # noqa: BLE001 - any undecodable payload is poison, not a crash
            log.error("skipping bad message %s: %s", where, exc)
            committed = self._commit(consumer, tp, record)
            return _Outcome.SKIPPED if committed else _Outcome.SKIPPED_UNCOMMITTED
        try:
            handler(job)
        except Exception:  # noqa: BLE001 - the record is retried; the error stays in the log
            log.warning(
                "%s job %s for %s failed (attempt %d); retrying it",
                kind,
                where,
                job.partition_key,
                failures + 1,
                exc_info=True,
            )
            _rewind(consumer, tp, record.offset)
            return _Outcome.FAILED
        committed = self._commit(consumer, tp, record)
        return _Outcome.HANDLED if committed else _Outcome.HANDLED_UNCOMMITTED

    def _commit(self, consumer: KafkaConsumer, tp: TopicPartition, record: ConsumerRecord) -> bool:
        epoch = record.leader_epoch if record.leader_epoch is not None else -1
        try:
            consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", epoch)})
        except KafkaError as exc:
            # The partition's next owner starts before this record and runs it again.
            log.warning(
                "could not commit %s[%d]@%d: %s",
                tp.topic,
                tp.partition,
                record.offset,
                _describe(exc),
            )
            return False
        return True

    # ------------------------------------------------------------------ operations

    def idle(self, kind: JobKind) -> bool | None:
        """True once the group of ``kind`` has committed every published job (lag 0)."""
        try:
            return self.lag(kind, timeout=2.0) == 0
        except KafkaBusError as exc:
            log.debug("could not read the %s lag: %s", kind, exc)
            return None

    def lag(self, kind: JobKind, timeout: float = 15.0) -> int:
        """Jobs of ``kind`` not yet committed by its group, summed over the topic's partitions.

        A partition the group never committed counts from its earliest retained record, where
        a new consumer would start.
        """
        kind = JobKind(kind)
        group = self.group_id(kind)
        tps = self._partitions_of(self.topic(kind), timeout)
        if not tps:
            return 0
        committed = self._admin_call(
            "fetch committed offsets",
            lambda a: a.list_group_offsets({group: tps}),
            timeout,
        ).get(group, {})
        ends = self._admin_call(
            "fetch end offsets",
            lambda a: a.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps}),
            timeout,
        )
        unset = [tp for tp in tps if tp not in committed or committed[tp].offset < 0]
        starts = {}
        if unset:
            starts = self._admin_call(
                "fetch start offsets",
                lambda a: a.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in unset}),
                timeout,
            )
        total = 0
        for tp in tps:
            position = starts[tp].offset if tp in starts else committed[tp].offset
            total += max(0, ends[tp].offset - position)
        return total

    def rewind(self, kind: JobKind) -> None:
        """Reset the group of ``kind`` to the earliest retained jobs, to replay them.

        The group must have no running members. Replayed jobs are handled again; the store's
        unique keys make that harmless.
        """
        kind = JobKind(kind)
        group = self.group_id(kind)
        tps = self._partitions_of(self.topic(kind))
        result = self._admin_call(
            "reset group offsets",
            lambda a: a.reset_group_offsets(group, {tp: OffsetSpec.EARLIEST for tp in tps}),
        )
        failed = {tp: r["error"].__name__ for tp, r in result.items() if r["error"].errno != 0}
        if failed:
            raise KafkaBusError(
                f"could not rewind consumer group {group} at {self._where} "
                f"(is a worker still running?): {failed}"
            )
        log.info("rewound consumer group %s to the earliest retained %s jobs", group, kind)

    def close(self) -> None:
        """Close the producer and the admin client; consumers close when ``consume`` returns."""
        with self._lock:
            producer, self._producer = self._producer, None
            admin, self._admin = self._admin, None
        if producer is not None:
            producer.close(timeout=self.publish_timeout)
        if admin is not None:
            admin.close()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def _rewind(consumer: KafkaConsumer, tp: TopicPartition, offset: int) -> None:
    try:
        consumer.seek(tp, offset)
    except ValueError:
        # The partition was revoked meanwhile; its next owner starts from the committed offset.
        log.debug("not seeking %s[%d]: no longer assigned", tp.topic, tp.partition)
