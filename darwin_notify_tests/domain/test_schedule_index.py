"""Many tenants: schedules indexed by watch column and tenant value decide what a scan of
every schedule decides for the schedules a row can fire, and a window's statements do not
grow with the number of schedules."""

import random
import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from darwin_notify_assets.domain.detect import TablePlan, decide_rows, detect_changes
from darwin_notify_assets.domain.model import check_model, load_model
from darwin_notify_assets.domain.pipeline import load_schedules
from darwin_notify_assets.domain.schedule_index import ScheduleIndex
from darwin_notify_assets.domain.schedules import (
    Audience,
    Channel,
    Criterion,
    DedupeScope,
    EventType,
    Schedule,
    build_schedule_set,
)
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.sample import seed
from darwin_notify_assets.sample.demo import DEMO_START
from darwin_notify_assets.sample.tenants import replace_schedules, tenant_schedules

T = "OfficeID"
WINDOW = Window("w", datetime(2026, 3, 2, 14, 0), datetime(2026, 3, 2, 14, 5))
READ_FROM = WINDOW.start - timedelta(minutes=2)
VALUES: list[Any] = [1, 2, 3, "2", Decimal("3.0"), 2.0, None, True, False, 0, "x"]


def _criterion(rng: random.Random) -> Criterion:
    column = rng.choice([T, T, "Status"])
    op = rng.choice(["eq", "eq", "in", "ne", "gt", "is_null", "not_in"])
    if op in ("in", "not_in"):
        return Criterion(column, op, rng.sample(VALUES, rng.randint(0, 3)))
    if op == "is_null":
        return Criterion(column, op)
    return Criterion(column, op, rng.choice(VALUES) if column == T else "Active")


def _schedule(rng: random.Random, sid: int) -> Schedule:
    return Schedule(
        schedule_id=sid,
        name=f"s{sid}",
        source_table="Property",
        event_type=rng.choice([EventType.INSERT, EventType.UPDATE]),
        watch_column=rng.choice(["CreateDate", "ModifiedDate"]),
        changed_columns=(),
        criteria=tuple(_criterion(rng) for _ in range(rng.randint(0, 3))),
        channel=Channel.EMAIL,
        audience=Audience.AGENT,
        template_id=1,
        dedupe_scope=DedupeScope.CHANGE,
        uses_agent_totals=False,
    )


def _row(rng: random.Random, pid: int) -> dict[str, Any]:
    inside = WINDOW.start + timedelta(seconds=rng.randint(0, 299))
    outside = WINDOW.start - timedelta(days=3)
    return {
        "PropertyID": pid,
        "AgentID": 1,
        T: rng.choice(VALUES),
        "Status": rng.choice(["Active", "Sold"]),
        "CreateDate": rng.choice([inside, outside]),
        "ModifiedDate": rng.choice([inside, outside]),
    }


def _plan(schedules: tuple[Schedule, ...], tenant: str | None) -> TablePlan:
    return TablePlan(
        table="Property",
        key="PropertyID",
        watch_columns=("CreateDate", "ModifiedDate"),
        schedules=schedules,
        keep_snapshot=False,
        ledger=False,
        agent_column="AgentID",
        created_column="CreateDate",
        tenant_column=tenant,
    )


def _pins_out(schedule: Schedule, row: dict[str, Any]) -> bool:
    """Whether the row fails one of the schedule's eq/in criteria on the tenant column."""
    return any(
        c.column == T and c.op in ("eq", "in") and not c.matches(row, None)
        for c in schedule.criteria
    )


def _compare(seed_value: int) -> int:
    """Decide random rows with and without the index; the decisions against it left out."""
    rng = random.Random(seed_value)
    schedules = tuple(_schedule(rng, i + 1) for i in range(rng.randint(1, 40)))
    rows = [_row(rng, i + 1) for i in range(40)]
    scan = decide_rows(_plan(schedules, None), rows, {}, WINDOW, READ_FROM)
    indexed = decide_rows(_plan(schedules, T), rows, {}, WINDOW, READ_FROM)
    assert [e.event_key for e in indexed.fired] == [e.event_key for e in scan.fired]
    by_id = {s.schedule_id: s for s in schedules}
    rows_by_id = {r["PropertyID"]: r for r in rows}
    # Decisions against are those of the scan (in its order), less some of the schedules
    # the row's tenant rules out.
    kept = [e.event_key for e in indexed.skipped]
    scanned = [e.event_key for e in scan.skipped]
    assert kept == [k for k in scanned if k in set(kept)]
    left_out = [e for e in scan.skipped if e.event_key not in set(kept)]
    assert all(_pins_out(by_id[e.schedule_id], rows_by_id[e.record_id]) for e in left_out)
    return len(left_out)


@pytest.mark.parametrize("seed_value", range(30))
def test_the_index_fires_what_a_scan_of_every_schedule_fires(seed_value):
    _compare(seed_value)


