"""The in-process job bus: Kafka's contract (keyed, at least once, acknowledged after the
handler returns) without Kafka."""

import json
import logging
import threading
import time

import pytest

from darwin_notify_assets.bus.base import (
    ENVELOPE_VERSION,
    BadJob,
    InProcessBus,
    Job,
    JobKind,
    make_jobs,
    run_consumers,
)

PARTITION = "2026-03-02-14:00"


def test_a_job_round_trips_through_its_envelope():
    job = Job(JobKind.SEND, PARTITION, (3, 1, 2))
    decoded = Job.decode(job.encode())
    assert decoded == job
    assert decoded.ids == (3, 1, 2)
    envelope = json.loads(job.encode())
    assert envelope["v"] == ENVELOPE_VERSION
    assert envelope["kind"] == "send"
    assert envelope["partition"] == PARTITION
    # Keyed by window and first id: one window's jobs spread over the topic's partitions.
    assert job.key == f"{PARTITION}/3".encode()
    assert Job(JobKind.SEND, PARTITION, (4, 5)).key != job.key


@pytest.mark.parametrize("version", [0, ENVELOPE_VERSION + 1, "1", None])
def test_an_unknown_envelope_version_is_a_bad_job(version):
    payload = json.dumps({"v": version, "kind": "render", "partition": PARTITION, "ids": [1]})
    with pytest.raises(BadJob, match="version"):
        Job.decode(payload.encode())


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"",
        b'{"v": 1, "kind": "print", "partition": "p", "ids": [1]}',
        b'{"v": 1, "partition": "p", "ids": [1]}',
        b'{"v": 1, "kind": "send", "partition": "p", "ids": ["x"]}',
        b'{"v": 1, "kind": "send", "partition": "p", "ids": 5}',
        b"[1, 2, 3]",
        b"null",
        b'"a string"',
    ],
)
def test_an_undecodable_payload_is_a_bad_job(payload):
    with pytest.raises(BadJob):
        Job.decode(payload)


def test_make_jobs_batches_ids_in_order():
    jobs = list(make_jobs(JobKind.RENDER, PARTITION, range(1, 8), 3))
    assert [j.ids for j in jobs] == [(1, 2, 3), (4, 5, 6), (7,)]
    assert {j.kind for j in jobs} == {JobKind.RENDER}
    assert list(make_jobs(JobKind.RENDER, PARTITION, [], 3)) == []


class FlakyHandler:
    """Raises the first time it sees each job, succeeds after."""

    def __init__(self):
        self.seen: list[Job] = []
        self.done: list[Job] = []
        self.lock = threading.Lock()

    def __call__(self, job: Job) -> None:
        with self.lock:
            first = job not in self.seen
            self.seen.append(job)
        if first:
            raise RuntimeError("database write failed")
        with self.lock:
            self.done.append(job)


def test_a_job_whose_handler_raised_is_delivered_again():
    bus = InProcessBus(retry_delay=0.01)
    jobs = [Job(JobKind.RENDER, PARTITION, (1, 2)), Job(JobKind.RENDER, PARTITION, (3,))]
    assert bus.publish(jobs) == 2
    handler = FlakyHandler()
    finished = run_consumers(
        bus, JobKind.RENDER, lambda: handler, 1, done=lambda: len(handler.done) == 2, timeout=10
    )
    assert finished
    assert sorted(handler.done, key=lambda j: j.ids) == jobs
    assert sorted(handler.seen, key=lambda j: j.ids) == [jobs[0], jobs[0], jobs[1], jobs[1]]
    assert bus.delivered[JobKind.RENDER] == 4
    assert bus.pending(JobKind.RENDER) == 0


def test_a_job_failing_every_time_is_dropped_after_max_attempts():
    bus = InProcessBus(max_attempts=3, retry_delay=0.01)
    bus.publish([Job(JobKind.SEND, PARTITION, (9,))])
    calls: list[Job] = []

    def always_fails(job: Job) -> None:
        calls.append(job)
        raise RuntimeError("down")

    finished = run_consumers(
        bus,
        JobKind.SEND,
        lambda: always_fails,
        1,
        done=lambda: len(calls) >= 3 and bus.pending(JobKind.SEND) == 0,
        timeout=10,
    )
    assert finished
    assert len(calls) == 3
    assert bus.pending(JobKind.SEND) == 0


