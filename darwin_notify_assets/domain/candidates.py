"""Candidates: change events x audience -> one candidate per recipient, with a key.

The key is deterministic per ``DedupeScope``:

- ``record``: once per record ever (``s1|Property:42|contact:7``; a record of a composite
  key is named by its key's JSON form, ``s31|crm.Showing:[1004,2]|contact:7``);
- ``change``: once per change, the change named by its watch-column value;
- ``window``: one digest per recipient per window.

Candidates are inserted if absent, so a rerun, a backfill or an overlapping lookback yields
the same keys and adds nothing.
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from darwin_notify_assets.domain.keys import RecordId
from darwin_notify_assets.domain.model import SourceModel
from darwin_notify_assets.domain.schedules import Audience, DedupeScope, Schedule, ScheduleSet
from darwin_notify_assets.storage.replica import ReplicaReader
from darwin_notify_assets.storage.store import CandidateRow, ChangeEvent, NotificationStore


@dataclass
class CandidateResult:
    by_schedule: Counter[int] = field(default_factory=Counter)
    inserted: int = 0
    events: int = 0
    skipped_inactive: int = 0
    # Recipients the model marks soft-deleted (their table's ``deletions: {soft_delete: ...}``).
    skipped_deleted_recipients: int = 0
    render_jobs: int = 0

    def as_metadata(self) -> dict[str, Any]:
        total = sum(self.by_schedule.values())
        return {
            "events": self.events,
            "candidates": total,
            "candidates_new": self.inserted,
            "duplicates_prevented": total - self.inserted,
            "events_of_inactive_schedules": self.skipped_inactive,
            "recipients_soft_deleted": self.skipped_deleted_recipients,
            "render_jobs_published": self.render_jobs,
            **{f"candidates_schedule_{k}": v for k, v in sorted(self.by_schedule.items())},
        }


def candidate_key(schedule: Schedule, event: ChangeEvent, kind: str, recipient: int | None) -> str:
    who = f"{kind}:{recipient if recipient is not None else '-'}"
    scope = schedule.dedupe_scope
    if scope == DedupeScope.RECORD:
        what = f"{event.source_table}:{event.record_id}"
    elif scope == DedupeScope.CHANGE:
        what = f"{event.source_table}:{event.record_id}:{event.event_type}@{event.version}"
    else:
        what = f"window:{event.partition_key}"
    return f"s{schedule.schedule_id}|{what}|{who}"


def build_candidates(
    replica: ReplicaReader,
    store: NotificationStore,
    schedules: ScheduleSet,
    partition_key: str,
    batch_size: int = 5000,
    on_inserted: Callable[[list[int]], int] | None = None,
) -> CandidateResult:
    """Resolve the audiences of the window's events and insert their candidates.

    ``on_inserted`` is given the ids of each batch's new candidates once they are committed,
    and returns the number of render jobs it published for them.
    """
    result = CandidateResult()

    def inserted(ids: list[int]) -> None:
        if on_inserted is not None:
            result.render_jobs += on_inserted(ids)

    for events in store.stream_events(partition_key, batch_size):
        result.events += len(events)
        resolved = [(e, _schedule(schedules, e)) for e in events]
        fan_out_agents = [
            e.agent_id
            for e, s in resolved
            if e.agent_id is not None and s is not None and s.audience == Audience.AGENT_CONTACTS
        ]
        fan_out = schedules.model.relations.agent_contacts
        contact_key = schedules.model.contact.key
        contacts = (
            replica.fetch_grouped(fan_out.table, fan_out.column, fan_out_agents, [contact_key])
            if fan_out_agents and fan_out is not None
            else {}
        )
        interested = _record_contacts(replica, schedules.model, resolved)
        rows: list[CandidateRow] = []
        expanded: list[int] = []
        for e, s in resolved:
            if s is None:
                result.skipped_inactive += 1
                continue
            expanded.append(int(e.event_id or 0))
            if s.audience == Audience.AGENT:
                recipients = [("agent", e.agent_id)]
            elif s.audience == Audience.RECORD_CONTACT:
                recipients = [("contact", e.contact_id)]
            elif s.audience == Audience.RECORD_CONTACTS:
                found = interested.get((e.source_table, e.record_id), [])
                recipients = [("contact", c) for c in found]
            else:
                people = contacts.get(e.agent_id, []) if e.agent_id is not None else []
                recipients = [("contact", int(p[contact_key])) for p in people]
            for kind, rid in recipients:
                rows.append(
                    CandidateRow(
                        candidate_key=candidate_key(s, e, kind, rid),
                        partition_key=partition_key,
                        schedule_id=s.schedule_id,
                        channel=str(s.channel),
                        event_id=int(e.event_id or 0),
                        source_table=e.source_table,
                        record_id=e.record_id,
                        agent_id=e.agent_id,
                        recipient_kind=kind,
                        recipient_id=rid,
                        uses_totals=s.uses_agent_totals,
                    )
                )
        rows, dropped = _without_deleted_recipients(replica, schedules.model, rows)
        result.skipped_deleted_recipients += dropped
        result.by_schedule.update(r.schedule_id for r in rows)
        result.inserted += store.insert_candidates(rows, expanded, on_inserted=inserted)
    return result


def _record_contacts(
    replica: ReplicaReader,
    model: SourceModel,
    resolved: list[tuple[ChangeEvent, Schedule | None]],
) -> dict[tuple[str, RecordId], list[int]]:
    """The contacts each record of the batch reaches through its join table: one statement
    per table per batch."""
    by_table: dict[str, set[RecordId]] = {}
    for e, s in resolved:
        if s is not None and s.audience == Audience.RECORD_CONTACTS:
            by_table.setdefault(e.source_table, set()).add(e.record_id)
    out: dict[tuple[str, RecordId], list[int]] = {}
    for table, ids in sorted(by_table.items()):
        join = model.relations.record_contacts[table]
        # A join table names a record by one column: single-column keys only (model.py).
        record_ids = sorted(int(i) for i in ids)
        rows = replica.fetch_grouped(join.through, join.record, record_ids, [join.contact])
        for record_id, pairs in rows.items():
            contacts = {int(r[join.contact]) for r in pairs if r[join.contact] is not None}
            out[(table, record_id)] = sorted(contacts)
    return out


def _without_deleted_recipients(
    replica: ReplicaReader, model: SourceModel, rows: list[CandidateRow]
) -> tuple[list[CandidateRow], int]:
    """``rows`` less those addressed to a recipient whose row the model marks soft-deleted,
    and how many those were: one statement per recipient table per batch, and none for a
    recipient table without a soft-delete column."""
    gone: set[tuple[str, int]] = set()
    for kind, recipient in sorted(model.recipients.items()):
        soft = model.soft_delete_of(recipient.table)
        if soft is None:
            continue
        ids = {r.recipient_id for r in rows if r.recipient_kind == kind}
        wanted = sorted(i for i in ids if i is not None)
        if not wanted:
            continue
        found = replica.fetch_grouped(recipient.table, recipient.key, wanted, [soft.soft_delete])
        gone.update((kind, rid) for rid, rs in found.items() if any(soft.deleted(r) for r in rs))
    if not gone:
        return rows, 0
    kept = [r for r in rows if (r.recipient_kind, r.recipient_id) not in gone]
    return kept, len(rows) - len(kept)


def _schedule(schedules: ScheduleSet, event: ChangeEvent) -> Schedule | None:
    try:
        return schedules.by_id(event.schedule_id)
    except KeyError:
        return None
