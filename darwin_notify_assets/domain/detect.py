"""Change detection: which rows of the watched tables changed in a window, per schedule.

Only tables with an active schedule are read (plus the source model's ledger tables when a
schedule displays agent totals), each with one bounded range statement over its watch
columns. Update schedules with ``ChangedColumns`` compare against the last-seen values the
store keeps, so they fire only when one of those columns really changed.

Whether a change fires is decided once: the first time a version of a record (its key, the
schedule, the event type and the watch-column value) is read, and the decision is recorded
whether it fires or not. The lookback and reruns read the same versions again, sometimes with
later values (a contact created opted out and opted in minutes later is still in the
lookback by its creation date); the recorded decision stands. Results of a batch (decisions,
events, last-seen values, ledgers) are written in one store transaction, so a crash never
leaves a change remembered but not acted on.
"""

import functools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from darwin_notify_assets.domain.keys import RecordId, record_id
from darwin_notify_assets.domain.model import SoftDelete, SourceModel
from darwin_notify_assets.domain.schedule_index import ScheduleIndex, tenants_of
from darwin_notify_assets.domain.schedules import (
    EventType,
    Schedule,
    ScheduleSet,
    same_value,
)
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.storage.db import as_datetime
from darwin_notify_assets.storage.replica import ReplicaReader
from darwin_notify_assets.storage.store import (
    ChangeEvent,
    NotificationStore,
    jsonable,
    jsonable_row,
)

log = logging.getLogger(__name__)


@dataclass
class Decisions:
    """What reading some changes decided: the events that fire and those that do not.

    Detection records both, each under its event key, the first time that version of the
    record is observed; a later read of the same version (the lookback, a rerun) keeps the
    first decision, whatever the row's values have become. Reconciliation makes the same
    decisions with the same functions.
    """

    fired: list[ChangeEvent] = field(default_factory=list)
    skipped: list[ChangeEvent] = field(default_factory=list)
    no_baseline: int = 0


@dataclass
class DetectionResult:
    rows_read: Counter[str] = field(default_factory=Counter)
    deletions_read: int = 0
    events: Counter[int] = field(default_factory=Counter)
    events_new: int = 0
    decided_against: int = 0
    no_baseline: int = 0
    tables_read: list[str] = field(default_factory=list)

    def add(self, decided: Decisions) -> None:
        for e in decided.fired:
            self.events[e.schedule_id] += 1
        self.decided_against += len(decided.skipped)
        self.no_baseline += decided.no_baseline

    @property
    def total_rows_read(self) -> int:
        return sum(self.rows_read.values()) + self.deletions_read

    def as_metadata(self) -> dict[str, Any]:
        return {
            "rows_read": self.total_rows_read,
            "deletions_read": self.deletions_read,
            "events_detected": sum(self.events.values()),
            "events_new": self.events_new,
            "duplicates_prevented": sum(self.events.values()) - self.events_new,
            "changes_decided_against": self.decided_against,
            "updates_without_baseline": self.no_baseline,
            "tables_read": ", ".join(self.tables_read) or "(none)",
        }


@dataclass(frozen=True)
class TablePlan:
    table: str
    # The table's key: one column, or a composite key's columns.
    key: str | tuple[str, ...]
    watch_columns: tuple[str, ...]
    schedules: tuple[Schedule, ...]
    keep_snapshot: bool
    ledger: bool
    # From the source model: the columns naming the record's agent and contact, the one
    # dating its creation, and which agent-totals ledger it feeds (deal, listing or none).
    agent_column: str | None = None
    contact_column: str | None = None
    created_column: str | None = None
    ledger_kind: str | None = None
    # Deletions by an UPDATE (the model's soft_delete) and the schedules they fire.
    soft_delete: SoftDelete | None = None
    delete_schedules: tuple[Schedule, ...] = ()
    tenant_column: str | None = None

    @functools.cached_property
    def index(self) -> ScheduleIndex:
        return ScheduleIndex(self.schedules, self.tenant_column)


