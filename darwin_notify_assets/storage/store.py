"""The notification store: change events, last-seen values, totals, candidates, messages.

The store is the truth. Every key is unique in the schema, every insert is insert-if-absent,
and every status transition is a conditional update on the current state, recorded in an
append-only history.
"""

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from darwin_notify_assets.delivery.rules import Claimable, SendRules
from darwin_notify_assets.domain.delivery import RANK, SUPPRESSING, DeliveryEvent
from darwin_notify_assets.domain.keys import RecordId, from_stored, stored
from darwin_notify_assets.domain.messages import (
    MessageStatus,
    check_initial,
    check_transition,
)
from darwin_notify_assets.errors import InvalidTransition
from darwin_notify_assets.storage.db import Database, as_datetime, connect
from darwin_notify_assets.storage.dialects import placeholders
from darwin_notify_assets.storage.sqlfiles import read_queries, read_script

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def jsonable(value: Any) -> Any:
    """A value as it is kept in JSON: Decimal as text, timestamps as ISO text."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


_AS_IS = frozenset({str, int, float, bool, type(None)})


def jsonable_row(row: Mapping[str, Any]) -> dict[str, Any]:
    # Most values pass as they are; this runs for every merge-field row of every message.
    return {k: v if type(v) in _AS_IS else jsonable(v) for k, v in row.items()}


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=jsonable, sort_keys=True)


@dataclass(frozen=True)
class ChangeEvent:
    """One schedule's view of one change: what fired, for which record, at which version."""

    event_key: str
    partition_key: str
    schedule_id: int
    source_table: str
    record_id: RecordId
    event_type: str
    version: str
    agent_id: int | None
    contact_id: int | None
    old_values: Mapping[str, Any] | None
    row_values: Mapping[str, Any] | None
    event_id: int | None = None


@dataclass(frozen=True)
class CandidateRow:
    candidate_key: str
    partition_key: str
    schedule_id: int
    channel: str
    event_id: int
    source_table: str
    record_id: RecordId
    agent_id: int | None
    recipient_kind: str
    recipient_id: int | None
    uses_totals: bool


@dataclass(frozen=True)
class RenderItem:
    """A candidate with what rendering needs from its event."""

    candidate_id: int
    candidate_key: str
    partition_key: str
    schedule_id: int
    channel: str
    source_table: str
    record_id: RecordId
    agent_id: int | None
    recipient_kind: str
    recipient_id: int | None
    uses_totals: bool
    event_type: str
    old_values: Mapping[str, Any] | None
    row_values: Mapping[str, Any] | None


@dataclass(frozen=True)
class OutboundMessage:
    """A message ready to be sent (or suppressed / failed before sending)."""

    candidate_id: int
    candidate_key: str
    partition_key: str
    channel: str
    status: MessageStatus
    reason: str | None = None
    to_address: str | None = None
    subject: str | None = None
    html_body: str | None = None
    text_body: str | None = None
    sms_body: str | None = None
    sms_encoding: str | None = None
    sms_segments: int | None = None
    message_id: int | None = None
    #: The claim that holds the message for sending (set by ``claim``).
    claim_token: str | None = None
    # The schedule snapshot it was rendered from (see ``save_snapshot``).
    schedule_version: str | None = None
    #: The recipient's time zone as the source model gives it (quiet hours, daily caps).
    recipient_tz: str | None = None


@dataclass(frozen=True)
class AgentTotals:
    agent_id: int
    year: int
    units_ytd: int
    volume_ytd: Decimal
    commission_ytd: Decimal
    active_listings: int
    computed_through: datetime


MESSAGE_COLUMNS = (
    "message_id",
    "candidate_id",
    "candidate_key",
    "partition_key",
    "channel",
    "status",
    "reason",
    "to_address",
    "subject",
    "html_body",
    "text_body",
    "sms_body",
    "sms_encoding",
    "sms_segments",
)


LIST_MARK = "{list}"

_ALL_STATUSES = tuple(str(s) for s in MessageStatus)
#: What the delivery step waits for: a deferred message is not final, but waits for its time,
#: released by a later delivery step (the deferred-messages sensor's run).
_WAITED_STATUSES = (str(MessageStatus.QUEUED), str(MessageStatus.SENDING))
#: What a daily cap counts: sends that reached (or may have reached) the provider, or will.
_COUNTED_SENDS = (str(MessageStatus.SENDING), str(MessageStatus.SENT), str(MessageStatus.UNKNOWN))


