"""The store's named statements on PostgreSQL: the state machine, the status CHECK, and each
bulk and listed statement, in a schema of their own on the integration tier's store server."""

from collections.abc import Iterator
from datetime import datetime, timedelta

import pyodbc
import pytest

from darwin_notify_assets.domain.messages import MessageStatus, is_allowed
from darwin_notify_assets.errors import InvalidTransition
from darwin_notify_assets.storage.store import CandidateRow, ChangeEvent, NotificationStore, utcnow
from darwin_notify_tests.conftest import make_messages
from darwin_notify_tests.integration.conftest import schema_store

pytestmark = pytest.mark.integration

PARTITION = "2026-03-02-14:00"


@pytest.fixture
def store(services: dict[str, str]) -> Iterator[NotificationStore]:
    with schema_store(services["DARWIN_NOTIFY_STORE_URL"], "store_probe") as s:
        s.ensure_schema()
        s.ensure_schema()  # re-runnable: the constraint of an existing table is kept
        yield s


def status_of(store: NotificationStore, mid: int) -> str:
    value = store.db.scalar("SELECT status FROM message WHERE message_id = ?", [mid])
    store.db.commit()
    return value


def test_the_schema_rejects_a_status_outside_the_enum(store):
    [mid] = make_messages(store, 1, partition=PARTITION)
    with pytest.raises(pyodbc.Error) as caught:
        store.db.execute("UPDATE message SET status = 'bogus' WHERE message_id = ?", [mid])
    store.db.rollback()
    assert "23514" in str(caught.value) and "message_status_known" in str(caught.value)
    assert status_of(store, mid) == "queued"
    checks = store.db.scalar(
        "SELECT COUNT(*) FROM pg_constraint WHERE conname = 'message_status_known' "
        "AND conrelid = CAST('message' AS regclass)"
    )
    store.db.commit()
    assert checks == 1


def test_every_forbidden_transition_raises_on_postgresql(store):
    ids = make_messages(store, 2, partition=PARTITION)
    store.claim(ids[:1])
    for current, mid in ((MessageStatus.SENDING, ids[0]), (MessageStatus.QUEUED, ids[1])):
        for new in MessageStatus:
            if is_allowed(current, new):
                continue
            with pytest.raises(InvalidTransition, match="not an allowed transition"):
                store.transition(mid, current, new, "forbidden")
            assert status_of(store, mid) == str(current)


def test_the_send_path_and_the_audit_queries(store):
    ids = make_messages(store, 5, partition=PARTITION)
    assert store.open_message_count(PARTITION) == 5
    claimed = store.claim(ids)
    assert store.mark_requested(claimed[0].claim_token, ids[:4]) == ids[:4]
    # the one never handed to the provider may be claimed again, by a new claim only
    [again] = store.claim(ids)
    assert again.message_id == ids[4] and again.claim_token != claimed[0].claim_token
    assert store.mark_requested(claimed[0].claim_token, ids[4:]) == []
    assert store.mark_requested(again.claim_token, ids[4:]) == ids[4:]
    assert [m.message_id for m in claimed] == ids and store.claim(ids) == []
    not_changed = store.finish(
        [
            (ids[0], MessageStatus.SENT, None, "p-0"),
            (ids[1], MessageStatus.FAILED, "refused (400)", None),
            (ids[2], MessageStatus.UNKNOWN, "timed out", None),
        ]
    )
    assert not_changed == []
    assert store.finish([(ids[0], MessageStatus.SENT, None, "again")]) == [ids[0]]
    assert store.expire_sending(utcnow() + timedelta(seconds=1), PARTITION) == ids[3:]
    assert store.status_counts(PARTITION) == {"sent": 1, "failed": 1, "unknown": 3}
    assert store.open_message_count(PARTITION) == 0
    assert [m["message_id"] for m in store.messages(PARTITION, ["unknown"])] == [ids[2], *ids[3:]]
    assert len(store.messages()) == 5
    assert store.duplicate_sends(PARTITION) == [] and store.duplicate_sends() == []
    assert store.missing_messages(PARTITION) == []
    assert store.candidate_windows() == [PARTITION]
    assert store.candidate_windows(PARTITION, None) == [PARTITION]
    assert store.candidate_windows(None, "2026-03-02-13:55") == []