def plan_reads(
    schedules: ScheduleSet, columns_of: Callable[[str], Sequence[str]] | None = None
) -> list[TablePlan]:
    """One plan per table to read; tables without an active schedule are absent."""
    model = schedules.model
    ledger_tables = set(model.totals.tables) if model.totals else set()
    tables = set(schedules.source_tables) | set(schedules.delete_tables)
    if schedules.uses_agent_totals:
        tables |= ledger_tables
    plans = []
    for table in sorted(tables):
        on_table = tuple(s for s in schedules.for_table(table) if s.event_type != EventType.DELETE)
        watch = {s.watch_column for s in on_table}
        ledger = schedules.uses_agent_totals and table in ledger_tables
        kind = model.ledger_kind(table) if ledger else None
        if ledger and model.totals:
            watch.add(model.totals.deals.watch if kind == "deal" else model.totals.listings.watch)
        if table in schedules.delete_tables:
            # A table watched for deletions is also read on its watch columns, so its
            # last-seen values stay current.
            declared = model.watch_of(table)
            known = set(columns_of(table)) if columns_of else set(declared)
            watch.update(c for c in declared if c in known)
        soft = model.soft_delete_of(table)
        deleting: tuple[Schedule, ...] = ()
        if soft is not None and table in schedules.delete_tables:
            watch.add(soft.time_column)
            deleting = tuple(
                s for s in schedules.for_table(table) if s.event_type == EventType.DELETE
            )
        keep = any(s.needs_previous_values for s in on_table) or table in schedules.delete_tables
        plans.append(
            TablePlan(
                table=table,
                key=model.key_of(table),
                watch_columns=tuple(sorted(watch)),
                schedules=on_table,
                keep_snapshot=keep,
                ledger=ledger,
                agent_column=model.agent_column(table),
                contact_column=model.contact_column(table),
                created_column=model.created_of(table),
                ledger_kind=kind,
                soft_delete=soft,
                delete_schedules=deleting,
                tenant_column=model.tenant.column if model.tenant else None,
            )
        )
    return plans


def _in_range(value: Any, start: datetime, end: datetime) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return bool(start <= value < end)


def event_key(table: str, rid: RecordId, schedule_id: int, event: str, version: str) -> str:
    return f"{table}:{rid}:s{schedule_id}:{event}:{version}"


def _event(
    plan: TablePlan,
    schedule: Schedule,
    window: Window,
    rid: RecordId,
    row: Mapping[str, Any] | None,
    version: str,
    old_values: Mapping[str, Any] | None,
    row_values: Mapping[str, Any] | None,
) -> ChangeEvent:
    source = row or {}
    agent = source.get(plan.agent_column) if plan.agent_column else None
    if agent is None and plan.agent_column == plan.key:
        agent = rid
    contact = source.get(plan.contact_column) if plan.contact_column else None
    return ChangeEvent(
        event_key=event_key(
            schedule.source_table, rid, schedule.schedule_id, schedule.event_type, version
        ),
        partition_key=window.partition_key,
        schedule_id=schedule.schedule_id,
        source_table=schedule.source_table,
        record_id=rid,
        event_type=str(schedule.event_type),
        version=version,
        agent_id=int(agent) if agent is not None else None,
        contact_id=int(contact) if contact is not None else None,
        old_values=old_values,
        row_values=row_values,
    )


def _update_fires(
    plan: TablePlan,
    s: Schedule,
    row: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    created_here: bool,
    version: str,
) -> tuple[bool, dict[str, Any] | None, bool]:
    """Whether an update schedule fires on this version: (fires, old values, no baseline)."""
    if s.needs_previous_values:
        if previous is None:
            if not created_here:
                return False, None, True
            previous = {}
        if s.changed_columns and all(
            same_value(row.get(c), previous.get(c)) for c in s.changed_columns
        ):
            return False, None, False
    elif (created := row.get(plan.created_column) if plan.created_column else None) is not None:
        if same_value(jsonable(created), version):
            return False, None, False
    if not all(c.matches(row, previous) for c in s.criteria):
        return False, None, False
    cols = set(s.changed_columns) | {c.column for c in s.criteria if c.needs_previous}
    old = {c: (previous or {}).get(c) for c in sorted(cols)} if cols else None
    return True, old, False