def test_kinds_are_separate_queues_and_redeliver_hands_a_job_again():
    bus = InProcessBus()
    render = Job(JobKind.RENDER, PARTITION, (1,))
    send = Job(JobKind.SEND, PARTITION, (2,))
    bus.publish([render, send])
    bus.redeliver(send)
    assert bus.pending(JobKind.RENDER) == 1
    assert bus.pending(JobKind.SEND) == 2
    got: list[Job] = []
    stop = threading.Event()

    def handler(job: Job) -> None:
        got.append(job)
        if len(got) == 2:
            stop.set()

    assert bus.consume(JobKind.SEND, handler, stop) == 2
    assert got == [send, send]
    assert bus.pending(JobKind.RENDER) == 1


def test_run_consumers_surfaces_a_consumer_crash():
    class Broken(InProcessBus):
        def consume(self, kind, handler, stop):
            raise ConnectionError("broker gone")

    with pytest.raises(ConnectionError, match="broker gone"):
        run_consumers(
            Broken(), JobKind.SEND, lambda: (lambda job: None), 2, done=lambda: False, timeout=5
        )


def test_a_kafka_worker_waits_for_unreachable_brokers_then_names_them(caplog) -> None:
    from darwin_notify_assets.bus.kafka import KafkaBus, KafkaBusError

    bus = KafkaBus(
        "127.0.0.1:1", topic_prefix="unreachable", bootstrap_timeout_ms=200, connect_timeout=2.5
    )
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="darwin_notify_assets.bus.kafka"):
            with pytest.raises(KafkaBusError, match="127.0.0.1:1"):
                bus.consume(JobKind.RENDER, lambda job: None, threading.Event())
    finally:
        bus.close()
    assert time.monotonic() - started >= 2.5
    retries = [r for r in caplog.records if "trying again" in r.getMessage()]
    assert len(retries) >= 2


def test_a_kafka_worker_stopped_while_it_waits_for_the_brokers_returns() -> None:
    from darwin_notify_assets.bus.kafka import KafkaBus

    bus = KafkaBus("127.0.0.1:1", topic_prefix="unreachable", bootstrap_timeout_ms=200)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    try:
        assert bus.consume(JobKind.RENDER, lambda job: None, stop) == 0
    finally:
        bus.close()
    assert time.monotonic() - started < 10


class _LosingConsumer:
    """A consumer whose first polls fail as kafka-python's do when the broker went away."""

    def __init__(self, failures: int, stop: threading.Event):
        self.failures, self.stop, self.polls, self.closed = failures, stop, 0, False

    def subscribe(self, topics) -> None:
        pass

    def poll(self, timeout_ms: int):
        from kafka.errors import KafkaConnectionError

        self.polls += 1
        if self.polls <= self.failures:
            raise KafkaConnectionError("111 ECONNREFUSED")
        self.stop.set()
        return {}

    def close(self, autocommit: bool = True) -> None:
        self.closed = True


def test_a_kafka_worker_rides_out_brokers_lost_while_it_consumes(monkeypatch, caplog) -> None:
    from darwin_notify_assets.bus.kafka import KafkaBus

    stop = threading.Event()
    consumer = _LosingConsumer(2, stop)
    bus = KafkaBus("127.0.0.1:1", topic_prefix="lost", connect_timeout=60)
    monkeypatch.setattr(bus, "_connect_consumer", lambda kind, stop: consumer)
    with caplog.at_level(logging.WARNING, logger="darwin_notify_assets.bus.kafka"):
        assert bus.consume(JobKind.RENDER, lambda job: None, stop) == 0
    bus.close()
    assert consumer.polls == 3 and consumer.closed
    assert sum("lost Kafka at 127.0.0.1:1" in r.getMessage() for r in caplog.records) == 2


def test_a_kafka_worker_gives_up_after_connect_timeout_of_lost_brokers(monkeypatch) -> None:
    from darwin_notify_assets.bus.kafka import KafkaBus, KafkaBusError

    stop = threading.Event()
    consumer = _LosingConsumer(1_000, stop)
    bus = KafkaBus("127.0.0.1:1", topic_prefix="lost", connect_timeout=0.5)
    monkeypatch.setattr(bus, "_connect_consumer", lambda kind, stop: consumer)
    with pytest.raises(KafkaBusError, match="unreachable for 0.5 s"):
        bus.consume(JobKind.RENDER, lambda job: None, stop)
    bus.close()
    assert consumer.closed and consumer.polls == 2
