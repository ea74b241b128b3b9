"""One budget per provider shared by every send worker: two worker processes against a sink
that enforces a rate never exceed it; a 429 holds every worker back."""

import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from darwin_notify_assets.delivery.throttle import ProviderBudget
from darwin_notify_assets.storage.store import NotificationStore
from darwin_notify_assets.testing.sinks import start_sink
from darwin_notify_tests.conftest import PARTITION, make_messages


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_budget_gives_its_burst_then_its_rate(store: NotificationStore):
    clock = Clock()
    budget = ProviderBudget(store, "email:test", rate=10, burst=20, clock=clock)
    assert budget.wait(20) == 0
    assert budget.wait(5) == pytest.approx(0.5)
    clock.now += 0.5
    assert budget.wait(5) == 0
    assert budget.wait(1) == pytest.approx(0.1)
    # another worker (another budget object, same store row) shares the same tokens
    other = ProviderBudget(store, "email:test", rate=10, burst=20, clock=clock)
    clock.now += 10
    assert other.wait(20) == 0
    assert budget.wait(1) > 0


def test_a_429_holds_back_every_worker_for_its_retry_after(store: NotificationStore):
    clock = Clock()
    one = ProviderBudget(store, "email:test", rate=100, clock=clock)
    two = ProviderBudget(store, "email:test", rate=100, clock=clock)
    assert one.wait(1) == 0
    one.hold_off(7)
    one.publish_hold()
    assert two.wait(1) == pytest.approx(7)
    clock.now += 7.05
    assert two.wait(1) == 0  # refilled from the end of the hold, not saved up during it
    assert two.wait(10) > 0


WORKER = textwrap.dedent(
    """
    import sys
    from darwin_notify_assets.bus.base import Job, JobKind
    from darwin_notify_assets.delivery.senders import SendGridSender
    from darwin_notify_assets.delivery.throttle import build_budgets
    from darwin_notify_assets.delivery.workers import RetryPolicy, SendWorker
    from darwin_notify_assets.storage.store import NotificationStore

    store_path, url, rate, ids = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    store = NotificationStore.open(f"sqlite:///{store_path}")
    senders = {"email": SendGridSender("SG.test-key", "notify@example.com", url)}
    budgets = build_budgets(store, senders, {"email": rate})
    worker = SendWorker(store, senders, concurrency=8, budgets=budgets,
                        retry=RetryPolicy(attempts=1))
    ids = [int(i) for i in ids.split(",")]
    for start in range(0, len(ids), 20):
        worker.handle(Job(JobKind.SEND, "PARTITION", tuple(ids[start:start + 20])))
    worker.close()
    """
).replace("PARTITION", PARTITION)

RATE, PER_WORKER = 40, 80


def _run_two_workers(store: NotificationStore, tmp_path: Path, worker_rate: int):
    ids = make_messages(store, 2 * PER_WORKER)
    record = tmp_path / "sendgrid.jsonl"
    sink, _ = start_sink("sendgrid", record_path=record)
    try:
        # the sink's bucket has room for the two workers' requests in flight (16): a request
        # takes its token before it goes out, and arrives a little later or sooner
        sink.faults.configure({"rate_limit": RATE, "burst": RATE + 16})
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        halves = [ids[:PER_WORKER], ids[PER_WORKER:]]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WORKER,
                    str(tmp_path / "store.db"),
                    sink.url,
                    str(worker_rate),
                    ",".join(map(str, half)),
                ],
                env=env,
            )
            for half in halves
        ]
        for p in procs:
            assert p.wait(timeout=120) == 0
        return [json.loads(line) for line in record.read_text().splitlines()]
    finally:
        sink.shutdown()
        sink.server_close()


def test_two_workers_sharing_the_budget_never_exceed_the_providers_rate(
    store: NotificationStore, tmp_path: Path
):
    records = _run_two_workers(store, tmp_path, worker_rate=RATE)
    assert [r for r in records if r["status"] == 429] == []
    accepted = sorted(
        datetime.fromisoformat(r["received_at"]).timestamp() for r in records if r["status"] == 202
    )
    assert len(accepted) == 2 * PER_WORKER
    # over every stretch of time, at most rate x time + burst, and the requests in flight
    # (16: their tokens were taken just before they went out, not when they arrived)
    for i, start in enumerate(accepted):
        for j in range(i, len(accepted)):
            assert j - i + 1 <= RATE * (accepted[j] - start) + RATE + 16
    statuses = {s for (s,) in store.db.query("SELECT status FROM message")}
    store.db.commit()
    assert statuses == {"sent"}


def test_without_the_shared_budget_the_sink_refuses_some(store: NotificationStore, tmp_path):
    # each worker alone keeps to the rate: together they go over it
    records = _run_two_workers(store, tmp_path, worker_rate=0)
    assert any(r["status"] == 429 for r in records)
