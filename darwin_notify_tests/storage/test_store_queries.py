"""Every named query of the store (``sql/<dialect>/store_queries.sql``) executed at least once,
through the store's own operations with rows as a window produces them: on SQLite in the unit
tier, so that the check follows every new query and every changed signature, and on the SQL
Server of the executed tier (``make test-mssql``) when one is named."""

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from darwin_notify_assets.delivery.rules import SendRules
from darwin_notify_assets.domain.delivery import DeliveryEvent, DeliveryStatus
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.errors import InvalidTransition
from darwin_notify_assets.storage.sqlfiles import read_queries
from darwin_notify_assets.storage.store import (
    CandidateRow,
    ChangeEvent,
    NotificationStore,
    OutboundMessage,
    utcnow,
)
from darwin_notify_tests.mssql.server import STORE_DIALECTS, dialect_store, is_babelfish

P1, P2 = "2026-03-02-14:00", "2026-03-02-14:05"

# Found on Babelfish 4.2: pyodbc asks the driver to describe each NULL parameter, ODBC Driver 18
# asks the server (sp_describe_undeclared_parameters), and where Babelfish cannot describe the
# statement (here upsert_suppression's DECLARE batch, with an address opt-out's NULL recipient)
# the failure silently rolls back the open transaction: the events recorded before it in the
# same call vanish. On Babelfish only, the bounce carries no address and the address opt-out is
# made on its own; on SQL Server the whole call runs as production makes it.


@pytest.fixture(params=STORE_DIALECTS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotificationStore]:
    """An empty store on each dialect of ``STORE_DIALECTS``."""
    with dialect_store(request.param, tmp_path / "store.db") as s:
        yield s


def _pattern(sql: str) -> re.Pattern[str]:
    """What a named query looks like once its {list} and {values} are filled in."""
    parts = re.split(r"\{list\}|\{values\}", sql)
    return re.compile(".+?".join(re.escape(p) for p in parts) + r"\Z", re.S)


def test_every_named_store_query_runs(store: NotificationStore) -> None:
    queries = read_queries(store.db.dialect, "store_queries.sql")
    patterns = {name: _pattern(sql) for name, sql in queries.items()}
    ran: list[str] = []
    db = store.db
    execute = db.execute

    def recording(sql: str, params: Any = ()) -> Any:
        ran.append(sql)
        return execute(sql, params)

    db.execute = recording  # type: ignore[method-assign]
    try:
        _exercise(store)
    finally:
        del db.execute
    used = {name for name, p in patterns.items() if any(p.match(s) for s in ran)}
    assert sorted(set(queries) - used) == []


