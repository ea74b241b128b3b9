"""Render and send workers: the handlers of bus jobs.

A render job names candidates; the worker fetches every merge field the batch needs from the
replica with one statement per table, renders, and inserts the messages if absent. A send job
names messages; the worker claims them (``queued -> sending``, committed before any provider
call), stamps each small group as requested right before its requests go out, and records
outcomes as they arrive (a group at a time) with a transition conditional on ``sending``: a
crash leaves ``unknown`` only what was handed to the provider and not yet recorded.
"""

import functools
import logging
import queue
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from darwin_notify_assets.bus.base import Job
from darwin_notify_assets.delivery.failpoints import (
    RENDER_BEFORE_WRITE,
    SEND_AFTER_CLAIM,
    SEND_AFTER_PROVIDER,
    SEND_BEFORE_REQUEST,
    failpoint,
)
from darwin_notify_assets.delivery.rules import SendRules
from darwin_notify_assets.delivery.senders import Sender
from darwin_notify_assets.delivery.throttle import ProviderBudget
from darwin_notify_assets.domain import zones
from darwin_notify_assets.domain.keys import RecordId
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.domain.render import (
    DEFAULT_SMS_MAX_SEGMENTS,
    CompiledTemplate,
    RenderError,
    address_for,
    render_email,
    render_sms,
)
from darwin_notify_assets.domain.schedules import (
    Audience,
    Channel,
    DedupeScope,
    Schedule,
    ScheduleSet,
)
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.errors import (
    ConfigurationError,
    DarwinNotifyError,
    MergeFieldError,
    ProviderError,
    ProviderOutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
)
from darwin_notify_assets.storage.replica import ReplicaReader
from darwin_notify_assets.storage.store import (
    AgentTotals,
    ChangeEvent,
    NotificationStore,
    OutboundMessage,
    RenderItem,
    jsonable_row,
)

log = logging.getLogger(__name__)

#: A send's outcome as the store records it: ``(id, status, reason, provider message id)``.
Outcome = tuple[int, MessageStatus, str | None, str | None]


class TotalsNotFresh(DarwinNotifyError):
    """Agent totals a message displays do not yet include its window; retry later."""


@dataclass(frozen=True)
class RenderContextData:
    records: Mapping[tuple[str, RecordId], Mapping[str, Any]]
    agents: Mapping[int, Mapping[str, Any]]
    offices: Mapping[int, Mapping[str, Any]]
    contacts: Mapping[int, Mapping[str, Any]]
    totals: Mapping[int, AgentTotals]
    # For window digests: (partition, schedule) -> the window's events of that schedule.
    digests: Mapping[tuple[str, int], list[ChangeEvent]] = field(default_factory=dict)
    # Merge-field queries' rows: (query, source table) -> record id -> fields.
    extras: Mapping[tuple[str, str], Mapping[RecordId, Mapping[str, Any]]] = field(
        default_factory=dict
    )
    # (query, source table) -> why that query gave nothing.
    extra_failures: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # The rows on the way to a recipient's time zone, by table (``domain/zones.py``).
    zone_rows: Mapping[str, Mapping[int, Mapping[str, Any]]] = field(default_factory=dict)

    def zone_row(self, table: str, key: int) -> Mapping[str, Any] | None:
        return self.zone_rows.get(table, {}).get(key)