def test_the_index_leaves_out_the_schedules_of_other_tenants():
    assert sum(_compare(i) for i in range(30))


def test_a_tenant_s_schedules_are_found_by_value_the_rest_by_scan():
    rng = random.Random(1)
    base = _schedule(rng, 0)
    pinned = [
        base.__class__(**{**base.__dict__, "schedule_id": i, "criteria": (Criterion(T, "eq", i),)})
        for i in range(1, 1001)
    ]
    free = base.__class__(**{**base.__dict__, "schedule_id": 5000, "criteria": ()})
    index = ScheduleIndex([*pinned, free], T)
    assert index.indexed == 1000
    found = index.applicable([base.watch_column], Decimal("17"))
    assert [s.schedule_id for s in found] == [17, 5000]
    assert [s.schedule_id for s in index.applicable([base.watch_column], "17")] == [17, 5000]
    assert [s.schedule_id for s in index.applicable([base.watch_column], None)] == [5000]
    # SQLite's booleans are 0/1 and a true value equals any true value: every schedule.
    assert len(index.applicable([base.watch_column], True)) == 1001
    assert index.applicable(["elsewhere"], 17) == []


# -- on the embedded darwin.Cloud ---------------------------------------------------------------
def _with_schedules(schedules):
    def customize(db, dataset, changes):
        replace_schedules(db, schedules, DEMO_START - timedelta(days=1))

    return customize


def _window(env) -> tuple[list[str], list[str], list[dict[str, Any]], int]:
    """Detect window 0: the replica's and the store's statements, the events, and how many
    decisions (fired or against) were recorded."""
    env.apply(0)
    rt = env.runtime()
    loaded = load_schedules(rt.replica)
    replica_sql: list[str] = []
    store_sql: list[str] = []
    rt.replica.db.conn.set_trace_callback(replica_sql.append)
    rt.store.db.conn.set_trace_callback(store_sql.append)
    detect_changes(rt.replica, rt.store, loaded.schedules, env.window(0), env.settings.lookback)
    rt.replica.db.conn.set_trace_callback(None)
    rt.store.db.conn.set_trace_callback(None)
    events = env.store_rows("SELECT * FROM change_event ORDER BY event_id")
    decisions = env.store_rows("SELECT COUNT(*) AS n FROM change_decision")[0]["n"]
    return replica_sql, store_sql, events, decisions


def _shape(sql: list[str]) -> list[str]:
    """Statements without their bound values (SQLite's trace inlines them)."""
    return [re.sub(r"\(\s*[\d, ]*\)|'[^']*'|\b\d+\b", "?", s) for s in sql]


