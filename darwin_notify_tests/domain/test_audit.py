"""The audit: every missed, open, unknown or duplicate notification of a window, by key."""

from datetime import timedelta

import pytest

from darwin_notify_assets.domain.audit import audit_report
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.storage.store import (
    CandidateRow,
    NotificationStore,
    OutboundMessage,
    utcnow,
)
from darwin_notify_tests.conftest import EmbeddedEnv


def add_candidate(store: NotificationStore, key: str, partition: str, status=None) -> int | None:
    """A candidate (and, with ``status``, its message); returns the message id."""
    store.insert_candidates(
        [
            CandidateRow(
                candidate_key=key,
                partition_key=partition,
                schedule_id=1,
                channel="email",
                event_id=999_999,
                source_table="Property",
                record_id=999_999,
                agent_id=1,
                recipient_kind="contact",
                recipient_id=1,
                uses_totals=False,
            )
        ]
    )
    if status is None:
        return None
    cid = store.db.scalar("SELECT candidate_id FROM candidate WHERE candidate_key = ?", [key])
    store.insert_messages(
        [
            OutboundMessage(
                candidate_id=int(cid),
                candidate_key=key,
                partition_key=partition,
                channel="email",
                status=status,
                to_address="a@example.com",
                subject="s",
                text_body="t",
            )
        ]
    )
    mid = store.db.scalar("SELECT message_id FROM message WHERE candidate_key = ?", [key])
    store.db.commit()
    return int(mid)


@pytest.fixture
def audited(embedded_env) -> EmbeddedEnv:
    result = embedded_env.run_window(0)
    assert result.success
    return embedded_env


def test_a_processed_window_audits_clean(audited):
    env = audited
    report = audit_report(env.store(), [env.key(0)])
    assert report.clean
    [w] = report.windows
    assert w.partition_key == env.key(0)
    assert w.missed == [] and w.unknown == [] and report.duplicates == []
    messages = env.store_rows("SELECT status FROM message WHERE partition_key = ?", [env.key(0)])
    assert w.messages == len(messages)
    assert w.outcomes == {
        s: sum(1 for m in messages if m["status"] == s) for s in {m["status"] for m in messages}
    }
    assert w.candidates == len(
        env.store_rows("SELECT 1 FROM candidate WHERE partition_key = ?", [env.key(0)])
    )
    assert w.claimed == w.outcomes.get("sent", 0)
    assert report.lines()[-1].startswith("1 windows; 0 missed, 0 duplicates, 0 unknown")


def test_the_audit_lists_missed_open_and_unknown_keys(audited):
    env = audited
    key = env.key(0)
    store = env.store()
    add_candidate(store, "s1|Property:999999|contact:1", key)  # never rendered
    add_candidate(store, "s1|Property:999999|contact:2", key, MessageStatus.QUEUED)  # never sent
    stuck = add_candidate(store, "s1|Property:999999|contact:3", key, MessageStatus.QUEUED)
    store.mark_requested(store.claim([stuck])[0].claim_token, [stuck])
    store.expire_sending(utcnow() + timedelta(seconds=1), key)
    report = audit_report(store, [key])
    [w] = report.windows
    assert sorted(w.missed) == ["s1|Property:999999|contact:1", "s1|Property:999999|contact:2"]
    assert w.unknown == ["s1|Property:999999|contact:3"]
    assert not report.clean
    lines = report.lines()
    assert f"MISSED  {key}  s1|Property:999999|contact:1" in lines
    assert f"UNKNOWN {key}  s1|Property:999999|contact:3" in lines
    assert report.as_dict()["clean"] is False


def test_the_audit_lists_duplicate_sends(audited):
    env = audited
    store = env.store()
    [sent] = env.store_rows(
        "SELECT message_id, candidate_key FROM message WHERE status = 'sent' LIMIT 1"
    )
    store.db.insert_rows(
        "message_event",
        ("message_id", "from_status", "to_status", "reason", "at"),
        [(sent["message_id"], "sending", "sent", None, "2026-03-02 14:06:00.000000")],
    )
    store.db.commit()
    report = audit_report(store, [env.key(0)])
    assert report.duplicates == [sent["candidate_key"]]
    assert not report.clean
    assert f"DUPLICATE {sent['candidate_key']}" in report.lines()


def test_without_partitions_the_audit_covers_every_window_with_candidates(audited):
    env = audited
    other = env.key(2)
    add_candidate(env.store(), "s4|People:999999|contact:999999", other)
    report = audit_report(env.store(), [])
    assert [w.partition_key for w in report.windows] == [env.key(0), other]
    only_since = audit_report(env.store(), [], since=env.key(1))
    assert [w.partition_key for w in only_since.windows] == [other]
    only_until = audit_report(env.store(), [], until=env.key(1))
    assert [w.partition_key for w in only_until.windows] == [env.key(0)]