class RenderWorker:
    """Renders the candidates of a job into messages."""

    def __init__(
        self,
        replica: ReplicaReader,
        store: NotificationStore,
        schedules: ScheduleSet,
        templates: Mapping[int, CompiledTemplate | str],
        window_minutes: int,
        reload: Callable[[], tuple[ScheduleSet, Mapping[int, CompiledTemplate | str]]]
        | None = None,
        reload_every: float = 60.0,
        sms_max_segments: int = DEFAULT_SMS_MAX_SEGMENTS,
        schedule_version: str = "",
        window_snapshot: Callable[
            [str], tuple[str, ScheduleSet, Mapping[int, CompiledTemplate | str]] | None
        ]
        | None = None,
    ):
        self.sms_max_segments = sms_max_segments
        self.replica = replica
        self.store = store
        self.schedules = schedules
        self.templates = templates
        self.schedule_version = schedule_version
        # A standing worker renders each window with the snapshot that window was read with.
        self.window_snapshot = window_snapshot
        self.window_minutes = window_minutes
        self.reload = reload
        self.reload_every = reload_every
        self._loaded_at = time.monotonic()
        self._zone_paths: dict[str, zones.ZonePath | None] = {}

    def __call__(self, job: Job) -> None:
        self.handle(job)

    def _refresh(self, items: list[RenderItem]) -> None:
        """A long-running worker reloads schedules and templates every so often, and at once
        when a job names a schedule it does not know (created after it started)."""
        if self.reload is None:
            return
        known = {s.schedule_id for s in self.schedules.schedules}
        stale = time.monotonic() - self._loaded_at > self.reload_every
        if stale or any(i.schedule_id not in known for i in items):
            self.schedules, self.templates = self.reload()
            self._loaded_at = time.monotonic()

    def handle(self, job: Job) -> int:
        items = self.store.load_render_items(job.ids)
        if not items:
            return 0
        snapshot = self.window_snapshot(job.partition_key) if self.window_snapshot else None
        if snapshot is not None:
            self.schedule_version, self.schedules, self.templates = snapshot
        else:
            self._refresh(items)
        data = self.fetch(items)
        messages = [self.render_one(item, data) for item in items]
        failpoint(RENDER_BEFORE_WRITE)
        return self.store.insert_messages(messages)

    def fetch(self, items: list[RenderItem]) -> RenderContextData:
        """Every merge field of the batch: one statement per table, never one per row."""
        by_table: dict[str, set[RecordId]] = {}
        agent_ids = {i.agent_id for i in items if i.agent_id is not None}
        contact_ids = {i.recipient_id for i in items if i.recipient_kind == "contact"}
        for i in items:
            if i.event_type != "delete":
                by_table.setdefault(i.source_table, set()).add(i.record_id)
        digests = self._digest_events(items)
        for events in digests.values():
            for e in events:
                if e.event_type != "delete":
                    by_table.setdefault(e.source_table, set()).add(e.record_id)
        model = self.replica.model
        # Contacts who receive and contact records that changed come in one statement.
        people = by_table.setdefault(model.contact.table, set())
        people.update(c for c in contact_ids if c is not None)
        records = self._fetch_records(items, by_table)
        contact_zone = self._zone_path("contact")
        if contact_zone is not None and contact_zone.hops[:1]:
            first = contact_zone.hops[0]
            if first.table == model.agent.table:
                # a contact's time zone is reached through its agent: that agent comes in the
                # same statement as the records' agents
                for cid in contact_ids:
                    found = records.get((model.contact.table, cid)) if cid is not None else None
                    if found is not None and found.get(first.column) is not None:
                        agent_ids.add(int(found[first.column]))
        agents = {
            int(k): jsonable_row(v)
            for k, v in self.replica.fetch_by_ids(
                model.agent.table, sorted(agent_ids), model.agent.key
            ).items()
        }
        office_rel = model.relations.agent_office
        offices: dict[int, dict[str, Any]] = {}
        if office_rel is not None:
            office_ids = {
                a.get(office_rel.column)
                for a in agents.values()
                if a.get(office_rel.column) is not None
            }
            offices = {
                int(k): jsonable_row(v)
                for k, v in self.replica.fetch_by_ids(
                    office_rel.to, sorted(int(i) for i in office_ids if i is not None)
                ).items()
            }
        contacts = {
            int(rid): row for (table, rid), row in records.items() if table == model.contact.table
        }
        # the rows a recipient's time zone is read from, by table: those read above, and
        # those only the way to a zone needs (one statement per foreign key per batch)
        zone_rows: dict[str, dict[int, dict[str, Any]]] = {
            model.agent.table: agents,
            model.contact.table: contacts,
        }
        if office_rel is not None:
            zone_rows[office_rel.to] = offices
        for kind, starts in (("agent", agents), ("contact", contacts)):
            path = self._zone_path(kind)
            if path is None or not path.hops:
                continue
            try:
                more = zones.prefetch(
                    path,
                    list(starts.values()),
                    lambda t: zone_rows.get(t, {}),
                    self.replica.fetch_by_ids,
                )
            except ConfigurationError as exc:
                # the claim decides in the default zone, and its reason says so
                log.warning("time zones of %s recipients not read: %s", kind, exc)
                continue
            for table, rows in more.items():
                zone_rows.setdefault(table, {}).update(
                    (k, jsonable_row(v)) for k, v in rows.items()
                )
        totals_ids = sorted({i.agent_id for i in items if i.uses_totals and i.agent_id is not None})
        totals = self.store.totals(totals_ids) if totals_ids else {}
        extras, failures = self._merge_fields(items)
        return RenderContextData(
            records, agents, offices, contacts, totals, digests, extras, failures, zone_rows
        )

    def _fetch_records(
        self, items: list[RenderItem], by_table: Mapping[str, set[RecordId]]
    ) -> dict[tuple[str, RecordId], dict[str, Any]]:
        """The batch's records, by table and id, with the related records the model names for
        their tables (``relations.related``): one statement per table. A table that related
        records are of is read after the tables that name them, with its own ids and theirs."""
        related = self.replica.model.relations.related
        records: dict[tuple[str, RecordId], dict[str, Any]] = {}
        # a deleted record's related records are named by its last-seen values
        deleted = [
            (i.source_table, i.row_values)
            for i in items
            if i.event_type == "delete" and i.row_values and i.source_table in related
        ]
        sources = set(by_table) | {table for table, _ in deleted}
        targets = {rel.to for table in sources for rel in related.get(table, {}).values()}
        read: dict[str, set[RecordId]] = {}

        def fetch(table: str, ids: set[RecordId]) -> None:
            missing = ids - read.setdefault(table, set())
            if not missing:
                return
            read[table] |= missing
            for rid, row in self.replica.fetch_by_ids(table, sorted(missing)).items():
                records[(table, rid)] = jsonable_row(row)

        def named(target: str) -> set[RecordId]:
            ids: set[RecordId] = set()
            for table, rels in related.items():
                columns = [rel.column for rel in rels.values() if rel.to == target]
                if not columns or table not in sources:
                    continue
                rows: list[Mapping[str, Any]] = [r for (t, _), r in records.items() if t == table]
                rows += [row for t, row in deleted if t == table]
                ids.update(int(r[c]) for r in rows for c in columns if r.get(c) is not None)
            return ids

        for table, ids in by_table.items():
            if table not in targets:
                fetch(table, set(ids))
        for table in sorted(targets):
            try:
                fetch(table, set(by_table.get(table, ())) | named(table))
                # a related record of a related record's table: what the pass above missed
                fetch(table, named(table))
            except ConfigurationError as exc:
                if table in by_table:
                    raise
                # only the templates that show these records fail, by name
                log.warning("related records of %s not read: %s", table, exc)
        return records

    def _zone_path(self, kind: str) -> zones.ZonePath | None:
        if kind not in self._zone_paths:
            self._zone_paths[kind] = zones.zone_path(self.replica.model, kind)
        return self._zone_paths[kind]

    def _merge_fields(
        self, items: list[RenderItem]
    ) -> tuple[dict[tuple[str, str], dict[RecordId, dict[str, Any]]], dict[tuple[str, str], str]]:
        """The rows of every merge-field query the batch's schedules name: one call per query
        (and source table) for all of the batch's records, never one per record."""
        named = {s.schedule_id: s.merge_fields for s in self.schedules.schedules if s.merge_fields}
        wanted: dict[tuple[str, str], set[RecordId]] = {}
        for i in items if named else ():
            query = named.get(i.schedule_id)
            if query:
                wanted.setdefault((query, i.source_table), set()).add(i.record_id)
        extras: dict[tuple[str, str], dict[RecordId, dict[str, Any]]] = {}
        failures: dict[tuple[str, str], str] = {}
        for key, ids in sorted(wanted.items()):
            try:
                rows = self.replica.merge_fields(key[0], sorted(ids), table=key[1])
            except MergeFieldError as exc:
                log.warning("%s", exc)
                failures[key] = str(exc)
                continue
            extras[key] = {rid: jsonable_row(row) for rid, row in rows.items()}
        return extras, failures

    def _digest_events(self, items: list[RenderItem]) -> dict[tuple[str, int], list[ChangeEvent]]:
        """The window's events of every window-scope schedule in the batch (one digest per
        recipient lists all of them that concern the recipient)."""
        wanted = set()
        for i in items:
            try:
                schedule = self.schedules.by_id(i.schedule_id)
            except KeyError:
                continue
            if schedule.dedupe_scope == DedupeScope.WINDOW:
                wanted.add((i.partition_key, i.schedule_id))
        return {key: self.store.schedule_events(*key) for key in sorted(wanted)}

    def render_one(self, item: RenderItem, data: RenderContextData) -> OutboundMessage:
        def outcome(
            status: MessageStatus, reason: str | None = None, **fields: Any
        ) -> OutboundMessage:
            return OutboundMessage(
                candidate_id=item.candidate_id,
                candidate_key=item.candidate_key,
                partition_key=item.partition_key,
                channel=item.channel,
                status=status,
                reason=reason,
                schedule_version=self.schedule_version or None,
                **fields,
            )

        try:
            schedule = self.schedules.by_id(item.schedule_id)
        except KeyError:
            return outcome(
                MessageStatus.RENDER_FAILED,
                f"schedule {item.schedule_id} is no longer active or valid",
            )
        template = self.templates.get(schedule.template_id)
        if template is None or isinstance(template, str):
            problem = template or f"template {schedule.template_id} not found"
            return outcome(MessageStatus.RENDER_FAILED, f"schedule {schedule.name!r}: {problem}")
        if schedule.merge_fields:
            failure = data.extra_failures.get((schedule.merge_fields, item.source_table))
            if failure is not None:
                return outcome(
                    MessageStatus.RENDER_FAILED, f"schedule {schedule.name!r}: {failure}"
                )
        if item.event_type == "delete":
            record = item.row_values
            if record is None:
                return outcome(
                    MessageStatus.RENDER_FAILED,
                    f"no last-seen values for deleted {item.source_table} {item.record_id}",
                )
        else:
            record = data.records.get((item.source_table, item.record_id))
            if record is None:
                return outcome(
                    MessageStatus.RENDER_FAILED,
                    f"{item.source_table} {item.record_id} no longer exists on the replica",
                )
        agent = data.agents.get(item.agent_id) if item.agent_id is not None else None
        if item.recipient_kind == "agent":
            recipient = agent
            if recipient is None:
                return outcome(
                    MessageStatus.RENDER_FAILED,
                    f"agent {item.agent_id} of {item.source_table} {item.record_id} not found",
                )
            gone = self._departed("agent", item.agent_id, recipient)
            if gone:
                return outcome(MessageStatus.SUPPRESSED, gone)
        else:
            recipient = (
                data.contacts.get(item.recipient_id) if item.recipient_id is not None else None
            )
            if recipient is None:
                return outcome(
                    MessageStatus.RENDER_FAILED,
                    f"contact {item.recipient_id} not found on the replica",
                )
            gone = self._departed("contact", item.recipient_id, recipient)
            if gone:
                return outcome(MessageStatus.SUPPRESSED, gone)
            flag = self.replica.model.contact.opt_in_column(str(item.channel))
            if flag and not recipient.get(flag):
                return outcome(
                    MessageStatus.SUPPRESSED,
                    f"contact {item.recipient_id} has not opted in ({flag} is off)",
                )
        try:
            kind = self.replica.model.recipients[
                "agent" if item.recipient_kind == "agent" else "contact"
            ]
            to_address = address_for(item.channel, recipient, kind)
        except ValueError as exc:
            return outcome(MessageStatus.SUPPRESSED, str(exc))
        context = self.context(item, schedule, record, agent, recipient, data)
        time_zone = self.time_zone(item.recipient_kind, recipient, data)
        try:
            if item.channel == Channel.EMAIL:
                email = render_email(template, context)
                return outcome(
                    MessageStatus.QUEUED,
                    recipient_tz=time_zone,
                    to_address=to_address,
                    subject=email.subject,
                    html_body=email.html,
                    text_body=email.text,
                )
            sms = render_sms(template, context, self.sms_max_segments)
            return outcome(
                MessageStatus.QUEUED,
                recipient_tz=time_zone,
                to_address=to_address,
                sms_body=sms.body,
                sms_encoding=sms.encoding,
                sms_segments=sms.segments,
            )
        except RenderError as exc:
            return outcome(MessageStatus.RENDER_FAILED, str(exc))

    def time_zone(
        self, recipient_kind: str, recipient: Mapping[str, Any], data: RenderContextData
    ) -> str | None:
        """The recipient's time zone as the source model says where it is (not checked here:
        the claim decides in the configured default zone for one that is not an IANA name,
        and says so)."""
        path = self._zone_path("agent" if recipient_kind == "agent" else "contact")
        return path.walk(recipient, data.zone_row) if path is not None else None

    def _departed(self, kind: str, rid: int | None, row: Mapping[str, Any]) -> str | None:
        """Why a recipient found on the replica is no longer addressed: its ``active`` column
        is off, or its table's soft-delete column marks it deleted (after its candidate was
        made)."""
        model = self.replica.model
        recipient = model.recipients["agent" if kind == "agent" else "contact"]
        if recipient.active and row.get(recipient.active) in (False, 0):
            return f"{kind} {rid} is inactive"
        soft = model.soft_delete_of(recipient.table)
        if soft is not None and soft.deleted(row):
            return f"{kind} {rid} is deleted ({soft.soft_delete} is set)"
        return None

    def context(
        self,
        item: RenderItem,
        schedule: Schedule,
        record: Mapping[str, Any],
        agent: Mapping[str, Any] | None,
        recipient: Mapping[str, Any],
        data: RenderContextData,
    ) -> dict[str, Any]:
        window = _window(item.partition_key, self.window_minutes)
        office_rel = self.replica.model.relations.agent_office
        office_id = agent.get(office_rel.column) if agent and office_rel else None
        office = data.offices.get(int(office_id)) if office_id is not None else None
        context: dict[str, Any] = dict(record)
        context.update(
            record=record,
            records=self._digest(item, schedule, record, data),
            agent=agent or {},
            office=office or {},
            recipient=recipient,
            change={"event": item.event_type, "old": item.old_values or {}},
            window={"start": window.start, "end": window.end, "key": item.partition_key},
        )
        for name, rel in self.replica.model.relations.related.get(item.source_table, {}).items():
            # No row: a template that shows one of its fields fails by name.
            value = record.get(rel.column)
            context[name] = data.records.get((rel.to, int(value)), {}) if value is not None else {}
        if schedule.merge_fields:
            # No row for the record: a template that shows one of its fields fails by name.
            rows = data.extras.get((schedule.merge_fields, item.source_table), {})
            context["extra"] = rows.get(item.record_id, {})
        if schedule.uses_agent_totals:
            totals = data.totals.get(item.agent_id) if item.agent_id is not None else None
            if totals is None or totals.computed_through < window.end:
                raise TotalsNotFresh(
                    f"totals of agent {item.agent_id} do not include window {item.partition_key}"
                )
            context["totals"] = {
                "units_ytd": totals.units_ytd,
                "volume_ytd": totals.volume_ytd,
                "commission_ytd": totals.commission_ytd,
                "active_listings": totals.active_listings,
                "year": totals.year,
            }
        return context

    @staticmethod
    def _digest(
        item: RenderItem, schedule: Schedule, record: Mapping[str, Any], data: RenderContextData
    ) -> list[Mapping[str, Any]]:
        """``records``: the one changed record, or for a window digest every record of the
        window that concerns this recipient (the agent's records for ``agent`` and
        ``agent_contacts``, the contact's own for ``record_contact``)."""
        if schedule.dedupe_scope != DedupeScope.WINDOW:
            return [record]
        rows = []
        for e in data.digests.get((item.partition_key, item.schedule_id), []):
            mine = (
                e.contact_id == item.recipient_id
                if schedule.audience == Audience.RECORD_CONTACT
                else e.agent_id == item.agent_id
            )
            if not mine:
                continue
            row = (
                e.row_values
                if e.event_type == "delete"
                else data.records.get((e.source_table, e.record_id))
            )
            if row is not None:
                rows.append(row)
        return rows or [record]