def _judged(
    row: Mapping[str, Any],
    column: str | None,
    tenants: Mapping[RecordId, Any] | None,
    rid: RecordId,
) -> Mapping[str, Any]:
    """The row criteria are judged on: with its tenant when the row does not carry it."""
    if tenants is None or column is None or column in row:
        return row
    return {**row, column: tenants.get(rid)}


def decide_row(
    plan: TablePlan,
    row: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    window: Window,
    read_from: datetime,
    out: Decisions,
    tenants: Mapping[RecordId, Any] | None = None,
) -> None:
    """Decide, for each schedule whose watch column this row's value falls in the read
    range and whose tenant criterion the row meets, whether that version of the row fires;
    append the decision to ``out``. ``tenants`` gives rows without the tenant column theirs."""
    rid = record_id(row, plan.key)
    if plan.soft_delete is not None and plan.soft_delete.deleted(row):
        _decide_soft_deletion(plan, plan.soft_delete, row, previous, window, read_from, out)
        return
    created_here = plan.created_column is not None and _in_range(
        row.get(plan.created_column), read_from, window.end
    )
    index = plan.index
    judged = _judged(row, plan.tenant_column, tenants, rid)
    watched_columns = [w for w, _ in index.groups if _in_range(row.get(w), read_from, window.end)]
    tenant = judged.get(plan.tenant_column) if plan.tenant_column else None
    for s in index.applicable(watched_columns, tenant):
        version = str(jsonable(row.get(s.watch_column)))
        old = None
        if s.event_type == EventType.INSERT:
            fires = all(c.matches(judged, None) for c in s.criteria)
        else:
            fires, old, no_baseline = _update_fires(
                plan, s, judged, previous, created_here, version
            )
            out.no_baseline += no_baseline
        event = _event(plan, s, window, rid, row, version, old, None)
        (out.fired if fires else out.skipped).append(event)


def _decide_soft_deletion(
    plan: TablePlan,
    soft: SoftDelete,
    row: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    window: Window,
    read_from: datetime,
    out: Decisions,
) -> None:
    """A row the model marks deleted is a deletion, never an insert or update: each delete
    schedule decides once, on the version its deletion time names; a row last seen deleted
    already was decided then."""
    if previous is not None and soft.deleted(previous):
        return
    at = row.get(soft.time_column)
    if not _in_range(at, read_from, window.end):
        return
    version = str(jsonable(at))
    rid = record_id(row, plan.key)
    for s in plan.delete_schedules:
        fires = all(c.matches(row, None) for c in s.criteria)
        event = _event(plan, s, window, rid, row, version, None, dict(row))
        (out.fired if fires else out.skipped).append(event)


def decide_rows(
    plan: TablePlan,
    rows: Sequence[Mapping[str, Any]],
    previous: Mapping[RecordId, Mapping[str, Any]],
    window: Window,
    read_from: datetime,
    tenants: Mapping[RecordId, Any] | None = None,
) -> Decisions:
    """The decisions of a batch of changed rows, given the last-seen values by record id
    (and, for rows without the tenant column, their tenants: ``schedule_index.tenants_of``)."""
    out = Decisions()
    for row in rows:
        decide_row(
            plan, row, previous.get(record_id(row, plan.key)), window, read_from, out, tenants
        )
    return out


def decide_deletions(
    schedules: ScheduleSet,
    table: str,
    deletions: Sequence[tuple[RecordId, datetime]],
    last_seen: Mapping[RecordId, Mapping[str, Any]],
    window: Window,
    tenants: Mapping[RecordId, Any] | None = None,
) -> Decisions:
    """The decisions of ``table``'s deletions ``(record id, deleted at)``: each delete
    schedule's criteria are judged on the record's last-seen values (a record never seen
    fires every delete schedule that pins no tenant)."""
    out = Decisions()
    delete_schedules = [s for s in schedules.for_table(table) if s.event_type == EventType.DELETE]
    plan = _deletion_plan(schedules.model, table)
    index = ScheduleIndex(delete_schedules, plan.tenant_column)
    watches = [w for w, _ in index.groups]
    for rid, deleted_at in deletions:
        row = last_seen.get(rid)
        version = str(jsonable(deleted_at))
        judged = _judged(row, plan.tenant_column, tenants, rid) if row is not None else None
        # A record never seen has no known tenant: no tenant's schedule applies to it.
        tenant = (
            judged.get(plan.tenant_column) if judged is not None and plan.tenant_column else None
        )
        for s in index.applicable(watches, tenant):
            fires = judged is None or all(c.matches(judged, None) for c in s.criteria)
            event = _event(plan, s, window, rid, row, version, None, row)
            (out.fired if fires else out.skipped).append(event)
    return out


