"""Fault tests on the real stack: the promise (never a missed and never a duplicate
notification, at most once per send) under the faults a deployment meets.

Every test works on the small seed, processes two or three change windows through Dagster
with worker processes on Kafka, injects one fault, and then counts what reached the provider
sinks from a mark taken at its start: every expected notification (the oracle's keys) has
exactly one accepted request, none extra, except those the fault legitimately turned
``unknown``: an ``unknown`` one has at most one accepted request, is never resent and is listed
by the audit.

The sinks are shared by everything that runs on the services, so only the pipeline's own
requests are counted: emails carry their key in ``custom_args.darwin_notify_key``, and SMS
come from the configured sender number and are matched to the store's messages by
``(to, body)``.
"""

import logging
import math
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from darwin_notify_assets.bus.base import JobKind
from darwin_notify_assets.domain.audit import audit_report
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.sample import seed
from darwin_notify_assets.sample.demo import DEMO_START
from darwin_notify_assets.storage.store import NotificationStore, utcnow
from darwin_notify_tests.integration.conftest import (
    SERVICES_SH,
    Stack,
    poll,
    stop_processes,
    windows_of,
)
from darwin_notify_tests.oracle import Expected, expected_sends
from darwin_notify_tests.services import start_worker

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

SEED = 7
EMAIL_OK = 202
SMS_OK = 201


# -- what reached the providers ------------------------------------------------------------------
@dataclass
class SinkView:
    """The pipeline's requests at the sinks since a mark, by candidate key."""

    email_accepted: Counter = field(default_factory=Counter)
    email_requests: Counter = field(default_factory=Counter)
    sms_accepted: Counter = field(default_factory=Counter)
    sms_requests: Counter = field(default_factory=Counter)
    # Requests from the pipeline that match no message of the store.
    stray: list[dict[str, Any]] = field(default_factory=list)
    # (key, record) in arrival order, for the fault-specific checks.
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def accepted(self) -> Counter:
        return self.email_accepted + self.sms_accepted

    @property
    def requests(self) -> Counter:
        return self.email_requests + self.sms_requests

    @property
    def total(self) -> int:
        return sum(self.requests.values()) + len(self.stray)


def _accepted(record: dict[str, Any], ok: int) -> bool:
    return int(record.get("status") or 0) == ok


