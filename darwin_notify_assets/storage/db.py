"""DB-API connections for the three dialects, chosen by a URL.

One code path speaks DB-API with ``?`` parameters to sqlite3 (the embedded default) and to
pyodbc (SQL Server in production, PostgreSQL through psqlODBC in the integration tier).

URLs:
    ``sqlite:///path/to/file.db``
    ``postgresql://user@host:port/database``      (pyodbc, driver "PostgreSQL Unicode")
    ``mssql://user@host:port/database?driver=ODBC+Driver+18+for+SQL+Server``

A password never sits in a URL: it is read from the environment variable the caller names,
so that it never reaches logs, metadata or error messages.
"""

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from darwin_notify_assets.errors import ConfigurationError, ReadOnlyViolation

# Bound parameters per statement, kept well under each driver's limit
# (SQL Server 2,100; psqlODBC lost synchronization above ~7,200).
MAX_PARAMS = {"sqlite": 30000, "postgresql": 6000, "mssql": 2000}

# SQLite keeps timestamps as text of one fixed width, so they compare in time order.
SQLITE_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

# Debian registers the driver with CommLog=1, which logs every connection under /tmp.
_PG_ODBC_OPTIONS = "Protocol=7.4-1;BoolsAsChar=0;UseDeclareFetch=1;Fetch=5000;CommLog=0;Debug=0"


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed connection URL; ``str()`` never shows a password."""

    dialect: str
    path: str = ""
    host: str = ""
    port: int | None = None
    user: str = ""
    database: str = ""
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, url: str) -> "DatabaseUrl":
        parts = urlsplit(url)
        scheme = parts.scheme.split("+")[0]
        if scheme == "sqlite":
            path = unquote(url.split("://", 1)[1])
            path = path[1:] if path.startswith("/") and not path.startswith("//") else path[1:]
            return cls(dialect="sqlite", path=path or ":memory:")
        if scheme in ("postgresql", "postgres", "mssql"):
            if parts.password:
                raise ConfigurationError(
                    "passwords are not accepted inside connection URLs; "
                    "set the matching *_PASSWORD environment variable instead"
                )
            options = tuple((k, v[-1]) for k, v in sorted(parse_qs(parts.query).items()) if v)
            return cls(
                dialect="postgresql" if scheme.startswith("postgres") else "mssql",
                host=parts.hostname or "127.0.0.1",
                port=parts.port,
                user=unquote(parts.username or ""),
                database=parts.path.lstrip("/"),
                options=options,
            )
        raise ConfigurationError(
            f"unsupported database URL scheme {parts.scheme!r}: "
            "expected sqlite:///, postgresql:// or mssql://"
        )

    def __str__(self) -> str:
        if self.dialect == "sqlite":
            return f"sqlite:///{self.path}"
        port = f":{self.port}" if self.port else ""
        return f"{self.dialect}://{self.user}@{self.host}{port}/{self.database}"


def odbc_connection_string(url: DatabaseUrl, password: str | None, read_only: bool) -> str:
    opts = dict(url.options)
    if url.dialect == "postgresql":
        parts = [
            "DRIVER={" + opts.get("driver", "PostgreSQL Unicode") + "}",
            f"SERVER={url.host}",
            f"PORT={url.port or 5432}",
            f"DATABASE={url.database}",
            f"UID={url.user}",
            _PG_ODBC_OPTIONS,
        ]
        if password:
            parts.append("PWD={" + password + "}")
        # Results stream through cursors (UseDeclareFetch), and the planner would plan a
        # cursor for its first 10% of rows, preferring sequential scans over index ranges.
        settings = ["SET cursor_tuple_fraction TO 1"]
        if read_only:
            # psqlODBC ignores pyodbc's readonly flag; a session default is what holds.
            settings.append("SET default_transaction_read_only TO on")
        parts.append("ConnSettings={" + ";".join(settings) + "}")
        return ";".join(parts)
    parts = [
        "DRIVER={" + opts.get("driver", "ODBC Driver 18 for SQL Server") + "}",
        f"SERVER={url.host},{url.port or 1433}",
        f"DATABASE={url.database}",
        f"UID={url.user}",
        f"Encrypt={opts.get('encrypt', 'yes')}",
        f"TrustServerCertificate={opts.get('trustservercertificate', 'no')}",
    ]
    if password:
        parts.append("PWD={" + password + "}")
    if read_only:
        # Routes to a readable secondary of an availability group and refuses writes there.
        parts.append("ApplicationIntent=ReadOnly")
    return ";".join(parts)


# Rows per statement when PostgreSQL rows travel as one array parameter per column.
PG_ARRAY_ROWS = 5000


def _pg_name(identifier: str) -> str:
    """A column's name in the catalog, from the identifier as written in SQL."""
    if identifier.startswith('"') and identifier.endswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier.lower()


