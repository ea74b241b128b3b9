"""Everything darwin-notify reads from darwin.Cloud, through a read-only replica connection.

Identifiers formatted into SQL (configured tables and columns) are first checked against the
replica's own catalog and then quoted; every value is a bound parameter.
"""

import importlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from darwin_notify_assets.domain import keys
from darwin_notify_assets.domain.keys import RecordId
from darwin_notify_assets.domain.model import Problem, SourceModel, load_model
from darwin_notify_assets.domain.schedules import ScheduleSet, build_schedule_set
from darwin_notify_assets.errors import CdcRetentionExceeded, ConfigurationError, MergeFieldError
from darwin_notify_assets.storage import merge_fields as merge_sql
from darwin_notify_assets.storage.db import Database, as_datetime, connect
from darwin_notify_assets.storage.dialects import placeholders
from darwin_notify_assets.storage.mssql_cdc import (
    CaptureInstance,
    LsnRange,
    capture_instance_from_rows,
    capture_problems,
    deletions_from_rows,
    lsn_range,
)
from darwin_notify_assets.storage.sqlfiles import read_queries, sample_merge_fields

log = logging.getLogger(__name__)

# The end of "everything captured so far" when asking CDC for its earliest deletion.
_FAR_FUTURE = datetime(9000, 1, 1)


@dataclass(frozen=True)
class ReplicaWatermark:
    """How far the replica has applied the primary's commits."""

    applied_through: datetime | None
    receive_lsn: str | None
    replay_lsn: str | None
    replay_paused: bool
    last_replay_at: datetime | None
    state: str

    def describe(self) -> str:
        """The state as recorded with a window: the receiver's state, and a paused replay."""
        return f"{self.state}, replay paused" if self.replay_paused else self.state

    def as_metadata(self) -> dict[str, Any]:
        return {
            "replica_applied_through": _iso(self.applied_through),
            "replica_receive_lsn": self.receive_lsn or "",
            "replica_replay_lsn": self.replay_lsn or "",
            "replica_replay_paused": self.replay_paused,
            "replica_last_replay_at": _iso(self.last_replay_at),
            "replica_state": self.state,
        }


def _iso(value: datetime | None) -> str:
    return value.isoformat(sep=" ") if value else ""


