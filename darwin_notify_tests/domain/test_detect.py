"""Change detection: minimal replica reads, ChangedColumns against last-seen values, the
lookback overlap, deletions with last-seen values, and agreement with the seeded stream."""

import json
import re
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from darwin_notify_assets.domain.detect import DetectionResult, detect_changes
from darwin_notify_assets.domain.pipeline import Runtime, load_schedules
from darwin_notify_assets.domain.windows import Window
from darwin_notify_tests.conftest import PARTITION, EmbeddedEnv

TS = "%Y-%m-%d %H:%M:%S.%f"
W0 = Window.from_key(PARTITION, 5)
W1 = Window.from_key((W0.start + timedelta(minutes=5)).strftime("%Y-%m-%d-%H:%M"), 5)


def detect(env: EmbeddedEnv, window: Window, rt: Runtime | None = None) -> DetectionResult:
    rt = rt or env.runtime()
    loaded = load_schedules(rt.replica)
    return detect_changes(rt.replica, rt.store, loaded.schedules, window, env.settings.lookback)


def events(env: EmbeddedEnv, schedule_id: int | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM change_event"
    params: list[Any] = []
    if schedule_id is not None:
        sql += " WHERE schedule_id = ?"
        params.append(schedule_id)
    return env.store_rows(sql + " ORDER BY event_id", params)


def activate_only(env: EmbeddedEnv, schedule_ids: set[int]) -> None:
    db = env.source
    db.execute('UPDATE "NotificationSchedule" SET "IsActive" = 0').close()
    for sid in schedule_ids:
        db.execute(
            'UPDATE "NotificationSchedule" SET "IsActive" = 1 WHERE "ScheduleID" = ?', [sid]
        ).close()
    db.commit()


def properties(env: EmbeddedEnv, n: int) -> list[dict[str, Any]]:
    return env.source_rows(
        'SELECT * FROM "Property" WHERE "Status" = ? ORDER BY "PropertyID" LIMIT ?', ["Active", n]
    )


def next_id(env: EmbeddedEnv, table: str, column: str) -> int:
    return int(env.source_rows(f'SELECT MAX("{column}") AS m FROM "{table}"')[0]["m"] or 0) + 1


def new_property(env: EmbeddedEnv, at, agent_id: int = 1, status: str = "Active") -> int:
    pid = max(next_id(env, "Property", "PropertyID"), next_id(env, "DeletedRecord", "RecordID"))
    env.insert_row(
        "Property",
        {
            "PropertyID": pid,
            "AgentID": agent_id,
            "Address": f"{pid} Test Ave",
            "City": "Testville",
            "State": "IL",
            "Zip": "60601",
            "ListPrice": 425000,
            "Status": status,
            "CreateDate": at,
            "ModifiedDate": at,
        },
    )
    return pid


def delete_property(env: EmbeddedEnv, pid: int, at) -> None:
    env.source.execute('DELETE FROM "Property" WHERE "PropertyID" = ?', [pid]).close()
    env.source.commit()
    env.insert_row(
        "DeletedRecord",
        {
            "DeletedRecordID": next_id(env, "DeletedRecord", "DeletedRecordID"),
            "TableName": "Property",
            "RecordID": pid,
            "DeletedDate": at,
        },
    )


# -- minimal reads ---------------------------------------------------------------------------
def _tables_in(statements: list[str]) -> set[str]:
    return set(re.findall(r'FROM "(\w+)"', " ".join(statements)))


@pytest.mark.parametrize(
    ("active", "tables_read", "statement_tables"),
    [
        (
            {1, 2, 3, 4, 5},
            ["Deal", "People", "Property"],
            {"Deal", "People", "Property", "DeletedRecord"},
        ),
        ({4}, ["People"], {"People"}),
        ({2}, ["Property"], {"Property"}),
        ({1, 2, 3, 5}, ["Deal", "Property"], {"Deal", "Property", "DeletedRecord"}),
        ({3}, ["Deal", "Property"], {"Deal", "Property", "DeletedRecord"}),
        (set(), [], set()),
    ],
    ids=["all", "people-only", "price-drop-only", "no-people", "totals", "none"],
)
def test_only_tables_with_an_active_schedule_are_read(
    embedded_env, active, tables_read, statement_tables
):
    env = embedded_env
    env.apply(0)
    activate_only(env, active)
    rt = env.runtime()
    loaded = load_schedules(rt.replica)
    statements: list[str] = []
    rt.replica.db.conn.set_trace_callback(statements.append)
    result = detect_changes(
        rt.replica, rt.store, loaded.schedules, env.window(0), env.settings.lookback
    )
    rt.replica.db.conn.set_trace_callback(None)
    assert sorted(result.tables_read) == tables_read
    assert set(result.rows_read) <= set(tables_read)
    assert _tables_in(statements) == statement_tables
    if "People" not in tables_read:
        assert not any('"People"' in s for s in statements)


def test_a_change_read_is_one_bounded_range_statement_per_table(embedded_env):
    env = embedded_env
    env.apply(0)
    rt = env.runtime()
    loaded = load_schedules(rt.replica)
    statements: list[str] = []
    rt.replica.db.conn.set_trace_callback(statements.append)
    detect_changes(rt.replica, rt.store, loaded.schedules, env.window(0), env.settings.lookback)
    rt.replica.db.conn.set_trace_callback(None)
    reads = [
        s
        for s in statements
        if s.lstrip().upper().startswith("SELECT")
        and re.search(r'FROM "(Property|People|Deal)"', s)
    ]
    assert len(reads) == 3
    for s in reads:
        assert " WHERE " in s and "<" in s and ">=" in s


# -- ChangedColumns ------------------------------------------------------------------------
def test_changed_columns_fire_only_on_a_real_list_price_decrease(embedded_env):
    env = embedded_env
    a, b, c, d = properties(env, 4)
    at = W0.start + timedelta(minutes=1)
    env.set_row("Property", a["PropertyID"], {"City": a["City"] + " Heights", "ModifiedDate": at})
    env.set_row(
        "Property",
        b["PropertyID"],
        {"ListPrice": b["ListPrice"] - 5000, "ModifiedDate": at + timedelta(seconds=1)},
    )
    env.set_row(
        "Property",
        c["PropertyID"],
        {"ListPrice": c["ListPrice"] + 5000, "ModifiedDate": at + timedelta(seconds=2)},
    )
    # rewritten with the same price (as text with cents): touched, not changed
    env.set_row(
        "Property",
        d["PropertyID"],
        {"ListPrice": f"{d['ListPrice']}.00", "ModifiedDate": at + timedelta(seconds=3)},
    )
    result = detect(env, W0)
    assert result.rows_read["Property"] >= 4
    assert result.no_baseline == 0
    drops = events(env, 2)
    assert [e["record_id"] for e in drops] == [b["PropertyID"]]

    old = json.loads(drops[0]["old_values"])
    assert Decimal(str(old["ListPrice"])) == Decimal(str(b["ListPrice"]))
    assert drops[0]["agent_id"] == b["AgentID"]
    assert drops[0]["partition_key"] == W0.partition_key


def test_a_city_change_then_a_price_drop_fires_once_the_price_drops(embedded_env):
    env = embedded_env
    [p] = properties(env, 1)
    env.set_row(
        "Property",
        p["PropertyID"],
        {"City": "Elsewhere", "ModifiedDate": W0.start + timedelta(minutes=1)},
    )
    detect(env, W0)
    assert events(env, 2) == []
    env.set_row(
        "Property",
        p["PropertyID"],
        {"ListPrice": p["ListPrice"] - 1000, "ModifiedDate": W1.start + timedelta(minutes=1)},
    )
    detect(env, W1)
    assert [(e["record_id"], e["partition_key"]) for e in events(env, 2)] == [
        (p["PropertyID"], W1.partition_key)
    ]


# -- lookback overlap ------------------------------------------------------------------------
def test_the_lookback_re_reading_a_row_creates_no_second_event(embedded_env):
    env = embedded_env
    pid = new_property(env, W0.start + timedelta(minutes=4))
    first = detect(env, W0)
    assert [e["record_id"] for e in events(env, 1)] == [pid]
    assert first.events_new == len(events(env))
    second = detect(env, W1)  # reads from W1.start - 10 min: sees the new listing again
    assert second.events[1] >= 1
    assert second.events_new == 0
    assert second.as_metadata()["duplicates_prevented"] == sum(second.events.values())
    again = detect(env, W0)  # a rerun of the first window
    assert again.events_new == 0
    rows = events(env, 1)
    assert [(e["record_id"], e["partition_key"]) for e in rows] == [(pid, W0.partition_key)]


def test_a_late_commit_is_caught_by_the_next_window_s_lookback(embedded_env):
    env = embedded_env
    [p] = properties(env, 1)
    detect(env, W0)
    # committed after W0 was read, stamped inside W0 (a long transaction)
    env.set_row(
        "Property",
        p["PropertyID"],
        {"ListPrice": p["ListPrice"] - 2500, "ModifiedDate": W0.start + timedelta(minutes=3)},
    )
    detect(env, W1)
    assert [(e["record_id"], e["partition_key"]) for e in events(env, 2)] == [
        (p["PropertyID"], W1.partition_key)
    ]


# -- deletions -------------------------------------------------------------------------------
def test_a_deletion_produces_an_event_with_the_last_seen_values(embedded_env):
    env = embedded_env
    [p] = properties(env, 1)
    delete_property(env, p["PropertyID"], W0.start + timedelta(minutes=2))
    result = detect(env, W0)
    assert result.deletions_read == 1
    [event] = events(env, 5)
    assert event["record_id"] == p["PropertyID"]
    assert event["event_type"] == "delete"
    assert event["agent_id"] == p["AgentID"]

    last_seen = json.loads(event["row_values"])
    for column in ("Address", "City", "State", "Zip", "Status", "AgentID"):
        assert last_seen[column] == p[column], column
    assert Decimal(str(last_seen["ListPrice"])) == Decimal(str(p["ListPrice"]))


def test_a_deletion_of_a_row_created_after_the_baseline_has_its_last_seen_values(embedded_env):
    env = embedded_env
    pid = new_property(env, W0.start + timedelta(minutes=1))
    env.set_row(
        "Property",
        pid,
        {"Address": "9 Renamed Rd", "ModifiedDate": W0.start + timedelta(minutes=2)},
    )
    detect(env, W0)
    delete_property(env, pid, W1.start + timedelta(minutes=1))
    detect(env, W1)
    [event] = events(env, 5)
    assert event["record_id"] == pid
    assert event["row_values"] is not None

    assert json.loads(event["row_values"])["Address"] == "9 Renamed Rd"


def test_a_delete_only_schedule_still_keeps_last_seen_values(embedded_env):
    """With only 'Listing removed' active, a listing created (and renamed) after the baseline
    and then deleted must still be announced with its last values: nothing else reads
    Property, so the delete schedule's table has to be read to keep them."""
    env = embedded_env
    activate_only(env, {5})
    pid = new_property(env, W0.start + timedelta(minutes=1))
    env.set_row(
        "Property",
        pid,
        {"Address": "9 Renamed Rd", "ModifiedDate": W0.start + timedelta(minutes=2)},
    )
    detect(env, W0)
    delete_property(env, pid, W1.start + timedelta(minutes=1))
    detect(env, W1)
    [event] = events(env, 5)
    assert event["record_id"] == pid
    assert event["row_values"] is not None, "deleted listing has no last-seen values"

    assert json.loads(event["row_values"])["Address"] == "9 Renamed Rd"


# -- agreement with the seeded change stream -----------------------------------------------
def _state(env: EmbeddedEnv, table: str, key: str) -> dict[int, dict[str, Any]]:
    return {int(r[key]): r for r in env.source_rows(f'SELECT * FROM "{table}"')}


def _simulate(
    before: dict[int, dict[str, Any]],
    afters: list[dict[int, dict[str, Any]]],
    ranges: list[tuple[str, str]],
    fires: Callable[[dict[str, Any], dict[str, Any] | None, str, str], str | None],
) -> set[tuple[int, str]]:
    """Expected (record, version) events: each window reads the rows stamped in its range
    (lookback included) and compares them with what was seen last (the baseline first)."""
    seen = dict(before)
    out: set[tuple[int, str]] = set()
    for after, (lo, hi) in zip(afters, ranges, strict=True):
        read = {
            k: r
            for k, r in after.items()
            if any(
                r.get(c) is not None and lo <= r[c] < hi
                for c in ("CreateDate", "ModifiedDate", "PostDate")
            )
        }
        for k, r in read.items():
            version = fires(r, seen.get(k), lo, hi)
            if version is not None:
                out.add((k, version))
        seen.update(read)
    return out


def _in(value, lo, hi) -> bool:
    return value is not None and lo <= value < hi


def test_detected_events_agree_with_the_seeded_change_stream(embedded_env):
    env = embedded_env
    before = {
        t: _state(env, t, k)
        for t, k in (("Property", "PropertyID"), ("People", "PeopleID"), ("Deal", "DealID"))
    }
    afters: dict[str, list] = {t: [] for t in before}
    ranges = []
    results = []
    rt = env.runtime()
    for i in range(len(env.changes)):
        env.apply(i)
        w = env.window(i)
        ranges.append(((w.start - env.settings.lookback).strftime(TS), w.end.strftime(TS)))
        for t, k in (("Property", "PropertyID"), ("People", "PeopleID"), ("Deal", "DealID")):
            afters[t].append(_state(env, t, k))
        results.append(detect(env, w, rt))

    def new_listing(r, _prev, lo, hi):
        return r["CreateDate"] if _in(r["CreateDate"], lo, hi) and r["Status"] == "Active" else None

    def price_drop(r, prev, lo, hi):
        if not _in(r["ModifiedDate"], lo, hi) or prev is None:
            return None
        dropped = Decimal(str(r["ListPrice"])) < Decimal(str(prev["ListPrice"]))
        return r["ModifiedDate"] if dropped else None

    def welcome(r, _prev, lo, hi):
        return r["CreateDate"] if _in(r["CreateDate"], lo, hi) and r["EmailOptIn"] else None

    def deal_posted(r, prev, lo, hi):
        if not _in(r["PostDate"], lo, hi):
            return None
        if prev is None and not _in(r["CreateDate"], lo, hi):
            return None
        return r["PostDate"] if (prev or {}).get("PostDate") != r["PostDate"] else None

    expected = {
        1: _simulate(before["Property"], afters["Property"], ranges, new_listing),
        2: _simulate(before["Property"], afters["Property"], ranges, price_drop),
        3: _simulate(before["Deal"], afters["Deal"], ranges, deal_posted),
        4: _simulate(before["People"], afters["People"], ranges, welcome),
    }
    deleted = env.source_rows('SELECT * FROM "DeletedRecord" WHERE "TableName" = ?', ["Property"])
    expected[5] = {
        (int(d["RecordID"]), d["DeletedDate"])
        for d in deleted
        if any(_in(d["DeletedDate"], lo, hi) for lo, hi in ranges)
    }
    # the stream really exercises every schedule
    assert all(expected[s] for s in (1, 2, 3, 4, 5)), {s: len(v) for s, v in expected.items()}
    for sid, want in expected.items():
        got = [(e["record_id"], e["version"]) for e in events(env, sid)]
        assert len(got) == len(set(got)), f"schedule {sid} has a duplicate event"
        assert set(got) == want, f"schedule {sid}"
    assert all(r.no_baseline == 0 for r in results)
    assert sum(r.events_new for r in results) == len(events(env))


# -- a change is decided once ----------------------------------------------------------------
W2 = Window.from_key((W1.start + timedelta(minutes=5)).strftime("%Y-%m-%d-%H:%M"), 5)


def add_schedule(env: EmbeddedEnv, schedule_id: int, **values: Any) -> None:
    """A NotificationSchedule row of the customer's own (template of a sample schedule)."""
    row = {
        "ScheduleID": schedule_id,
        "Name": f"test schedule {schedule_id}",
        "ChangedColumns": None,
        "Channel": "email",
        "Audience": "agent",
        "DedupeScope": "change",
        "UsesAgentTotals": 0,
        "IsActive": 1,
        "ModifiedDate": W0.start - timedelta(days=1),
        **values,
    }
    row["Criteria"] = json.dumps(row.get("Criteria") or [])
    env.insert_row("NotificationSchedule", row)


def new_contact(env: EmbeddedEnv, at, opted_in: bool, agent_id: int = 1) -> int:
    pid = next_id(env, "People", "PeopleID")
    env.insert_row(
        "People",
        {
            "PeopleID": pid,
            "AgentID": agent_id,
            "FirstName": "Test",
            "LastName": f"Contact {pid}",
            "Email": f"contact{pid}@example.com",
            "MobilePhone": "+13125550100",
            "EmailOptIn": int(opted_in),
            "SmsOptIn": 0,
            "CreateDate": at,
            "ModifiedDate": at,
        },
    )
    return pid


def unposted_deals(env: EmbeddedEnv, n: int) -> list[dict[str, Any]]:
    return env.source_rows(
        'SELECT * FROM "Deal" WHERE "PostDate" IS NULL ORDER BY "DealID" LIMIT ?', [n]
    )


def test_an_insert_decided_against_is_not_decided_again_when_a_later_read_sees_new_values(
    embedded_env,
):
    """The welcome schedule (insert, EmailOptIn eq true): a contact created opted out in one
    window and opting in two windows later, while its CreateDate is still in the lookback,
    gets no welcome; the first read decided."""
    env = embedded_env
    declined = new_contact(env, W0.start + timedelta(minutes=1, seconds=43), opted_in=False)
    welcomed = new_contact(env, W0.start + timedelta(minutes=2), opted_in=True)
    detect(env, W0)
    detect(env, W1)
    env.set_row(
        "People",
        declined,
        {"EmailOptIn": 1, "ModifiedDate": W2.start + timedelta(minutes=1, seconds=51)},
    )
    third = detect(env, W2)  # reads from W0.start: sees the contact and its CreateDate again
    assert third.rows_read["People"] >= 2
    assert [(e["record_id"], e["partition_key"]) for e in events(env, 4)] == [
        (welcomed, W0.partition_key)
    ]
    detect(env, W0)  # nor does a rerun of the first window decide again
    assert [e["record_id"] for e in events(env, 4)] == [welcomed]


def test_an_update_decided_against_is_not_decided_again_when_a_later_read_sees_new_values(
    embedded_env,
):
    """An update schedule watching PostDate (no ChangedColumns) with a criterion on the sale
    price: a deal posted below the threshold whose price is corrected two windows later, its
    PostDate still in the lookback, does not fire on the corrected price."""
    env = embedded_env
    add_schedule(
        env,
        90,
        SourceTable="Deal",
        EventType="update",
        WatchColumn="PostDate",
        Criteria=[{"column": "SalePrice", "op": "ge", "value": 1000000}],
        TemplateID=3,
    )
    low, high = unposted_deals(env, 2)
    posted = W0.start + timedelta(minutes=1)
    env.set_row(
        "Deal", low["DealID"], {"SalePrice": 400000, "PostDate": posted, "ModifiedDate": posted}
    )
    env.set_row(
        "Deal", high["DealID"], {"SalePrice": 1500000, "PostDate": posted, "ModifiedDate": posted}
    )
    detect(env, W0)
    detect(env, W1)
    env.set_row(
        "Deal",
        low["DealID"],
        {"SalePrice": 1400000, "ModifiedDate": W2.start + timedelta(minutes=1)},
    )
    detect(env, W2)
    assert [(e["record_id"], e["partition_key"]) for e in events(env, 90)] == [
        (high["DealID"], W0.partition_key)
    ]


def test_a_deletion_decided_against_is_not_decided_again_when_its_last_seen_values_change(
    embedded_env,
):
    """A delete schedule with ``Status eq Active``: a listing last seen pending and deleted is
    decided against; restored as active in the next window (so its last-seen values say
    Active) while the deletion is still in the lookback, the old deletion does not fire."""
    env = embedded_env
    add_schedule(
        env,
        91,
        SourceTable="Property",
        EventType="delete",
        WatchColumn="DeletedDate",
        Criteria=[{"column": "Status", "op": "eq", "value": "Active"}],
        TemplateID=5,
    )
    pending, active = properties(env, 2)
    env.set_row(
        "Property",
        pending["PropertyID"],
        {"Status": "Pending", "ModifiedDate": W0.start + timedelta(minutes=1)},
    )
    detect(env, W0)
    delete_property(env, pending["PropertyID"], W1.start + timedelta(minutes=2))
    delete_property(env, active["PropertyID"], W1.start + timedelta(minutes=2))
    detect(env, W1)
    restored = W2.start + timedelta(minutes=1)
    env.insert_row(
        "Property",
        {**pending, "Status": "Active", "CreateDate": restored, "ModifiedDate": restored},
    )
    detect(env, W2)  # reads the restored row first, then the deletion again (lookback)
    assert [(e["record_id"], e["partition_key"]) for e in events(env, 91)] == [
        (active["PropertyID"], W1.partition_key)
    ]