def _deletion_plan(model: SourceModel, table: str) -> TablePlan:
    return TablePlan(
        table=table,
        key=model.key_of(table),
        watch_columns=(),
        schedules=(),
        keep_snapshot=True,
        ledger=False,
        agent_column=model.agent_column(table),
        contact_column=model.contact_column(table),
        created_column=model.created_of(table),
        tenant_column=model.tenant.column if model.tenant else None,
    )


def _changes(
    replica: ReplicaReader, plan: TablePlan, start: datetime, end: datetime, batch_size: int
) -> Iterable[list[dict[str, Any]]]:
    batches = replica.read_changes(plan.table, plan.watch_columns, start, end, batch_size)
    if plan.index.needs_tenant:
        # Tenants are read on the replica's connection, which a streaming read holds until
        # its last row (ODBC drivers refuse a second statement meanwhile): read it all first.
        return list(batches)
    return batches


def _tenants(
    replica: ReplicaReader, model: SourceModel, index: ScheduleIndex, table: str, rows: Any
) -> dict[RecordId, Any] | None:
    """Rows' tenants when some schedule judges them and the rows lack the column."""
    return tenants_of(replica, model, table, rows) if index.needs_tenant else None


def detect_changes(
    replica: ReplicaReader,
    store: NotificationStore,
    schedules: ScheduleSet,
    window: Window,
    lookback: timedelta,
    batch_size: int = 5000,
) -> DetectionResult:
    """Read the window's changes from the replica and record them in the store."""
    result = DetectionResult()
    read_from = window.read_from(lookback)
    plans = plan_reads(schedules, replica.columns)
    for plan in plans:
        result.tables_read.append(plan.table)
        if not plan.watch_columns:
            continue
        for batch in _changes(replica, plan, read_from, window.end, batch_size):
            result.rows_read[plan.table] += len(batch)
            rows = [jsonable_row(r) for r in batch]
            ids = [record_id(r, plan.key) for r in rows]
            previous = store.snapshots(plan.table, ids) if plan.keep_snapshot else {}
            tenants = _tenants(replica, schedules.model, plan.index, plan.table, rows)
            decided = decide_rows(plan, rows, previous, window, read_from, tenants)
            result.add(decided)
            snapshots = (
                {(plan.table, record_id(r, plan.key)): r for r in rows}
                if plan.keep_snapshot
                else {}
            )
            deals, listings, removed, agents = _ledger_rows(schedules.model, plan, rows, window)
            result.events_new += store.save_detection(
                decided.fired, snapshots, deals, listings, removed, agents, skipped=decided.skipped
            )
    _detect_deletions(replica, store, schedules, plans, window, read_from, result)
    return result


def _ledger_rows(
    model: SourceModel, plan: TablePlan, rows: list[dict[str, Any]], window: Window
) -> tuple[
    list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[str, int]], list[tuple[str, int]]
]:
    """The ledger rows of a batch, the ledger rows it removes (a deal that no longer meets
    the model's condition), and the agents it touches."""
    deals: list[tuple[Any, ...]] = []
    listings: list[tuple[Any, ...]] = []
    agents: list[tuple[str, int]] = []
    removed: list[tuple[str, int]] = []
    if not plan.ledger or model.totals is None:
        return deals, listings, removed, agents
    d, li = model.totals.deals, model.totals.listings
    for r in rows:
        agent = r.get(d.agent if plan.ledger_kind == "deal" else li.agent)
        if agent is None:
            continue
        if plan.soft_delete is not None and plan.soft_delete.deleted(r) and plan.ledger_kind:
            agents.append((window.partition_key, int(agent)))
            # A ledger table's key is one column (model.py): its id is an int.
            removed.append((plan.ledger_kind, int(record_id(r, plan.key))))
            continue
        agents.append((window.partition_key, int(agent)))
        if plan.ledger_kind == "deal" and d.counts_when and not d.counts_when.holds(r):
            removed.append(("deal", int(r[d.key])))
        elif plan.ledger_kind == "deal":
            post = r.get(d.posted)
            deals.append(
                (
                    int(r[d.key]),
                    int(agent),
                    datetime.fromisoformat(post) if post else None,
                    r.get(d.volume),
                    r.get(d.commission),
                )
            )
        else:
            listings.append((int(r[li.key]), int(agent), r.get(li.status)))
    return deals, listings, removed, agents