@functools.lru_cache(maxsize=1024)
def _window(partition_key: str, minutes: int) -> Window:
    return Window.from_key(partition_key, minutes)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries only when the provider is known not to have accepted the message.

    Attributes:
        attempts: Provider calls per message, the first included.
        base_delay: Seconds before the first retry; doubled for each further one.
        max_delay: The longest backoff.
        max_retry_after: The longest ``Retry-After`` a worker waits for, holding its claim;
            a provider that asks for longer gets no retry before then, and the message is
            ``failed`` (never accepted). Well below the claim's expiry
            (``DARWIN_NOTIFY_SENDING_EXPIRY_SECONDS``).
    """

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 5.0
    max_retry_after: float = 30.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay, self.base_delay * (2 ** (attempt - 1))))

    def wait(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before the next attempt, never sooner than the provider asked;
        ``None`` when the provider asked for longer than a worker waits."""
        if retry_after is None:
            return self.delay(attempt)
        if retry_after > self.max_retry_after:
            return None
        return max(self.delay(attempt), retry_after)


#: Requests stamped ahead per send thread unless DARWIN_NOTIFY_SEND_REQUEST_GROUP says: a stamp
#: then covers a quarter of a 100-message job with 8 threads, so a job costs a handful of store
#: commits, at the price of a crash leaving at most ``concurrency * (1 + GROUP_PER_THREAD)``
#: requests unknown.
GROUP_PER_THREAD = 4


