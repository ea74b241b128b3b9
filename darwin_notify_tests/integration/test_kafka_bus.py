"""The Kafka job bus against the real broker started by ``make services-up``.

The broker comes from ``DARWIN_NOTIFY_KAFKA_BOOTSTRAP`` (``eval "$(bash infra/services.sh
env)"``); without it every test fails. Each test works on its own topics and consumer groups
(a random prefix) and deletes them afterwards. A consumer runs on a thread here, as it runs in
a worker process; several ``KafkaBus`` instances with one prefix stand for several workers.
"""

import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from kafka import KafkaAdminClient, KafkaProducer

from darwin_notify_assets.bus.base import Handler, Job, JobKind
from darwin_notify_assets.bus.kafka import KafkaBus, KafkaBusError

pytestmark = pytest.mark.integration

BOOTSTRAP_ENV = "DARWIN_NOTIFY_KAFKA_BOOTSTRAP"
WAIT = 20.0


@pytest.fixture(scope="module")
def bootstrap(services: dict[str, str]) -> str:
    value = services.get(BOOTSTRAP_ENV) or os.environ.get(BOOTSTRAP_ENV, "")
    if not value:
        pytest.fail(
            f"{BOOTSTRAP_ENV} is not set by `infra/services.sh env`: start the local services "
            "with `make services-up`"
        )
    return value


@pytest.fixture
def make_bus(bootstrap: str) -> Iterator[Callable[..., KafkaBus]]:
    """Buses sharing one random topic and group prefix; topics and groups deleted after."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    buses: list[KafkaBus] = []

    def make(partitions: int = 3, group_prefix: str = prefix) -> KafkaBus:
        bus = KafkaBus(
            bootstrap,
            topic_prefix=prefix,
            partitions=partitions,
            group_prefix=group_prefix,
            client_id="darwin-notify-test",
            retry_backoff=0.1,
            retry_backoff_max=0.5,
        )
        buses.append(bus)
        return bus

    yield make
    try:
        if buses:
            buses[0].delete_topics()
            for bus in buses:
                bus.delete_groups()
    finally:
        for bus in buses:
            bus.close()


class Worker:
    """One ``consume`` call on its own thread, stopped by :meth:`finish`."""

    def __init__(
        self, bus: KafkaBus, kind: JobKind, handler: Handler, stop: threading.Event | None = None
    ):
        self.stop = stop or threading.Event()
        self.handled: int | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(bus, kind, handler), daemon=True)
        self._thread.start()

    def _run(self, bus: KafkaBus, kind: JobKind, handler: Handler) -> None:
        try:
            self.handled = bus.consume(kind, handler, self.stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test by finish()
            self.error = exc

    def finish(self) -> int:
        self.stop.set()
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "consume() did not return after stop was set"
        if self.error is not None:
            raise self.error
        assert self.handled is not None
        return self.handled


class Recorder:
    """A handler recording every job it is given, in order."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self._lock = threading.Lock()

    def __call__(self, job: Job) -> None:
        with self._lock:
            self.jobs.append(job)

    @property
    def firsts(self) -> list[int]:
        with self._lock:
            return [job.ids[0] for job in self.jobs]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting until {what}")
        time.sleep(0.05)


def jobs_for(keys: list[str], per_key: int, kind: JobKind = JobKind.RENDER) -> list[Job]:
    """``per_key`` jobs for each key, interleaved; job ``n`` carries ids ``n*500 ... n*500+499``."""
    jobs = []
    for n in range(per_key * len(keys)):
        key = keys[n % len(keys)]
        jobs.append(Job(kind, key, tuple(range(n * 500, n * 500 + 500))))
    return jobs


def window_keys(count: int) -> list[str]:
    return [f"2026-03-01-{h:02d}:{m:02d}" for h in range(24) for m in range(0, 60, 5)][:count]


