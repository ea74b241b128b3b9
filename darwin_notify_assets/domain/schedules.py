"""Notification schedules: what customers configure, validated against the replica's catalog.

A schedule's criteria are data (a JSON list of ``{"column", "op", "value"}``). Each one is
checked against the source table's real columns; a schedule that names an unknown table,
column, operator, template or value is reported by name and skipped, and the others run.
"""

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from darwin_notify_assets.domain.model import SourceModel, load_model
from darwin_notify_assets.errors import ScheduleError


class EventType(StrEnum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"


class Audience(StrEnum):
    AGENT = "agent"
    RECORD_CONTACT = "record_contact"
    AGENT_CONTACTS = "agent_contacts"
    # The contacts a record reaches through the model's join table.
    RECORD_CONTACTS = "record_contacts"


class DedupeScope(StrEnum):
    RECORD = "record"
    CHANGE = "change"
    WINDOW = "window"


def _num(value: Any) -> Any:
    """Numbers (and numeric text, as last-seen values keep them) as Decimal; others as is."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value))
    if isinstance(value, str) and value[:1] in "-+0123456789." and value[-1:].isdigit():
        try:
            return Decimal(value)
        except InvalidOperation:
            return value
    return value


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is not None and b is not None and bool(a) == bool(b)
    return bool(_num(a) == _num(b))


#: What ``equality_key`` gives for a value no hash lookup can find by equality.
UNINDEXABLE: Any = object()


def equality_key(value: Any) -> Any:
    """A hashable key such that ``same_value(a, b)`` is ``equality_key(a) == equality_key(b)``
    whenever neither is ``UNINDEXABLE``: None, booleans (equal to any true value) and
    unhashable values are."""
    if value is None or isinstance(value, bool):
        return UNINDEXABLE
    key = _num(value)
    try:
        hash(key)
    except TypeError:
        return UNINDEXABLE
    return key


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any, Any], bool]:
    def check(new: Any, _old: Any, value: Any) -> bool:
        if new is None or value is None:
            return False
        try:
            return op(_num(new), _num(value))
        except TypeError:
            return op(str(new), str(value))

    return check


def _changed(new: Any, old: Any, _value: Any) -> bool:
    return not same_value(new, old) if (new is not None or old is not None) else False


def _moved(direction: int) -> Callable[[Any, Any, Any], bool]:
    def check(new: Any, old: Any, _value: Any) -> bool:
        if new is None or old is None:
            return False
        delta = _num(new) - _num(old)
        return bool(delta < 0 if direction < 0 else delta > 0)

    return check


# op name -> (check(new, old, value), needs a value, needs the previous value)
OPERATORS: dict[str, tuple[Callable[[Any, Any, Any], bool], bool, bool]] = {
    "eq": (lambda n, _o, v: same_value(n, v), True, False),
    "ne": (lambda n, _o, v: not same_value(n, v), True, False),
    "lt": (_ordered(lambda a, b: a < b), True, False),
    "le": (_ordered(lambda a, b: a <= b), True, False),
    "gt": (_ordered(lambda a, b: a > b), True, False),
    "ge": (_ordered(lambda a, b: a >= b), True, False),
    "in": (lambda n, _o, v: any(same_value(n, x) for x in v), True, False),
    "not_in": (lambda n, _o, v: not any(same_value(n, x) for x in v), True, False),
    "is_null": (lambda n, _o, _v: n is None, False, False),
    "not_null": (lambda n, _o, _v: n is not None, False, False),
    "changed": (_changed, False, True),
    "increased": (_moved(+1), False, True),
    "decreased": (_moved(-1), False, True),
}


@dataclass(frozen=True)
class Criterion:
    column: str
    op: str
    value: Any = None

    def matches(self, new_row: Mapping[str, Any], old_row: Mapping[str, Any] | None) -> bool:
        check, _, _ = OPERATORS[self.op]
        old = old_row.get(self.column) if old_row is not None else None
        return check(new_row.get(self.column), old, self.value)

    @property
    def needs_previous(self) -> bool:
        return OPERATORS[self.op][2]


@dataclass(frozen=True)
class Template:
    template_id: int
    name: str
    subject: str | None
    html_body: str | None
    text_body: str | None
    sms_body: str | None
    # The merge-field query its messages need (``NAME.sql`` in the merge-field folder).
    merge_fields: str | None = None


@dataclass(frozen=True)
class Schedule:
    """One active notification schedule, validated."""

    schedule_id: int
    name: str
    source_table: str
    event_type: EventType
    watch_column: str
    changed_columns: tuple[str, ...]
    criteria: tuple[Criterion, ...]
    channel: Channel
    audience: Audience
    template_id: int
    dedupe_scope: DedupeScope
    uses_agent_totals: bool
    # The schedule's own merge-field query, or else its template's.
    merge_fields: str | None = None

    @property
    def needs_previous_values(self) -> bool:
        return bool(self.changed_columns) or any(c.needs_previous for c in self.criteria)


@dataclass(frozen=True)
class RejectedSchedule:
    schedule_id: int
    name: str
    reason: str


@dataclass(frozen=True)
class ScheduleSet:
    """The active, valid schedules and the ones rejected with their reasons."""

    schedules: tuple[Schedule, ...]
    templates: Mapping[int, Template]
    rejected: tuple[RejectedSchedule, ...] = field(default=())
    model: SourceModel = field(default_factory=load_model)

    @property
    def source_tables(self) -> tuple[str, ...]:
        tables = {s.source_table for s in self.schedules if s.event_type != EventType.DELETE}
        return tuple(sorted(tables))

    @property
    def delete_tables(self) -> tuple[str, ...]:
        return tuple(
            sorted({s.source_table for s in self.schedules if s.event_type == EventType.DELETE})
        )

    @property
    def uses_agent_totals(self) -> bool:
        return any(s.uses_agent_totals for s in self.schedules)

    def for_table(self, table: str) -> list[Schedule]:
        return [s for s in self.schedules if s.source_table == table]

    @functools.cached_property
    def _by_id(self) -> dict[int, Schedule]:
        return {s.schedule_id: s for s in reversed(self.schedules)}

    def by_id(self, schedule_id: int) -> Schedule:
        # A lookup per event and per message: with thousands of schedules, not a scan.
        found = self._by_id.get(schedule_id)
        if found is None:
            raise KeyError(schedule_id)
        return found


def parse_schedule(
    row: Mapping[str, Any],
    catalog: Mapping[str, Sequence[str]],
    templates: Mapping[int, Template],
    model: SourceModel | None = None,
) -> Schedule:
    """Validate one schedule row against the model and the catalog; raise ScheduleError."""
    model = model or load_model()
    c = model.schedules.columns
    name = row.get(c["name"]) or f"schedule {row.get(c['schedule_id'])}"

    def fail(reason: str) -> ScheduleError:
        return ScheduleError(f"schedule {row.get(c['schedule_id'])} ({name}): {reason}")

    table = row.get(c["source_table"]) or ""
    if table not in catalog:
        raise fail(f"unknown source table {table!r}")
    columns = set(catalog[table])
    if table not in model.tables:
        raise fail(f"the source model does not describe table {table!r}")
    try:
        event_type = EventType(str(row.get(c["event_type"], "")).lower())
        channel = Channel(str(row.get(c["channel"], "")).lower())
        audience = Audience(str(row.get(c["audience"], "")).lower())
        scope = DedupeScope(str(row.get(c["dedupe_scope"], "")).lower())
    except ValueError as exc:
        raise fail(str(exc)) from None
    watch = row.get(c["watch_column"]) or ""
    capture = model.capture_instance_of(table)
    if event_type == EventType.DELETE and capture is not None:
        # CDC dates a deletion by its commit, not by a column; a schedule written for the
        # tombstone (its time column) keeps working when the table moves to CDC.
        tomb_time = model.tombstone.time_column if model.tombstone else None
        if watch not in ("", tomb_time):
            raise fail(
                f"delete schedules on {table} read CDC capture instance {capture}, which has "
                f"no watch column: leave it empty, not {watch!r}"
            )
        watch = ""
    elif event_type == EventType.DELETE:
        tomb, soft = model.tombstone, model.soft_delete_of(table)
        if soft is not None:
            if watch not in ("", soft.time_column):
                raise fail(f"delete schedules watch {table}.{soft.time_column}, not {watch!r}")
            if soft.time_column not in columns:
                raise fail(f"unknown deletion column {table}.{soft.time_column}")
            watch = soft.time_column
        else:
            if tomb is None or not model.tombstoned([table]):
                raise fail(f"the source model says nothing of how deletions on {table} are found")
            if watch not in ("", tomb.time_column):
                raise fail(f"delete schedules watch {tomb.table}.{tomb.time_column}, not {watch!r}")
            watch = tomb.time_column
    elif watch not in columns:
        raise fail(f"unknown watch column {table}.{watch}")
    changed = tuple(
        col.strip() for col in (row.get(c["changed_columns"]) or "").split(",") if col.strip()
    )
    for col in changed:
        if col not in columns:
            raise fail(f"unknown changed column {table}.{col}")
    if changed and event_type != EventType.UPDATE:
        raise fail(f"{c['changed_columns']} only applies to update schedules")
    tenant = model.tenant.column if model.tenant else ""
    # A record without the tenant column is in its agent's tenant (schedule_index.tenants_of).
    derived = bool(tenant) and tenant not in columns and model.agent_column(table) is not None
    criteria = parse_criteria(
        row.get(c["criteria"]), table, columns | {tenant} if derived else columns, fail
    )
    for criterion in criteria:
        if derived and criterion.column == tenant and criterion.needs_previous:
            raise fail(f"criterion {tenant} {criterion.op}: {table} has no {tenant} of its own")
    agent_column = model.agent_column(table)
    if audience not in (Audience.RECORD_CONTACT, Audience.RECORD_CONTACTS) and (
        agent_column is None or (table != model.agent.table and agent_column not in columns)
    ):
        raise fail(f"audience {audience} needs {table}.{agent_column or 'an agent column'}")
    if audience == Audience.RECORD_CONTACT and model.contact_column(table) is None:
        raise fail(f"audience record_contact needs a contact on {table}")
    if audience == Audience.RECORD_CONTACTS and table not in model.relations.record_contacts:
        raise fail(f"audience record_contacts needs relations.record_contacts.{table}")
    if audience == Audience.RECORD_CONTACTS and scope == DedupeScope.WINDOW:
        raise fail("a window digest cannot go to record_contacts (one digest per record)")
    if audience == Audience.AGENT_CONTACTS and model.relations.agent_contacts is None:
        raise fail("audience agent_contacts needs relations.agent_contacts in the source model")
    template_id = row.get(c["template_id"])
    template = templates.get(int(template_id)) if template_id is not None else None
    if template is None:
        raise fail(f"unknown template {template_id!r}")
    if channel == Channel.EMAIL and not (
        template.subject and (template.html_body or template.text_body)
    ):
        raise fail(f"template {template.name!r} has no subject or email body")
    if channel == Channel.SMS and not template.sms_body:
        raise fail(f"template {template.name!r} has no SMS body")
    return Schedule(
        schedule_id=int(row[c["schedule_id"]]),
        name=str(name),
        source_table=table,
        event_type=event_type,
        watch_column=watch,
        changed_columns=changed,
        criteria=criteria,
        channel=channel,
        audience=audience,
        template_id=int(str(template_id)),
        dedupe_scope=scope,
        uses_agent_totals=bool(row.get(c["uses_agent_totals"])),
        merge_fields=(_text(row.get(c["merge_fields"])) if "merge_fields" in c else None)
        or template.merge_fields,
    )


def _text(value: Any) -> str | None:
    """A configured name as text; empty and NULL are none."""
    if value is None:
        return None
    return str(value).strip() or None


def parse_criteria(
    raw: Any, table: str, columns: set[str], fail: Callable[[str], ScheduleError]
) -> tuple[Criterion, ...]:
    if raw in (None, ""):
        return ()
    try:
        items = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise fail(f"criteria are not valid JSON ({exc.msg})") from None
    if not isinstance(items, list):
        raise fail("criteria must be a JSON list of {column, op, value}")
    out = []
    for item in items:
        if not isinstance(item, dict) or "column" not in item or "op" not in item:
            raise fail(f"criterion {item!r} must have 'column' and 'op'")
        column, op = item["column"], item["op"]
        if column not in columns:
            raise fail(f"criterion names unknown column {table}.{column}")
        if op not in OPERATORS:
            raise fail(f"criterion on {column} uses unknown operator {op!r}")
        needs_value = OPERATORS[op][1]
        value = item.get("value")
        if needs_value and "value" not in item:
            raise fail(f"criterion {column} {op} needs a value")
        if op in ("in", "not_in") and not isinstance(value, list):
            raise fail(f"criterion {column} {op} needs a list value")
        out.append(Criterion(column=column, op=op, value=value))
    return tuple(out)


def build_schedule_set(
    schedule_rows: Sequence[Mapping[str, Any]],
    template_rows: Sequence[Mapping[str, Any]],
    catalog: Mapping[str, Sequence[str]],
    model: SourceModel | None = None,
) -> ScheduleSet:
    model = model or load_model()
    t = model.templates.columns
    templates = {
        int(r[t["template_id"]]): Template(
            template_id=int(r[t["template_id"]]),
            name=str(r[t["name"]]),
            subject=r.get(t["subject"]),
            html_body=r.get(t["html_body"]),
            text_body=r.get(t["text_body"]),
            sms_body=r.get(t["sms_body"]),
            merge_fields=_text(r.get(t["merge_fields"])) if "merge_fields" in t else None,
        )
        for r in template_rows
    }
    c = model.schedules.columns
    good, bad = [], []
    for row in schedule_rows:
        try:
            good.append(parse_schedule(row, catalog, templates, model))
        except ScheduleError as exc:
            bad.append(
                RejectedSchedule(
                    schedule_id=int(row.get(c["schedule_id"]) or 0),
                    name=str(row.get(c["name"]) or ""),
                    reason=str(exc),
                )
            )
    return ScheduleSet(schedules=tuple(good), templates=templates, rejected=tuple(bad), model=model)