class SendWorker:
    """Claims the messages of a job, sends them, records each outcome.

    The threads never wait for the store: while they send, the worker stamps the next requests
    (one statement, in the transaction that also records the outcomes back so far), so that a
    thread that finishes finds its next request stamped and queued. At most
    ``concurrency + request_group`` requests are stamped and not yet answered, which is all a
    crash can leave ``unknown``: the requests in flight, and those stamped to go out next.

    Args:
        request_group: Requests stamped ahead of the threads (``GROUP_PER_THREAD`` times
            the threads' number unless given); the next stamp is made once half of them have gone out, so the other half
            covers its commit, and takes every place free by then.
        record_every: Outcomes recorded in one statement when no requests are left to stamp
            (while some are, outcomes are recorded with each stamp); by default all of them,
            at the last answer or after ``record_interval``.
        record_interval: Seconds an outcome waits at most before it is recorded.
        rules: Quiet hours and daily caps (``Settings.send_rules``): a message they hold is
            ``deferred`` at the claim, never sent then.
        clock: The claim's time (naive UTC) for the rules; the store's clock unless given.
    """

    def __init__(
        self,
        store: NotificationStore,
        senders: Mapping[str, Sender],
        concurrency: int = 8,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        request_group: int | None = None,
        record_every: int | None = None,
        record_interval: float = 0.1,
        budgets: Mapping[str, ProviderBudget] | None = None,
        rules: SendRules | None = None,
        clock: Callable[[], datetime] | None = None,
    ):
        self.budgets = dict(budgets or {})
        # Quiet hours and daily caps, applied in the claim's own transaction.
        self.rules = rules if rules is not None and rules.active else None
        self.clock = clock
        self.store = store
        self.senders = senders
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        group = max(1, request_group or GROUP_PER_THREAD * concurrency)
        if self.budgets:
            # a group takes its tokens at once: never more than a budget holds
            group = min(group, *(max(1, int(b.burst)) for b in self.budgets.values()))
        self.request_group = group
        self._stamp_at = max(1, group // 2)
        # Once nothing is left to stamp, recording sooner shortens no crash bound (those
        # stamped are counted in it already): only the interval, or the last answer, records.
        self.record_every = max(1, record_every or concurrency + group)
        self.record_interval = record_interval
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="send")

    def __call__(self, job: Job) -> None:
        self.handle(job)

    def handle(self, job: Job) -> dict[str, int]:
        claim_time = self.clock() if self.clock is not None else None
        claimed = self.store.claim(job.ids, self.rules, now_utc=claim_time)
        failpoint(SEND_AFTER_CLAIM)
        counts: dict[str, int] = {}
        if not claimed:
            return counts
        token = claimed[0].claim_token
        assert token is not None
        pending = deque(claimed)
        results: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        outstanding = 0  # stamped and handed to a thread, no outcome yet
        done: list[Outcome] = []
        recorded_at = time.monotonic()
        held_until = 0.0
        while pending or outstanding or done:
            now = time.monotonic()
            # Stamp once half a group has room: the rest of the queue covers the commit.
            room = self.concurrency + self.request_group - outstanding
            stamp = bool(pending) and room >= self._stamp_at and now >= held_until
            # While requests are left to stamp, outcomes go with the next stamp (one commit).
            record = bool(done) and (
                not (pending or outstanding)
                or (not pending and len(done) >= self.record_every)
                or now - recorded_at >= self.record_interval
            )
            if stamp or record:
                group = self._next_group(pending, outstanding) if stamp else []
                if done:
                    failpoint(SEND_AFTER_PROVIDER)
                stamped, wait_s = self._progress(token, done, group)
                for _, status, _, _ in done:
                    counts[str(status)] = counts.get(str(status), 0) + 1
                done, recorded_at = [], time.monotonic()
                if wait_s > 0:  # the provider's budget has no room yet: nothing was stamped
                    held_until = recorded_at + min(wait_s, 1.0)
                    continue
                for m in group:
                    pending.popleft()
                    # One not stamped was claimed again by another worker, which sends it.
                    if m.message_id in stamped:
                        self._pool.submit(self._send_into, m, results)
                        outstanding += 1
                continue
            timeout = None
            if done:
                timeout = max(0.0, self.record_interval - (now - recorded_at))
            elif pending and now < held_until:
                timeout = held_until - now
            if not outstanding:
                time.sleep(timeout or 0.0)
                continue
            try:
                back = [results.get(timeout=timeout)]
            except queue.Empty:
                continue
            while True:  # and every other outcome already back
                try:
                    back.append(results.get_nowait())
                except queue.Empty:
                    break
            outstanding -= len(back)
            done += back
        return counts

    def _next_group(
        self, pending: deque[OutboundMessage], outstanding: int
    ) -> list[OutboundMessage]:
        room = min(self.concurrency + self.request_group - outstanding, len(pending))
        group = [pending[i] for i in range(room)]
        if self.budgets:  # one channel a group: one budget is asked for it
            same = next((i for i, m in enumerate(group) if m.channel != group[0].channel), room)
            group = group[:same]
        return group

    def _send_into(self, message: OutboundMessage, results: "queue.SimpleQueue[Outcome]") -> None:
        outcome: Outcome = (
            int(message.message_id or 0),
            MessageStatus.UNKNOWN,
            "the send thread stopped unexpectedly; the provider may have it",
            None,
        )
        try:
            outcome = self.send_one(message)
        finally:
            results.put(outcome)

    def _progress(
        self, token: str, done: list[Outcome], group: list[OutboundMessage]
    ) -> tuple[set[int], float]:
        """Record ``done`` and stamp ``group`` in one transaction; with a provider budget, the
        group's tokens are taken in it too (nothing stamped, and the wait returned, when the
        budget has no room)."""
        ids = [int(m.message_id or 0) for m in group]
        admit: Callable[[], float] | None = None
        if group and self.budgets:
            budget = self.budgets.get(group[0].channel)
            if budget is not None:
                budget.publish_hold()
                admit = functools.partial(budget.wait, len(group))

        stamped, wait_s = self.store.progress(token, done, ids, admit)
        return set(stamped), wait_s

    def send_one(
        self, message: OutboundMessage
    ) -> tuple[int, MessageStatus, str | None, str | None]:
        sender = self.senders.get(message.channel)
        assert message.message_id is not None
        if sender is None:
            return (
                message.message_id,
                MessageStatus.FAILED,
                f"no sender for {message.channel}",
                None,
            )
        failpoint(SEND_BEFORE_REQUEST)
        attempt = 1
        while True:
            try:
                result = sender.send(message)
                return message.message_id, MessageStatus.SENT, None, result.provider_message_id
            except ProviderUnavailable as exc:
                if attempt >= self.retry.attempts:
                    return (
                        message.message_id,
                        MessageStatus.FAILED,
                        f"{exc} (after {attempt} attempts; never accepted)",
                        None,
                    )
                budget = self.budgets.get(message.channel)
                if budget is not None and exc.retry_after is not None:
                    budget.hold_off(exc.retry_after)  # every worker waits, not only this one
                wait = self.retry.wait(attempt, exc.retry_after)
                if wait is None:
                    return (
                        message.message_id,
                        MessageStatus.FAILED,
                        f"{exc} (asked to retry after {exc.retry_after:g} s, longer than a "
                        f"worker waits; after {attempt} attempts; never accepted)",
                        None,
                    )
                self.sleep(wait)
                attempt += 1
            except ProviderRejected as exc:
                return message.message_id, MessageStatus.FAILED, str(exc), None
            except ProviderOutcomeUnknown as exc:
                return message.message_id, MessageStatus.UNKNOWN, str(exc), None
            except ProviderError as exc:
                return message.message_id, MessageStatus.UNKNOWN, str(exc), None
            except Exception as exc:  # noqa: BLE001 - unknown cause: the provider may have it
                log.exception("sending message %s failed unexpectedly", message.message_id)
                return (
                    message.message_id,
                    MessageStatus.UNKNOWN,
                    f"unexpected error while sending: {type(exc).__name__}: {exc}",
                    None,
                )

    def close(self) -> None:
        self._pool.shutdown(wait=True)