def _exercise(store: NotificationStore) -> None:
    """Every store operation once, with rows as a window produces them, each bulk statement
    in one chunk (the chunking is ``test_one_statement_never_binds_more_than_the_server_takes``)."""
    now = utcnow()
    store.ping()
    assert store.column_type("change_event", "event_key") in ("text", "nvarchar")
    assert store.column_type("change_event", "no_such_column") is None
    store.save_snapshot("v1", '{"schedules": []}')
    store.save_snapshot("v1", '{"changed": true}')
    assert store.snapshot("v1") == '{"schedules": []}' and store.snapshot("v2") is None
    assert store.bind_run("run-1", "v1") == "v1" and store.bind_run("run-1", "v2") == "v1"
    assert store.run_version("run-1") == "v1"
    start = datetime(2026, 3, 2, 14, 0, 0, 123456)
    store.record_window(P1, start, start + timedelta(minutes=5), now, "streaming", 3)
    store.record_window(P1, start, start + timedelta(minutes=5), now, "streaming", 4)
    store.set_window_version(P1, "v1")
    info = store.window_info(P1)
    assert info is not None and info["rows_read"] == 4 and info["schedule_version"] == "v1"
    assert store.windows_between(start, start + timedelta(minutes=5)) == {P1}
    assert store.last_window() == P1
    n = 30
    events = [
        ChangeEvent(
            f"1:Property:{i}:v1",
            P1,
            1,
            "Property",
            i,
            "update",
            "v1",
            i % 10 + 1,
            i,
            {"Status": "Active"},
            {"Status": "Pending", "Name": "Zoë's"},
        )
        for i in range(n)
    ]
    skipped = [
        ChangeEvent(f"2:Deal:{i}:v1", P1, 2, "Deal", i, "insert", "v1", 1, None, None, {})
        for i in range(5)
    ]
    snapshots = {("Property", i): {"Status": "Pending", "ListPrice": "10.50"} for i in range(n)}
    deals = [(i, i % 10 + 1, start, Decimal("350000.00"), Decimal("8750.25")) for i in range(n)]
    listings = [(i, i % 10 + 1, "Active") for i in range(n)]
    agents = [(P1, a) for a in range(1, 11)]
    new = store.save_detection(events, snapshots, deals, listings, [], agents, skipped)
    assert new == n
    # the same again: the events are present, the ledgers replaced
    assert store.save_detection(events, snapshots, deals, listings, [], agents, skipped) == 0
    assert store.known_event_keys([e.event_key for e in events]) == {e.event_key for e in events}
    assert store.decided_event_keys([e.event_key for e in skipped]) == {
        e.event_key for e in skipped
    }
    assert store.snapshots("Property", [1, 2])[1]["ListPrice"] == "10.50"
    assert store.save_detection([], {}, [], [], [("deal", 1), ("listing", 1)], []) == 0
    assert sorted(store.window_agents(P1)) == list(range(1, 11))
    assert store.recompute_totals(list(range(1, 11)), start, "Active") == 10
    totals = store.totals([2])
    assert totals[2].units_ytd == len([d for d in deals if d[1] == 2 and d[0] != 1])
    pages = list(store.stream_events(P1, 12))
    assert sum(len(p) for p in pages) == n
    assert len(store.schedule_events(P1, 1)) == n
    candidates = [
        CandidateRow(
            f"{e.event_key}:email:contact:{e.record_id}",
            P1,
            1,
            "email",
            e.event_id or 0,
            "Property",
            e.record_id,
            e.agent_id,
            "contact",
            e.record_id,
            i % 2 == 0,
        )
        for i, e in enumerate(store.schedule_events(P1, 1))
    ]
    inserted: list[int] = []
    assert (
        store.insert_candidates(
            candidates, [e.event_id for p in pages for e in p], on_inserted=inserted.extend
        )
        == n
    )
    assert len(inserted) == n and store.insert_candidates(candidates) == 0
    assert list(store.stream_events(P1, 12)) == []
    assert store.candidate_count(P1) == n and store.event_count(P1) == n
    assert store.unrendered_count(P1) == n
    ids = [i for batch in store.stream_unrendered(P1, 7) for i in batch]
    items = store.load_render_items(ids)
    assert len(items) == n
    messages = [
        OutboundMessage(
            it.candidate_id,
            it.candidate_key,
            P1,
            "email",
            MessageStatus.QUEUED if k < n - 2 else MessageStatus.SUPPRESSED,
            to_address=f"c{k}@example.com",
            subject="Zoë: price change",
            html_body="<p>é</p>",
            text_body="t",
            reason=None if k < n - 2 else "opted out",
            schedule_version="v1",
        )
        for k, it in enumerate(items)
    ]
    assert store.insert_messages(messages) == n
    assert store.insert_messages(messages) == 0
    queued_n, oldest, stuck = store.queue_health(utcnow())
    assert (queued_n, stuck) == (n - 2, 0) and oldest is not None
    queued = store.queued_ids(P1)
    assert len(queued) == n - 2
    # held at the claim by quiet hours (a daily cap counted too), queued again once due
    rules = SendRules.from_values({"email": "21:00-08:00"}, {"email": 5})
    late = datetime(2026, 3, 2, 23, 0)
    assert store.claim(queued[:2], rules, now_utc=late) == []
    assert store.deferred_summary() == (2, datetime(2026, 3, 3, 8, 0))
    assert store.due_deferred_windows(late) == {}
    assert store.due_deferred_windows(datetime(2026, 3, 3, 8, 0)) == {P1: 2}
    assert store.release_deferred(P1, datetime(2026, 3, 3, 8, 0)) == queued[:2]
    assert store.release_deferred(P1, datetime(2026, 3, 3, 8, 0)) == []
    claimed = store.claim(queued)
    assert len(claimed) == n - 2
    token = claimed[0].claim_token
    assert store.mark_requested(token, [m.message_id for m in claimed]) == [
        m.message_id for m in claimed
    ]
    # handed to the provider: a second claim (a redelivered job) wins none of them, nor is one
    # stamped twice or queued again
    assert store.claim(queued) == []
    assert store.mark_requested(token, [claimed[0].message_id]) == []
    assert store.requeue_unrequested(int(claimed[0].message_id or 0)) is False
    with pytest.raises(InvalidTransition):
        store.resolve_unknown("no such key", MessageStatus.SENT, "resolved by test: x")
    assert store.take_budget("email:test", 2, 10.0, 5.0, 1000.0) == 0.0
    store.block_budget("email:test", 1010.0, 1000.0)
    assert store.take_budget("email:test", 1, 10.0, 5.0, 1001.0) == 9.0
    outcomes = [(m.message_id, MessageStatus.SENT, None, f"sg-{m.message_id}") for m in claimed]
    assert store.finish(outcomes[:-3]) == []
    assert store.finish(outcomes[:2]) == [outcomes[0][0], outcomes[1][0]]
    stale = [m.message_id for m in claimed[-3:]]
    store.transition(stale[0], MessageStatus.SENDING, MessageStatus.FAILED, "bounced")
    with pytest.raises(InvalidTransition):
        store.transition(stale[0], MessageStatus.SENDING, MessageStatus.UNKNOWN, "x")
    assert store.expire_sending(utcnow() + timedelta(seconds=1), P2) == []
    assert sorted(store.expire_sending(utcnow() + timedelta(seconds=1), P1)) == stale[1:]
    assert store.expire_sending(utcnow() + timedelta(seconds=1)) == []
    counts = store.status_counts(P1)
    assert counts == {"sent": n - 5, "failed": 1, "unknown": 2, "suppressed": 2}
    assert store.status_counts() == counts
    assert store.open_message_count(P1) == 0
    assert len(store.messages(P1, [MessageStatus.SENT])) == n - 5
    assert len(store.messages()) == n
    assert store.missing_messages(P1) == []
    assert store.duplicate_sends(P1) == [] and store.duplicate_sends() == []
    assert store.candidate_windows(None, None) == [P1]
    assert store.candidate_windows(P2, None) == []
    _exercise_delivery(store, claimed, stale)
    previews = store.window_previews(P1)
    assert [p["schedule_id"] for p in previews] == [1] and previews[0]["values"]
    by_window = store.status_counts_by_window(P1, P2)
    assert list(by_window) == [P1] and sum(by_window[P1].values()) == n


