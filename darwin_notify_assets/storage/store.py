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
from enum import StrEnum
from typing import Any

from darwin_notify_assets.errors import InvalidTransition
from darwin_notify_assets.storage.db import Database, as_datetime, connect, placeholders
from darwin_notify_assets.storage.sqlfiles import read_queries, read_script

log = logging.getLogger(__name__)


class MessageStatus(StrEnum):
    """Mirror of the ``message.status`` column."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SUPPRESSED = "suppressed"
    DEFERRED = "deferred"
    RENDER_FAILED = "render_failed"


FINAL_STATUSES = frozenset(
    {
        MessageStatus.SENT,
        MessageStatus.FAILED,
        MessageStatus.UNKNOWN,
        MessageStatus.SUPPRESSED,
        MessageStatus.RENDER_FAILED,
    }
)


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
    record_id: int
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
    record_id: int
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
    record_id: int
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


class NotificationStore:
    def __init__(self, db: Database):
        self.db = db

    @classmethod
    def open(cls, url: str, password_env: str | None = None) -> "NotificationStore":
        return cls(connect(url, password_env=password_env))

    def close(self) -> None:
        self.db.close()

    def ensure_schema(self) -> None:
        self.db.run_script(read_script(self.db.dialect, "store_schema.sql"))

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
        db.execute("DELETE FROM window_run WHERE partition_key = ?", [partition_key])
        db.insert_rows(
            "window_run",
            (
                "partition_key",
                "window_start",
                "window_end",
                "replica_applied_through",
                "replica_state",
                "rows_read",
                "detected_at",
            ),
            [
                (
                    partition_key,
                    db.ts(start),
                    db.ts(end),
                    db.ts(applied_through),
                    replica_state,
                    rows_read,
                    db.ts(utcnow()),
                )
            ],
        )
        db.commit()

    def known_event_keys(self, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in self.db.in_batches(list(keys)):
            found.update(
                r[0]
                for r in self.db.query(
                    f"SELECT event_key FROM change_event WHERE event_key IN ({placeholders(len(chunk))})",
                    chunk,
                )
            )
        self.db.commit()
        return found

    def windows_between(self, start: datetime, end: datetime) -> set[str]:
        rows = self.db.query(
            "SELECT partition_key FROM window_run WHERE window_start >= ? AND window_end <= ?",
            [self.db.ts(start), self.db.ts(end)],
        )
        self.db.commit()
        return {r[0] for r in rows}

    def last_window(self) -> str | None:
        """The newest window whose changes were read."""
        value = self.db.scalar("SELECT MAX(partition_key) FROM window_run")
        self.db.commit()
        return value

    def window_info(self, partition_key: str) -> dict[str, Any] | None:
        rows = self.db.query_dicts(
            "SELECT * FROM window_run WHERE partition_key = ?", [partition_key]
        )
        self.db.commit()
        return rows[0] if rows else None

    # -- last-seen values and ledgers -----------------------------------------------------------
    def snapshots(self, table: str, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for chunk in self.db.in_batches(list(ids), extra_params=1):
            rows = self.db.query(
                "SELECT record_id, row_values FROM record_snapshot "
                f"WHERE source_table = ? AND record_id IN ({placeholders(len(chunk))})",
                [table, *chunk],
            )
            for rid, text in rows:
                out[int(rid)] = json.loads(text)
        return out

    def save_detection(
        self,
        events: Sequence[ChangeEvent],
        snapshots: Mapping[tuple[str, int], Mapping[str, Any]],
        deals: Sequence[tuple[int, int, datetime | None, Any, Any]],
        listings: Sequence[tuple[int, int, str | None]],
        removed: Sequence[tuple[str, int]],
        window_agents: Iterable[tuple[str, int]],
        skipped: Sequence[ChangeEvent] = (),
    ) -> int:
        """Write one batch of detection results in one transaction; returns new events.

        ``events`` fire and ``skipped`` do not; see ``record_decisions``.
        """
        db = self.db
        now = db.ts(utcnow())
        try:
            events = self.record_decisions(events, skipped, now)
            inserted = db.insert_rows(
                "change_event",
                (
                    "event_key",
                    "partition_key",
                    "schedule_id",
                    "source_table",
                    "record_id",
                    "event_type",
                    "version",
                    "agent_id",
                    "contact_id",
                    "old_values",
                    "row_values",
                    "detected_at",
                ),
                [
                    (
                        e.event_key,
                        e.partition_key,
                        e.schedule_id,
                        e.source_table,
                        e.record_id,
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
                conflict=("event_key",),
            )
            db.upsert_rows(
                "record_snapshot",
                ("source_table", "record_id", "row_values", "seen_at"),
                [(t, rid, dumps(v), now) for (t, rid), v in snapshots.items()],
                key=("source_table", "record_id"),
            )
            db.upsert_rows(
                "deal_ledger",
                ("deal_id", "agent_id", "post_date", "sale_price", "gross_commission"),
                [(d, a, db.ts(p), _money(s), _money(c)) for d, a, p, s, c in deals],
                key=("deal_id",),
            )
            db.upsert_rows(
                "listing_ledger",
                ("property_id", "agent_id", "status"),
                list(listings),
                key=("property_id",),
            )
            for table, ledger, key in (
                ("Deal", "deal_ledger", "deal_id"),
                ("Property", "listing_ledger", "property_id"),
            ):
                ids = [rid for t, rid in removed if t == table]
                for chunk in db.in_batches(ids):
                    db.execute(
                        f"DELETE FROM {ledger} WHERE {key} IN ({placeholders(len(chunk))})", chunk
                    )
            db.insert_rows(
                "window_agent",
                ("partition_key", "agent_id"),
                sorted(set(window_agents)),
                conflict=("partition_key", "agent_id"),
            )
            db.commit()
        except Exception:
            db.rollback()
            raise
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
        new = self.db.insert_rows(
            "change_decision",
            ("event_key", "partition_key", "fired", "decided_at"),
            rows,
            conflict=("event_key",),
        )
        if new == len(rows) or not fired:
            return list(fired)
        against = self._keys_by_name(
            "skipped_event_keys", [e.event_key for e in fired], prefix=[False]
        )
        return [e for e in fired if e.event_key not in against]

    def decided_event_keys(self, keys: Sequence[str]) -> set[str]:
        """The keys of ``keys`` whose change has a recorded decision, fired or not."""
        found = self._keys_by_name("decided_event_keys", keys)
        self.db.commit()
        return found

    def _keys_by_name(self, name: str, keys: Sequence[str], prefix: Sequence[Any] = ()) -> set[str]:
        template = read_queries(self.db.dialect, "store_queries.sql")[name]
        found: set[str] = set()
        for chunk in self.db.in_batches(list(keys), extra_params=len(prefix)):
            sql = template.replace("{keys}", placeholders(len(chunk)))
            found.update(r[0] for r in self.db.query(sql, [*prefix, *chunk]))
        return found

    # -- agent totals ---------------------------------------------------------------------------
    def window_agents(self, partition_key: str) -> list[int]:
        rows = self.db.query(
            "SELECT agent_id FROM window_agent WHERE partition_key = ? "
            "UNION SELECT agent_id FROM candidate WHERE partition_key = ? "
            "AND uses_totals = ? AND agent_id IS NOT NULL",
            [partition_key, partition_key, True],
        )
        self.db.commit()
        return sorted(int(r[0]) for r in rows)

    def recompute_totals(self, agent_ids: Sequence[int], through: datetime) -> int:
        """Recompute these agents' year-to-date production from the ledgers.

        The ledgers hold the replica's rows as last read, so the totals include every change
        read so far; ``computed_through`` never moves backwards when an older window reruns.
        """
        db = self.db
        year = through.year
        year_start = datetime(year, 1, 1)
        now = db.ts(utcnow())
        existing = self.totals(agent_ids)
        written = 0
        try:
            for chunk in db.in_batches(sorted(set(agent_ids)), extra_params=2):
                marks = placeholders(len(chunk))
                deals = {
                    int(a): (int(n), v, c)
                    for a, n, v, c in db.query(
                        "SELECT agent_id, COUNT(*), COALESCE(SUM(sale_price), 0), "
                        "COALESCE(SUM(gross_commission), 0) FROM deal_ledger "
                        f"WHERE agent_id IN ({marks}) AND post_date >= ? GROUP BY agent_id",
                        [*chunk, db.ts(year_start)],
                    )
                }
                active = {
                    int(a): int(n)
                    for a, n in db.query(
                        "SELECT agent_id, COUNT(*) FROM listing_ledger "
                        f"WHERE agent_id IN ({marks}) AND status = ? GROUP BY agent_id",
                        [*chunk, "Active"],
                    )
                }
                rows = []
                for agent in chunk:
                    n, v, c = deals.get(int(agent), (0, 0, 0))
                    previous = existing.get(int(agent))
                    mark = max(through, previous.computed_through) if previous else through
                    rows.append(
                        (
                            int(agent),
                            year,
                            n,
                            _money(v),
                            _money(c),
                            active.get(int(agent), 0),
                            db.ts(mark),
                            now,
                        )
                    )
                written += db.upsert_rows(
                    "agent_totals",
                    (
                        "agent_id",
                        "year",
                        "units_ytd",
                        "volume_ytd",
                        "commission_ytd",
                        "active_listings",
                        "computed_through",
                        "computed_at",
                    ),
                    rows,
                    key=("agent_id",),
                )
            db.commit()
        except Exception:
            db.rollback()
            raise
        return written

    def totals(self, agent_ids: Sequence[int]) -> dict[int, AgentTotals]:
        out = {}
        for chunk in self.db.in_batches(sorted(set(agent_ids))):
            for r in self.db.query_dicts(
                "SELECT agent_id, year, units_ytd, volume_ytd, commission_ytd, active_listings, "
                f"computed_through FROM agent_totals WHERE agent_id IN ({placeholders(len(chunk))})",
                chunk,
            ):
                out[int(r["agent_id"])] = AgentTotals(
                    agent_id=int(r["agent_id"]),
                    year=int(r["year"]),
                    units_ytd=int(r["units_ytd"]),
                    volume_ytd=Decimal(str(r["volume_ytd"])),
                    commission_ytd=Decimal(str(r["commission_ytd"])),
                    active_listings=int(r["active_listings"]),
                    computed_through=as_datetime(r["computed_through"]),
                )
        self.db.commit()
        return out

    # -- events and candidates ------------------------------------------------------------------
    def stream_events(
        self, partition_key: str, batch_size: int = 5000
    ) -> Iterator[list[ChangeEvent]]:
        """The window's events whose candidates are not yet inserted, in pages (keyset on
        event_id), so callers may write between pages."""
        sql = self.db.limit(
            "SELECT event_id, event_key, partition_key, schedule_id, source_table, record_id, "
            "event_type, version, agent_id, contact_id, old_values, row_values "
            "FROM change_event WHERE partition_key = ? AND event_id > ? AND expanded = ? "
            "ORDER BY event_id",
            batch_size,
        )
        last = 0
        while True:
            rows = self.db.query(sql, [partition_key, last, False])
            self.db.commit()
            if not rows:
                return
            last = int(rows[-1][0])
            yield [_event(r) for r in rows]

    def schedule_events(self, partition_key: str, schedule_id: int) -> list[ChangeEvent]:
        """Every event of one schedule in one window, for a window digest."""
        rows = self.db.query(
            "SELECT event_id, event_key, partition_key, schedule_id, source_table, record_id, "
            "event_type, version, agent_id, contact_id, old_values, row_values "
            "FROM change_event WHERE partition_key = ? AND schedule_id = ? ORDER BY event_id",
            [partition_key, schedule_id],
        )
        self.db.commit()
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
        now = self.db.ts(utcnow())
        try:
            for chunk in self.db.in_batches(list(expanded), extra_params=1):
                self.db.execute(
                    f"UPDATE change_event SET expanded = ? WHERE event_id IN ({placeholders(len(chunk))})",
                    [True, *chunk],
                ).close()
            n = self.db.insert_rows(
                "candidate",
                (
                    "candidate_key",
                    "partition_key",
                    "schedule_id",
                    "channel",
                    "event_id",
                    "source_table",
                    "record_id",
                    "agent_id",
                    "recipient_kind",
                    "recipient_id",
                    "uses_totals",
                    "created_at",
                ),
                [
                    (
                        c.candidate_key,
                        c.partition_key,
                        c.schedule_id,
                        c.channel,
                        c.event_id,
                        c.source_table,
                        c.record_id,
                        c.agent_id,
                        c.recipient_kind,
                        c.recipient_id,
                        c.uses_totals,
                        now,
                    )
                    for c in rows
                ],
                conflict=("candidate_key",),
            )
            self.db.commit()
        except Exception:
            self.db.rollback()
            raise
        if on_inserted is not None and n:
            ids: list[int] = []
            for partition_key in sorted({c.partition_key for c in rows}):
                ids += [
                    int(r[0])
                    for r in self.db.query(
                        "SELECT candidate_id FROM candidate WHERE partition_key = ? "
                        "AND created_at = ? ORDER BY candidate_id",
                        [partition_key, now],
                    )
                ]
            self.db.commit()
            on_inserted(ids)
        return n

    def count(self, sql: str, params: Sequence[Any]) -> int:
        value = self.db.scalar(sql, params)
        self.db.commit()
        return int(value or 0)

    def candidate_count(self, partition_key: str) -> int:
        return self.count("SELECT COUNT(*) FROM candidate WHERE partition_key = ?", [partition_key])

    def event_count(self, partition_key: str) -> int:
        return self.count(
            "SELECT COUNT(*) FROM change_event WHERE partition_key = ?", [partition_key]
        )

    # -- rendering ------------------------------------------------------------------------------
    def stream_unrendered(self, partition_key: str, batch_size: int) -> Iterator[list[int]]:
        sql = (
            "SELECT c.candidate_id FROM candidate c WHERE c.partition_key = ? AND NOT EXISTS "
            "(SELECT 1 FROM message m WHERE m.candidate_id = c.candidate_id) "
            "ORDER BY c.candidate_id"
        )
        ids = [int(r[0]) for r in self.db.query(sql, [partition_key])]
        self.db.commit()
        for start in range(0, len(ids), batch_size):
            yield ids[start : start + batch_size]

    def unrendered_count(self, partition_key: str) -> int:
        # Each message has exactly one candidate (unique candidate_id) of its window: two
        # counts over the partition indexes instead of an anti-join over every candidate.
        return self.count(
            "SELECT (SELECT COUNT(*) FROM candidate WHERE partition_key = ?) - "
            "(SELECT COUNT(*) FROM message WHERE partition_key = ?)",
            [partition_key, partition_key],
        )

    def load_render_items(self, candidate_ids: Sequence[int]) -> list[RenderItem]:
        out = []
        for chunk in self.db.in_batches(list(candidate_ids)):
            rows = self.db.query(
                "SELECT c.candidate_id, c.candidate_key, c.partition_key, c.schedule_id, "
                "c.channel, c.source_table, c.record_id, c.agent_id, c.recipient_kind, "
                "c.recipient_id, c.uses_totals, e.event_type, e.old_values, e.row_values "
                "FROM candidate c JOIN change_event e ON e.event_id = c.event_id "
                f"WHERE c.candidate_id IN ({placeholders(len(chunk))}) AND NOT EXISTS "
                "(SELECT 1 FROM message m WHERE m.candidate_id = c.candidate_id) "
                "ORDER BY c.candidate_id",
                chunk,
            )
            out += [
                RenderItem(
                    candidate_id=int(r[0]),
                    candidate_key=r[1],
                    partition_key=r[2],
                    schedule_id=int(r[3]),
                    channel=r[4],
                    source_table=r[5],
                    record_id=int(r[6]),
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
        self.db.commit()
        return out

    def insert_messages(self, messages: Sequence[OutboundMessage]) -> int:
        """Insert rendered (or suppressed, or failed) messages if absent, with history."""
        if not messages:
            return 0
        db = self.db
        now = db.ts(utcnow())
        try:
            n = db.insert_rows(
                "message",
                (
                    "candidate_id",
                    "candidate_key",
                    "partition_key",
                    "channel",
                    "to_address",
                    "subject",
                    "html_body",
                    "text_body",
                    "sms_body",
                    "sms_encoding",
                    "sms_segments",
                    "status",
                    "reason",
                    "attempts",
                    "created_at",
                    "updated_at",
                ),
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
                    )
                    for m in messages
                ],
                conflict=("candidate_id",),
            )
            # History rows for the messages this call created (not those already present).
            ids = [m.candidate_id for m in messages]
            for chunk in db.in_batches(ids, extra_params=1):
                db.execute(
                    "INSERT INTO message_event (message_id, from_status, to_status, reason, at) "
                    "SELECT m.message_id, NULL, m.status, m.reason, m.created_at FROM message m "
                    f"WHERE m.candidate_id IN ({placeholders(len(chunk))}) AND m.created_at = ? "
                    "AND NOT EXISTS (SELECT 1 FROM message_event e WHERE e.message_id = m.message_id)",
                    [*chunk, now],
                ).close()
            db.commit()
        except Exception:
            db.rollback()
            raise
        return n

    # -- sending --------------------------------------------------------------------------------
    def queued_ids(self, partition_key: str) -> list[int]:
        rows = self.db.query(
            "SELECT message_id FROM message WHERE partition_key = ? AND status = ? "
            "ORDER BY message_id",
            [partition_key, str(MessageStatus.QUEUED)],
        )
        self.db.commit()
        return [int(r[0]) for r in rows]

    def claim(self, message_ids: Sequence[int]) -> list[OutboundMessage]:
        """Move ``queued -> sending`` for the given ids; return only the ones this call won.

        The claim is committed before any provider is called: a crash after it leaves the
        message in ``sending``, which is never resent automatically.
        """
        db = self.db
        token = uuid.uuid4().hex
        now = db.ts(utcnow())
        claimed: list[OutboundMessage] = []
        try:
            for chunk in db.in_batches(list(message_ids), extra_params=4):
                db.execute(
                    "UPDATE message SET status = ?, claim_token = ?, attempts = attempts + 1, "
                    f"updated_at = ? WHERE message_id IN ({placeholders(len(chunk))}) "
                    "AND status = ?",
                    [str(MessageStatus.SENDING), token, now, *chunk, str(MessageStatus.QUEUED)],
                ).close()
            cols = ", ".join(MESSAGE_COLUMNS)
            for r in db.query_dicts(
                f"SELECT {cols} FROM message WHERE claim_token = ? AND status = ? "
                "ORDER BY message_id",
                [token, str(MessageStatus.SENDING)],
            ):
                claimed.append(_message(r))
            db.insert_rows(
                "message_event",
                ("message_id", "from_status", "to_status", "reason", "at"),
                [
                    (m.message_id, str(MessageStatus.QUEUED), str(MessageStatus.SENDING), None, now)
                    for m in claimed
                ],
            )
            db.commit()
        except Exception:
            db.rollback()
            raise
        return claimed

    def finish(
        self, outcomes: Sequence[tuple[int, MessageStatus, str | None, str | None]]
    ) -> list[int]:
        """Record ``sending -> sent | failed | unknown`` outcomes: ``(id, status, reason,
        provider_message_id)``. Returns the ids that were not in ``sending`` (not changed).
        """
        db = self.db
        now = db.ts(utcnow())
        template = read_queries(db.dialect, "store_queries.sql")["finish_outcomes"]
        changed: set[int] = set()
        try:
            per_stmt = max(1, (db.max_params - 2) // 4)
            for start in range(0, len(outcomes), per_stmt):
                chunk = outcomes[start : start + per_stmt]
                sql = template.replace("{values}", ", ".join(["(?, ?, ?, ?)"] * len(chunk)))
                params = [now]
                for message_id, status, reason, provider_id in chunk:
                    params += [message_id, str(status), reason, provider_id]
                params.append(str(MessageStatus.SENDING))
                changed.update(int(r[0]) for r in db.query(sql, params))
            not_changed = [mid for mid, _, _, _ in outcomes if mid not in changed]
            db.insert_rows(
                "message_event",
                ("message_id", "from_status", "to_status", "reason", "at"),
                [
                    (mid, str(MessageStatus.SENDING), str(st), reason, now)
                    for mid, st, reason, _ in outcomes
                    if mid not in not_changed
                ],
            )
            db.commit()
        except Exception:
            db.rollback()
            raise
        if not_changed:
            log.error("messages %s were not in 'sending' when their outcome arrived", not_changed)
        return not_changed

    def transition(
        self, message_id: int, expected: MessageStatus, new: MessageStatus, reason: str | None
    ) -> None:
        """One conditional transition; raises InvalidTransition if the state was not expected."""
        db = self.db
        now = db.ts(utcnow())
        cur = db.execute(
            "UPDATE message SET status = ?, reason = ?, updated_at = ? "
            "WHERE message_id = ? AND status = ?",
            [str(new), reason, now, message_id, str(expected)],
        )
        if cur.rowcount != 1:
            db.rollback()
            raise InvalidTransition(f"message {message_id} is not {expected}; cannot become {new}")
        db.insert_rows(
            "message_event",
            ("message_id", "from_status", "to_status", "reason", "at"),
            [(message_id, str(expected), str(new), reason, now)],
        )
        db.commit()

    def expire_sending(self, older_than: datetime, partition_key: str | None = None) -> list[int]:
        """Claims that never finished become ``unknown``: never resent, listed by the audit."""
        db = self.db
        where = "status = ? AND updated_at < ?"
        params: list[Any] = [str(MessageStatus.SENDING), db.ts(older_than)]
        if partition_key:
            where += " AND partition_key = ?"
            params.append(partition_key)
        ids = [int(r[0]) for r in db.query(f"SELECT message_id FROM message WHERE {where}", params)]
        reason = "claimed for sending but no outcome was recorded; the provider may have it"
        for mid in ids:
            try:
                self.transition(mid, MessageStatus.SENDING, MessageStatus.UNKNOWN, reason)
            except InvalidTransition:
                pass
        db.commit()
        return ids

    # -- audit ----------------------------------------------------------------------------------
    def status_counts(self, partition_key: str | None = None) -> dict[str, int]:
        if partition_key is None:
            rows = self.db.query("SELECT status, COUNT(*) FROM message GROUP BY status")
        else:
            rows = self.db.query(
                "SELECT status, COUNT(*) FROM message WHERE partition_key = ? GROUP BY status",
                [partition_key],
            )
        self.db.commit()
        return {str(s): int(n) for s, n in rows}

    def messages(
        self, partition_key: str | None = None, statuses: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        where, params = [], []
        if partition_key is not None:
            where.append("partition_key = ?")
            params.append(partition_key)
        if statuses:
            where.append(f"status IN ({placeholders(len(statuses))})")
            params += list(statuses)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.query_dicts(
            "SELECT message_id, candidate_key, partition_key, channel, to_address, status, "
            f"reason, provider_message_id, attempts FROM message {clause} ORDER BY message_id",
            params,
        )
        self.db.commit()
        return rows

    def missing_messages(self, partition_key: str) -> list[str]:
        rows = self.db.query(
            "SELECT c.candidate_key FROM candidate c WHERE c.partition_key = ? AND NOT EXISTS "
            "(SELECT 1 FROM message m WHERE m.candidate_id = c.candidate_id) ORDER BY 1",
            [partition_key],
        )
        self.db.commit()
        return [r[0] for r in rows]

    def duplicate_sends(self, partition_key: str | None = None) -> list[str]:
        """Candidate keys with more than one send transition in their history."""
        clause = "AND m.partition_key = ?" if partition_key else ""
        rows = self.db.query(
            "SELECT m.candidate_key FROM message_event e JOIN message m ON m.message_id = e.message_id "
            f"WHERE e.to_status = ? {clause} GROUP BY m.candidate_key HAVING COUNT(*) > 1",
            [str(MessageStatus.SENT), *([partition_key] if partition_key else [])],
        )
        self.db.commit()
        return [r[0] for r in rows]


def _event(r: Sequence[Any]) -> ChangeEvent:
    return ChangeEvent(
        event_id=int(r[0]),
        event_key=r[1],
        partition_key=r[2],
        schedule_id=int(r[3]),
        source_table=r[4],
        record_id=int(r[5]),
        event_type=r[6],
        version=r[7],
        agent_id=_int(r[8]),
        contact_id=_int(r[9]),
        old_values=json.loads(r[10]) if r[10] else None,
        row_values=json.loads(r[11]) if r[11] else None,
    )


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
    )