def test_detection_candidates_and_totals_round_trip(store):
    now = datetime(2026, 3, 2, 14, 3)
    events = [
        ChangeEvent(f"e{i}", PARTITION, 1, "Property", i, "insert", "v1", 7, None, None, {"i": i})
        for i in range(12)
    ]
    deals = [(1, 7, now, 100000, 3000), (2, 7, now, 50000, 1500)]
    args = ({("Property", 1): {"Price": 1}}, deals, [(1, 7, "Active")], [], [(PARTITION, 7)])
    assert store.save_detection(events, *args) == 12
    assert store.save_detection(events, {("Property", 1): {"Price": 2}}, *args[1:]) == 0
    assert store.snapshots("Property", [1, 2]) == {1: {"Price": 2}}
    assert store.known_event_keys(["e0", "e11", "x"]) == {"e0", "e11"}
    assert [len(page) for page in store.stream_events(PARTITION, 5)] == [5, 5, 2]
    assert store.recompute_totals(store.window_agents(PARTITION), now, "Active") == 1
    totals = store.totals([7])[7]
    assert (totals.units_ytd, str(totals.volume_ytd), totals.active_listings) == (2, "150000.00", 1)
    store.save_detection([], {}, [], [], [("deal", 2), ("listing", 1)], [])
    store.recompute_totals([7], now, "Active")
    assert store.totals([7])[7].units_ytd == 1 and store.totals([7])[7].active_listings == 0
    candidates = [
        CandidateRow(f"c{i}", PARTITION, 1, "email", i + 1, "Property", i, 7, "contact", i, True)
        for i in range(12)
    ]
    created: list[list[int]] = []
    assert store.insert_candidates(candidates, [1, 2, 3], on_inserted=created.append) == 12
    assert store.insert_candidates(candidates) == 0
    assert len(created) == 1 and len(created[0]) == 12
    assert store.candidate_count(PARTITION) == 12 and store.unrendered_count(PARTITION) == 12
    assert [len(page) for page in store.stream_events(PARTITION, 100)] == [9]


def test_a_store_with_integer_record_ids_is_upgraded_to_text_and_keeps_its_rows(
    store: NotificationStore,
) -> None:
    db = store.db
    # A store created before keys could be composite had bigint record ids.
    with db.transaction():
        for table in ("change_event", "record_snapshot", "candidate"):
            db.execute(
                f"ALTER TABLE {table} ALTER COLUMN record_id TYPE BIGINT USING record_id::bigint"
            ).close()
        db.execute(
            "INSERT INTO record_snapshot VALUES ('crm.Listing', 42, '{\"a\": 1}', ?)", [utcnow()]
        ).close()
    assert store.column_type("record_snapshot", "record_id") == "bigint"
    store.ensure_schema()
    for table in ("change_event", "record_snapshot", "candidate"):
        assert store.column_type(table, "record_id") == "text", table
    assert store.snapshots("crm.Listing", [42]) == {42: {"a": 1}}
    event = ChangeEvent(
        "crm.Showing:[3,1]:s28:insert:v",
        PARTITION,
        28,
        "crm.Showing",
        "[3,1]",
        "insert",
        "v",
        2,
        5,
        None,
        None,
    )
    store.save_detection([event], {("crm.Showing", "[3,1]"): {"b": 2}}, (), (), (), ())
    assert store.snapshots("crm.Showing", ["[3,1]", "[3,2]"]) == {"[3,1]": {"b": 2}}
    (loaded,) = next(store.stream_events(PARTITION, 10))
    assert loaded.record_id == "[3,1]"