class NotificationStore:
    """The store's operations; every statement is a named query of
    ``sql/<dialect>/store_queries.sql`` and every method one transaction."""

    def __init__(self, db: Database):
        self.db = db
        self._queries = read_queries(db.dialect, "store_queries.sql")

    @classmethod
    def open(
        cls, url: str, password_env: str | None = None, password: str | None = None
    ) -> "NotificationStore":
        return cls(connect(url, password_env=password_env, password=password))

    def close(self) -> None:
        self.db.close()

    def ensure_schema(self) -> None:
        """Create what is missing: the schema, then the upgrades of ``store_upgrades.sql``
        (forward only) whose column an older store lacks, or has not yet as text. An upgrade
        may be a few statements (SQLite rebuilds a table to change its CHECK constraint):
        they run in one transaction."""
        self.db.run_script(read_script(self.db.dialect, "store_schema.sql"))
        for name, statement in read_queries(self.db.dialect, "store_upgrades.sql").items():
            table, column, *kind = name.split("__")
            needed = (
                not self._is_text(table, column)
                if kind == ["text"]
                else not self._has_column(table, column)
            )
            if needed:
                self.db.run_script(statement)

    def column_type(self, table: str, column: str) -> str | None:
        """A store column's type as the database's catalog names it, lower case."""
        with self.db.transaction():
            rows = self.db.query(self._sql("column_type"), [table, column])
        return str(rows[0][0]).lower() if rows else None

    def _is_text(self, table: str, column: str) -> bool:
        """Whether a store column is of a text type already (or absent)."""
        kind = self.column_type(table, column) or "text"
        return "char" in kind or "text" in kind

    def _has_column(self, table: str, column: str) -> bool:
        qualified = f"dbo.{table}" if self.db.dialect == "mssql" else table
        try:
            with self.db.transaction():
                self.db.query(f"SELECT {column} FROM {qualified} WHERE 1 = 0")
        except Exception:  # noqa: BLE001 - the driver's error class differs per database
            return False
        return True

    # -- schedule snapshots ---------------------------------------------------------------------
    def save_snapshot(self, version: str, body: str) -> None:
        """Keep the schedules and templates of ``version`` (once: a version never changes)."""
        with self.db.transaction():
            self.db.execute(
                self._sql("insert_schedule_snapshot"), [version, body, self.db.ts(utcnow())]
            ).close()

    def snapshot(self, version: str) -> str | None:
        with self.db.transaction():
            rows = self._rows("select_schedule_snapshot", [version])
        return str(rows[0][0]) if rows else None

    def bind_run(self, run_id: str, version: str) -> str:
        """The version a run uses: the first one bound to it stays; returns it."""
        with self.db.transaction():
            self.db.execute(
                self._sql("insert_run_schedule"), [run_id, version, self.db.ts(utcnow())]
            ).close()
            rows = self._rows("select_run_schedule", [run_id])
        return str(rows[0][0])

    def run_version(self, run_id: str) -> str | None:
        with self.db.transaction():
            rows = self._rows("select_run_schedule", [run_id])
        return str(rows[0][0]) if rows else None

    def queue_health(self, stuck_before: datetime) -> tuple[int, datetime | None, int]:
        """Queued messages, the oldest one's creation time, and claims stuck since before
        ``stuck_before``."""
        with self.db.transaction():
            queued, oldest = self._rows("select_queue_health", [str(MessageStatus.QUEUED)])[0]
            stuck = self._rows(
                "count_stuck_claims", [str(MessageStatus.SENDING), self.db.ts(stuck_before)]
            )[0][0]
        return int(queued or 0), as_datetime(oldest), int(stuck or 0)

    def set_window_version(self, partition_key: str, version: str) -> None:
        with self.db.transaction():
            self.db.execute(
                self._sql("update_window_schedule_version"), [version, partition_key]
            ).close()

    def _sql(self, name: str, listed: int | None = None) -> str:
        """The named statement; ``listed`` fills its ``{list}`` with that many ``?``."""
        try:
            sql = self._queries[name]
        except KeyError:
            raise KeyError(
                f"sql/{self.db.dialect}/store_queries.sql has no query {name!r}"
            ) from None
        if listed is not None:
            return sql.replace(LIST_MARK, placeholders(listed))
        return sql

    def _rows(self, name: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.db.query(self._sql(name), params)

    def _listed(
        self,
        name: str,
        values: Sequence[Any],
        before: Sequence[Any] = (),
        after: Sequence[Any] = (),
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Run a statement with an IN list once per batch of ``values``; yields each result."""
        for chunk in self.db.in_batches(list(values), extra_params=len(before) + len(after)):
            yield self.db.query(self._sql(name, len(chunk)), [*before, *chunk, *after])

    def _execute_listed(
        self,
        name: str,
        values: Sequence[Any],
        before: Sequence[Any] = (),
        after: Sequence[Any] = (),
    ) -> None:
        for chunk in self.db.in_batches(list(values), extra_params=len(before) + len(after)):
            self.db.execute(self._sql(name, len(chunk)), [*before, *chunk, *after]).close()

    def _count(self, name: str, params: Sequence[Any]) -> int:
        with self.db.transaction():
            rows = self._rows(name, params)
        return int(rows[0][0] or 0) if rows else 0

    # -- windows --------------------------------------------------------------------------------
    def record_window(
        self,
        partition_key: str,
        start: datetime,
        end: datetime,
        applied_through: datetime | None,
        replica_state: str,
        rows_read: int,
    ) -> None:
        db = self.db
        with db.transaction():
            db.execute(self._sql("delete_window_run"), [partition_key]).close()
            db.execute(
                self._sql("insert_window_run"),
                [
                    partition_key,
                    db.ts(start),
                    db.ts(end),
                    db.ts(applied_through),
                    replica_state,
                    rows_read,
                    db.ts(utcnow()),
                ],
            ).close()

    def known_event_keys(self, keys: Sequence[str]) -> set[str]:
        with self.db.transaction():
            return {r[0] for rows in self._listed("select_known_event_keys", keys) for r in rows}

    def windows_between(self, start: datetime, end: datetime) -> set[str]:
        with self.db.transaction():
            rows = self._rows("select_windows_between", [self.db.ts(start), self.db.ts(end)])
        return {r[0] for r in rows}

    def last_window(self) -> str | None:
        """The newest window whose changes were read."""
        with self.db.transaction():
            rows = self._rows("select_last_window")
        return rows[0][0] if rows else None

    def window_info(self, partition_key: str) -> dict[str, Any] | None:
        with self.db.transaction():
            rows = self.db.query_dicts(self._sql("select_window_run"), [partition_key])
        return rows[0] if rows else None

    # -- last-seen values and ledgers -----------------------------------------------------------
    def snapshots(self, table: str, ids: Sequence[RecordId]) -> dict[RecordId, dict[str, Any]]:
        out: dict[RecordId, dict[str, Any]] = {}
        with self.db.transaction():
            wanted = [stored(i) for i in ids]
            for rows in self._listed("select_snapshots", wanted, before=[table]):
                for rid, text in rows:
                    out[from_stored(rid)] = json.loads(text)
        return out

    def save_detection(
        self,
        events: Sequence[ChangeEvent],
        snapshots: Mapping[tuple[str, RecordId], Mapping[str, Any]],
        deals: Sequence[tuple[int, int, datetime | None, Any, Any]],
        listings: Sequence[tuple[int, int, str | None]],
        removed: Sequence[tuple[str, int]],
        window_agents: Iterable[tuple[str, int]],
        skipped: Sequence[ChangeEvent] = (),
    ) -> int:
        """Write one batch of detection results in one transaction; returns new events.

        ``events`` fire and ``skipped`` do not; see ``record_decisions``. ``removed`` names
        deleted ledger rows as ``("deal" | "listing", key)``.
        """
        db = self.db
        now = db.ts(utcnow())
        with db.transaction():
            events = self.record_decisions(events, skipped, now)
            inserted = db.bulk_execute(
                self._sql("insert_change_events"),
                [
                    (
                        e.event_key,
                        e.partition_key,
                        e.schedule_id,
                        e.source_table,
                        stored(e.record_id),
                        e.event_type,
                        e.version,
                        e.agent_id,
                        e.contact_id,
                        dumps(e.old_values) if e.old_values is not None else None,
                        dumps(e.row_values) if e.row_values is not None else None,
                        now,
                    )
                    for e in events
                ],
            )
            db.bulk_execute(
                self._sql("upsert_record_snapshots"),
                [(t, stored(rid), dumps(v), now) for (t, rid), v in snapshots.items()],
            )
            db.bulk_execute(
                self._sql("upsert_deal_ledger"),
                [(d, a, db.ts(p), _money(s), _money(c)) for d, a, p, s, c in deals],
            )
            db.bulk_execute(self._sql("upsert_listing_ledger"), list(listings))
            self._execute_listed("delete_deal_ledger_rows", [r for k, r in removed if k == "deal"])
            self._execute_listed(
                "delete_listing_ledger_rows", [r for k, r in removed if k == "listing"]
            )
            db.bulk_execute(self._sql("insert_window_agents"), sorted(set(window_agents)))
        return inserted

    def record_decisions(
        self, fired: Sequence[ChangeEvent], skipped: Sequence[ChangeEvent], now: Any
    ) -> list[ChangeEvent]:
        """Record each change's decision (fires or not) unless it already has one; return
        the events of ``fired`` that were not decided against before. Part of the caller's
        transaction: the unique key on ``change_decision`` keeps the first decision, also
        when two runs read the same change at once."""
        rows = [(e.event_key, e.partition_key, True, now) for e in fired]
        rows += [(e.event_key, e.partition_key, False, now) for e in skipped]
        if not rows:
            return list(fired)
        new = self.db.bulk_execute(self._sql("insert_change_decisions"), rows)
        if new == len(rows) or not fired:
            return list(fired)
        against = {
            r[0]
            for rows_ in self._listed(
                "skipped_event_keys", [e.event_key for e in fired], before=[False]
            )
            for r in rows_
        }
        return [e for e in fired if e.event_key not in against]

    def decided_event_keys(self, keys: Sequence[str]) -> set[str]:
        """The keys of ``keys`` whose change has a recorded decision, fired or not."""
        with self.db.transaction():
            return {r[0] for rows in self._listed("decided_event_keys", keys) for r in rows}

    # -- agent totals ---------------------------------------------------------------------------
    def window_agents(self, partition_key: str) -> list[int]:
        with self.db.transaction():
            rows = self._rows("select_window_agents", [partition_key, partition_key, True])
        return sorted(int(r[0]) for r in rows)

    def recompute_totals(
        self,
        agent_ids: Sequence[int],
        through: datetime,
        active_status: str,
        years: Mapping[int, tuple[int, datetime]] | None = None,
    ) -> int:
        """Recompute these agents' year-to-date production from the ledgers.

        A listing counts as active when its status is ``active_status`` (the source model's).
        ``years`` gives an agent's year and its first instant (naive UTC) when its year is not
        the UTC year of ``through`` (``totals.year_time_zone``); agents that share a year
        start are summed by one statement per batch.

        The ledgers hold the replica's rows as last read, so the totals include every change
        read so far; ``computed_through`` never moves backwards when an older window reruns.
        """
        db = self.db
        utc_year = (through.year, datetime(through.year, 1, 1))
        agents = sorted({int(a) for a in agent_ids})
        by_start: dict[tuple[int, datetime], list[int]] = {}
        for agent in agents:
            year = years.get(agent, utc_year) if years is not None else utc_year
            by_start.setdefault(year, []).append(agent)
        now = db.ts(utcnow())
        existing = self.totals(agent_ids)
        written = 0
        with db.transaction():
            active: dict[int, int] = {}
            for chunk in db.in_batches(agents, extra_params=1):
                active.update(
                    (int(a), int(n))
                    for a, n in db.query(
                        self._sql("select_listing_counts", len(chunk)), [*chunk, active_status]
                    )
                )
            for (ytd_year, start), group in sorted(by_start.items()):
                for chunk in db.in_batches(group, extra_params=1):
                    deals = {
                        int(a): (int(n), v, c)
                        for a, n, v, c in db.query(
                            self._sql("select_deal_totals", len(chunk)), [*chunk, db.ts(start)]
                        )
                    }
                    rows = []
                    for agent in chunk:
                        n, v, c = deals.get(agent, (0, 0, 0))
                        previous = existing.get(agent)
                        mark = max(through, previous.computed_through) if previous else through
                        rows.append(
                            (
                                agent,
                                ytd_year,
                                n,
                                _money(v),
                                _money(c),
                                active.get(agent, 0),
                                db.ts(mark),
                                now,
                            )
                        )
                    db.bulk_execute(self._sql("upsert_agent_totals"), rows)
                    written += len(rows)
        return written

    def totals(self, agent_ids: Sequence[int]) -> dict[int, AgentTotals]:
        out = {}
        with self.db.transaction():
            for rows in self._listed("select_agent_totals", sorted(set(agent_ids))):
                for agent_id, year, units, volume, commission, active, through in rows:
                    out[int(agent_id)] = AgentTotals(
                        agent_id=int(agent_id),
                        year=int(year),
                        units_ytd=int(units),
                        volume_ytd=Decimal(str(volume)),
                        commission_ytd=Decimal(str(commission)),
                        active_listings=int(active),
                        computed_through=as_datetime(through) or datetime.min,
                    )
        return out

    # -- events and candidates ------------------------------------------------------------------
    def stream_events(
        self, partition_key: str, batch_size: int = 5000
    ) -> Iterator[list[ChangeEvent]]:
        """The window's events whose candidates are not yet inserted, in pages (keyset on
        event_id), so callers may write between pages."""
        last = 0
        while True:
            with self.db.transaction():
                rows = self._rows(
                    "select_unexpanded_events", [partition_key, last, False, int(batch_size)]
                )
            if not rows:
                return
            last = int(rows[-1][0])
            yield [_event(r) for r in rows]

    def schedule_events(self, partition_key: str, schedule_id: int) -> list[ChangeEvent]:
        """Every event of one schedule in one window, for a window digest."""
        with self.db.transaction():
            rows = self._rows("select_schedule_events", [partition_key, schedule_id])
        return [_event(r) for r in rows]

    def insert_candidates(
        self,
        rows: Sequence[CandidateRow],
        expanded: Sequence[int] = (),
        on_inserted: Callable[[list[int]], None] | None = None,
    ) -> int:
        """Insert candidates if absent and mark the events they came from as expanded, in one
        transaction, so a rerun resolves no audience twice (a contact added since would
        otherwise receive an old listing). Once committed, ``on_inserted`` is given the ids
        of the candidates this call created."""
        db = self.db
        now = db.ts(utcnow())
        with db.transaction():
            self._execute_listed("mark_events_expanded", expanded, before=[True])
            n = db.bulk_execute(
                self._sql("insert_candidates"),
                [
                    (
                        c.candidate_key,
                        c.partition_key,
                        c.schedule_id,
                        c.channel,
                        c.event_id,
                        c.source_table,
                        stored(c.record_id),
                        c.agent_id,
                        c.recipient_kind,
                        c.recipient_id,
                        c.uses_totals,
                        now,
                    )
                    for c in rows
                ],
            )
        if on_inserted is not None and n:
            ids: list[int] = []
            with db.transaction():
                for partition_key in sorted({c.partition_key for c in rows}):
                    ids += [
                        int(r[0])
                        for r in self._rows("select_new_candidate_ids", [partition_key, now])
                    ]
            on_inserted(ids)
        return n

    def candidate_count(self, partition_key: str) -> int:
        return self._count("count_window_candidates", [partition_key])

    def event_count(self, partition_key: str) -> int:
        return self._count("count_window_events", [partition_key])

    # -- rendering ------------------------------------------------------------------------------
    def stream_unrendered(self, partition_key: str, batch_size: int) -> Iterator[list[int]]:
        with self.db.transaction():
            ids = [
                int(r[0]) for r in self._rows("select_unrendered_candidate_ids", [partition_key])
            ]
        for start in range(0, len(ids), batch_size):
            yield ids[start : start + batch_size]

    def unrendered_count(self, partition_key: str) -> int:
        return self._count("count_unrendered_candidates", [partition_key, partition_key])

    def load_render_items(self, candidate_ids: Sequence[int]) -> list[RenderItem]:
        out = []
        with self.db.transaction():
            for rows in self._listed("select_render_items", candidate_ids):
                out += [
                    RenderItem(
                        candidate_id=int(r[0]),
                        candidate_key=r[1],
                        partition_key=r[2],
                        schedule_id=int(r[3]),
                        channel=r[4],
                        source_table=r[5],
                        record_id=from_stored(r[6]),
                        agent_id=_int(r[7]),
                        recipient_kind=r[8],
                        recipient_id=_int(r[9]),
                        uses_totals=bool(r[10]),
                        event_type=r[11],
                        old_values=json.loads(r[12]) if r[12] else None,
                        row_values=json.loads(r[13]) if r[13] else None,
                    )
                    for r in rows
                ]
        return out

    def insert_messages(self, messages: Sequence[OutboundMessage]) -> int:
        """Insert rendered (or suppressed, or failed) messages if absent, with history.

        Raises InvalidTransition, writing nothing, if any is in a status a message cannot be
        created in."""
        if not messages:
            return 0
        for m in messages:
            check_initial(m.status)
        db = self.db
        now = db.ts(utcnow())
        with db.transaction():
            n = db.bulk_execute(
                self._sql("insert_messages"),
                [
                    (
                        m.candidate_id,
                        m.candidate_key,
                        m.partition_key,
                        m.channel,
                        m.to_address,
                        m.subject,
                        m.html_body,
                        m.text_body,
                        m.sms_body,
                        m.sms_encoding,
                        m.sms_segments,
                        str(m.status),
                        m.reason,
                        0,
                        now,
                        now,
                        m.schedule_version,
                        m.recipient_tz,
                    )
                    for m in messages
                ],
            )
            self._execute_listed(
                "insert_first_message_events", [m.candidate_id for m in messages], after=[now]
            )
        return n

    # -- sending --------------------------------------------------------------------------------
    def queued_ids(self, partition_key: str) -> list[int]:
        with self.db.transaction():
            rows = self._rows(
                "select_window_message_ids", [partition_key, str(MessageStatus.QUEUED)]
            )
        return [int(r[0]) for r in rows]

    def claim(
        self,
        message_ids: Sequence[int],
        rules: SendRules | None = None,
        now_utc: datetime | None = None,
    ) -> list[OutboundMessage]:
        """Move ``queued -> sending`` for the given ids; return only the ones this call won.

        First, in the same transaction, every one whose address or recipient has an active
        opt-out (``suppression``) becomes ``suppressed`` with that reason: an unsubscribe that
        arrived after rendering stops the send. Then, with ``rules`` (quiet hours, daily caps),
        every one that may not go yet becomes ``deferred`` with the time it may go and why
        (``queued -> deferred``: a message in ``sending`` is always one going to the
        provider). Without rules this costs nothing; with them, one statement reads the
        batch's channels, addresses and time zones, one per capped channel counts the
        recipients' sends of the day, and one per deferral time writes. The claim is committed before any provider is
        called. A message is handed to the provider only after ``mark_requested`` stamped it
        under this claim, so a message of the given ids still ``sending`` without that stamp
        (its worker died before its request) is claimed again here: it provably never reached
        a provider.
        """
        expected, new = MessageStatus.QUEUED, MessageStatus.SENDING
        check_transition(expected, new)
        db = self.db
        token = uuid.uuid4().hex
        moment = now_utc or utcnow()
        now = db.ts(moment)
        with db.transaction():
            held: list[Claimable] = []
            if rules is not None and rules.active:
                held = self._claimable(message_ids, rules)
            suppressed = self._suppress_opted_out(message_ids, token, now)
            if held and rules is not None:
                held = [m for m in held if m.message_id not in suppressed]
                self._defer_held(held, rules, token, moment)
            won = 0
            for chunk in db.in_batches(list(message_ids), extra_params=4):
                cur = db.execute(
                    self._sql("claim_messages", len(chunk)),
                    [str(new), token, now, *chunk, str(expected)],
                )
                won += max(cur.rowcount or 0, 0)
                cur.close()
            again: set[int] = set()
            if won < len(set(message_ids)):
                # Some were not queued: only then look for claims that never stamped a request
                # (a worker that died before its requests, the job redelivered).
                before = {
                    int(r["message_id"])
                    for r in db.query_dicts(self._sql("select_claimed_messages"), [token, str(new)])
                }
                rest = sorted(set(message_ids) - before)
                reclaimed = 0
                for chunk in db.in_batches(rest, extra_params=3):
                    cur = db.execute(
                        self._sql("reclaim_unrequested_messages", len(chunk)),
                        [token, now, *chunk, str(new)],
                    )
                    reclaimed += max(cur.rowcount or 0, 0)
                    cur.close()
                if reclaimed:
                    again = {
                        int(r["message_id"])
                        for r in db.query_dicts(
                            self._sql("select_claimed_messages"), [token, str(new)]
                        )
                    } - before
            claimed = [
                _message(r)
                for r in db.query_dicts(self._sql("select_claimed_messages"), [token, str(new)])
            ]
            reason = "claimed again: the previous claim never handed it to the provider"
            self._history(
                [
                    (int(m.message_id or 0), new, new, reason)
                    if m.message_id in again
                    else (int(m.message_id or 0), expected, new, None)
                    for m in claimed
                ],
                now,
            )
        return claimed

    def mark_requested(self, claim_token: str, message_ids: Sequence[int]) -> list[int]:
        """Stamp ``requested_at`` on messages of this claim right before their requests go out;
        returns the ids stamped (only those may be sent: the others were claimed again)."""
        if not message_ids:
            return []
        db = self.db
        now = db.ts(utcnow())
        with db.transaction():
            changed = 0
            for chunk in db.in_batches(list(message_ids), extra_params=4):
                cur = db.execute(
                    self._sql("mark_messages_requested", len(chunk)),
                    [now, now, *chunk, claim_token, str(MessageStatus.SENDING)],
                )
                changed += max(cur.rowcount or 0, 0)
                cur.close()
            if changed == len(message_ids):
                return list(message_ids)
            won = {
                int(r[0])
                for rows in self._listed(
                    "select_requested_messages", message_ids, after=[claim_token, now]
                )
                for r in rows
            }
        return [mid for mid in message_ids if mid in won]

    def progress(
        self,
        claim_token: str,
        outcomes: Sequence[tuple[int, MessageStatus, str | None, str | None]],
        next_ids: Sequence[int],
        admit: Callable[[], float] | None = None,
    ) -> tuple[list[int], float]:
        """Record finished outcomes and stamp the next requests, in one transaction (one
        commit). ``admit``, run in it before the stamp, takes the requests' share of a provider
        budget and returns the seconds to wait when there is none: then nothing is stamped.
        Returns the ids stamped and that wait (0 when stamped)."""
        with self.db.transaction():
            if outcomes:
                self.finish(outcomes)
            if next_ids and admit is not None and (wait := admit()) > 0:
                return [], wait
            return self.mark_requested(claim_token, next_ids), 0.0

    def _claimable(self, message_ids: Sequence[int], rules: SendRules) -> list[Claimable]:
        """The listed queued messages of a channel with rules, and, first thing in the claim's
        transaction, the lock on each capped recipient (channel and address): two claims of one
        recipient's messages count its sends one after the other, so the cap holds across
        workers. Taken before the claim writes anything, and in one order, so that no claim
        waits for a recipient's lock while it holds a message row another one waits for."""
        rows = [
            Claimable(int(r[0]), str(r[1]), r[2], r[3])
            for found in self._listed(
                "select_claimable_for_rules", message_ids, after=[str(MessageStatus.QUEUED)]
            )
            for r in found
        ]
        rows = [r for r in rows if r.channel in rules.channels]
        for channel in sorted({r.channel for r in rows if rules.capped(r.channel)}):
            addresses = sorted(
                {str(r.to_address) for r in rows if r.channel == channel and r.to_address}
            )
            for _ in self._listed("lock_recipients", addresses, after=[channel]):
                pass
        return rows

    def _defer_held(
        self, rows: Sequence[Claimable], rules: SendRules, token: str, moment: datetime
    ) -> None:
        """``queued -> deferred`` for those of ``rows`` (from ``_claimable``) that quiet hours
        or a daily cap hold at ``moment``; part of the claim's transaction."""
        expected, new = MessageStatus.QUEUED, MessageStatus.DEFERRED
        check_transition(expected, new)
        db = self.db
        sent: dict[tuple[str, str], list[datetime]] = {}
        for channel in sorted({r.channel for r in rows if rules.capped(r.channel)}):
            capped = [r for r in rows if r.channel == channel and r.to_address]
            if not capped:
                continue
            since = min(rules.day_start(r.time_zone, moment) for r in capped)
            addresses = sorted({str(r.to_address) for r in capped})
            for found in self._listed(
                "select_recipient_sends",
                addresses,
                after=[channel, *_COUNTED_SENDS, db.ts(since)],
            ):
                for address, at in found:
                    when = as_datetime(at)
                    if when is not None:
                        sent.setdefault((channel, address), []).append(when)
        deferrals = rules.decide(rows, moment, sent)
        if not deferrals:
            return
        now = db.ts(moment)
        groups: dict[tuple[datetime, str], list[int]] = {}
        for d in deferrals:
            groups.setdefault((d.until, d.reason), []).append(d.message_id)
        for (until, reason), ids in sorted(groups.items()):
            self._execute_listed(
                "defer_messages",
                ids,
                before=[str(new), db.ts(until), reason, token, now],
                after=[str(expected)],
            )
        held = db.query_dicts(self._sql("select_claimed_messages"), [token, str(new)])
        if held:
            self._history([(int(r["message_id"]), expected, new, r["reason"]) for r in held], now)
            log.info("%d messages deferred at the claim (quiet hours, daily caps)", len(held))

    def release_deferred(self, partition_key: str, now_utc: datetime | None = None) -> list[int]:
        """``deferred -> queued`` for the window's deferred messages whose time has come, by
        one conditional statement: of two callers at once each message is released by one,
        and then claimed once like any queued message. Returns the ids this call released;
        those not yet due stay deferred."""
        expected, new = MessageStatus.DEFERRED, MessageStatus.QUEUED
        check_transition(expected, new)
        db = self.db
        token = uuid.uuid4().hex
        moment = now_utc or utcnow()
        now = db.ts(moment)
        with db.transaction():
            db.execute(
                self._sql("release_deferred"),
                [str(new), token, now, partition_key, str(expected), now],
            ).close()
            rows = self._rows("select_released_messages", [token, str(new)])
            self._history(
                [
                    (
                        int(mid),
                        expected,
                        new,
                        f"its time came ({_when(until)} UTC); queued again",
                    )
                    for mid, until in rows
                ],
                now,
            )
        return [int(r[0]) for r in rows]

    def due_deferred_windows(self, now_utc: datetime | None = None) -> dict[str, int]:
        """Windows with deferred messages due by ``now_utc``: how many each."""
        with self.db.transaction():
            rows = self._rows(
                "select_due_deferred_windows",
                [str(MessageStatus.DEFERRED), self.db.ts(now_utc or utcnow())],
            )
        return {str(r[0]): int(r[1]) for r in rows}

    def deferred_summary(self) -> tuple[int, datetime | None]:
        """Deferred messages, and the earliest time one of them may go."""
        with self.db.transaction():
            rows = self._rows("select_deferred_summary", [str(MessageStatus.DEFERRED)])
        n, due = rows[0] if rows else (0, None)
        return int(n or 0), as_datetime(due)

    def _suppress_opted_out(self, message_ids: Sequence[int], token: str, now: Any) -> set[int]:
        """``queued -> suppressed`` for the listed messages with an active opt-out: one
        statement per batch of ids, then their history rows. Part of the caller's
        transaction. Returns the ids suppressed."""
        expected, new = MessageStatus.QUEUED, MessageStatus.SUPPRESSED
        check_transition(expected, new)
        self._execute_listed(
            "suppress_claimable",
            message_ids,
            before=[str(new), token, now, True],
            after=[str(expected), True],
        )
        suppressed = self.db.query_dicts(self._sql("select_claimed_messages"), [token, str(new)])
        if suppressed:
            self._history(
                [(int(r["message_id"]), expected, new, r["reason"]) for r in suppressed], now
            )
            log.info("%d messages suppressed at the claim (opted out)", len(suppressed))
        return {int(r["message_id"]) for r in suppressed}

    def finish(
        self, outcomes: Sequence[tuple[int, MessageStatus, str | None, str | None]]
    ) -> list[int]:
        """Record ``sending -> sent | failed | unknown`` outcomes: ``(id, status, reason,
        provider_message_id)``. Returns the ids that were not in ``sending`` (not changed).

        Raises InvalidTransition, writing nothing, if an outcome is not a status ``sending``
        may become."""
        expected = MessageStatus.SENDING
        for _, status, _, _ in outcomes:
            check_transition(expected, status)
        if not outcomes:
            return []
        db = self.db
        now = db.ts(utcnow())
        with db.transaction():
            changed = {
                int(r[0])
                for r in db.bulk_query(
                    self._sql("finish_messages"),
                    [(mid, str(st), reason, pid, now) for mid, st, reason, pid in outcomes],
                    trailing=[str(expected)],
                )
            }
            self._history(
                [(mid, expected, st, reason) for mid, st, reason, _ in outcomes if mid in changed],
                now,
            )
        not_changed = [mid for mid, _, _, _ in outcomes if mid not in changed]
        if not_changed:
            log.error("messages %s were not in 'sending' when their outcome arrived", not_changed)
        return not_changed

    def transition(
        self, message_id: int, expected: MessageStatus, new: MessageStatus, reason: str | None
    ) -> None:
        """One conditional transition. Raises InvalidTransition if the table of allowed
        transitions forbids it, or if the message was not in ``expected``."""
        check_transition(expected, new)
        db = self.db
        now = db.ts(utcnow())
        with db.transaction():
            cur = db.execute(
                self._sql("update_message_status"),
                [str(new), reason, now, message_id, str(expected)],
            )
            changed = cur.rowcount
            cur.close()
            if changed != 1:
                raise InvalidTransition(
                    f"message {message_id} is not {expected}; cannot become {new}"
                )
            self._history([(message_id, expected, new, reason)], now)

    def _history(
        self,
        changes: Sequence[tuple[int, MessageStatus, MessageStatus, str | None]],
        at: Any,
    ) -> None:
        self.db.bulk_execute(
            self._sql("insert_message_events"),
            [(mid, str(old), str(new), reason, at) for mid, old, new, reason in changes],
        )

    def expire_sending(self, older_than: datetime, partition_key: str | None = None) -> list[int]:
        """Claims that never finished: a message handed to the provider becomes ``unknown``
        (never resent, listed by the audit); one never handed to it goes back to ``queued``.
        Returns the ids of both."""
        params: list[Any] = [str(MessageStatus.SENDING), self.db.ts(older_than)]
        with self.db.transaction():
            if partition_key:
                rows = self._rows("select_window_stale_claims", [*params, partition_key])
            else:
                rows = self._rows("select_stale_claims", params)
        reason = "claimed for sending but no outcome was recorded; the provider may have it"
        for mid, requested_at in rows:
            if requested_at is None:
                self.requeue_unrequested(int(mid))
                continue
            try:
                self.transition(int(mid), MessageStatus.SENDING, MessageStatus.UNKNOWN, reason)
            except InvalidTransition:
                pass  # its outcome arrived meanwhile
        return [int(r[0]) for r in rows]

    def resolve_unknown(self, candidate_key: str, new: MessageStatus, reason: str) -> int:
        """A person's decision on an ``unknown`` message: ``sent`` or ``failed``, with the
        reason (who and why) in its history. Returns the message id; raises
        InvalidTransition, changing nothing, for a key without a message or a message that is
        not ``unknown``."""
        expected = MessageStatus.UNKNOWN
        check_transition(expected, new)
        with self.db.transaction():
            rows = self._rows("select_message_by_key", [candidate_key])
        if not rows:
            raise InvalidTransition(f"no message has the key {candidate_key!r}")
        message_id, status = int(rows[0][0]), MessageStatus(rows[0][1])
        if status != expected:
            raise InvalidTransition(
                f"message {candidate_key!r} is {status}, not {expected}: only an unknown "
                "message is resolved by a person"
            )
        self.transition(message_id, expected, new, reason)
        return message_id

    def requeue_unrequested(self, message_id: int) -> bool:
        """``sending -> queued`` for a claim never handed to the provider (conditional on
        that, in the statement): it is sent by the next claim, once."""
        expected, new = MessageStatus.SENDING, MessageStatus.QUEUED
        check_transition(expected, new)
        reason = "claimed but never handed to the provider (its worker stopped); queued again"
        db = self.db
        now = db.ts(utcnow())
        with db.transaction():
            cur = db.execute(
                self._sql("requeue_unrequested_message"),
                [str(new), reason, now, message_id, str(expected)],
            )
            changed = bool(cur.rowcount == 1)
            cur.close()
            if changed:
                self._history([(message_id, expected, new, reason)], now)
        return changed

    # -- provider budgets -----------------------------------------------------------------------
    def take_budget(
        self, provider: str, tokens: int, rate: float, burst: float, now: float
    ) -> float:
        """Take ``tokens`` from the provider's shared budget (``rate`` a second, at most
        ``burst`` saved up); returns 0 when taken, else the seconds to wait before asking
        again. ``now`` is seconds since the epoch. Joins the caller's transaction, if any
        (the send worker's stamp): the budget's row is then locked only until that commit."""
        tokens = min(tokens, max(1, int(burst)))
        db = self.db
        for _ in range(8):
            with db.transaction():
                rows = self._rows("select_provider_budget", [provider])
                if not rows:  # the first take of this provider's budget
                    db.execute(
                        self._sql("insert_provider_budget"), [provider, float(burst), now, provider]
                    ).close()
                    rows = self._rows("select_provider_budget", [provider])
                [row] = rows
                have, refilled, blocked = float(row[0]), float(row[1]), float(row[2])
                version = row[3]
                if blocked > now:
                    return blocked - now
                have = min(burst, have + max(0.0, now - refilled) * rate)
                if have < tokens:
                    return (tokens - have) / rate
                cur = db.execute(
                    self._sql("take_provider_budget"),
                    [have - tokens, max(now, refilled), provider, version],
                )
                taken = cur.rowcount == 1
                cur.close()
            if taken:
                return 0.0
        return 0.01  # others kept taking first: ask again shortly

    def block_budget(self, provider: str, until: float, now: float) -> None:
        """The provider asked to wait (429 with ``Retry-After``): nobody takes from its budget
        until ``until`` (seconds since the epoch), and it starts again empty."""
        db = self.db
        with db.transaction():
            db.execute(self._sql("insert_provider_budget"), [provider, 0.0, now, provider]).close()
            db.execute(self._sql("block_provider_budget"), [until, until, provider, until]).close()

    # -- provider events, opt-outs and suppressions -------------------------------------------
    def ping(self) -> None:
        """One round trip to the store; raises if it cannot be reached."""
        with self.db.transaction():
            self._rows("ping")

    def record_delivery_events(self, events: Sequence[DeliveryEvent]) -> dict[str, int]:
        """Store provider events in one transaction: each once per dedup key, folded into its
        message's delivery state (highest rank wins), ``unknown -> sent`` on the provider's
        evidence, and a bounce, drop, spam report or unsubscribe of an email address put on
        the suppression list. Returns counts: new, duplicate, unmatched (no message of ours)."""
        db = self.db
        now = db.ts(utcnow())
        counts = {"new": 0, "duplicate": 0, "unmatched": 0, "resolved_unknown": 0}
        with db.transaction():
            for e in events:
                found = self._event_message(e)
                message_id = found[0] if found else None
                cur = db.execute(
                    self._sql("insert_delivery_event"),
                    [
                        e.dedup_key,
                        e.provider,
                        e.channel,
                        message_id,
                        e.provider_message_id,
                        e.event_type,
                        str(e.delivery_status),
                        e.occurred_at,
                        e.detail,
                        now,
                    ],
                )
                inserted = cur.rowcount
                cur.close()
                if inserted != 1:
                    counts["duplicate"] += 1
                    continue
                counts["new"] += 1
                if e.channel == "email" and e.address and e.delivery_status in SUPPRESSING:
                    self._upsert_suppression(
                        "address",
                        True,
                        SUPPRESSING[e.delivery_status],
                        now,
                        channel="email",
                        address=e.address,
                    )
                if found is None:
                    counts["unmatched"] += 1
                    continue
                mid, status = found
                db.execute(
                    self._sql("upsert_message_delivery"),
                    [mid, str(e.delivery_status), RANK[e.delivery_status], now, now],
                ).close()
                if status == MessageStatus.UNKNOWN:
                    reason = f"the provider reported {e.event_type} for it ({e.provider})"
                    check_transition(MessageStatus.UNKNOWN, MessageStatus.SENT)
                    cur = db.execute(
                        self._sql("update_message_status"),
                        [str(MessageStatus.SENT), reason, now, mid, str(MessageStatus.UNKNOWN)],
                    )
                    changed = cur.rowcount
                    cur.close()
                    if changed == 1:
                        self._history(
                            [(mid, MessageStatus.UNKNOWN, MessageStatus.SENT, reason)], now
                        )
                        counts["resolved_unknown"] += 1
        return counts

    def _event_message(self, e: DeliveryEvent) -> tuple[int, MessageStatus] | None:
        rows: list[tuple[Any, ...]] = []
        if e.message_id is not None:
            rows = self._rows("select_message_for_event", [e.message_id])
        if not rows and e.provider_message_id:
            rows = self._rows("select_message_by_provider_id", [e.provider_message_id, e.channel])
        return (int(rows[0][0]), MessageStatus(rows[0][1])) if rows else None

    def delivery_state(self, message_id: int) -> tuple[str, int] | None:
        """``(delivery_status, events folded in)`` of a message, or None before any event."""
        with self.db.transaction():
            rows = self._rows("select_message_delivery", [message_id])
        return (rows[0][0], int(rows[0][2])) if rows else None

    def message_recipient(self, message_id: int) -> dict[str, Any] | None:
        """Channel, address, recipient and schedule of a message (for an unsubscribe)."""
        with self.db.transaction():
            rows = self.db.query_dicts(self._sql("select_message_recipient"), [message_id])
        return rows[0] if rows else None

    def set_preference(
        self,
        scope: str,
        opted_out: bool,
        reason: str,
        *,
        channel: str | None = None,
        address: str | None = None,
        recipient_kind: str | None = None,
        recipient_id: int | None = None,
        schedule_id: int | None = None,
    ) -> None:
        """Opt out (or back in) an address of a channel (``scope='address'``) or a recipient
        for one schedule, one channel or everything; the next claim checks it."""
        with self.db.transaction():
            self._upsert_suppression(
                scope,
                opted_out,
                reason,
                self.db.ts(utcnow()),
                channel=channel,
                address=address,
                recipient_kind=recipient_kind,
                recipient_id=recipient_id,
                schedule_id=schedule_id,
            )

    def _upsert_suppression(
        self,
        scope: str,
        active: bool,
        reason: str,
        now: Any,
        *,
        channel: str | None = None,
        address: str | None = None,
        recipient_kind: str | None = None,
        recipient_id: int | None = None,
        schedule_id: int | None = None,
    ) -> None:
        if scope == "address":
            if not channel or not address:
                raise ValueError("an address opt-out needs a channel and an address")
            address = address.strip().lower()
            key = f"address:{channel}:{address}"
        elif scope in ("schedule", "channel", "all"):
            if not recipient_kind or recipient_id is None:
                raise ValueError(f"a {scope} opt-out needs a recipient")
            if scope == "schedule" and schedule_id is None:
                raise ValueError("a schedule opt-out needs a schedule")
            if scope == "channel" and not channel:
                raise ValueError("a channel opt-out needs a channel")
            target = {"schedule": schedule_id, "channel": channel, "all": "*"}[scope]
            key = f"{scope}:{recipient_kind}:{recipient_id}:{target}"
            if scope != "channel":
                channel = None
            if scope != "schedule":
                schedule_id = None
        else:
            raise ValueError(f"unknown opt-out scope {scope!r}")
        self.db.execute(
            self._sql("upsert_suppression"),
            [
                key,
                scope,
                channel,
                address,
                recipient_kind,
                recipient_id,
                schedule_id,
                active,
                reason,
                now,
            ],
        ).close()

    def suppressions(self) -> list[dict[str, Any]]:
        with self.db.transaction():
            return self.db.query_dicts(self._sql("select_suppressions"))

    def delivery_counts(self, partition_key: str) -> dict[str, int]:
        """Sent messages of a window by delivery status (their highest-ranked event)."""
        with self.db.transaction():
            rows = self._rows("count_window_deliveries", [partition_key])
        return {str(s): int(n) for s, n in rows}

    def sent_without_delivery(self, partition_key: str, sent_before: datetime) -> int:
        """Sent messages of a window, sent before ``sent_before``, that no event reached."""
        return self._count(
            "count_window_sent_without_delivery",
            [partition_key, str(MessageStatus.SENT), self.db.ts(sent_before)],
        )

    def webhook_backlog(self, since: datetime, sent_before: datetime) -> dict[str, Any]:
        """What a sensor observes of the webhook service: events stored since ``since``, the
        newest one's arrival, and sent messages older than ``sent_before`` with no event."""
        with self.db.transaction():
            rows = self._rows(
                "webhook_backlog",
                [self.db.ts(since), str(MessageStatus.SENT), self.db.ts(sent_before)],
            )
        received, newest, waiting = rows[0]
        return {
            "events_received": int(received or 0),
            "newest_event_at": as_datetime(newest),
            "sent_without_event": int(waiting or 0),
        }

    # -- audit ----------------------------------------------------------------------------------
    def status_counts(self, partition_key: str | None = None) -> dict[str, int]:
        with self.db.transaction():
            if partition_key is None:
                rows = self._rows("count_messages_by_status")
            else:
                rows = self._rows("count_window_messages_by_status", [partition_key])
        return {str(s): int(n) for s, n in rows}

    def open_message_count(self, partition_key: str) -> int:
        """Messages of the window the delivery step waits for: queued or being sent (a
        deferred one waits for its time, and is released by a later delivery step)."""
        with self.db.transaction():
            rows = self.db.query(
                self._sql("count_window_messages_in_statuses", len(_WAITED_STATUSES)),
                [partition_key, *_WAITED_STATUSES],
            )
        return int(rows[0][0] or 0) if rows else 0

    def messages(
        self, partition_key: str | None = None, statuses: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        wanted = [str(s) for s in statuses] or list(_ALL_STATUSES)
        if partition_key is None:
            sql, params = self._sql("select_messages", len(wanted)), wanted
        else:
            sql = self._sql("select_window_messages", len(wanted))
            params = [partition_key, *wanted]
        with self.db.transaction():
            return self.db.query_dicts(sql, params)

    def missing_messages(self, partition_key: str) -> list[str]:
        with self.db.transaction():
            rows = self._rows("select_missing_messages", [partition_key])
        return [r[0] for r in rows]

    def duplicate_sends(self, partition_key: str | None = None) -> list[str]:
        """Candidate keys with more than one send transition in their history."""
        sent = str(MessageStatus.SENT)
        with self.db.transaction():
            if partition_key:
                rows = self._rows("select_window_duplicate_sends", [sent, partition_key])
            else:
                rows = self._rows("select_duplicate_sends", [sent])
        return [r[0] for r in rows]

    def candidate_windows(self, since: str | None = None, until: str | None = None) -> list[str]:
        """Partition keys of the windows that have candidates, from ``since`` through
        ``until`` (either may be None: unbounded), in order."""
        with self.db.transaction():
            rows = self._rows("select_candidate_windows", [since, until])
        return [r[0] for r in rows]

    # -- metadata and audit export --------------------------------------------------------------
    def window_previews(self, partition_key: str) -> list[dict[str, Any]]:
        """The first rendered message of each schedule in the window (subject and text part,
        or SMS body) with its event's old and new values."""
        with self.db.transaction():
            rows = self._rows("select_window_previews", [partition_key])
        return [
            {
                "schedule_id": int(r[0]),
                "channel": r[1],
                "status": r[2],
                "subject": r[3],
                "text": r[4] if r[4] is not None else r[5],
                "values": [json.loads(v) for v in (r[6], r[7]) if v],
            }
            for r in rows
        ]

    def status_counts_by_window(self, since: str, until: str) -> dict[str, dict[str, int]]:
        """Messages per status of each window from ``since`` through ``until`` (partition
        keys), by window."""
        out: dict[str, dict[str, int]] = {}
        with self.db.transaction():
            for key, status, n in self._rows("count_messages_by_window_status", [since, until]):
                out.setdefault(str(key), {})[str(status)] = int(n)
        return out


def _event(r: Sequence[Any]) -> ChangeEvent:
    return ChangeEvent(
        event_id=int(r[0]),
        event_key=r[1],
        partition_key=r[2],
        schedule_id=int(r[3]),
        source_table=r[4],
        record_id=from_stored(r[5]),
        event_type=r[6],
        version=r[7],
        agent_id=_int(r[8]),
        contact_id=_int(r[9]),
        old_values=json.loads(r[10]) if r[10] else None,
        row_values=json.loads(r[11]) if r[11] else None,
    )


def _when(value: Any) -> str:
    moment = as_datetime(value)
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "?"


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _money(value: Any) -> Any:
    if value is None:
        return None
    return Decimal(str(value)).quantize(Decimal("0.01"))


def _message(r: Mapping[str, Any]) -> OutboundMessage:
    return OutboundMessage(
        message_id=int(r["message_id"]),
        candidate_id=int(r["candidate_id"]),
        candidate_key=r["candidate_key"],
        partition_key=r["partition_key"],
        channel=r["channel"],
        status=MessageStatus(r["status"]),
        reason=r["reason"],
        to_address=r["to_address"],
        subject=r["subject"],
        html_body=r["html_body"],
        text_body=r["text_body"],
        sms_body=r["sms_body"],
        sms_encoding=r["sms_encoding"],
        sms_segments=_int(r["sms_segments"]),
        claim_token=r.get("claim_token"),
    )
