"""The store's message state machine (conditional transitions, an append-only history), and
change decisions that are made once."""

import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pyodbc
import pytest

from darwin_notify_assets.delivery.rules import SendRules
from darwin_notify_assets.domain import zones
from darwin_notify_assets.domain.messages import INITIAL_STATUSES, MessageStatus, is_allowed
from darwin_notify_assets.errors import InvalidTransition
from darwin_notify_assets.storage.store import (
    CandidateRow,
    ChangeEvent,
    NotificationStore,
    OutboundMessage,
    utcnow,
)
from darwin_notify_tests.conftest import PARTITION, make_messages
from darwin_notify_tests.mssql.server import STORE_DIALECTS, dialect_store


@pytest.fixture(params=STORE_DIALECTS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotificationStore]:
    """An empty store: a SQLite file, and the SQL Server of the executed tier when one is
    named (``make test-mssql``); every test of this module runs on each."""
    with dialect_store(request.param, tmp_path / "store.db") as s:
        yield s


def status_of(store: NotificationStore, message_id: int) -> str:
    return store.db.scalar("SELECT status FROM message WHERE message_id = ?", [message_id])


def history(store: NotificationStore, message_id: int) -> list[tuple]:
    return store.db.query(
        "SELECT from_status, to_status, reason FROM message_event WHERE message_id = ? "
        "ORDER BY message_event_id",
        [message_id],
    )


def test_inserting_a_message_records_its_first_history_row(store):
    [mid] = make_messages(store, 1)
    assert status_of(store, mid) == "queued"
    assert history(store, mid) == [(None, "queued", None)]


def test_inserting_the_same_messages_again_changes_nothing(store):
    ids = make_messages(store, 3)
    before = store.db.query("SELECT * FROM message ORDER BY message_id")
    events_before = store.db.query("SELECT * FROM message_event ORDER BY message_event_id")
    again = store.insert_messages(
        [
            OutboundMessage(
                candidate_id=int(r[1]),
                candidate_key=r[2],
                partition_key=PARTITION,
                channel="email",
                status=MessageStatus.SUPPRESSED,
                reason="other",
            )
            for r in before
        ]
    )
    assert again == 0
    assert store.db.query("SELECT * FROM message ORDER BY message_id") == before
    assert store.db.query("SELECT * FROM message_event ORDER BY message_event_id") == events_before
    assert [status_of(store, m) for m in ids] == ["queued"] * 3


def test_claim_moves_queued_to_sending_and_a_second_claim_gets_nothing(store):
    ids = make_messages(store, 4)
    first = store.claim(ids)
    assert sorted(m.message_id for m in first) == sorted(ids)
    assert all(m.status == MessageStatus.SENDING for m in first)
    assert store.mark_requested(first[0].claim_token, ids) == ids
    assert store.claim(ids) == []
    assert [status_of(store, m) for m in ids] == ["sending"] * 4
    attempts = store.db.query("SELECT attempts FROM message ORDER BY message_id")
    assert [a for (a,) in attempts] == [1, 1, 1, 1]
    for mid in ids:
        assert history(store, mid) == [(None, "queued", None), ("queued", "sending", None)]


@pytest.mark.parametrize(
    "status",
    [MessageStatus.SUPPRESSED, MessageStatus.RENDER_FAILED],
)
def test_claim_takes_only_queued_messages(store, status):
    queued = make_messages(store, 2, prefix="q")
    other = make_messages(store, 2, status=status, prefix="o")
    claimed = store.claim(queued + other)
    assert sorted(m.message_id for m in claimed) == sorted(queued)
    assert [status_of(store, m) for m in other] == [str(status)] * 2


def test_claim_of_a_subset_leaves_the_rest_queued(store):
    ids = make_messages(store, 3)
    claimed = store.claim(ids[:1])
    assert [m.message_id for m in claimed] == ids[:1]
    assert [status_of(store, m) for m in ids] == ["sending", "queued", "queued"]


