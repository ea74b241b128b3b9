"""The straightforward per-row pipeline a user would write, for comparison.

Same replica (pyodbc + psqlODBC, read-only), same schedules and rules, same templates and
renderers, same SendGrid / Twilio clients and sinks, same store cluster. What differs is the
shape of the work: for each changed record read from the replica, it looks up the record's
last-seen values (one query), decides which schedules fire, and for each recipient it queries
every merge field one row at a time (recipient, agent, office, a deal's property, and the
agent's totals as aggregates over the replica, in the year of the agent's office), renders, inserts the message with its own commit, sends it with
one HTTP request and records the outcome with another commit.

It runs on a random sample of the window's changed records (in random order, so the sample
has the window's mix), until every record is done or the time budget runs out: the
comparison with the pipeline is rate against rate.
"""

import itertools
import random
import sys
import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from benchmarks.instrument import peak_rss_mb
from darwin_notify_assets.config import SENDGRID_API_KEY_ENV, TWILIO_AUTH_TOKEN_ENV, Settings
from darwin_notify_assets.delivery.senders import SendGridSender, TwilioSmsSender
from darwin_notify_assets.domain.detect import decide_rows, plan_reads
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.domain.render import (
    RenderError,
    address_for,
    compile_templates,
    render_email,
    render_sms,
)
from darwin_notify_assets.domain.schedules import Audience, Channel, EventType
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.errors import ProviderError
from darwin_notify_assets.storage.db import Database, connect
from darwin_notify_assets.storage.replica import ReplicaReader
from darwin_notify_assets.storage.store import (
    NotificationStore,
    OutboundMessage,
    dumps,
    jsonable_row,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS naive_snapshot (
    source_table TEXT NOT NULL,
    record_id BIGINT NOT NULL,
    row_values TEXT NOT NULL,
    PRIMARY KEY (source_table, record_id)
);
-- The store's own message table's columns, defaults, constraints and indexes.
CREATE TABLE IF NOT EXISTS naive_message (LIKE message INCLUDING ALL)
"""


def prepare(replica_url: str, store_url: str) -> None:
    """The naive pipeline's tables and its last-seen values, before the window (untimed)."""
    import json

    store = connect(store_url)
    replica = ReplicaReader.open(replica_url)
    try:
        NotificationStore(store).ensure_schema()
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                store.execute(stmt).close()
        store.commit()
        schedules = replica.load_schedules()
        for plan in plan_reads(schedules):
            if not plan.keep_snapshot:
                continue
            for batch in replica.read_all(plan.table):
                store.insert_rows(
                    "naive_snapshot",
                    ("source_table", "record_id", "row_values"),
                    [
                        (plan.table, int(r[plan.key]), json.dumps(jsonable_row(r), default=str))
                        for r in batch
                    ],
                )
        store.commit()
    finally:
        replica.close()
        store.close()


class NaivePipeline:
    def __init__(self, settings: Settings, replica_url: str, store_url: str):
        import os

        self.settings = settings
        self._next_candidate = itertools.count(1).__next__
        self.replica: Database = connect(replica_url, read_only=True)
        self.replica.conn.autocommit = True
        self.store: Database = connect(store_url)
        self.reader = ReplicaReader(self.replica)
        self.schedules = self.reader.load_schedules()
        self.templates, _ = compile_templates(self.schedules)
        self.email = SendGridSender(
            os.environ[SENDGRID_API_KEY_ENV], settings.email_from, settings.sendgrid_host or None
        )
        self.sms = TwilioSmsSender(
            settings.twilio_account_sid,
            os.environ[TWILIO_AUTH_TOKEN_ENV],
            settings.sms_from,
            settings.sms_base_url or None,
        )
        self.counts: dict[str, int] = {
            "records": 0,
            "events": 0,
            "notifications": 0,
            "sent": 0,
            "queries_replica": 0,
            "statements_store": 0,
        }
        self.send_seconds = 0.0

    # -- one query per row ----------------------------------------------------------------------
    def one(self, sql: str, params: list[Any]) -> dict[str, Any] | None:
        self.counts["queries_replica"] += 1
        rows = self.replica.query_dicts(sql, params)
        return jsonable_row(rows[0]) if rows else None

    def snapshot(self, table: str, record_id: int) -> dict[str, Any] | None:
        import json

        self.counts["statements_store"] += 1
        value = self.store.scalar(
            "SELECT row_values FROM naive_snapshot WHERE source_table = ? AND record_id = ?",
            [table, record_id],
        )
        return json.loads(value) if value else None

    def save_snapshot(self, table: str, record_id: int, row: dict[str, Any]) -> None:
        self.counts["statements_store"] += 2
        self.store.execute(
            "INSERT INTO naive_snapshot (source_table, record_id, row_values) VALUES (?, ?, ?) "
            "ON CONFLICT (source_table, record_id) DO UPDATE SET row_values = excluded.row_values",
            [table, record_id, dumps(row)],
        ).close()
        self.store.commit()

    # -- the work -------------------------------------------------------------------------------
    def changed_records(self, window: Window) -> list[tuple[Any, ...]]:
        """Every changed record of the watched tables, and the deletions (range reads)."""
        read_from = window.read_from(self.settings.lookback)
        items: list[tuple[Any, ...]] = []
        for plan in plan_reads(self.schedules):
            if not plan.watch_columns:
                continue
            ranges = " OR ".join(f'("{w}" >= ? AND "{w}" < ?)' for w in plan.watch_columns)
            params = [read_from, window.end] * len(plan.watch_columns)
            self.counts["queries_replica"] += 1
            for row in self.replica.query_dicts(
                f'SELECT * FROM "{plan.table}" WHERE {ranges}', params
            ):
                items.append(("row", plan, jsonable_row(row)))
        self.counts["queries_replica"] += 1
        for table, rid, at in self.replica.query(
            'SELECT "TableName", "RecordID", "DeletedDate" FROM "DeletedRecord" '
            'WHERE "DeletedDate" >= ? AND "DeletedDate" < ?',
            [read_from, window.end],
        ):
            if self.schedules.for_table(table):
                items.append(("delete", table, int(rid), at))
        return items

    def process(self, item: tuple[Any, ...], window: Window) -> None:
        read_from = window.read_from(self.settings.lookback)
        self.counts["records"] += 1
        if item[0] == "row":
            _, plan, row = item
            record_id = int(row[plan.key])
            previous = self.snapshot(plan.table, record_id) if plan.keep_snapshot else None
            previous_by_id = {record_id: previous} if previous is not None else {}
            events = decide_rows(plan, [row], previous_by_id, window, read_from).fired
            if plan.keep_snapshot:
                self.save_snapshot(plan.table, record_id, row)
            fired = [(e, row) for e in events]
        else:
            _, table, record_id, at = item
            row = self.snapshot(table, record_id)
            fired = []
            for s in self.schedules.for_table(table):
                if (
                    s.event_type == EventType.DELETE
                    and row is not None
                    and all(c.matches(row, None) for c in s.criteria)
                ):
                    fired.append((_DeleteEvent(s.schedule_id, record_id, row, str(at)), row))
        for event, record in fired:
            self.counts["events"] += 1
            self.notify(event, record, window)

    def notify(self, event: Any, record: dict[str, Any], window: Window) -> None:
        s = self.schedules.by_id(event.schedule_id)
        agent_id = record.get("AgentID") if s.source_table != "Agent" else event.record_id
        if s.audience == Audience.AGENT:
            recipients = [("agent", agent_id)]
        elif s.audience == Audience.RECORD_CONTACT:
            recipients = [("contact", record.get("PeopleID"))]
        else:
            self.counts["queries_replica"] += 1
            recipients = [
                ("contact", int(r[0]))
                for r in self.replica.query(
                    'SELECT "PeopleID" FROM "People" WHERE "AgentID" = ?', [agent_id]
                )
            ]
        for kind, rid in recipients:
            self.counts["notifications"] += 1
            key = (
                f"naive|s{s.schedule_id}|{s.source_table}:{event.record_id}:"
                f"{event.event_type}@{event.version}|{kind}:{rid}"
            )
            agent = self.one('SELECT * FROM "Agent" WHERE "AgentID" = ?', [agent_id])
            office = (
                self.one('SELECT * FROM "Office" WHERE "OfficeID" = ?', [agent["OfficeID"]])
                if agent
                else None
            )
            recipient = (
                agent
                if kind == "agent"
                else self.one('SELECT * FROM "People" WHERE "PeopleID" = ?', [rid])
            )
            status, reason, fields = self.render(
                s, event, record, agent, office, recipient, kind, window
            )
            self.counts["statements_store"] += 2
            now = datetime.utcnow()
            cur = self.store.execute(
                "INSERT INTO naive_message (candidate_id, candidate_key, partition_key, channel, "
                "to_address, subject, html_body, text_body, sms_body, status, reason, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (candidate_key) DO NOTHING RETURNING message_id",
                [
                    self._next_candidate(),
                    key,
                    "naive",
                    str(s.channel),
                    fields.get("to_address"),
                    fields.get("subject"),
                    fields.get("html_body"),
                    fields.get("text_body"),
                    fields.get("sms_body"),
                    str(status),
                    reason,
                    now,
                    now,
                ],
            )
            inserted = cur.fetchone()
            cur.close()
            self.store.commit()
            if inserted is None or status != MessageStatus.QUEUED:
                continue
            message = OutboundMessage(
                candidate_id=0,
                candidate_key=key,
                partition_key="naive",
                channel=str(s.channel),
                status=status,
                message_id=int(inserted[0]),
                **fields,
            )
            started = time.perf_counter()
            try:
                sender = self.email if s.channel == Channel.EMAIL else self.sms
                result = sender.send(message)
                status, provider_id, reason = MessageStatus.SENT, result.provider_message_id, None
                self.counts["sent"] += 1
            except ProviderError as exc:
                status, provider_id, reason = MessageStatus.FAILED, None, str(exc)
            self.counts["statements_store"] += 2
            self.store.execute(
                "UPDATE naive_message SET status = ?, provider_message_id = ?, reason = ? "
                "WHERE message_id = ?",
                [str(status), provider_id, reason, int(inserted[0])],
            ).close()
            self.store.commit()
            self.send_seconds += time.perf_counter() - started

    def render(self, s, event, record, agent, office, recipient, kind, window):
        if recipient is None:
            return MessageStatus.RENDER_FAILED, "recipient not found", {}
        if kind == "agent":
            if recipient.get("IsActive") in (False, 0):
                return MessageStatus.SUPPRESSED, "agent inactive", {}
        else:
            flag = "EmailOptIn" if s.channel == Channel.EMAIL else "SmsOptIn"
            if not recipient.get(flag):
                return MessageStatus.SUPPRESSED, "not opted in", {}
        try:
            model = self.reader.model
            to_address = address_for(s.channel, recipient, model.recipients[kind])
        except ValueError as exc:
            return MessageStatus.SUPPRESSED, str(exc), {}
        context: dict[str, Any] = dict(record)
        context.update(
            record=record,
            agent=agent or {},
            office=office or {},
            recipient=recipient,
            change={"event": str(event.event_type), "old": event.old_values or {}},
            window={"start": window.start, "end": window.end, "key": window.partition_key},
        )
        if s.source_table == "Deal":
            context["property"] = (
                self.one('SELECT * FROM "Property" WHERE "PropertyID" = ?', [record["PropertyID"]])
                or {}
            )
        if s.uses_agent_totals:
            zone = (office or {}).get("TimeZone") or "UTC"
            context["totals"] = self.totals(int(agent["AgentID"]), window, zone)
        template = self.templates[s.template_id]
        try:
            if s.channel == Channel.EMAIL:
                e = render_email(template, context)
                return (
                    MessageStatus.QUEUED,
                    None,
                    {
                        "to_address": to_address,
                        "subject": e.subject,
                        "html_body": e.html,
                        "text_body": e.text,
                    },
                )
            m = render_sms(template, context)
            return MessageStatus.QUEUED, None, {"to_address": to_address, "sms_body": m.body}
        except RenderError as exc:
            return MessageStatus.RENDER_FAILED, str(exc), {}

    def totals(self, agent_id: int, window: Window, zone_name: str) -> dict[str, Any]:
        """The agent's year to date (from January 1 in its office's zone), aggregated on the
        replica for this one message."""
        zone = ZoneInfo(zone_name)
        year = window.end.replace(tzinfo=UTC).astimezone(zone).year
        year_start = datetime(year, 1, 1, tzinfo=zone).astimezone(UTC).replace(tzinfo=None)
        deals = self.one(
            'SELECT count(*) AS n, coalesce(sum("SalePrice"), 0) AS v, '
            'coalesce(sum("GrossCommission"), 0) AS c FROM "Deal" '
            'WHERE "AgentID" = ? AND "PostDate" >= ? AND "PostDate" < ?',
            [agent_id, year_start, window.end],
        )
        active = self.one(
            'SELECT count(*) AS n FROM "Property" WHERE "AgentID" = ? AND "Status" = ?',
            [agent_id, "Active"],
        )
        return {
            "units_ytd": deals["n"],
            "volume_ytd": deals["v"],
            "commission_ytd": deals["c"],
            "active_listings": active["n"],
            "year": year,
        }

    def close(self) -> None:
        for s in (self.email, self.sms):
            s.close()
        self.replica.close()
        self.store.close()


class _DeleteEvent:
    event_type = "delete"
    old_values = None

    def __init__(self, schedule_id: int, record_id: int, row: dict[str, Any], version: str):
        self.schedule_id = schedule_id
        self.record_id = record_id
        self.row_values = row
        self.version = version


def run(config: dict[str, Any], say) -> dict[str, Any]:
    settings = Settings.from_env()
    window = Window.from_key(config["partition_key"], settings.window_minutes)
    pipeline = NaivePipeline(settings, config["replica_url"], settings.store_url)
    budget = float(config.get("seconds", 40))
    say("ready")
    sys.stdin.readline()
    started = time.monotonic()
    items = pipeline.changed_records(window)
    read_seconds = time.monotonic() - started
    random.Random(7).shuffle(items)
    done = 0
    for item in items:
        pipeline.process(item, window)
        done += 1
        if time.monotonic() - started > budget:
            break
    elapsed = time.monotonic() - started
    pipeline.close()
    c = pipeline.counts
    say(
        f"  naive: {c['notifications']} notifications from {done} of {len(items)} changed "
        f"records in {elapsed:.1f}s"
    )
    return {
        "seconds": round(elapsed, 3),
        "range_read_seconds": round(read_seconds, 3),
        "records_total": len(items),
        "records_done": done,
        "complete": done == len(items),
        **c,
        "notifications_per_second": round(c["notifications"] / elapsed, 1) if elapsed else None,
        # The same work without sending (and recording the outcome): change -> queued.
        "send_seconds": round(pipeline.send_seconds, 3),
        "to_queued_per_second": round(c["notifications"] / (elapsed - pipeline.send_seconds), 1)
        if elapsed > pipeline.send_seconds
        else None,
        "sends_per_second": round(c["sent"] / elapsed, 1) if elapsed else None,
        "peak_rss_mb": peak_rss_mb(),
    }