def _detect_deletions(
    replica: ReplicaReader,
    store: NotificationStore,
    schedules: ScheduleSet,
    plans: list[TablePlan],
    window: Window,
    read_from: datetime,
    result: DetectionResult,
) -> None:
    tables = sorted(set(schedules.delete_tables) | {p.table for p in plans if p.ledger})
    deletions = read_deletions(replica, schedules.model, tables, read_from, window.end)
    result.deletions_read = len(deletions)
    if not deletions:
        return
    decided = Decisions()
    model = schedules.model
    removed: list[tuple[str, int]] = []
    agents: list[tuple[str, int]] = []
    for table, items in _by_table(deletions).items():
        last_seen = store.snapshots(table, [rid for rid, _ in items])
        kind = model.ledger_kind(table)
        column = model.agent_column(table)
        for rid, _ in items:
            if kind:
                removed.append((kind, int(rid)))
            row = last_seen.get(rid)
            if row is not None and column and row.get(column) is not None:
                agents.append((window.partition_key, int(row[column])))
        tenants = _tenants(
            replica, model, _delete_index(schedules, table), table, list(last_seen.values())
        )
        found = decide_deletions(schedules, table, items, last_seen, window, tenants)
        decided.fired += found.fired
        decided.skipped += found.skipped
    result.add(decided)
    result.events_new += store.save_detection(
        decided.fired, {}, (), (), removed, agents, skipped=decided.skipped
    )


def _delete_index(schedules: ScheduleSet, table: str) -> ScheduleIndex:
    on_table = [s for s in schedules.for_table(table) if s.event_type == EventType.DELETE]
    return ScheduleIndex(
        on_table, schedules.model.tenant.column if schedules.model.tenant else None
    )


def read_deletions(
    replica: ReplicaReader,
    model: SourceModel,
    tables: Sequence[str],
    start: datetime,
    end: datetime,
) -> list[tuple[str, RecordId, datetime]]:
    """``(table, record id, deleted at)`` of ``tables``' deletions in ``[start, end)``, each
    table read where the model says its deletions are: the tombstone or CDC."""
    found = replica.read_deletions(model.tombstoned(tables), start, end)
    return found + replica.read_cdc_deletions(tables, start, end)


def _by_table(
    deletions: Sequence[tuple[str, RecordId, datetime]],
) -> dict[str, list[tuple[RecordId, datetime]]]:
    by_table: dict[str, list[tuple[RecordId, datetime]]] = {}
    for table, rid, deleted_at in deletions:
        by_table.setdefault(table, []).append((rid, deleted_at))
    return by_table


def baseline(
    replica: ReplicaReader, store: NotificationStore, schedules: ScheduleSet, batch_size: int = 5000
) -> dict[str, int]:
    """Record last-seen values and ledgers of every row the schedules compare against.

    Run once when darwin-notify is first pointed at a database, so an update to a record that
    existed before can be told apart from an unchanged one.
    """
    counts: dict[str, int] = {}
    for plan in plan_reads(schedules, replica.columns):
        if not (plan.keep_snapshot or plan.ledger):
            continue
        window = Window("baseline", datetime.min, datetime.min)
        for batch in replica.read_all(plan.table, batch_size):
            rows = [jsonable_row(r) for r in batch]
            snapshots = (
                {(plan.table, record_id(r, plan.key)): r for r in rows}
                if plan.keep_snapshot
                else {}
            )
            deals, listings, removed, _ = _ledger_rows(schedules.model, plan, rows, window)
            store.save_detection((), snapshots, deals, listings, removed, ())
            counts[plan.table] = counts.get(plan.table, 0) + len(rows)
    return counts