def test_finish_records_outcomes_of_sending_messages(store):
    ids = make_messages(store, 3)
    store.claim(ids)
    not_changed = store.finish(
        [
            (ids[0], MessageStatus.SENT, None, "prov-1"),
            (ids[1], MessageStatus.FAILED, "refused (400)", None),
            (ids[2], MessageStatus.UNKNOWN, "timed out", None),
        ]
    )
    assert not_changed == []
    assert [status_of(store, m) for m in ids] == ["sent", "failed", "unknown"]
    assert history(store, ids[1])[-1] == ("sending", "failed", "refused (400)")
    row = store.db.query_dicts("SELECT * FROM message WHERE message_id = ?", [ids[0]])[0]
    assert row["provider_message_id"] == "prov-1"


def test_finish_changes_nothing_unless_the_message_is_sending(store):
    queued = make_messages(store, 1, prefix="q")
    done = make_messages(store, 1, prefix="d")
    store.claim(done)
    store.finish([(done[0], MessageStatus.SENT, None, "p")])
    history_before = history(store, done[0])
    not_changed = store.finish(
        [(queued[0], MessageStatus.SENT, None, "x"), (done[0], MessageStatus.FAILED, "late", None)]
    )
    assert sorted(not_changed) == sorted(queued + done)
    assert status_of(store, queued[0]) == "queued"
    assert status_of(store, done[0]) == "sent"
    assert history(store, queued[0]) == [(None, "queued", None)]
    assert history(store, done[0]) == history_before


@pytest.mark.parametrize(
    ("expected", "new"),
    [
        (MessageStatus.SENDING, MessageStatus.SENT),
        (MessageStatus.SENDING, MessageStatus.FAILED),
        (MessageStatus.SENDING, MessageStatus.UNKNOWN),
    ],
)
def test_transition_from_a_wrong_state_raises(store, expected, new):
    [mid] = make_messages(store, 1)
    with pytest.raises(InvalidTransition, match="is not sending"):
        store.transition(mid, expected, new, "nope")
    assert status_of(store, mid) == "queued"
    assert history(store, mid) == [(None, "queued", None)]


def test_transition_appends_history(store):
    [mid] = make_messages(store, 1)
    store.claim([mid])
    store.transition(mid, MessageStatus.SENDING, MessageStatus.UNKNOWN, "no answer")
    assert status_of(store, mid) == "unknown"
    assert history(store, mid) == [
        (None, "queued", None),
        ("queued", "sending", None),
        ("sending", "unknown", "no answer"),
    ]


def message_in(store: NotificationStore, status: MessageStatus) -> int:
    """One message brought into ``status`` the way the pipeline brings it there."""
    if status in INITIAL_STATUSES:
        [mid] = make_messages(store, 1, status=status, prefix=f"{status}-")
        return mid
    [mid] = make_messages(store, 1, prefix=f"{status}-")
    if status == MessageStatus.DEFERRED:
        # the claim defers it: claimed at 23:00 UTC, inside quiet hours
        rules = SendRules.from_values({"email": "21:00-08:00"}, {})
        assert store.claim([mid], rules, now_utc=utcnow().replace(hour=23)) == []
        assert status_of(store, mid) == str(status)
        return mid
    store.claim([mid])
    if status != MessageStatus.SENDING:
        assert store.finish([(mid, status, None, None)]) == []
    assert status_of(store, mid) == str(status)
    return mid


ALLOWED = [(a, b) for a in MessageStatus for b in MessageStatus if is_allowed(a, b)]
FORBIDDEN = [(a, b) for a in MessageStatus for b in MessageStatus if not is_allowed(a, b)]


def test_the_table_allows_exactly_the_send_path():
    assert sorted(ALLOWED) == sorted(
        [
            (MessageStatus.QUEUED, MessageStatus.SENDING),
            (MessageStatus.QUEUED, MessageStatus.SUPPRESSED),
            (MessageStatus.QUEUED, MessageStatus.DEFERRED),
            (MessageStatus.DEFERRED, MessageStatus.QUEUED),
            (MessageStatus.SENDING, MessageStatus.SENT),
            (MessageStatus.SENDING, MessageStatus.FAILED),
            (MessageStatus.SENDING, MessageStatus.UNKNOWN),
            (MessageStatus.SENDING, MessageStatus.QUEUED),
            (MessageStatus.UNKNOWN, MessageStatus.SENT),
            (MessageStatus.UNKNOWN, MessageStatus.FAILED),
        ]
    )
    assert len(FORBIDDEN) == len(MessageStatus) ** 2 - len(ALLOWED)


