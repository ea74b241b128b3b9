"""Send workers: claim before calling the provider, retry only what the provider never took."""

import pytest

from darwin_notify_assets.bus.base import Job, JobKind
from darwin_notify_assets.delivery.workers import RenderWorker, RetryPolicy, SendWorker
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.errors import (
    ProviderError,
    ProviderOutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
)
from darwin_notify_assets.storage.store import NotificationStore
from darwin_notify_assets.testing.senders import RecordingSender
from darwin_notify_tests.conftest import PARTITION, make_messages


class Sleeps:
    def __init__(self):
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def worker(
    store: NotificationStore,
    sender: RecordingSender,
    attempts: int = 3,
    sleeps: Sleeps | None = None,
) -> SendWorker:
    return SendWorker(
        store,
        {"email": sender},
        concurrency=2,
        retry=RetryPolicy(attempts=attempts, base_delay=0.5, max_delay=5.0),
        sleep=sleeps or Sleeps(),
    )


def row(store: NotificationStore, message_id: int) -> dict:
    r = store.db.query_dicts("SELECT * FROM message WHERE message_id = ?", [message_id])[0]
    store.db.commit()
    return r


def send_job(ids) -> Job:
    return Job(JobKind.SEND, PARTITION, tuple(ids))


def test_a_sent_message_records_the_provider_id(store):
    ids = make_messages(store, 3)
    sender = RecordingSender("email")
    w = worker(store, sender)
    try:
        counts = w.handle(send_job(ids))
    finally:
        w.close()
    assert counts == {"sent": 3}
    assert sorted(m.message_id for m in sender.calls) == ids
    for mid in ids:
        r = row(store, mid)
        assert r["status"] == "sent"
        assert r["provider_message_id"] == f"recorded:{mid}"


@pytest.mark.parametrize("attempts", [1, 3, 5])
def test_provider_unavailable_is_retried_up_to_the_policy_then_failed(store, attempts):
    [mid] = make_messages(store, 1)
    sender = RecordingSender("email", script=[ProviderUnavailable("SendGrid answered 429")] * 10)
    sleeps = Sleeps()
    w = worker(store, sender, attempts=attempts, sleeps=sleeps)
    try:
        w.handle(send_job([mid]))
    finally:
        w.close()
    assert len(sender.calls) == attempts
    policy = RetryPolicy(attempts=attempts, base_delay=0.5, max_delay=5.0)
    assert sleeps.calls == [policy.delay(n) for n in range(1, attempts)]
    r = row(store, mid)
    assert r["status"] == "failed"
    assert "429" in r["reason"] and f"{attempts} attempts" in r["reason"]


def test_the_retry_delays_back_off_and_are_capped():
    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=3.0)
    delays = [policy.delay(n) for n in range(1, 6)]
    assert delays == sorted(delays)
    assert delays[0] == 0.5
    assert max(delays) == 3.0


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(None, [0.5, 1.0]), (0.2, [0.5, 1.0]), (2.0, [2.0, 2.0]), (30.0, [30.0, 30.0])],
)
def test_a_retry_waits_at_least_what_the_provider_asked(store, retry_after, expected):
    [mid] = make_messages(store, 1)
    unavailable = ProviderUnavailable("SendGrid answered 429", retry_after=retry_after)
    sender = RecordingSender("email", script=[unavailable, unavailable, None])
    sleeps = Sleeps()
    w = worker(store, sender, attempts=3, sleeps=sleeps)
    try:
        w.handle(send_job([mid]))
    finally:
        w.close()
    assert sleeps.calls == expected
    assert row(store, mid)["status"] == "sent"


def test_a_provider_asking_for_a_longer_wait_than_a_worker_holds_is_failed(store):
    [mid] = make_messages(store, 1)
    sender = RecordingSender(
        "email", script=[ProviderUnavailable("SendGrid answered 429", retry_after=30.5)]
    )
    sleeps = Sleeps()
    w = worker(store, sender, attempts=3, sleeps=sleeps)
    try:
        w.handle(send_job([mid]))
    finally:
        w.close()
    assert len(sender.calls) == 1 and sleeps.calls == []
    r = row(store, mid)
    assert r["status"] == "failed"
    assert "retry after 30.5 s" in r["reason"] and "never accepted" in r["reason"]


def test_provider_unavailable_then_accepted_is_sent(store):
    [mid] = make_messages(store, 1)
    sender = RecordingSender("email", script=[ProviderUnavailable("429"), None])
    w = worker(store, sender)
    try:
        w.handle(send_job([mid]))
    finally:
        w.close()
    assert len(sender.calls) == 2
    assert row(store, mid)["status"] == "sent"
    assert row(store, mid)["attempts"] == 1  # one claim, two provider calls