def pg_array(values: Sequence[Any]) -> str:
    """A PostgreSQL array literal of ``values`` (its element type comes from the cast)."""
    out = []
    append = out.append
    for v in values:
        kind = type(v)
        if kind is str:  # the common cases first: this runs for every value of every row
            append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif v is None:
            append("NULL")
        elif kind is int:
            append(str(v))
        else:
            append(_pg_element(v))
    return "{" + ",".join(out) + "}"


def _pg_element(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return f'"{value.isoformat(sep=" ")}"'
    if isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("binary values are not sent as array elements")
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Database:
    """A DB-API connection plus the little each dialect needs said differently."""

    def __init__(self, conn: Any, dialect: str, url: DatabaseUrl, read_only: bool):
        self.conn = conn
        self.dialect = dialect
        self.url = url
        self.read_only = read_only
        self.max_params = MAX_PARAMS[dialect]
        self._column_types: dict[str, dict[str, str]] = {}

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return f"Database({self.url}, {mode})"

    # -- statements ---------------------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cur = self.conn.cursor()
        cur.execute(sql, tuple(params))
        return cur

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        cur = self.execute(sql, params)
        rows = cur.fetchall()
        cur.close()
        return [tuple(r) for r in rows]

    def query_dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.execute(sql, params)
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        cur.close()
        return rows

    def stream(
        self, sql: str, params: Sequence[Any] = (), batch_size: int = 5000
    ) -> Iterator[tuple[list[str], list[tuple]]]:
        """Yield ``(column_names, rows)`` in batches without buffering the whole result."""
        cur = self.execute(sql, params)
        names = [d[0] for d in cur.description]
        try:
            while True:
                rows = cur.fetchmany(batch_size)
                if not rows:
                    break
                yield names, [tuple(r) for r in rows]
        finally:
            cur.close()

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a broken connection must not mask the cause
            pass

    def run_script(self, text: str) -> None:
        from darwin_notify_assets.storage.sqlfiles import split_script

        for stmt in split_script(self.dialect, text):
            self.execute(stmt).close()
        self.commit()

    # -- batching helpers -------------------------------------------------------------------
    def insert_rows(
        self,
        table: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        conflict: Sequence[str] | None = None,
    ) -> int:
        """Insert rows with multi-row ``VALUES`` statements; with ``conflict``, skip rows whose
        key already exists (insert-if-absent). Returns the number of rows actually inserted.
        """
        rows = list(rows)
        if not rows:
            return 0
        if self.dialect == "postgresql":
            keys = ", ".join(conflict) if conflict else None
            return self._pg_insert_arrays(
                table, columns, rows, f"ON CONFLICT ({keys}) DO NOTHING" if keys else ""
            )
        width = len(columns)
        per_stmt = max(1, min(1000, self.max_params // width))
        collist = ", ".join(columns)
        inserted = 0
        for start in range(0, len(rows), per_stmt):
            chunk = rows[start : start + per_stmt]
            values = ", ".join(["(" + ", ".join(["?"] * width) + ")"] * len(chunk))
            params = [v for row in chunk for v in row]
            sql = self._insert_sql(table, collist, values, columns, conflict)
            cur = self.execute(sql, params)
            count = cur.rowcount
            cur.close()
            inserted += count if count is not None and count >= 0 else len(chunk)
        return inserted

    def upsert_rows(
        self,
        table: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        key: Sequence[str],
    ) -> int:
        """Insert rows, replacing the non-key columns of rows whose key already exists."""
        rows = list(rows)
        if not rows:
            return 0
        rest = [c for c in columns if c not in key]
        if self.dialect == "postgresql":
            sets = ", ".join(f"{c} = excluded.{c}" for c in rest)
            self._pg_insert_arrays(
                table, columns, rows, f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"
            )
            return len(rows)
        width = len(columns)
        per_stmt = max(1, min(1000, self.max_params // width))
        collist = ", ".join(columns)
        for start in range(0, len(rows), per_stmt):
            chunk = rows[start : start + per_stmt]
            values = ", ".join(["(" + ", ".join(["?"] * width) + ")"] * len(chunk))
            params = [v for row in chunk for v in row]
            if self.dialect in ("sqlite", "postgresql"):
                sets = ", ".join(f"{c} = excluded.{c}" for c in rest)
                sql = (
                    f"INSERT INTO {table} ({collist}) VALUES {values} "
                    f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"
                )
            else:
                on = " AND ".join(f"t.{k} = s.{k}" for k in key)
                sets = ", ".join(f"t.{c} = s.{c}" for c in rest)
                sql = (
                    f"MERGE {table} WITH (HOLDLOCK) AS t USING (VALUES {values}) AS s ({collist}) "
                    f"ON {on} WHEN MATCHED THEN UPDATE SET {sets} "
                    f"WHEN NOT MATCHED THEN INSERT ({collist}) VALUES "
                    f"({', '.join('s.' + c for c in columns)});"
                )
            self.execute(sql, params).close()
        return len(rows)

    def _pg_insert_arrays(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], conflict: str
    ) -> int:
        """PostgreSQL: one array parameter per column, ``INSERT ... SELECT FROM unnest(...)``.

        Through psqlODBC this takes about half the time of multi-row ``VALUES`` (every bound
        parameter is a round of driver and parser work) and has no parameter limit.
        """
        types = self.column_types(table)
        names = [_pg_name(c) for c in columns]
        missing = [c for c, name in zip(columns, names, strict=True) if name not in types]
        if missing:
            raise ConfigurationError(f"table {table} has no column(s) {', '.join(missing)}")
        casts = ", ".join(f"?::{types[name]}[]" for name in names)
        collist = ", ".join(columns)
        sql = f"INSERT INTO {table} ({collist}) SELECT * FROM unnest({casts}) {conflict}".rstrip()
        inserted = 0
        for start in range(0, len(rows), PG_ARRAY_ROWS):
            chunk = rows[start : start + PG_ARRAY_ROWS]
            params = [pg_array([row[i] for row in chunk]) for i in range(len(columns))]
            cur = self.execute(sql, params)
            count = cur.rowcount
            cur.close()
            inserted += count if count is not None and count >= 0 else len(chunk)
        return inserted

    def column_types(self, table: str) -> dict[str, str]:
        """PostgreSQL: each column's type as SQL spells it (``character varying(64)``), by
        column name; ``table`` as it is written in SQL (quoted or not)."""
        if table not in self._column_types:
            rows = self.query(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "WHERE a.attrelid = CAST(? AS regclass) AND a.attnum > 0 AND NOT a.attisdropped",
                [table],
            )
            self._column_types[table] = {name: kind for name, kind in rows}
        return self._column_types[table]

    def _insert_sql(
        self,
        table: str,
        collist: str,
        values: str,
        columns: Sequence[str],
        conflict: Sequence[str] | None,
    ) -> str:
        if not conflict:
            return f"INSERT INTO {table} ({collist}) VALUES {values}"
        keys = ", ".join(conflict)
        if self.dialect in ("sqlite", "postgresql"):
            return (
                f"INSERT INTO {table} ({collist}) VALUES {values} ON CONFLICT ({keys}) DO NOTHING"
            )
        # SQL Server: MERGE with HOLDLOCK makes the existence test and the insert one step.
        src = ", ".join(columns)
        on = " AND ".join(f"t.{k} = s.{k}" for k in conflict)
        return (
            f"MERGE {table} WITH (HOLDLOCK) AS t USING (VALUES {values}) AS s ({src}) "
            f"ON {on} WHEN NOT MATCHED THEN INSERT ({collist}) VALUES "
            f"({', '.join('s.' + c for c in columns)});"
        )

    def in_batches(self, ids: Sequence[Any], extra_params: int = 0) -> Iterator[Sequence[Any]]:
        """Chunks of ``ids`` small enough for an ``IN (?, ...)`` list."""
        size = max(1, min(2000, self.max_params - extra_params - 10))
        for start in range(0, len(ids), size):
            yield ids[start : start + size]

    def limit(self, sql: str, n: int) -> str:
        """``sql`` (a SELECT with ORDER BY) returning at most ``n`` rows."""
        if self.dialect == "mssql":
            return sql.replace("SELECT ", f"SELECT TOP ({int(n)}) ", 1)
        return f"{sql} LIMIT {int(n)}"

    def ts(self, value: datetime | None) -> Any:
        """A timestamp parameter: naive UTC; SQLite stores it as fixed-width ISO text."""
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        if self.dialect == "sqlite":
            return value.strftime(SQLITE_TS_FORMAT)
        return value

    def quote(self, identifier: str) -> str:
        """Quote an identifier that was already checked against the catalog."""
        if self.dialect == "mssql":
            return "[" + identifier.replace("]", "]]") + "]"
        return '"' + identifier.replace('"', '""') + '"'


def as_datetime(value: Any) -> datetime | None:
    """A timestamp read from any dialect, as a naive UTC datetime."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    raise TypeError(f"not a timestamp: {value!r}")


def placeholders(n: int) -> str:
    return ", ".join(["?"] * n)


def connect(
    url: str,
    *,
    read_only: bool = False,
    password_env: str | None = None,
    password: str | None = None,
) -> Database:
    """Open a connection. ``read_only`` is enforced by the database, not assumed.

    The password is ``password``, or else read from the environment variable ``password_env``.
    """
    parsed = DatabaseUrl.parse(url)
    if parsed.dialect == "sqlite":
        return _connect_sqlite(parsed, read_only)
    try:
        import pyodbc
    except ImportError as exc:  # libodbc.so.2 missing: unixODBC is not installed
        raise ConfigurationError(
            f"cannot load pyodbc for {parsed} ({exc}); install unixODBC and the ODBC driver"
        ) from exc
    if password is None and password_env:
        password = os.environ.get(password_env)
    conn_str = odbc_connection_string(parsed, password, read_only)
    try:
        conn = pyodbc.connect(conn_str, autocommit=False, readonly=read_only)
    except pyodbc.Error as exc:
        message = str(exc)
        if password:
            message = message.replace(password, "***")
        raise ConfigurationError(f"cannot connect to {parsed}: {message}") from None
    if parsed.dialect == "postgresql":
        # Session time zone UTC: timestamps are bound and returned as naive UTC.
        cur = conn.cursor()
        cur.execute("SET TIME ZONE 'UTC'")
        cur.close()
        conn.commit()
    db = Database(conn, parsed.dialect, parsed, read_only)
    if read_only:
        _verify_read_only(db)
    return db


sqlite3.register_adapter(Decimal, str)


def _connect_sqlite(parsed: DatabaseUrl, read_only: bool) -> Database:
    if read_only:
        path = Path(parsed.path)
        if not path.exists():
            raise ConfigurationError(f"replica database {parsed} does not exist")
        conn = sqlite3.connect(
            f"file:{path.resolve()}?mode=ro", uri=True, check_same_thread=False, timeout=30
        )
    else:
        if parsed.path != ":memory:":
            Path(parsed.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(parsed.path, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=OFF")
    return Database(conn, "sqlite", parsed, read_only)


def _verify_read_only(db: Database) -> None:
    if db.dialect == "postgresql":
        value = db.scalar("SHOW transaction_read_only")
        db.rollback()
        if str(value).lower() != "on":
            raise ReadOnlyViolation(f"{db.url} accepted a read-write session")