class ReplicaReader:
    """Read-only access to darwin.Cloud's replica."""

    def __init__(
        self,
        db: Database,
        model: SourceModel | None = None,
        merge_fields_dir: str | Path | None = None,
    ):
        if not db.read_only:
            raise ConfigurationError(f"{db} must be opened read-only to serve as the replica")
        self.db = db
        self.model = model or load_model()
        cdc = self.model.cdc_tables
        if cdc and db.dialect != "mssql":
            first = sorted(cdc)[0]
            raise ConfigurationError(
                f"CDC deletions need SQL Server: tables.{first}.deletions names capture "
                f"instance {cdc[first]}, and the replica is {db.dialect}"
            )
        self.queries = read_queries(db.dialect, "replica_queries.sql")
        self._catalog: dict[str, tuple[str, ...]] = {}
        # Where the merge-field queries are: a deployment's folder, or the sample's.
        self.merge_fields_dir = (
            Path(merge_fields_dir) if merge_fields_dir else sample_merge_fields(db.dialect)
        )
        self._captures: dict[str, CaptureInstance | None] = {}

    @classmethod
    def open(
        cls,
        url: str,
        password_env: str | None = None,
        password: str | None = None,
        model: SourceModel | None = None,
        merge_fields_dir: str | Path | None = None,
    ) -> "ReplicaReader":
        db = connect(url, read_only=True, password_env=password_env, password=password)
        return cls(db, model, merge_fields_dir)

    def close(self) -> None:
        self.db.close()

    def _done(self) -> None:
        # End the implicit read transaction so the standby can keep replaying.
        self.db.rollback()

    # -- catalog and schedules ------------------------------------------------------------------
    def columns(self, table: str) -> tuple[str, ...]:
        if table not in self._catalog:
            rows = self.db.query(self.queries["table_columns"], [table])
            self._done()
            self._catalog[table] = tuple(r[0] for r in rows)
        return self._catalog[table]

    def catalog(self, tables: Sequence[str]) -> dict[str, tuple[str, ...]]:
        out = {}
        for table in tables:
            cols = self.columns(table)
            if cols:
                out[table] = cols
        return out

    def checked(self, table: str, *columns: str) -> None:
        known = self.columns(table)
        if not known:
            raise ConfigurationError(f"table {table!r} does not exist on the replica")
        for col in columns:
            if col not in known:
                raise ConfigurationError(f"column {table}.{col} does not exist on the replica")

    def load_schedules(self) -> ScheduleSet:
        return build_schedule_set(**self.schedule_source(), model=self.model)

    def schedule_source(self) -> dict[str, Any]:
        """What schedules are built from: the active schedules' and the templates' rows, and
        the columns of the tables they name (``build_schedule_set``'s arguments but the
        model)."""
        q, qt = self.db.quote, self.db.quote_table
        sched, tmpl = self.model.schedules, self.model.templates
        self.checked(sched.table, *sched.columns.values())
        self.checked(tmpl.table, *tmpl.columns.values())
        c = sched.columns
        schedule_rows = self.db.query_dicts(
            f"SELECT * FROM {qt(sched.table)} WHERE {q(c['is_active'])} = ? "
            f"ORDER BY {q(c['schedule_id'])}",
            [True],
        )
        template_cols = ", ".join(q(col) for col in tmpl.columns.values())
        template_rows = self.db.query_dicts(f"SELECT {template_cols} FROM {qt(tmpl.table)}")
        self._done()
        source = c["source_table"]
        tables = sorted({str(r.get(source) or "") for r in schedule_rows} - {""})
        return {
            "schedule_rows": schedule_rows,
            "template_rows": template_rows,
            "catalog": self.catalog(tables),
        }

    # -- replica state --------------------------------------------------------------------------
    def watermark(self) -> ReplicaWatermark:
        row = self.db.query_dicts(self.queries["watermark"])
        self._done()
        if self.db.dialect == "mssql":
            # Imported here: that module builds this module's ReplicaWatermark.
            from darwin_notify_assets.storage.mssql_watermark import watermark_from_row

            return watermark_from_row(row[0] if row else None)
        if not row:
            return ReplicaWatermark(None, None, None, False, None, "unknown")
        r = row[0]
        return ReplicaWatermark(
            applied_through=as_datetime(r["applied_through"]),
            receive_lsn=r["receive_lsn"],
            replay_lsn=r["replay_lsn"],
            replay_paused=bool(r["replay_paused"]),
            last_replay_at=as_datetime(r["last_replay_at"]),
            state=str(r["state"]),
        )

    # -- change reads ---------------------------------------------------------------------------
    def read_changes(
        self,
        table: str,
        watch_columns: Sequence[str],
        start: datetime,
        end: datetime,
        batch_size: int = 5000,
    ) -> Iterator[list[dict[str, Any]]]:
        """Rows of ``table`` whose watch columns fall in ``[start, end)``, in batches.

        One statement per table: an OR of index range predicates, one per watch column, so a
        row matching several ranges is read once.
        """
        self.checked(table, *watch_columns)
        q, qt = self.db.quote, self.db.quote_table
        cols = ", ".join(q(c) for c in self.columns(table))
        ranges = " OR ".join(f"({q(w)} >= ? AND {q(w)} < ?)" for w in watch_columns)
        params: list[Any] = []
        for _ in watch_columns:
            params += [self.db.ts(start), self.db.ts(end)]
        sql = f"SELECT {cols} FROM {qt(table)} WHERE {ranges}"
        try:
            for names, rows in self.db.stream(sql, params, batch_size):
                yield [dict(zip(names, r, strict=True)) for r in rows]
        finally:
            self._done()

    def read_deletions(
        self, tables: Sequence[str], start: datetime, end: datetime
    ) -> list[tuple[str, RecordId, datetime]]:
        """``(table, record id, deleted at)`` of the tombstone's rows for ``tables``; a
        table whose key has n columns names its record by the first n key columns."""
        tomb = self.model.tombstone
        if not tables or tomb is None:
            return []
        self.checked(tomb.table, tomb.table_column, *tomb.key_columns, tomb.time_column)
        q, qt = self.db.quote, self.db.quote_table
        name, at = q(tomb.table_column), q(tomb.time_column)
        described = self.model.tables
        widths = {t: len(described[t].key_columns) if t in described else 1 for t in tables}
        key_cols = tomb.key_columns[: max(widths.values())]
        key = ", ".join(q(c) for c in key_cols)
        sql = (
            f"SELECT {name}, {key}, {at} FROM {qt(tomb.table)} "
            f"WHERE {at} >= ? AND {at} < ? AND {name} IN ({placeholders(len(tables))})"
        )
        rows = self.db.query(sql, [self.db.ts(start), self.db.ts(end), *tables])
        self._done()
        out = []
        for r in rows:
            table = str(r[0])
            width = widths.get(table, 1)
            rid = keys.encode(r[1 : 1 + width])
            out.append((table, rid, as_datetime(r[-1]) or datetime.min))
        return out

    # -- deletions from SQL Server Change Data Capture --------------------------------------------
    def capture_instance(self, name: str) -> CaptureInstance | None:
        """The capture instance as ``cdc.change_tables`` shows it to this login."""
        if name not in self._captures:
            rows = self.db.query_dicts(self.queries["cdc_capture_instance"], [name])
            self._done()
            self._captures[name] = capture_instance_from_rows(name, rows)
        return self._captures[name]

    def cdc_problems(self) -> list[Problem]:
        """Why a table's CDC deletions cannot be read, one each (``darwin-notify check``)."""
        problems: list[Problem] = []
        for table, name in sorted(self.model.cdc_tables.items()):
            key = self.model.key_columns(table)
            problems += capture_problems(table, key, name, self.capture_instance(name))
        return problems

    def cdc_bounds(self, capture_instance: str, start: datetime, end: datetime) -> dict[str, Any]:
        """The ``cdc_lsn_bounds`` row: LSNs of ``[start, end]`` and the capture's limits."""
        rows = self.db.query_dicts(
            self.queries["cdc_lsn_bounds"],
            [capture_instance, self.db.ts(start), self.db.ts(end)],
        )
        self._done()
        return rows[0] if rows else {}

    def _changes_sql(self, query: str, table: str, capture_instance: str) -> str:
        """A ``cdc_*`` query with its capture instance's function and the table's key, both
        checked against cdc.change_tables first, then quoted. A single-column key is selected
        as ``record_id``, a composite key's columns as ``record_key_1``, ``record_key_2``, ..."""
        key = self.model.key_columns(table)
        found = self.capture_instance(capture_instance)
        problems = capture_problems(table, key, capture_instance, found)
        if problems:
            raise ConfigurationError(str(problems[0]))
        q = self.db.quote
        function = f"{q('cdc')}.{q('fn_cdc_get_all_changes_' + capture_instance)}"
        if len(key) == 1:
            selected = f"c.{q(key[0])} AS record_id"
        else:
            selected = ", ".join(f"c.{q(k)} AS record_key_{n}" for n, k in enumerate(key, 1))
        return (
            self.queries[query]
            .replace("{changes_function}", function)
            .replace("{key_columns}", selected)
        )

    def cdc_deletion_rows(
        self, table: str, capture_instance: str, lsns: LsnRange
    ) -> list[dict[str, Any]]:
        """The ``cdc_deletions`` rows (record_id, deleted_at, start_lsn) in an LSN range."""
        sql = self._changes_sql("cdc_deletions", table, capture_instance)
        rows = self.db.query_dicts(sql, [lsns.from_lsn, lsns.to_lsn])
        self._done()
        return rows

    def cdc_first_deletion_row(
        self, table: str, capture_instance: str, lsns: LsnRange
    ) -> dict[str, Any] | None:
        sql = self._changes_sql("cdc_first_deletion", table, capture_instance)
        rows = self.db.query_dicts(sql, [lsns.from_lsn, lsns.to_lsn])
        self._done()
        return rows[0] if rows else None

    def read_cdc_deletions(
        self, tables: Sequence[str], start: datetime, end: datetime
    ) -> list[tuple[str, RecordId, datetime]]:
        """``(table, record id, deleted at)`` of the deletions CDC recorded in ``[start, end)``
        for those of ``tables`` the model reads that way; the others are not read here."""
        out: list[tuple[str, RecordId, datetime]] = []
        for table in tables:
            name = self.model.capture_instance_of(table)
            if name is None:
                continue
            lsns = lsn_range(self.cdc_bounds(name, start, end), name, table, start, end)
            if lsns is not None:
                out += deletions_from_rows(
                    table,
                    self.cdc_deletion_rows(table, name, lsns),
                    start,
                    end,
                    len(self.model.key_columns(table)),
                )
        return out

    def earliest_cdc_deletion(self, tables: Sequence[str], since: datetime) -> datetime | None:
        """The earliest CDC deletion at or after ``since``, for the sensor. Where CDC cannot
        tell (``since`` is older than it keeps), ``since`` itself, so the window is read and
        its run says why; nothing captured past ``since`` yet is the capture's progress, so
        the window that holds it is read and waits for the capture."""
        found: list[datetime] = []
        for table in tables:
            name = self.model.capture_instance_of(table)
            if name is None:
                continue
            row = self.cdc_bounds(name, since, _FAR_FUTURE)
            max_time = as_datetime(row.get("max_time"))
            if max_time is None or max_time < since:
                found.append(since)
                continue
            try:
                lsns = lsn_range(row, name, table, since, max_time)
            except CdcRetentionExceeded:
                found.append(since)
                continue
            first = self.cdc_first_deletion_row(table, name, lsns) if lsns else None
            at = as_datetime(first.get("deleted_at")) if first else None
            found.append(at if at is not None and at >= since else max_time)
        return min(found, default=None)

    def earliest_change(
        self, table: str, watch_columns: Sequence[str], since: datetime
    ) -> datetime | None:
        """The earliest watch-column value at or after ``since``: one index seek per column."""
        self.checked(table, *watch_columns)
        q, qt = self.db.quote, self.db.quote_table
        found: list[datetime] = []
        for column in watch_columns:
            sql = f"SELECT MIN({q(column)}) FROM {qt(table)} WHERE {q(column)} >= ?"
            value = self.db.scalar(sql, [self.db.ts(since)])
            if value is not None:
                moment = as_datetime(value)
                if moment is not None:
                    found.append(moment)
        self._done()
        return min(found, default=None)

    def earliest_deletion(self, tables: Sequence[str], since: datetime) -> datetime | None:
        tomb = self.model.tombstone
        if not tables or tomb is None:
            return None
        self.checked(tomb.table, tomb.table_column, tomb.time_column)
        q, qt = self.db.quote, self.db.quote_table
        at = q(tomb.time_column)
        sql = (
            f"SELECT MIN({at}) FROM {qt(tomb.table)} WHERE {at} >= ? "
            f"AND {q(tomb.table_column)} IN ({placeholders(len(tables))})"
        )
        value = self.db.scalar(sql, [self.db.ts(since), *tables])
        self._done()
        return as_datetime(value) if value is not None else None

    def read_all(self, table: str, batch_size: int = 5000) -> Iterator[list[dict[str, Any]]]:
        """Every row of a table: only for the one-time baseline of last-seen values."""
        self.checked(table)
        q, qt = self.db.quote, self.db.quote_table
        cols = ", ".join(q(c) for c in self.columns(table))
        try:
            for names, rows in self.db.stream(f"SELECT {cols} FROM {qt(table)}", (), batch_size):
                yield [dict(zip(names, r, strict=True)) for r in rows]
        finally:
            self._done()

    # -- merge fields and audiences -------------------------------------------------------------
    def fetch_by_ids(
        self, table: str, ids: Sequence[RecordId], key: str | Sequence[str] | None = None
    ) -> dict[RecordId, dict[str, Any]]:
        """Rows by key, one statement per batch of ids (record ids of a composite key are
        read by all of its columns at once: ``rows_by_keys``)."""
        key = key or self.model.key_of(table)
        if not isinstance(key, str):
            return self._fetch_by_keys(table, tuple(key), ids)
        self.checked(table, key)
        q, qt = self.db.quote, self.db.quote_table
        cols = ", ".join(q(c) for c in self.columns(table))
        out: dict[RecordId, dict[str, Any]] = {}
        unique = sorted({int(i) for i in ids if i is not None})
        for chunk in self.db.in_batches(unique):
            sql = f"SELECT {cols} FROM {qt(table)} WHERE {q(key)} IN ({placeholders(len(chunk))})"
            for row in self.db.query_dicts(sql, chunk):
                out[int(row[key])] = row
        self._done()
        return out

    def _fetch_by_keys(
        self, table: str, key: tuple[str, ...], ids: Sequence[RecordId]
    ) -> dict[RecordId, dict[str, Any]]:
        self.checked(table, *key)
        q, qt = self.db.quote, self.db.quote_table
        names = self.columns(table)
        wanted = sorted({str(i) for i in ids if i is not None})
        values = [keys.decode(i, len(key)) for i in wanted]
        out: dict[RecordId, dict[str, Any]] = {}
        statements = self.db.sql_dialect.rows_by_keys(
            [q(c) for c in names], qt(table), [q(k) for k in key], values
        )
        for sql, params in statements:
            for row in self.db.query_dicts(sql, params):
                out[keys.record_id(row, key)] = row
        self._done()
        return out

    def distinct_values(self, table: str, column: str) -> list[Any]:
        """Every value ``column`` of ``table`` holds, once (``darwin-notify check`` asks for a
        column of few values, like a time zone's)."""
        self.checked(table, column)
        q, qt = self.db.quote, self.db.quote_table
        rows = self.db.query(f"SELECT DISTINCT {q(column)} FROM {qt(table)}")
        self._done()
        return [r[0] for r in rows]

    def fetch_grouped(
        self, table: str, column: str, values: Sequence[int], columns: Sequence[str]
    ) -> dict[int, list[dict[str, Any]]]:
        """Rows grouped by ``column`` (e.g. every contact of each agent), batched."""
        self.checked(table, column, *columns)
        q, qt = self.db.quote, self.db.quote_table
        cols = ", ".join(q(c) for c in dict.fromkeys([column, *columns]))
        out: dict[int, list[dict[str, Any]]] = {}
        unique = sorted({int(v) for v in values if v is not None})
        for chunk in self.db.in_batches(unique):
            sql = (
                f"SELECT {cols} FROM {qt(table)} WHERE {q(column)} IN ({placeholders(len(chunk))})"
            )
            for row in self.db.query_dicts(sql, chunk):
                out.setdefault(int(row[column]), []).append(row)
        self._done()
        return out

    def merge_field_query(self, name: str) -> str:
        """The checked statement of merge-field query ``name``; MergeFieldError if there is
        none or it is not one read-only statement with one parameter."""
        return merge_sql.query_text(self.merge_fields_dir, self.db.dialect, name)

    def merge_fields(
        self, name: str, ids: Sequence[RecordId], table: str | None = None
    ) -> dict[RecordId, dict[str, Any]]:
        """The rows of merge-field query ``name`` for ``ids`` of ``table``, by record id: one
        call for all. For a table with a composite key the parameter is a JSON array of key
        arrays and the rows carry the key's columns instead of ``record_id``.

        A query the database refuses or fails raises MergeFieldError with the database's
        message; when the replica itself cannot be reached, the driver's error goes up as it
        is, so the job is retried rather than its messages failed.
        """
        sql = self.merge_field_query(name)
        driver_error = getattr(
            importlib.import_module(type(self.db.conn).__module__), "Error", Exception
        )
        try:
            key = self.model.key_of(table) if table else None
            width = len(keys.columns(key)) if key else 1
            rows = self.db.query_dicts(sql, [merge_sql.ids_parameter(ids, width)])
        except driver_error as exc:
            self._done()
            # Still reachable? Then the query is at fault, not the connection.
            self.db.query(self.queries["table_columns"], [self.model.schedules.table])
            message = merge_sql.database_message(exc, sql)
            raise MergeFieldError(f"merge-field query {name!r} failed: {message}") from None
        finally:
            self._done()
        return merge_sql.keyed(rows, name, key if key and not isinstance(key, str) else None)

    def merge_field_problem(self, name: str) -> str | None:
        """What is wrong with merge-field query ``name``: its file (missing, not one read-only
        statement with one parameter), or what the database answers when it is run for no
        record (a missing table or column); None when nothing is."""
        try:
            self.merge_fields(name, [])
        except MergeFieldError as exc:
            return str(exc)
        return None