def test_every_published_job_is_consumed_once(make_bus: Callable[..., KafkaBus]) -> None:
    bus = make_bus(partitions=3)
    jobs = jobs_for(window_keys(8), per_key=5)
    assert bus.publish(jobs) == 40
    assert bus.publish([Job(JobKind.SEND, "2026-03-01-00:00", (1, 2, 3))]) == 1
    assert bus.lag(JobKind.RENDER) == 40
    assert bus.idle(JobKind.RENDER) is False

    recorder = Recorder()
    worker = Worker(bus, JobKind.RENDER, recorder)
    wait_until(lambda: bus.lag(JobKind.RENDER) == 0, "every render job is committed")
    assert bus.idle(JobKind.RENDER) is True
    assert bus.idle(JobKind.SEND) is False
    assert worker.finish() == 40

    assert Counter(recorder.firsts) == Counter(job.ids[0] for job in jobs)
    assert sorted(recorder.jobs, key=lambda j: j.ids[0]) == jobs
    assert bus.lag(JobKind.SEND) == 1, "send jobs travel on their own topic"


def test_failed_job_is_redelivered_and_committed_only_after_success(
    make_bus: Callable[..., KafkaBus],
) -> None:
    bus = make_bus(partitions=1)
    jobs = jobs_for(["2026-03-01-00:00"], per_key=3)
    bus.publish(jobs)
    seen: list[int] = []
    lag_when_called: list[int] = []

    def flaky(job: Job) -> None:
        seen.append(job.ids[0])
        if job == jobs[1]:
            lag_when_called.append(bus.lag(JobKind.RENDER))
            if seen.count(job.ids[0]) == 1:
                raise RuntimeError("store unavailable")

    worker = Worker(bus, JobKind.RENDER, flaky)
    wait_until(lambda: bus.lag(JobKind.RENDER) == 0, "every job is committed")
    assert worker.finish() == 3

    assert seen == [jobs[0].ids[0], jobs[1].ids[0], jobs[1].ids[0], jobs[2].ids[0]]
    # Both calls for the second job ran with jobs 2 and 3 uncommitted: the failure committed
    # nothing, and the retry's commit came only after it returned.
    assert lag_when_called == [2, 2]


def test_members_of_a_group_share_the_partitions(
    make_bus: Callable[..., KafkaBus],
    bootstrap: str,
) -> None:
    first, second = make_bus(partitions=4), make_bus(partitions=4)
    first.ensure_topics()
    recorders = {"first": Recorder(), "second": Recorder()}
    workers = [
        Worker(first, JobKind.RENDER, recorders["first"]),
        Worker(second, JobKind.RENDER, recorders["second"]),
    ]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="darwin-notify-test")
    try:

        def both_assigned() -> bool:
            group = admin.describe_groups([first.group_id(JobKind.RENDER)])
            info = next(iter(group.values()))
            members = info.get("members") or []
            assignments = [m.get("member_assignment") for m in members]
            return (
                info.get("group_state") == "Stable"
                and len(members) == 2
                and all(
                    isinstance(a, dict) and any(t["partitions"] for t in a["assigned_partitions"])
                    for a in assignments
                )
            )

        wait_until(both_assigned, "both members hold partitions")
    finally:
        admin.close()

    # All jobs of ONE window: they spread over the partitions, so both members share the work.
    jobs = jobs_for(window_keys(1), per_key=48)
    first.publish(jobs)
    wait_until(lambda: first.lag(JobKind.RENDER) == 0, "every job is committed")
    handled = [w.finish() for w in workers]

    firsts = {name: r.firsts for name, r in recorders.items()}
    assert all(firsts.values()), f"a member got no jobs of the window: {handled}"
    # Round robin over the 4 partitions, two per member: an equal share each.
    assert len(firsts["first"]) == len(firsts["second"]) == 24, handled
    assert sorted(firsts["first"] + firsts["second"]) == sorted(j.ids[0] for j in jobs)