# -- one scenario ---------------------------------------------------------------------------------
class Scenario:
    """The small seed on the primary, its changes, a baselined store and helpers."""

    def __init__(
        self,
        stack: Stack,
        windows: int = 3,
        intensity: float = 1.0,
        start: datetime = DEMO_START,
    ):
        self.stack = stack
        self.primary = _primary(stack)
        self.dataset = stack.reset_source(self.primary, seed.SeedSize.small(), SEED)
        self.changes = seed.generate_changes(
            self.dataset, SEED, start, windows, 5, intensity=intensity
        )
        self.windows = windows_of(self.changes)
        self.keys = [w.partition_key for w in self.windows]
        stack.wait_replayed(self.primary)
        self.settings = stack.settings()
        stack.baseline(self.settings)
        self.instance = stack.dagster_instance()
        self.procs: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.mark = self.sink_lengths()

    # -- source and runs --------------------------------------------------------------------------
    def expected(self, upto: int | None = None) -> Expected:
        return expected_sends(self.dataset, self.changes[:upto])

    def apply(self, i: int) -> None:
        seed.apply_window(self.primary, self.changes[i])
        self.stack.wait_replayed(self.primary)

    def run(self, i: int, tags: dict[str, str] | None = None) -> None:
        key = self.keys[i]
        result = self.run_key(key, tags)
        assert result.success, f"the run of window {key} failed; worker logs in {self.stack.tmp}"

    def run_key(self, key: str, tags: dict[str, str] | None = None):
        from darwin_notify_assets.defs.notifications.runs import run_window

        return run_window(key, self.instance, tags=tags)

    def process(self, i: int) -> None:
        self.apply(i)
        self.run(i)

    # -- workers ------------------------------------------------------------------------------------
    def worker(self, kind: str, failpoints: str = "", **env: str) -> subprocess.Popen:
        with self._lock:
            n = len(self.procs)
        name = f"{n:02d}-{kind}{'-' + failpoints.replace('=', '-') if failpoints else ''}"
        proc = start_worker(
            kind,
            self.stack.tmp / "workers" / f"{name}.log",
            {**env, "DARWIN_NOTIFY_FAILPOINTS": failpoints},
        )
        with self._lock:
            self.procs.append(proc)
        return proc

    def workers(self, render: int, send: int) -> list[subprocess.Popen]:
        return [self.worker("render") for _ in range(render)] + [
            self.worker("send") for _ in range(send)
        ]

    def replace_when_dead(self, victim: subprocess.Popen, kind: str, count: int = 1) -> None:
        """Once ``victim`` has died, start ``count`` normal workers of ``kind`` in its place
        (the group's other members, which take its partitions after its session expires)."""

        def watch() -> None:
            victim.wait()
            for _ in range(count):
                self.worker(kind)

        t = threading.Thread(target=watch, name=f"replace-{kind}", daemon=True)
        t.start()
        self._threads.append(t)

    def stop_workers(self) -> None:
        with self._lock:
            procs = list(self.procs)
        stop_processes(procs)

    def close(self) -> None:
        self.stop_workers()
        for t in self._threads:
            t.join(timeout=5)
        # Stopping joins the threads' late starts too.
        self.stop_workers()
        self.primary.close()

    # -- the store ----------------------------------------------------------------------------------
    @contextmanager
    def store(self) -> Iterator[NotificationStore]:
        store = NotificationStore.open(self.settings.store_url)
        try:
            yield store
        finally:
            store.close()

    def messages(self) -> dict[str, dict[str, Any]]:
        with self.store() as store:
            return {m["candidate_key"]: m for m in store.messages()}

    def snapshot(self) -> dict[str, Any]:
        """What a replay or a rerun must leave unchanged."""
        with self.store() as store:
            db = store.db
            out = {
                "messages": db.query(
                    "SELECT message_id, candidate_id, candidate_key, status, attempts, "
                    "provider_message_id, reason, updated_at FROM message ORDER BY message_id"
                ),
                "history": db.query(
                    "SELECT message_event_id, message_id, from_status, to_status FROM message_event "
                    "ORDER BY message_event_id"
                ),
                "candidates": db.query(
                    "SELECT candidate_id, candidate_key FROM candidate ORDER BY candidate_id"
                ),
                "events": db.query(
                    "SELECT event_id, event_key FROM change_event ORDER BY event_id"
                ),
            }
            db.commit()
        return out

    # -- the sinks ----------------------------------------------------------------------------------
    def sink_lengths(self) -> tuple[int, int]:
        email, sms = self.stack.sink_records()
        return len(email), len(sms)

    def sinks(self, mark: tuple[int, int] | None = None) -> SinkView:
        email_mark, sms_mark = mark or self.mark
        email, sms = self.stack.sink_records()
        with self.store() as store:
            rows = store.db.query(
                "SELECT candidate_key, to_address, sms_body FROM message WHERE channel = ?",
                ["sms"],
            )
            store.db.commit()
        by_identity: dict[tuple[str, str], str] = {}
        for key, to, body in rows:
            assert (to, body) not in by_identity, f"two SMS messages read the same: {to} {body!r}"
            by_identity[(to, body or "")] = key
        view = SinkView()
        for r in email[email_mark:]:
            key = (r.get("custom_args") or {}).get("darwin_notify_key")
            if not key:
                continue  # not the pipeline's (another suite's probe)
            view.email_requests[key] += 1
            view.email_accepted[key] += _accepted(r, EMAIL_OK)
            view.records.append((key, r))
        for r in sms[sms_mark:]:
            if r.get("from") != self.settings.sms_from:
                continue
            to = r.get("to")
            to = to[0] if isinstance(to, list) else to
            key = by_identity.get((to, r.get("body") or ""))
            if key is None:
                view.stray.append(r)
                continue
            view.sms_requests[key] += 1
            view.sms_accepted[key] += _accepted(r, SMS_OK)
            view.records.append((key, r))
        # Drop zero counts, so the key sets are the keys with an accepted request.
        view.email_accepted = +view.email_accepted
        view.sms_accepted = +view.sms_accepted
        return view

    # -- the promise --------------------------------------------------------------------------------
    def verify(self, expected: Expected, allow_unknown: bool = False) -> tuple[SinkView, set[str]]:
        """Exactly one accepted request per expected notification, none extra, except for
        ``unknown`` ones (at most one, listed by the audit); returns the view and them."""
        view = self.sinks()
        messages = self.messages()
        unknown = {k for k, m in messages.items() if m["status"] == MessageStatus.UNKNOWN}
        if not allow_unknown:
            assert not unknown, f"unexpected unknown messages: {sorted(unknown)}"
        everything = expected.email | expected.sms
        assert unknown <= everything, sorted(unknown - everything)
        assert not view.stray, f"SMS requests that match no message: {view.stray[:3]}"
        extra = set(view.email_accepted) - expected.email
        extra |= set(view.sms_accepted) - expected.sms
        assert not extra, f"accepted requests for notifications nobody expected: {sorted(extra)}"
        wrong = {k: view.accepted[k] for k in everything - unknown if view.accepted[k] != 1}
        assert not wrong, f"expected exactly one accepted request each, got {wrong}"
        twice = {k: view.accepted[k] for k in unknown if view.accepted[k] > 1}
        assert not twice, f"unknown messages accepted more than once: {twice}"
        sent = {k for k, m in messages.items() if m["status"] == MessageStatus.SENT}
        assert sent == everything - unknown, (
            sorted((everything - unknown) - sent)[:10],
            sorted(sent - everything)[:10],
        )
        still_open = [
            k
            for k, m in messages.items()
            if m["status"] in (MessageStatus.QUEUED, MessageStatus.SENDING)
        ]
        assert not still_open, f"messages never finished: {still_open}"
        with self.store() as store:
            report = audit_report(store, self.keys)
        assert report.duplicates == []
        assert [w.missed for w in report.windows] == [[] for _ in report.windows]
        assert {k for w in report.windows for k in w.unknown} == unknown
        return view, unknown

    def rerun_sends_nothing(self, keys: list[str] | None = None) -> None:
        """Run windows again: nothing reaches a provider, nothing in the store changes."""
        before, mark = self.snapshot(), self.sink_lengths()
        for key in keys or self.keys:
            assert self.run_key(key).success
        assert self.sinks(mark).total == 0
        assert self.snapshot()["messages"] == before["messages"]