@pytest.mark.parametrize(("current", "new"), ALLOWED, ids=lambda s: str(s))
def test_every_allowed_transition_is_made(store, current, new):
    mid = message_in(store, current)
    before = history(store, mid)
    store.transition(mid, current, new, "why")
    assert status_of(store, mid) == str(new)
    assert history(store, mid) == [*before, (str(current), str(new), "why")]


@pytest.mark.parametrize(("current", "new"), FORBIDDEN, ids=lambda s: str(s))
def test_every_forbidden_transition_raises_and_changes_nothing(store, current, new):
    mid = message_in(store, current)
    before = history(store, mid)
    with pytest.raises(InvalidTransition, match="not an allowed transition"):
        store.transition(mid, current, new, "forbidden")
    assert status_of(store, mid) == str(current)
    assert history(store, mid) == before


def test_a_sent_message_cannot_be_queued_and_sent_again(store):
    mid = message_in(store, MessageStatus.SENT)
    with pytest.raises(InvalidTransition):
        store.transition(mid, MessageStatus.SENT, MessageStatus.QUEUED, "again")
    assert store.claim([mid]) == []
    assert status_of(store, mid) == "sent"


@pytest.mark.parametrize(
    "status", [s for s in MessageStatus if not is_allowed(MessageStatus.SENDING, s)]
)
def test_finish_refuses_an_outcome_sending_cannot_become(store, status):
    ids = make_messages(store, 2)
    store.claim(ids)
    with pytest.raises(InvalidTransition, match="not an allowed transition"):
        store.finish([(ids[0], MessageStatus.SENT, None, "p"), (ids[1], status, None, None)])
    # nothing of the batch was written, not even its allowed outcome
    assert [status_of(store, m) for m in ids] == ["sending", "sending"]
    assert all(len(history(store, m)) == 2 for m in ids)


@pytest.mark.parametrize("status", [s for s in MessageStatus if s not in INITIAL_STATUSES])
def test_insert_refuses_a_status_no_message_is_created_in(store, status):
    with pytest.raises(InvalidTransition, match="cannot be created as"):
        make_messages(store, 1, status=status)
    assert store.db.scalar("SELECT COUNT(*) FROM message") == 0
    assert store.db.scalar("SELECT COUNT(*) FROM message_event") == 0


def test_the_schema_rejects_a_status_outside_the_enum(store):
    [mid] = make_messages(store, 1)
    with pytest.raises((sqlite3.IntegrityError, pyodbc.IntegrityError), match="(?i)check"):
        store.db.execute("UPDATE message SET status = 'bogus' WHERE message_id = ?", [mid])
    store.db.rollback()
    row = store.db.query("SELECT candidate_id, candidate_key FROM message")[0]
    now = store.db.ts(utcnow())
    with pytest.raises((sqlite3.IntegrityError, pyodbc.IntegrityError), match="(?i)check"):
        store.db.execute(
            "INSERT INTO message (candidate_id, candidate_key, partition_key, channel, status, "
            "attempts, created_at, updated_at) VALUES (?, ?, ?, 'email', 'bogus', 0, ?, ?)",
            [row[0] + 1, row[1] + "-other", PARTITION, now, now],
        )
    store.db.rollback()
    assert status_of(store, mid) == "queued"


def test_a_claim_never_handed_to_the_provider_is_claimed_again_and_the_old_one_cannot_send(
    store,
):
    ids = make_messages(store, 4)
    first = store.claim(ids)
    old = first[0].claim_token
    assert store.mark_requested(old, ids[:1]) == ids[:1]
    second = store.claim(ids)
    assert sorted(m.message_id for m in second) == ids[1:]
    new = second[0].claim_token
    assert new != old
    # the dead claim's stamp loses: only the new claim may send them
    assert store.mark_requested(old, ids[1:]) == []
    assert store.mark_requested(new, ids) == ids[1:]
    assert store.claim(ids) == []
    attempts = store.db.query("SELECT attempts FROM message ORDER BY message_id")
    assert [a for (a,) in attempts] == [1, 2, 2, 2]
    assert history(store, ids[1])[-1][:2] == ("sending", "sending")