def _as_sample(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    per = len(seed.SAMPLE_SCHEDULES)
    return sorted(
        ((e["schedule_id"] - 1) % per + 1, e["source_table"], e["record_id"], e["version"])
        for e in events
    )


def test_a_window_s_statements_do_not_grow_with_the_number_of_schedules(env_factory):
    sample = env_factory(windows=1)
    five = env_factory(windows=1, customize=_with_schedules(tenant_schedules(5, 1)))
    many = env_factory(windows=1, customize=_with_schedules(tenant_schedules(500, 100)))
    assert len(load_schedules(many.replica()).schedules.schedules) == 500
    sample_replica, sample_store, sample_events, sample_decisions = _window(sample)
    five_replica, _, five_events, _ = _window(five)
    many_replica, many_store, many_events, many_decisions = _window(many)
    assert len(many_replica) == len(five_replica)
    assert _shape(many_replica) == _shape(five_replica)
    # Office by office, the 500 schedules fire exactly what the five sample schedules fire,
    # with as many decisions and statements on the store.
    assert _as_sample(many_events) == _as_sample(sample_events)
    assert many_decisions == sample_decisions
    assert len(many_store) == len(sample_store)
    # Office 1's five fire its share only (the small seed has three offices).
    assert five_events and len(five_events) < len(sample_events)
    # The tenants of listings, contacts and deals come from the agent table: one statement
    # per batch, independent of the schedules.
    extra = [s for s in many_replica if s not in sample_replica]
    assert extra and len(many_replica) - len(sample_replica) == len(extra)
    assert all('"Agent"' in s or "'Agent'" in s for s in extra), extra


# -- validation -----------------------------------------------------------------------------
def _rows(criteria: str, table: str = "Property", watch: str = "CreateDate") -> list[dict]:
    model = load_model()
    c = model.schedules.columns
    return [
        {
            c["schedule_id"]: 1,
            c["name"]: "office listing",
            c["source_table"]: table,
            c["event_type"]: "update",
            c["watch_column"]: watch,
            c["criteria"]: criteria,
            c["channel"]: "email",
            c["audience"]: "agent",
            c["template_id"]: 1,
            c["dedupe_scope"]: "change",
        }
    ]


TEMPLATE = [{"TemplateID": 1, "Name": "t", "Subject": "s", "TextBody": "b"}]
CATALOG = {t: seed.COLUMNS[t] for t in ("Property", "Agent")}


def test_a_criterion_on_the_tenant_column_is_accepted_on_a_table_that_lacks_it():
    built = build_schedule_set(
        _rows('[{"column": "OfficeID", "op": "in", "value": [3, 4]}]'), TEMPLATE, CATALOG
    )
    assert not built.rejected
    assert built.schedules[0].criteria == (Criterion(T, "in", [3, 4]),)


def test_a_tenant_the_record_does_not_carry_cannot_be_compared_with_its_previous_value():
    built = build_schedule_set(
        _rows('[{"column": "OfficeID", "op": "changed"}]'), TEMPLATE, CATALOG
    )
    assert [r.reason for r in built.rejected] == [
        "schedule 1 (office listing): criterion OfficeID changed: Property has no OfficeID of "
        "its own"
    ]
    own = build_schedule_set(
        _rows('[{"column": "OfficeID", "op": "changed"}]', "Agent", "ModifiedDate"),
        TEMPLATE,
        CATALOG,
    )
    assert not own.rejected


def test_check_names_a_tenant_column_the_agent_table_lacks():
    model = load_model()
    model = model.model_copy(update={"tenant": model.tenant.model_copy(update={"column": "Org"})})
    problems = check_model(model, lambda table: seed.COLUMNS.get(table, ()))
    assert [str(p) for p in problems] == ["tenant: column Agent.Org does not exist on the replica"]


def test_reconciliation_judges_tenant_schedules_as_detection_does(env_factory):
    from darwin_notify_assets.domain.detect import reconcile

    env = env_factory(windows=1, customize=_with_schedules(tenant_schedules(500, 100)))
    env.apply(0)
    rt = env.runtime()
    schedules = load_schedules(rt.replica).schedules
    window = env.window(0)
    start, end = window.read_from(env.settings.lookback), window.end
    before = reconcile(rt.replica, rt.store, schedules, start, end, 5)
    detect_changes(rt.replica, rt.store, schedules, window, env.settings.lookback)
    fired = env.store_rows("SELECT event_key FROM change_event")
    assert fired and sorted(before.events_missing) == sorted(r["event_key"] for r in fired)
    # (The window itself is recorded by the stage that runs detection, not by detection.)
    assert reconcile(rt.replica, rt.store, schedules, start, end, 5).events_missing == []


def test_a_deletion_of_a_record_never_seen_fires_no_tenant_s_schedule():
    from dataclasses import replace

    from darwin_notify_assets.domain.detect import decide_deletions
    from darwin_notify_assets.domain.schedules import ScheduleSet

    rng = random.Random(3)
    base = replace(
        _schedule(rng, 0), event_type=EventType.DELETE, watch_column="DeletedDate", criteria=()
    )
    unpinned = replace(base, schedule_id=1)
    offices = [replace(base, schedule_id=o + 1, criteria=(Criterion(T, "eq", o),)) for o in (1, 2)]
    schedules = ScheduleSet((unpinned, *offices), {}, model=load_model())
    at = WINDOW.start + timedelta(minutes=1)
    never_seen = decide_deletions(schedules, "Property", [(99, at)], {}, WINDOW)
    assert [e.schedule_id for e in never_seen.fired] == [1]
    seen = decide_deletions(
        schedules, "Property", [(99, at)], {99: {"PropertyID": 99, "AgentID": 4}}, WINDOW, {99: 2}
    )
    assert [e.schedule_id for e in seen.fired] == [1, 3]
    assert seen.fired[0].row_values == {"PropertyID": 99, "AgentID": 4}


def test_tenants_are_read_once_the_streaming_read_of_changes_has_ended(env_factory):
    """ODBC drivers refuse a statement on a connection whose streaming read is still open."""
    env = env_factory(windows=1, customize=_with_schedules(tenant_schedules(50, 10)))
    env.apply(0)
    rt = env.runtime()
    replica = rt.replica
    open_reads: list[str] = []
    read_changes, fetch_grouped = replica.read_changes, replica.fetch_grouped

    def streaming(table, *args, **kwargs):
        open_reads.append(table)
        try:
            yield from read_changes(table, *args, **kwargs)
        finally:
            open_reads.remove(table)

    def fetch(*args, **kwargs):
        assert not open_reads, f"a statement while the read of {open_reads} is open"
        return fetch_grouped(*args, **kwargs)

    replica.read_changes = streaming  # type: ignore[method-assign]
    replica.fetch_grouped = fetch  # type: ignore[method-assign]
    schedules = load_schedules(replica).schedules
    result = detect_changes(
        replica, rt.store, schedules, env.window(0), env.settings.lookback, batch_size=2
    )
    assert sum(result.events.values()) > 0