def _exercise_delivery(
    store: NotificationStore, claimed: list[OutboundMessage], stale: list[int]
) -> None:
    """Provider events (by our id, by the provider's, for no message of ours, repeated),
    an unknown message resolved by one, opt-outs, and what the webhook sensor reads."""
    sent = [m.message_id for m in claimed[:3]]
    babelfish = store.db.dialect == "mssql" and is_babelfish(store.db)
    assert all(isinstance(m, int) for m in sent)
    events = [
        DeliveryEvent(
            "d1", "sendgrid", "email", "delivered", DeliveryStatus.DELIVERED, sent[0], None, 1, None
        ),
        DeliveryEvent(
            "d1", "sendgrid", "email", "delivered", DeliveryStatus.DELIVERED, sent[0], None, 1, None
        ),
        DeliveryEvent(
            "d2",
            "sendgrid",
            "email",
            "bounce",
            DeliveryStatus.BOUNCED,
            None,
            f"sg-{sent[1]}",
            2,
            "550",
            None if babelfish else "C1@Example.com",
        ),
        DeliveryEvent(
            "d3",
            "sendgrid",
            "email",
            "delivered",
            DeliveryStatus.DELIVERED,
            stale[1],
            None,
            3,
            None,
        ),
        DeliveryEvent(
            "d4", "sendgrid", "email", "open", DeliveryStatus.OPENED, None, "not-ours", 4, None
        ),
    ]
    assert store.record_delivery_events(events) == {
        "new": 4,
        "duplicate": 1,
        "unmatched": 1,
        "resolved_unknown": 1,
    }
    if babelfish:
        # See the note at the top: the address opt-out in a transaction of its own.
        store.set_preference("address", True, "bounced", channel="email", address="C1@Example.com")
    assert store.delivery_state(sent[0]) == ("delivered", 1)
    assert store.delivery_state(sent[2]) is None
    recipient = store.message_recipient(sent[0])
    assert recipient is not None and recipient["recipient_kind"] == "contact"
    store.set_preference("all", True, "STOP", recipient_kind="contact", recipient_id=1)
    store.set_preference("all", False, "START", recipient_kind="contact", recipient_id=1)
    found = {(s["scope"], bool(s["active"])) for s in store.suppressions()}
    assert found == {("address", True), ("all", False)}
    assert store.delivery_counts(P1) == {"delivered": 2, "bounced": 1}
    later = utcnow() + timedelta(seconds=1)
    # three sent messages have an event (one of them the unknown one the event resolved)
    assert store.sent_without_delivery(P1, later) == store.status_counts(P1)["sent"] - 3
    backlog = store.webhook_backlog(utcnow() - timedelta(hours=1), later)
    assert backlog["events_received"] == 4 and backlog["newest_event_at"] is not None