@pytest.fixture
def scenario(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Scenario]]:
    """Builds a :class:`Scenario`; workers are external processes; everything is stopped and
    the test's Kafka topics and groups are deleted afterwards."""
    monkeypatch.setenv("DARWIN_NOTIFY_INLINE_WORKERS", "0")
    monkeypatch.setenv("DARWIN_NOTIFY_STAGE_TIMEOUT_SECONDS", "90")
    made: list[Scenario] = []

    def make(**kwargs: Any) -> Scenario:
        s = Scenario(stack, **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
    _delete_kafka_state(stack)


def _primary(stack: Stack):
    """An admin connection to the primary whose commits are flushed before they return.

    The services run the primary with ``synchronous_commit = off``: a commit returns before
    its WAL is written, so ``pg_current_wal_lsn()`` (which ``wait_replayed`` compares with the
    standby's replay position) can stay behind it for up to ``wal_writer_delay``, and a wait
    would end before the standby has the change.
    """
    db = stack.admin("PRIMARY")
    db.execute("SET synchronous_commit = on").close()
    db.commit()
    return db


def _delete_kafka_state(stack: Stack) -> None:
    from darwin_notify_assets.bus.kafka import KafkaBus

    bus = KafkaBus.from_settings(stack.settings())
    try:
        bus.delete_topics()
        bus.delete_groups()
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the test's outcome
        log.warning("could not delete the test's Kafka topics or groups: %s", exc)
    finally:
        bus.close()


def _services(*args: str) -> None:
    subprocess.run(
        ["bash", str(SERVICES_SH), *args], check=True, timeout=180, capture_output=True, text=True
    )


# -- 1. replica lag ----------------------------------------------------------------------------------
def _evaluate_sensor(instance, cursor: str):
    from darwin_notify_assets.defs.notifications.runs import evaluate_sensor

    return evaluate_sensor(instance, cursor)


def _requested(result) -> list[str]:
    from darwin_notify_assets.defs.notifications.runs import requested_windows

    return requested_windows(result)


def test_paused_replay_holds_the_window_back_until_resumed(
    scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay paused on the standby across a window boundary: the sensor refuses the window
    (saying how far behind and that replay is paused) even once its end plus grace has passed
    on the clock; after resume it requests it, and the run sends exactly what is expected.

    The windows are the two most recent complete ones, so that the standby's watermark (its
    last replayed commit while paused) is compared with real time; the grace is set so the
    second window's end + grace falls a few seconds after the pause.
    """
    first = Window.containing(utcnow() - timedelta(minutes=10), 5)
    s = scenario(windows=2, start=first.start)
    a, b = s.windows
    s.worker("render")
    s.worker("send")
    s.process(0)

    replica = s.stack.admin("REPLICA")
    try:
        replica.execute("SELECT pg_wal_replay_pause()").close()
        replica.commit()

        def paused() -> bool:
            state = replica.scalar("SELECT pg_get_wal_replay_pause_state()")
            replica.commit()
            return state == "paused"

        assert poll(paused, timeout=10), "the standby did not pause its replay"
        seed.apply_window(s.primary, s.changes[1])
        primary_lsn = s.primary.scalar("SELECT pg_current_wal_lsn()::text")
        s.primary.commit()
        state = replica.query(
            "SELECT pg_wal_lsn_diff(?::pg_lsn, pg_last_wal_replay_lsn()) > 0, "
            "pg_last_wal_replay_lsn()::text, pg_get_wal_replay_pause_state()",
            [primary_lsn],
        )[0]
        replica.commit()
        assert state[0], f"the paused standby already has the window's changes: {state}"

        grace = math.ceil((utcnow() - b.end).total_seconds()) + 3
        monkeypatch.setenv("DARWIN_NOTIFY_GRACE_SECONDS", str(grace))
        needed = b.end + timedelta(seconds=grace)
        # Past the window's end + grace on the clock: only the paused replay holds it back.
        time.sleep(max(0.0, (needed - utcnow()).total_seconds()) + 0.5)
        refused = _evaluate_sensor(s.instance, a.partition_key)
        assert b.partition_key not in _requested(refused)
        message = getattr(refused, "skip_message", None) or ""
        assert "behind" in message and "paused" in message, refused
        # A run started by hand is held to the same rule: it fails and reads nothing.
        manual = s.run_key(b.partition_key)
        assert not manual.success
        [failure] = [e for e in manual.all_events if e.is_step_failure]
        assert failure.step_key == "change_window"
        assert "replay paused" in failure.step_failure_data.error.message
        with s.store() as store:
            assert store.window_info(b.partition_key) is None
    finally:
        replica.execute("SELECT pg_wal_replay_resume()").close()
        replica.commit()
        replica.close()

    s.stack.wait_replayed(s.primary)

    last: list[Any] = []

    def requested() -> list[str]:
        last[:] = [_evaluate_sensor(s.instance, a.partition_key)]
        return _requested(last[0])

    assert poll(lambda: requested() == [b.partition_key], timeout=30, interval=0.5), last
    s.run(1)
    s.verify(s.expected())


# -- 2. a late commit ----------------------------------------------------------------------------------
def test_long_transaction_committed_after_its_window_is_caught_by_the_lookback(scenario) -> None:
    """A transaction stamps a price drop's ModifiedDate inside window W but commits only after
    W was processed: W does not see it, W+1 reads it through the lookback overlap, and the
    agent gets exactly one SMS."""
    s = scenario(windows=2)
    w0, w1 = s.changes
    touched = {op.key for wc in s.changes for op in wc.operations if op.table == "Property"}
    at = w0.start + timedelta(seconds=150, microseconds=123_456)
    base = s.expected()
    drop = None
    for prop in s.dataset.records("Property"):
        pid = int(prop["PropertyID"])
        if pid in touched or prop["Status"] != "Active":
            continue
        old = Decimal(str(prop["ListPrice"]))
        op = seed.Update(
            "Property",
            pid,
            {"ListPrice": old - 5000, "ModifiedDate": at},
            {"ListPrice": old, "ModifiedDate": prop["ModifiedDate"]},
            seed.ChangeKind.PRICE_DROP,
            at,
        )
        late = seed.WindowChanges(w0.start, w0.end, (*w0.operations, op))
        expected = expected_sends(s.dataset, [late, w1])
        if len(expected.sms - base.sms) == 1:
            drop, (key,) = op, expected.sms - base.sms
            break
    assert drop is not None, "no untouched active listing whose agent can receive an SMS"
    s.workers(render=1, send=1)

    late_tx = _primary(s.stack)
    try:
        late_tx.execute(
            'UPDATE "Property" SET "ListPrice" = ?, "ModifiedDate" = ? WHERE "PropertyID" = ?',
            [drop.values["ListPrice"], late_tx.ts(at), drop.key],
        ).close()
        s.process(0)  # the transaction is still open: W cannot see its row
        assert key not in s.messages()
        late_tx.commit()
    finally:
        late_tx.rollback()
        late_tx.close()
    s.process(1)

    view, _ = s.verify(expected)
    message = s.messages()[key]
    assert message["partition_key"] == s.keys[1] and message["channel"] == "sms"
    assert view.sms_accepted[key] == 1


# -- 3. reruns and a backfill ----------------------------------------------------------------------------
def test_rerun_and_backfill_send_nothing_new(scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    """A partition materialized twice, then a backfill over every processed window (once with
    external workers, once with in-process ones): the sinks see nothing new and the store's
    messages and history do not change."""
    s = scenario(windows=3)
    s.workers(render=2, send=2)
    for i in range(3):
        s.process(i)
    expected = s.expected()
    s.verify(expected)
    before, mark = s.snapshot(), s.sink_lengths()

    assert s.run_key(s.keys[1]).success  # the same partition, materialized again
    backfill = {"dagster/backfill": f"faults-{uuid.uuid4().hex[:8]}"}
    for key in s.keys:
        assert s.run_key(key, tags=backfill).success
    monkeypatch.setenv("DARWIN_NOTIFY_INLINE_WORKERS", "2")
    for key in s.keys:
        assert s.run_key(key, tags=backfill).success

    assert s.sinks(mark).total == 0
    after = s.snapshot()
    for part in ("messages", "history", "candidates", "events"):
        assert after[part] == before[part], f"a rerun changed the store's {part}"
    s.verify(expected)


# -- 4. a render worker killed -----------------------------------------------------------------------------
def test_render_worker_killed_mid_batch(scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    """A render worker dies by SIGKILL after rendering a batch and before writing it, its job
    uncommitted. It is the only member of its group when the jobs arrive, so it certainly gets
    one (a window's jobs share one Kafka partition); a normal worker joins when it dies and is
    handed the dead member's partitions once its session expires, renders the job again, and
    every notification is sent exactly once."""
    monkeypatch.setenv("DARWIN_NOTIFY_RENDER_BATCH", "5")
    s = scenario(windows=3)
    victim = s.worker("render", "render.before_write=kill")
    s.replace_when_dead(victim, "render")
    s.worker("send")
    s.worker("send")
    for i in range(3):
        s.process(i)
    assert victim.returncode == -9, "the failpoint did not kill the render worker"
    with s.store() as store:
        for key in s.keys:
            assert store.missing_messages(key) == []
            assert store.candidate_count(key) == len(store.messages(key))
    s.verify(s.expected())


# -- 5./6. a send worker killed ------------------------------------------------------------------------------
def _send_worker_killed(
    scenario, monkeypatch: pytest.MonkeyPatch, failpoint: str, batch: int = 5, **env: str
):
    monkeypatch.setenv("DARWIN_NOTIFY_SEND_BATCH", str(batch))
    monkeypatch.setenv("DARWIN_NOTIFY_SENDING_EXPIRY_SECONDS", "3")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = scenario(windows=3)
    s.worker("render")
    victim = s.worker("send", failpoint)
    s.replace_when_dead(victim, "send")
    for i in range(3):
        s.process(i)
    assert victim.returncode == -9, f"the failpoint {failpoint} did not kill the send worker"
    view, unknown = s.verify(s.expected(), allow_unknown=True)
    # The victim claimed one job: at most its batch, all of one window.
    assert len(unknown) <= batch
    messages = s.messages()
    assert len({messages[k]["partition_key"] for k in unknown}) <= 1
    for k in unknown:
        assert messages[k]["attempts"] == 1, "an unknown message was claimed again"
    s.rerun_sends_nothing()
    return s, view, unknown


def test_send_worker_killed_after_claim_before_provider(
    scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the claim committed, before any provider call: none of its messages was
    handed to the provider, so none is ``unknown``: the job's redelivery to another worker
    claims them again and each is sent exactly once (``verify``)."""
    _, view, unknown = _send_worker_killed(scenario, monkeypatch, "send.after_claim=kill")
    assert unknown == set()


def test_send_worker_killed_mid_batch_leaves_only_its_requests_in_flight_unknown(
    scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed before its 5th request, 4 of a batch of 20 sent, 2 threads: at most the
    requests in flight, the group stamped to go next and the outcomes not yet recorded are
    ``unknown`` (never the whole batch); the rest of the batch is sent exactly once by the next
    worker."""
    _, view, unknown = _send_worker_killed(
        scenario,
        monkeypatch,
        "send.before_request=kill_after:4",
        batch=20,
        DARWIN_NOTIFY_SEND_CONCURRENCY="2",
        DARWIN_NOTIFY_SEND_REQUEST_GROUP="2",  # the default (4 x the threads) would allow 10
    )
    assert 1 <= len(unknown) <= 2 + 2, sorted(unknown)  # threads + the group stamped ahead
    assert all(view.requests[k] <= 1 for k in unknown)


def test_send_worker_killed_after_provider_before_recording(
    scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the provider accepted, before the outcome was recorded: ``unknown``, one
    accepted request each at the sink, never resent, listed by the audit."""
    _, view, unknown = _send_worker_killed(scenario, monkeypatch, "send.after_provider=kill")
    assert unknown
    assert {k: view.accepted[k] for k in unknown} == dict.fromkeys(unknown, 1)
    assert {k: view.requests[k] for k in unknown} == dict.fromkeys(unknown, 1)


# -- 7. the broker restarted -----------------------------------------------------------------------------------
def test_kafka_restart_during_a_run(scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker stops while render workers are consuming a window's jobs (slow handlers hold
    jobs across the outage: their offset commits wait for the broker or fail, and then the
    job comes back) and starts again; the run completes and every notification is sent
    exactly once."""
    monkeypatch.setenv("DARWIN_NOTIFY_RENDER_BATCH", "4")
    s = scenario(windows=2)
    # Slow renderers, so that jobs are still in flight when the broker goes away.
    s.worker("render", "render.before_write=sleep:1")
    s.worker("render", "render.before_write=sleep:1")
    s.worker("send")
    restarted = threading.Event()
    errors: list[BaseException] = []

    def restart_when_rendering() -> None:
        try:

            def rendering() -> bool:
                with s.store() as store:
                    return len(store.messages(s.keys[0])) > 0

            if not poll(rendering, timeout=60, interval=0.05):
                raise AssertionError("no render job finished within 60s")
            _services("kafka-stop")
            time.sleep(2)
            _services("kafka-start")
            restarted.set()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test
            errors.append(exc)

    t = threading.Thread(target=restart_when_rendering, daemon=True)
    try:
        s.apply(0)
        t.start()
        s.run(0)
        t.join(timeout=90)
        assert not errors, errors
        assert restarted.is_set()
        s.process(1)
    finally:
        t.join(timeout=90)
        _services("kafka-start")  # up again whatever happened
    s.verify(s.expected())


# -- 8. the same Kafka message consumed twice ---------------------------------------------------------------------
def test_replayed_kafka_jobs_change_nothing(scenario) -> None:
    """Every render and send job is consumed a second time (a fresh consumer group reading
    both topics from offset 0, then the workers' own group rewound and its workers started
    again): nothing new at the sinks, the store unchanged."""
    from darwin_notify_assets.bus.kafka import KafkaBus
    from darwin_notify_assets.delivery.workers import RenderWorker, SendWorker
    from darwin_notify_assets.domain.pipeline import Runtime, load_schedules

    s = scenario(windows=3)
    s.workers(render=2, send=2)
    for i in range(3):
        s.process(i)
    expected = s.expected()
    s.verify(expected)
    s.stop_workers()
    before, mark = s.snapshot(), s.sink_lengths()
    settings = s.settings

    # A second consumer group reads both topics from the start, with the real handlers.
    replay = KafkaBus(
        settings.kafka_bootstrap,
        topic_prefix=settings.kafka_topic_prefix,
        partitions=settings.kafka_partitions,
        group_prefix=f"replay-{uuid.uuid4().hex[:8]}",
    )
    rt = Runtime.from_settings(settings)
    try:
        loaded = load_schedules(rt.replica)
        assert replay.lag(JobKind.RENDER) > 0 and replay.lag(JobKind.SEND) > 0
        handlers = {
            JobKind.RENDER: RenderWorker(
                rt.replica, rt.store, loaded.schedules, loaded.templates, settings.window_minutes
            ),
            JobKind.SEND: SendWorker(rt.store, rt.senders_factory(), settings.send_concurrency),
        }
        for kind, handler in handlers.items():
            stop = threading.Event()
            consumer = threading.Thread(
                target=replay.consume, args=(kind, handler, stop), daemon=True
            )
            consumer.start()
            try:
                assert poll(lambda kind=kind: replay.lag(kind) == 0, timeout=60, interval=0.5)
            finally:
                stop.set()
                consumer.join(timeout=30)
        handlers[JobKind.SEND].close()
    finally:
        rt.close()
        try:
            replay.delete_groups()
        finally:
            replay.close()

    # The workers' own group, rewound to offset 0 and consumed again by worker processes.
    bus = KafkaBus.from_settings(settings)
    try:
        for kind in JobKind:
            assert bus.lag(kind) == 0
            bus.rewind(kind)
            assert bus.lag(kind) > 0
        s.workers(render=1, send=1)
        for kind in JobKind:
            assert poll(lambda kind=kind: bus.lag(kind) == 0, timeout=60, interval=0.5)
    finally:
        bus.close()
    s.stop_workers()

    assert s.sinks(mark).total == 0
    after = s.snapshot()
    for part in ("messages", "history", "candidates", "events"):
        assert after[part] == before[part], f"a replayed job changed the store's {part}"
    s.verify(expected)


# -- 9. provider faults ----------------------------------------------------------------------------------------------
def test_provider_errors_and_timeouts(scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    """429 (documented as not processed) is retried and delivered once; a 500 (which may
    follow an accepted request) is ``unknown`` and not retried; a timeout after the provider
    accepted is ``unknown`` with exactly one accepted request, not retried; a timeout before
    it refused is ``unknown`` with none (nobody could know)."""
    monkeypatch.setenv("DARWIN_NOTIFY_PROVIDER_TIMEOUT_SECONDS", "1")
    s = scenario(windows=3)
    s.workers(render=1, send=1)
    delay = 3  # longer than the provider timeout
    for sink in ("sendgrid", "sms"):
        s.stack.sink_control(sink, reset=True)
    try:
        # Window 1: every kind of email fault (one job of about 20 emails, 8 in flight, so
        # each fault meets a different message before any retry), SMS 500 then 429.
        s.stack.sink_control("sendgrid", fail=1, status=429)
        s.stack.sink_control("sendgrid", fail=1, status=500)
        s.stack.sink_control("sendgrid", accept_then_delay=1, seconds=delay)
        s.stack.sink_control("sendgrid", delay_then_reject=1, seconds=delay, status=503)
        s.stack.sink_control("sms", fail=1, status=500)
        s.stack.sink_control("sms", fail=1, status=429)
        s.process(0)
        # Window 2: an SMS accepted, answered too late; window 3: one refused too late.
        s.stack.sink_control("sms", accept_then_delay=1, seconds=delay)
        s.process(1)
        s.stack.sink_control("sms", delay_then_reject=1, seconds=delay, status=503)
        s.process(2)
        time.sleep(delay)  # the late refusals reach the record files
    finally:
        for sink in ("sendgrid", "sms"):
            s.stack.sink_control(sink, reset=True)

    view, unknown = s.verify(s.expected(), allow_unknown=True)
    by_fault: dict[str, list[str]] = {}
    for key, r in view.records:
        kind = r.get("fault") or "none"
        if kind == "reject":
            kind = f"reject-{r['status']}"
        by_fault.setdefault(kind, []).append(key)
    for kind in ("reject-429", "reject-500", "reject-503", "accept_then_delay"):
        assert kind in by_fault, f"no {kind} fault reached the sinks: {sorted(by_fault)}"
    retried = by_fault["reject-429"]
    server_error = by_fault["reject-500"]
    late_accept = by_fault["accept_then_delay"]
    late_reject = by_fault["reject-503"]
    groups = (retried, server_error, late_accept, late_reject)
    assert [len(g) for g in groups] == [2, 2, 2, 2], by_fault
    # Retried and delivered once.
    assert not set(retried) & unknown
    assert all(view.accepted[k] == 1 for k in retried)
    # A 500, and timeouts: unknown, never retried; accepted once when the provider took it,
    # else never.
    assert unknown == set(server_error) | set(late_accept) | set(late_reject)
    for k in late_accept:
        assert (view.accepted[k], view.requests[k]) == (1, 1), k
    for k in server_error + late_reject:
        assert (view.accepted[k], view.requests[k]) == (0, 1), k
    messages = s.messages()
    assert all(messages[k]["reason"] for k in unknown), "an unknown message without a reason"
    s.rerun_sends_nothing()