@pytest.mark.parametrize(
    "error",
    [
        ProviderOutcomeUnknown("SendGrid did not answer in time"),
        ProviderError("something the provider said"),
        RuntimeError("socket exploded"),
    ],
    ids=["outcome-unknown", "provider-error", "unexpected"],
)
def test_an_unknown_outcome_is_never_retried(store, error):
    [mid] = make_messages(store, 1)
    sender = RecordingSender("email", script=[error])
    sleeps = Sleeps()
    w = worker(store, sender, attempts=5, sleeps=sleeps)
    try:
        w.handle(send_job([mid]))
        w.handle(send_job([mid]))  # a redelivered job does not resend either
    finally:
        w.close()
    assert len(sender.calls) == 1
    assert sleeps.calls == []
    r = row(store, mid)
    assert r["status"] == "unknown"
    assert str(error) in r["reason"]


def test_a_rejection_is_failed_without_retry(store):
    [mid] = make_messages(store, 1)
    sender = RecordingSender("email", script=[ProviderRejected("refused (400): bad address")])
    w = worker(store, sender, attempts=5)
    try:
        w.handle(send_job([mid]))
    finally:
        w.close()
    assert len(sender.calls) == 1
    r = row(store, mid)
    assert r["status"] == "failed"
    assert "bad address" in r["reason"]


def test_a_channel_without_a_sender_fails_with_a_reason(store):
    [mid] = make_messages(store, 1)
    w = SendWorker(store, {}, concurrency=1)
    try:
        w.handle(send_job([mid]))
    finally:
        w.close()
    r = row(store, mid)
    assert r["status"] == "failed"
    assert "email" in r["reason"]


def test_handling_the_same_job_twice_sends_once(store):
    ids = make_messages(store, 4)
    sender = RecordingSender("email")
    w = worker(store, sender)
    try:
        assert w.handle(send_job(ids)) == {"sent": 4}
        assert w.handle(send_job(ids)) == {}
    finally:
        w.close()
    assert len(sender.calls) == 4
    assert store.duplicate_sends(PARTITION) == []


def test_only_queued_messages_of_a_job_are_sent(store):
    queued = make_messages(store, 2, prefix="q")
    suppressed = make_messages(store, 2, status=MessageStatus.SUPPRESSED, prefix="s")
    sender = RecordingSender("email")
    w = worker(store, sender)
    try:
        w.handle(send_job(queued + suppressed))
    finally:
        w.close()
    assert sorted(m.message_id for m in sender.calls) == queued
    assert {row(store, m)["status"] for m in suppressed} == {"suppressed"}


# -- render workers ------------------------------------------------------------------------------
def _candidates_of_window(env, index: int = 0):
    from darwin_notify_assets.domain.pipeline import (
        load_schedules,
        stage_agent_totals,
        stage_candidates,
        stage_change_window,
    )

    env.apply(index)
    rt = env.runtime()
    window = env.window(index)
    loaded = load_schedules(rt.replica)
    stage_change_window(rt, window, loaded)
    stage_agent_totals(rt, window)
    stage_candidates(rt, window, loaded)
    ids = [
        r["candidate_id"]
        for r in env.store_rows(
            "SELECT candidate_id FROM candidate WHERE partition_key = ? ORDER BY 1",
            [window.partition_key],
        )
    ]
    return loaded, ids


def test_a_render_job_fetches_merge_fields_with_one_statement_per_table(embedded_env):
    import re

    env = embedded_env
    loaded, ids = _candidates_of_window(env)
    assert len(ids) > 5
    replica = env.replica()
    worker = RenderWorker(replica, env.store(), loaded.schedules, loaded.templates, 5)
    statements: list[str] = []
    replica.db.conn.set_trace_callback(statements.append)
    inserted = worker.handle(Job(JobKind.RENDER, env.key(0), tuple(ids)))
    replica.db.conn.set_trace_callback(None)
    assert inserted == len(ids)
    per_table: dict[str, int] = {}
    for s in statements:
        for table in re.findall(r'FROM "(\w+)"', s):
            per_table[table] = per_table.get(table, 0) + 1
    # deals and their related properties (relations.related) among them
    assert {"Deal", "Property", "Agent", "Office", "People"} <= set(per_table), per_table
    assert max(per_table.values()) == 1, per_table
    assert worker.handle(Job(JobKind.RENDER, env.key(0), tuple(ids))) == 0


def test_a_render_worker_reloads_when_a_job_names_an_unknown_schedule(embedded_env):
    from darwin_notify_assets.domain.schedules import ScheduleSet

    env = embedded_env
    loaded, ids = _candidates_of_window(env)
    # the worker started before schedule 1 existed
    older = ScheduleSet(
        tuple(s for s in loaded.schedules.schedules if s.schedule_id != 1),
        loaded.schedules.templates,
    )
    reloads: list[int] = []

    def reload():
        reloads.append(1)
        return loaded.schedules, loaded.templates

    worker = RenderWorker(
        env.replica(), env.store(), older, loaded.templates, 5, reload=reload, reload_every=3600
    )
    worker.handle(Job(JobKind.RENDER, env.key(0), tuple(ids)))
    assert reloads == [1]
    failed = env.store_rows(
        "SELECT m.reason FROM message m JOIN candidate c ON c.candidate_id = m.candidate_id "
        "WHERE c.schedule_id = 1 AND m.status = 'render_failed'"
    )
    assert failed == []
    assert env.store_rows("SELECT 1 FROM candidate WHERE schedule_id = 1")