def test_a_claim_of_queued_messages_only_looks_for_dead_claims_when_some_were_not_queued(
    store, monkeypatch
):
    ids = make_messages(store, 6)
    executed: list[str] = []
    real = store.db.execute
    monkeypatch.setattr(
        store.db, "execute", lambda sql, *a: (executed.append(sql), real(sql, *a))[1]
    )
    first = store.claim(ids[:3])
    assert [m.message_id for m in first] == ids[:3]
    assert not any("requested_at IS NULL" in sql for sql in executed)
    # a dead claim's unstamped messages beside queued ones: each claimed once by this claim
    executed.clear()
    second = store.claim(ids)
    assert [m.message_id for m in second] == ids
    assert any("requested_at IS NULL" in sql for sql in executed)
    attempts = store.db.query("SELECT attempts FROM message ORDER BY message_id")
    assert [a for (a,) in attempts] == [2, 2, 2, 1, 1, 1]
    assert history(store, ids[0])[-1][:2] == ("sending", "sending")
    assert history(store, ids[3]) == [(None, "queued", None), ("queued", "sending", None)]


def test_expire_sending_requeues_claims_never_handed_to_the_provider(store):
    ids = make_messages(store, 3)
    claimed = store.claim(ids)
    token = claimed[0].claim_token
    store.mark_requested(token, ids[:1])
    expired = store.expire_sending(utcnow() + timedelta(seconds=1), PARTITION)
    assert sorted(expired) == ids
    assert [status_of(store, m) for m in ids] == ["unknown", "queued", "queued"]
    assert [h[:2] for h in history(store, ids[1])][-1] == ("sending", "queued")
    # the dead claim can no longer stamp them; a new claim sends them
    assert store.mark_requested(token, ids[1:]) == []
    again = store.claim(ids)
    assert sorted(m.message_id for m in again) == ids[1:]


def test_expire_sending_turns_stale_claims_into_unknown_never_queued(store):
    stale = make_messages(store, 2, prefix="s")
    fresh_queued = make_messages(store, 1, prefix="f")
    store.mark_requested(store.claim(stale)[0].claim_token, stale)
    expired = store.expire_sending(utcnow() + timedelta(seconds=1), PARTITION)
    assert sorted(expired) == stale
    for mid in stale:
        assert status_of(store, mid) == "unknown"
        reason = store.db.scalar("SELECT reason FROM message WHERE message_id = ?", [mid])
        assert reason and "no outcome" in reason
        assert [h[:2] for h in history(store, mid)] == [
            (None, "queued"),
            ("queued", "sending"),
            ("sending", "unknown"),
        ]
    assert status_of(store, fresh_queued[0]) == "queued"
    # never back to queued: a later claim or expiry does not touch them
    assert store.claim(stale) == []
    assert store.expire_sending(utcnow() + timedelta(seconds=1), PARTITION) == []
    assert [status_of(store, m) for m in stale] == ["unknown", "unknown"]


def test_expire_sending_leaves_recent_claims_and_other_partitions(store):
    here = make_messages(store, 1, prefix="h")
    there = make_messages(store, 1, partition="2026-03-02-14:05", prefix="t")
    claimed = store.claim(here + there)
    store.mark_requested(claimed[0].claim_token, here + there)
    assert store.expire_sending(utcnow() - timedelta(minutes=5), PARTITION) == []
    assert store.expire_sending(utcnow() + timedelta(seconds=1), PARTITION) == here
    assert status_of(store, there[0]) == "sending"


def test_duplicate_sends_are_found_from_the_history(store):
    ids = make_messages(store, 2)
    store.claim(ids)
    store.finish([(m, MessageStatus.SENT, None, "p") for m in ids])
    assert store.duplicate_sends(PARTITION) == []
    # a second 'sent' transition for the same message, as a double send would leave it
    store.db.insert_rows(
        "message_event",
        ("message_id", "from_status", "to_status", "reason", "at"),
        [(ids[0], "sending", "sent", None, "2026-03-02 14:00:00.000000")],
    )
    store.db.commit()
    assert store.duplicate_sends(PARTITION) == ["k0"]


