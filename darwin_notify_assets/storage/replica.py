"""Everything darwin-notify reads from darwin.Cloud, through a read-only replica connection.

Identifiers formatted into SQL (configured tables and columns) are first checked against the
replica's own catalog and then quoted; every value is a bound parameter.
"""

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from darwin_notify_assets.domain.model import SourceModel, load_model
from darwin_notify_assets.domain.schedules import ScheduleSet, build_schedule_set
from darwin_notify_assets.errors import ConfigurationError
from darwin_notify_assets.storage.db import Database, as_datetime, connect
from darwin_notify_assets.storage.dialects import placeholders
from darwin_notify_assets.storage.sqlfiles import read_queries

log = logging.getLogger(__name__)


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

    def __init__(self, db: Database, model: SourceModel | None = None):
        if not db.read_only:
            raise ConfigurationError(f"{db} must be opened read-only to serve as the replica")
        self.db = db
        self.model = model or load_model()
        self.queries = read_queries(db.dialect, "replica_queries.sql")
        self._catalog: dict[str, tuple[str, ...]] = {}

    @classmethod
    def open(
        cls,
        url: str,
        password_env: str | None = None,
        password: str | None = None,
        model: SourceModel | None = None,
    ) -> "ReplicaReader":
        db = connect(url, read_only=True, password_env=password_env, password=password)
        return cls(db, model)

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
        q = self.db.quote
        sched, tmpl = self.model.schedules, self.model.templates
        self.checked(sched.table, *sched.columns.values())
        self.checked(tmpl.table, *tmpl.columns.values())
        c = sched.columns
        schedule_rows = self.db.query_dicts(
            f"SELECT * FROM {q(sched.table)} WHERE {q(c['is_active'])} = ? "
            f"ORDER BY {q(c['schedule_id'])}",
            [True],
        )
        template_cols = ", ".join(q(col) for col in tmpl.columns.values())
        template_rows = self.db.query_dicts(f"SELECT {template_cols} FROM {q(tmpl.table)}")
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
        q = self.db.quote
        cols = ", ".join(q(c) for c in self.columns(table))
        ranges = " OR ".join(f"({q(w)} >= ? AND {q(w)} < ?)" for w in watch_columns)
        params: list[Any] = []
        for _ in watch_columns:
            params += [self.db.ts(start), self.db.ts(end)]
        sql = f"SELECT {cols} FROM {q(table)} WHERE {ranges}"
        try:
            for names, rows in self.db.stream(sql, params, batch_size):
                yield [dict(zip(names, r, strict=True)) for r in rows]
        finally:
            self._done()

    def read_deletions(
        self, tables: Sequence[str], start: datetime, end: datetime
    ) -> list[tuple[str, int, datetime]]:
        tomb = self.model.tombstone
        if not tables or tomb is None:
            return []
        self.checked(tomb.table, tomb.table_column, tomb.key_column, tomb.time_column)
        q = self.db.quote
        name, key, at = q(tomb.table_column), q(tomb.key_column), q(tomb.time_column)
        sql = (
            f"SELECT {name}, {key}, {at} FROM {q(tomb.table)} "
            f"WHERE {at} >= ? AND {at} < ? AND {name} IN ({placeholders(len(tables))})"
        )
        rows = self.db.query(sql, [self.db.ts(start), self.db.ts(end), *tables])
        self._done()
        return [(str(t), int(rid), as_datetime(d) or datetime.min) for t, rid, d in rows]

    def earliest_change(
        self, table: str, watch_columns: Sequence[str], since: datetime
    ) -> datetime | None:
        """The earliest watch-column value at or after ``since``: one index seek per column."""
        self.checked(table, *watch_columns)
        q = self.db.quote
        found: list[datetime] = []
        for column in watch_columns:
            sql = f"SELECT MIN({q(column)}) FROM {q(table)} WHERE {q(column)} >= ?"
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
        q = self.db.quote
        at = q(tomb.time_column)
        sql = (
            f"SELECT MIN({at}) FROM {q(tomb.table)} WHERE {at} >= ? "
            f"AND {q(tomb.table_column)} IN ({placeholders(len(tables))})"
        )
        value = self.db.scalar(sql, [self.db.ts(since), *tables])
        self._done()
        return as_datetime(value) if value is not None else None

    def read_all(self, table: str, batch_size: int = 5000) -> Iterator[list[dict[str, Any]]]:
        """Every row of a table: only for the one-time baseline of last-seen values."""
        self.checked(table)
        q = self.db.quote
        cols = ", ".join(q(c) for c in self.columns(table))
        try:
            for names, rows in self.db.stream(f"SELECT {cols} FROM {q(table)}", (), batch_size):
                yield [dict(zip(names, r, strict=True)) for r in rows]
        finally:
            self._done()

    # -- merge fields and audiences -------------------------------------------------------------
    def fetch_by_ids(
        self, table: str, ids: Sequence[int], key: str | None = None
    ) -> dict[int, dict[str, Any]]:
        """Rows by key, one statement per batch of ids."""
        key = key or self.model.key_of(table)
        self.checked(table, key)
        q = self.db.quote
        cols = ", ".join(q(c) for c in self.columns(table))
        out: dict[int, dict[str, Any]] = {}
        unique = sorted({int(i) for i in ids if i is not None})
        for chunk in self.db.in_batches(unique):
            sql = f"SELECT {cols} FROM {q(table)} WHERE {q(key)} IN ({placeholders(len(chunk))})"
            for row in self.db.query_dicts(sql, chunk):
                out[int(row[key])] = row
        self._done()
        return out

    def fetch_grouped(
        self, table: str, column: str, values: Sequence[int], columns: Sequence[str]
    ) -> dict[int, list[dict[str, Any]]]:
        """Rows grouped by ``column`` (e.g. every contact of each agent), batched."""
        self.checked(table, column, *columns)
        q = self.db.quote
        cols = ", ".join(q(c) for c in dict.fromkeys([column, *columns]))
        out: dict[int, list[dict[str, Any]]] = {}
        unique = sorted({int(v) for v in values if v is not None})
        for chunk in self.db.in_batches(unique):
            sql = f"SELECT {cols} FROM {q(table)} WHERE {q(column)} IN ({placeholders(len(chunk))})"
            for row in self.db.query_dicts(sql, chunk):
                out.setdefault(int(row[column]), []).append(row)
        self._done()
        return out