def test_job_a_stopped_consumer_did_not_commit_goes_to_the_next(
    make_bus: Callable[..., KafkaBus],
) -> None:
    jobs = jobs_for(["2026-03-01-00:00"], per_key=2)
    gone, survivor = make_bus(partitions=1), make_bus(partitions=1)
    gone.publish(jobs)
    first_tries: list[Job] = []
    stop = threading.Event()

    def dies_mid_job(job: Job) -> None:
        first_tries.append(job)
        stop.set()
        raise RuntimeError("worker shutting down before its database write")

    stopping = Worker(gone, JobKind.RENDER, dies_mid_job, stop)
    wait_until(lambda: first_tries, "the first worker got a job")
    assert stopping.finish() == 0
    assert first_tries == [jobs[0]]
    assert gone.lag(JobKind.RENDER) == 2

    recorder = Recorder()
    worker = Worker(survivor, JobKind.RENDER, recorder)
    wait_until(lambda: survivor.lag(JobKind.RENDER) == 0, "the next worker committed both jobs")
    assert worker.finish() == 2
    assert recorder.jobs == jobs


def test_replay_redelivers_the_same_jobs(make_bus: Callable[..., KafkaBus]) -> None:
    bus = make_bus(partitions=2)
    jobs = jobs_for(window_keys(2), per_key=3)
    bus.publish(jobs)

    first = Recorder()
    worker = Worker(bus, JobKind.RENDER, first)
    wait_until(lambda: bus.lag(JobKind.RENDER) == 0, "every job is committed")
    worker.finish()

    bus.rewind(JobKind.RENDER)
    assert bus.lag(JobKind.RENDER) == len(jobs)
    again = Recorder()
    worker = Worker(bus, JobKind.RENDER, again)
    wait_until(lambda: bus.lag(JobKind.RENDER) == 0, "every replayed job is committed")
    assert worker.finish() == len(jobs)

    # The bus does not deduplicate: the same jobs arrive again; the store absorbs them.
    assert Counter(again.firsts) == Counter(first.firsts) == Counter(j.ids[0] for j in jobs)


def test_poison_message_is_logged_skipped_and_committed(
    make_bus: Callable[..., KafkaBus],
    bootstrap: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = make_bus(partitions=1)
    bus.ensure_topics()
    topic = bus.topic(JobKind.RENDER)
    good = Job(JobKind.RENDER, "2026-03-01-00:00", (7, 8, 9))
    poison = [
        b"not json at all",
        b"[1, 2, 3]",
        b'{"v": 99, "kind": "render", "partition": "p", "ids": [1]}',
        Job(JobKind.SEND, "2026-03-01-00:00", (1,)).encode(),
        b"\xff\xfe",
    ]
    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="darwin-notify-test")
    try:
        for value in poison:
            producer.send(topic, value=value, key=good.key)
        producer.send(topic, value=good.encode(), key=good.key)
        producer.flush()
    finally:
        producer.close()

    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="darwin_notify_assets.bus.kafka"):
        worker = Worker(bus, JobKind.RENDER, recorder)
        wait_until(lambda: bus.lag(JobKind.RENDER) == 0, "every message is committed")
        assert worker.finish() == 1

    assert recorder.jobs == [good]
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.name == "darwin_notify_assets.bus.kafka" and r.levelno == logging.ERROR
    ]
    assert len(errors) == len(poison)
    for offset, message in enumerate(errors):
        assert f"{topic}[0]@{offset}" in message


def test_publish_failure_names_the_brokers() -> None:
    bus = KafkaBus("127.0.0.1:1", topic_prefix="unreachable", bootstrap_timeout_ms=1000)
    try:
        assert bus.publish([]) == 0, "nothing to publish needs no broker"
        with pytest.raises(KafkaBusError, match="127.0.0.1:1"):
            bus.publish([Job(JobKind.RENDER, "2026-03-01-00:00", (1,))])
    finally:
        bus.close()