@dataclass
class ReconciliationResult:
    """What a re-scan of a time range found that the store never recorded."""

    start: datetime
    end: datetime
    rows_read: int = 0
    events_expected: int = 0
    events_missing: list[str] = field(default_factory=list)
    windows_missing: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.events_missing and not self.windows_missing


def reconcile(
    replica: ReplicaReader,
    store: NotificationStore,
    schedules: ScheduleSet,
    start: datetime,
    end: datetime,
    window_minutes: int,
    batch_size: int = 5000,
) -> ReconciliationResult:
    """Re-read ``[start, end)`` from the replica, decide every change as detection does, and
    list the events that would fire of which the store has no record.

    The decisions come from the functions detection uses (``decide_rows``,
    ``decide_deletions``), with the store's last-seen values as the previous values, so
    criteria and ``ChangedColumns`` apply to inserts, updates and deletions alike. A change
    the store has a decision for, fired or decided against, is not reported: that decision
    was made when the change was first read and stands. Every window of the range in which
    something changed must also have been read (a window in which nothing changed needs no
    run: the sensor requests none).
    """
    result = ReconciliationResult(start, end)
    changed: set[str] = set()

    def note(value: Any) -> None:
        moment = as_datetime(value) if isinstance(value, str) else value
        if isinstance(moment, datetime) and start <= moment < end:
            changed.add(Window.containing(moment, window_minutes).partition_key)

    window = Window("reconcile", start, end)
    for plan in plan_reads(schedules, replica.columns):
        if not plan.schedules and not plan.delete_schedules:
            continue
        for batch in _changes(replica, plan, start, end, batch_size):
            rows = [jsonable_row(r) for r in batch]
            ids = [record_id(r, plan.key) for r in rows]
            previous = store.snapshots(plan.table, ids) if plan.keep_snapshot else {}
            result.rows_read += len(rows)
            for row in batch:
                for column in plan.watch_columns:
                    note(row.get(column))
            tenants = _tenants(replica, schedules.model, plan.index, plan.table, rows)
            decided = decide_rows(plan, rows, previous, window, start, tenants)
            _report_missing(store, decided, result)
    deletions = read_deletions(replica, schedules.model, schedules.delete_tables, start, end)
    result.rows_read += len(deletions)
    for _, _, deleted_at in deletions:
        note(deleted_at)
    for table, items in _by_table(deletions).items():
        last_seen = store.snapshots(table, [rid for rid, _ in items])
        tenants = _tenants(
            replica,
            schedules.model,
            _delete_index(schedules, table),
            table,
            list(last_seen.values()),
        )
        decided = decide_deletions(schedules, table, items, last_seen, window, tenants)
        _report_missing(store, decided, result)
    done = store.windows_between(start, end)
    cursor = Window.containing(start, window_minutes)
    while cursor.end <= end:
        if cursor.partition_key not in done and cursor.partition_key in changed:
            result.windows_missing.append(cursor.partition_key)
        cursor = Window.containing(cursor.end, window_minutes)
    return result


def _report_missing(
    store: NotificationStore, decided: Decisions, result: ReconciliationResult
) -> None:
    keys = [e.event_key for e in decided.fired]
    result.events_expected += len(keys)
    if not keys:
        return
    known = store.decided_event_keys(keys)
    # Events recorded before decisions were: an event without a decision row.
    known |= store.known_event_keys([k for k in keys if k not in known])
    result.events_missing += [k for k in keys if k not in known]


def first_change_since(
    replica: ReplicaReader, schedules: ScheduleSet, since: datetime
) -> datetime | None:
    """The earliest change at or after ``since`` in what detection reads: the watch columns of
    every planned table and the deletions of the tables it watches (index seeks only)."""
    plans = plan_reads(schedules, replica.columns)
    found = [replica.earliest_change(p.table, p.watch_columns, since) for p in plans]
    tables = sorted(set(schedules.delete_tables) | {p.table for p in plans if p.ledger})
    found.append(replica.earliest_deletion(schedules.model.tombstoned(tables), since))
    found.append(replica.earliest_cdc_deletion(tables, since))
    return min((f for f in found if f is not None), default=None)
