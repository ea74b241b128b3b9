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

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from darwin_notify_assets.domain.model import SourceModel
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
    key: str
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
            )
        )
    return plans


def _in_range(value: Any, start: datetime, end: datetime) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return bool(start <= value < end)


def event_key(table: str, record_id: int, schedule_id: int, event: str, version: str) -> str:
    return f"{table}:{record_id}:s{schedule_id}:{event}:{version}"


def _event(
    plan: TablePlan,
    schedule: Schedule,
    window: Window,
    record_id: int,
    row: Mapping[str, Any] | None,
    version: str,
    old_values: Mapping[str, Any] | None,
    row_values: Mapping[str, Any] | None,
) -> ChangeEvent:
    source = row or {}
    agent = source.get(plan.agent_column) if plan.agent_column else None
    if agent is None and plan.agent_column == plan.key:
        agent = record_id
    contact = source.get(plan.contact_column) if plan.contact_column else None
    return ChangeEvent(
        event_key=event_key(
            schedule.source_table, record_id, schedule.schedule_id, schedule.event_type, version
        ),
        partition_key=window.partition_key,
        schedule_id=schedule.schedule_id,
        source_table=schedule.source_table,
        record_id=record_id,
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


def decide_row(
    plan: TablePlan,
    row: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    window: Window,
    read_from: datetime,
    out: Decisions,
) -> None:
    """Decide, for each schedule whose watch column this row's value falls in the read
    range, whether that version of the row fires; append the decision to ``out``."""
    record_id = int(row[plan.key])
    created_here = plan.created_column is not None and _in_range(
        row.get(plan.created_column), read_from, window.end
    )
    for s in plan.schedules:
        watched = row.get(s.watch_column)
        if not _in_range(watched, read_from, window.end):
            continue
        version = str(jsonable(watched))
        old = None
        if s.event_type == EventType.INSERT:
            fires = all(c.matches(row, None) for c in s.criteria)
        else:
            fires, old, no_baseline = _update_fires(plan, s, row, previous, created_here, version)
            out.no_baseline += no_baseline
        event = _event(plan, s, window, record_id, row, version, old, None)
        (out.fired if fires else out.skipped).append(event)


def decide_rows(
    plan: TablePlan,
    rows: Sequence[Mapping[str, Any]],
    previous: Mapping[int, Mapping[str, Any]],
    window: Window,
    read_from: datetime,
) -> Decisions:
    """The decisions of a batch of changed rows, given the last-seen values by record id."""
    out = Decisions()
    for row in rows:
        decide_row(plan, row, previous.get(int(row[plan.key])), window, read_from, out)
    return out


def decide_deletions(
    schedules: ScheduleSet,
    table: str,
    deletions: Sequence[tuple[int, datetime]],
    last_seen: Mapping[int, Mapping[str, Any]],
    window: Window,
) -> Decisions:
    """The decisions of ``table``'s deletions ``(record id, deleted at)``: each delete
    schedule's criteria are judged on the record's last-seen values."""
    out = Decisions()
    delete_schedules = [s for s in schedules.for_table(table) if s.event_type == EventType.DELETE]
    plan = _deletion_plan(schedules.model, table)
    for record_id, deleted_at in deletions:
        row = last_seen.get(record_id)
        version = str(jsonable(deleted_at))
        for s in delete_schedules:
            fires = row is None or all(c.matches(row, None) for c in s.criteria)
            event = _event(plan, s, window, record_id, row, version, None, row)
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
    )


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
        for batch in replica.read_changes(
            plan.table, plan.watch_columns, read_from, window.end, batch_size
        ):
            result.rows_read[plan.table] += len(batch)
            rows = [jsonable_row(r) for r in batch]
            ids = [int(r[plan.key]) for r in rows]
            previous = store.snapshots(plan.table, ids) if plan.keep_snapshot else {}
            decided = decide_rows(plan, rows, previous, window, read_from)
            result.add(decided)
            snapshots = (
                {(plan.table, int(r[plan.key])): r for r in rows} if plan.keep_snapshot else {}
            )
            deals, listings, agents = _ledger_rows(schedules.model, plan, rows, window)
            result.events_new += store.save_detection(
                decided.fired, snapshots, deals, listings, (), agents, skipped=decided.skipped
            )
    _detect_deletions(replica, store, schedules, plans, window, read_from, result)
    return result


def _ledger_rows(
    model: SourceModel, plan: TablePlan, rows: list[dict[str, Any]], window: Window
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[str, int]]]:
    deals: list[tuple[Any, ...]] = []
    listings: list[tuple[Any, ...]] = []
    agents: list[tuple[str, int]] = []
    if not plan.ledger or model.totals is None:
        return deals, listings, agents
    d, li = model.totals.deals, model.totals.listings
    for r in rows:
        agent = r.get(d.agent if plan.ledger_kind == "deal" else li.agent)
        if agent is None:
            continue
        agents.append((window.partition_key, int(agent)))
        if plan.ledger_kind == "deal":
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
    return deals, listings, agents


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
    deletions = replica.read_deletions(tables, read_from, window.end)
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
        for record_id, _ in items:
            if kind:
                removed.append((kind, record_id))
            row = last_seen.get(record_id)
            if row is not None and column and row.get(column) is not None:
                agents.append((window.partition_key, int(row[column])))
        found = decide_deletions(schedules, table, items, last_seen, window)
        decided.fired += found.fired
        decided.skipped += found.skipped
    result.add(decided)
    result.events_new += store.save_detection(
        decided.fired, {}, (), (), removed, agents, skipped=decided.skipped
    )


def _by_table(
    deletions: Sequence[tuple[str, int, datetime]],
) -> dict[str, list[tuple[int, datetime]]]:
    by_table: dict[str, list[tuple[int, datetime]]] = {}
    for table, record_id, deleted_at in deletions:
        by_table.setdefault(table, []).append((record_id, deleted_at))
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
                {(plan.table, int(r[plan.key])): r for r in rows} if plan.keep_snapshot else {}
            )
            deals, listings, _ = _ledger_rows(schedules.model, plan, rows, window)
            store.save_detection((), snapshots, deals, listings, (), ())
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
        if not plan.schedules:
            continue
        for batch in replica.read_changes(plan.table, plan.watch_columns, start, end, batch_size):
            rows = [jsonable_row(r) for r in batch]
            ids = [int(r[plan.key]) for r in rows]
            previous = store.snapshots(plan.table, ids) if plan.keep_snapshot else {}
            result.rows_read += len(rows)
            for row in batch:
                for column in plan.watch_columns:
                    note(row.get(column))
            _report_missing(store, decide_rows(plan, rows, previous, window, start), result)
    deletions = replica.read_deletions(schedules.delete_tables, start, end)
    result.rows_read += len(deletions)
    for _, _, deleted_at in deletions:
        note(deleted_at)
    for table, items in _by_table(deletions).items():
        last_seen = store.snapshots(table, [rid for rid, _ in items])
        _report_missing(store, decide_deletions(schedules, table, items, last_seen, window), result)
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
    found.append(replica.earliest_deletion(tables, since))
    return min((f for f in found if f is not None), default=None)