def test_candidates_are_inserted_if_absent(store):
    row = CandidateRow(
        candidate_key="s1|Property:1|contact:1",
        partition_key=PARTITION,
        schedule_id=1,
        channel="email",
        event_id=1,
        source_table="Property",
        record_id=1,
        agent_id=1,
        recipient_kind="contact",
        recipient_id=1,
        uses_totals=False,
    )
    assert store.insert_candidates([row]) == 1
    assert store.insert_candidates([row]) == 0
    assert store.insert_candidates([row.__class__(**{**row.__dict__, "partition_key": "x"})]) == 0
    assert store.candidate_count(PARTITION) == 1


def _change(key: str, partition: str = PARTITION) -> ChangeEvent:
    return ChangeEvent(
        event_key=key,
        partition_key=partition,
        schedule_id=4,
        source_table="People",
        record_id=138,
        event_type="insert",
        version="2026-03-02 14:25:43.000000",
        agent_id=1,
        contact_id=138,
        old_values=None,
        row_values=None,
    )


def _save(store: NotificationStore, fired=(), skipped=()) -> int:
    return store.save_detection(list(fired), {}, (), (), (), (), skipped=list(skipped))


def test_a_change_decided_against_is_not_recorded_as_an_event_later(store):
    decided, other = _change("People:138:s4:insert:v"), _change("People:139:s4:insert:v")
    assert _save(store, skipped=[decided]) == 0
    assert _save(store, fired=[_change(decided.event_key, "later"), other]) == 1
    rows = store.db.query("SELECT event_key FROM change_event")
    assert rows == [(other.event_key,)]
    assert store.decided_event_keys([decided.event_key, other.event_key, "unseen"]) == {
        decided.event_key,
        other.event_key,
    }
    decisions = store.db.query(
        "SELECT event_key, partition_key, fired FROM change_decision ORDER BY event_key"
    )
    assert decisions == [(decided.event_key, PARTITION, 0), (other.event_key, PARTITION, 1)]


def test_a_change_that_fired_keeps_its_event_when_a_later_read_decides_against(store):
    fired = _change("People:138:s4:insert:v")
    assert _save(store, fired=[fired]) == 1
    assert _save(store, skipped=[_change(fired.event_key, "later")]) == 0
    assert _save(store, fired=[_change(fired.event_key, "later")]) == 0
    assert store.db.query("SELECT event_key, partition_key FROM change_event") == [
        (fired.event_key, PARTITION)
    ]
    assert store.db.query("SELECT fired FROM change_decision") == [(1,)]


def test_totals_count_a_deal_in_the_year_of_the_agent_s_zone(store):
    # 02:00 UTC on January 1 is still December 31 in New York: a deal posted then is of the
    # year before there, of the new year in UTC
    new_year = datetime(2027, 1, 1)
    deals = [
        (1, 1, new_year + timedelta(hours=2), Decimal("100.00"), Decimal("3.00")),
        (2, 1, new_year - timedelta(days=30), Decimal("200.00"), Decimal("6.00")),
        (3, 2, new_year + timedelta(hours=2), Decimal("400.00"), Decimal("12.00")),
        (4, 2, new_year - timedelta(days=30), Decimal("800.00"), Decimal("24.00")),
    ]
    listings = [(1, 1, "Active"), (2, 2, "Active"), (3, 2, "Sold")]
    store.save_detection([], {}, deals, listings, [], [(PARTITION, 1), (PARTITION, 2)])
    through = new_year + timedelta(hours=3)
    york = zones.year_start(ZoneInfo("America/New_York"), through)
    assert york == (2026, datetime(2026, 1, 1, 5))
    # agent 1 counts in New York's year, agent 2 in UTC's (the default)
    assert store.recompute_totals([1, 2], through, "Active", {1: york}) == 2
    totals = store.totals([1, 2])
    assert (totals[1].year, totals[1].units_ytd, totals[1].volume_ytd) == (
        2026,
        2,
        Decimal("300.00"),
    )
    assert (totals[2].year, totals[2].units_ytd, totals[2].volume_ytd) == (
        2027,
        1,
        Decimal("400.00"),
    )
    assert (totals[1].active_listings, totals[2].active_listings) == (1, 1)
    # without zones, both are UTC years
    store.recompute_totals([1, 2], through, "Active")
    assert store.totals([1])[1].units_ytd == 1
