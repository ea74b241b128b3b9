"""DB-API connections for the three dialects, chosen by a URL.

One code path speaks DB-API with ``?`` parameters to sqlite3 (the embedded default) and to
pyodbc (SQL Server in production, PostgreSQL through psqlODBC in the integration tier); what
each database needs said differently is its dialect object (``storage/dialects.py``).

URLs:
    ``sqlite:///path/to/file.db``
    ``postgresql://user@host:port/database``      (pyodbc, driver "PostgreSQL Unicode")
    ``mssql://user@host:port/database?driver=ODBC+Driver+18+for+SQL+Server``

A password never sits in a URL: it is read from the environment variable the caller names,
so that it never reaches logs, metadata or error messages.
"""

import logging
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from darwin_notify_assets.errors import ConfigurationError, ReadOnlyViolation
from darwin_notify_assets.storage.dialects import Dialect, dialect_for, odbc_value
from darwin_notify_assets.storage.sqlfiles import read_queries, split_script

log = logging.getLogger(__name__)


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


_PWD = re.compile(r"PWD=\{(?:[^}]|\}\})*\}")


def masked(connection_string: str) -> str:
    """A connection string as it may be logged: the password replaced by ``***``."""
    return _PWD.sub("PWD=***", connection_string)


class Database:
    """A DB-API connection and its dialect object."""

    def __init__(self, conn: Any, dialect: str, url: DatabaseUrl, read_only: bool):
        self.conn = conn
        self.dialect = dialect
        self.sql_dialect: Dialect = dialect_for(dialect)
        self.url = url
        self.read_only = read_only
        self._depth = 0

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return f"Database({self.url}, {mode})"

    @property
    def max_params(self) -> int:
        return self.sql_dialect.max_params

    # -- statements ---------------------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cur = self.conn.cursor()
        cur.execute(sql, tuple(params))
        return cur

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.execute(sql, params)
        try:
            _, rows = self.sql_dialect.result(cur)
        finally:
            cur.close()
        return [tuple(r) for r in rows]

    def query_dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.execute(sql, params)
        try:
            names, rows = self.sql_dialect.result(cur)
        finally:
            cur.close()
        return [dict(zip(names, r, strict=True)) for r in rows]

    def stream(
        self, sql: str, params: Sequence[Any] = (), batch_size: int = 5000
    ) -> Iterator[tuple[list[str], list[tuple[Any, ...]]]]:
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

    @contextmanager
    def transaction(self) -> Iterator["Database"]:
        """Commit what the block did, or roll it back if it raised. A block inside another
        joins the outer one: only the outermost commits."""
        self._depth += 1
        try:
            yield self
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self.rollback()
            raise
        self._depth -= 1
        if self._depth == 0:
            self.commit()

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a broken connection must not mask the cause
            pass

    def run_script(self, text: str) -> None:
        with self.transaction():
            for stmt in split_script(self.dialect, text):
                self.execute(stmt).close()

    # -- bulk statements ----------------------------------------------------------------------
    def bulk_execute(
        self, sql: str, rows: Iterable[Sequence[Any]], trailing: Sequence[Any] = ()
    ) -> int:
        """Run a bulk statement (see ``storage/dialects.py``) over ``rows`` in as few
        statements as the dialect allows; returns the rows it affected (as the driver counts
        them: for a multi-statement T-SQL batch, its first statement's)."""
        rows = rows if isinstance(rows, list) else list(rows)
        if not rows:
            return 0
        affected = 0
        for text, params, n in self.sql_dialect.bulk_statements(sql, rows, trailing):
            cur = self.execute(text, params)
            try:
                count = cur.rowcount
                self.sql_dialect.finish(cur)
            finally:
                cur.close()
            affected += count if count is not None and count >= 0 else n
        return affected

    def bulk_query(
        self, sql: str, rows: Iterable[Sequence[Any]], trailing: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Like ``bulk_execute``, for a statement that returns rows; returns all of them."""
        rows = rows if isinstance(rows, list) else list(rows)
        out: list[tuple[Any, ...]] = []
        if not rows:
            return out
        for text, params, _ in self.sql_dialect.bulk_statements(sql, rows, trailing):
            out += self.query(text, params)
        return out

    def insert_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        """Insert rows into ``table`` (identifiers as written in SQL) in bulk statements."""
        rows = rows if isinstance(rows, list) else list(rows)
        if not rows:
            return 0
        sql = self.sql_dialect.insert_statement(self, table, columns)
        return self.bulk_execute(sql, rows)

    # -- what the dialect says ----------------------------------------------------------------
    def in_batches(self, ids: Sequence[Any], extra_params: int = 0) -> Iterator[Sequence[Any]]:
        """Chunks of ``ids`` small enough for an ``IN (?, ...)`` list."""
        return self.sql_dialect.in_batches(ids, extra_params)

    def ts(self, value: datetime | None) -> Any:
        """A timestamp parameter: naive UTC; SQLite stores it as fixed-width ISO text."""
        return self.sql_dialect.ts(value)

    def quote(self, identifier: str) -> str:
        """Quote an identifier that was already checked against the catalog."""
        return self.sql_dialect.quote(identifier)


def as_datetime(value: Any) -> datetime | None:
    """A timestamp read from any dialect, as a naive UTC datetime."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    raise TypeError(f"not a timestamp: {value!r}")


def connect(
    url: str,
    *,
    read_only: bool = False,
    password_env: str | None = None,
    password: str | None = None,
) -> Database:
    """Open a connection. ``read_only`` is enforced by the database and verified here.

    The password is ``password``, or else read from the environment variable ``password_env``.
    """
    parsed = DatabaseUrl.parse(url)
    if parsed.dialect == "sqlite":
        db = _connect_sqlite(parsed, read_only)
    else:
        if password is None and password_env:
            password = os.environ.get(password_env)
        db = _connect_odbc(parsed, read_only, password)
    if read_only:
        try:
            verify_read_only(db)
        except ReadOnlyViolation:
            db.close()
            raise
    return db


def _connect_odbc(parsed: DatabaseUrl, read_only: bool, password: str | None) -> Database:
    from darwin_notify_assets.storage.odbc_driver import DRIVER_NAME, register_sql_server_driver

    # unixODBC reads its driver list once per process: Microsoft's driver from PyPI is
    # registered before the first ODBC connection of any kind.
    wants = dict(parsed.options).get("driver", DRIVER_NAME) == DRIVER_NAME
    register_sql_server_driver(required=parsed.dialect == "mssql" and wants)
    try:
        import pyodbc
    except ImportError as exc:  # libodbc.so.2 missing: unixODBC is not installed
        raise ConfigurationError(
            f"cannot load pyodbc for {parsed} ({exc}); install unixODBC and the ODBC driver"
        ) from exc
    dialect = dialect_for(parsed.dialect)
    conn_str = dialect.connection_string(parsed, password, read_only)
    log.debug("opening %s", masked(conn_str))
    failure = None
    try:
        conn = pyodbc.connect(conn_str, autocommit=False, readonly=read_only)
    except pyodbc.Error as exc:
        failure = str(exc)
    if failure is not None:
        # Raised outside the except block, so the driver's error (which may echo the
        # connection string) is not kept as this one's context.
        if password:
            for form in (odbc_value(password), password):
                failure = failure.replace(form, "***")
        raise ConfigurationError(f"cannot connect to {parsed}: {failure}")
    statements = dialect.session_statements()
    if statements:
        cur = conn.cursor()
        for stmt in statements:
            cur.execute(stmt)
        cur.close()
        conn.commit()
    return Database(conn, parsed.dialect, parsed, read_only)


sqlite3.register_adapter(Decimal, str)


def sqlite_uri(path: Path) -> str:
    """The URI that opens a SQLite file read-only: the file itself refuses writes."""
    return f"file:{path.resolve()}?mode=ro"


def _connect_sqlite(parsed: DatabaseUrl, read_only: bool) -> Database:
    if read_only:
        path = Path(parsed.path)
        if not path.exists():
            raise ConfigurationError(f"replica database {parsed} does not exist")
        conn = sqlite3.connect(sqlite_uri(path), uri=True, check_same_thread=False, timeout=30)
        # A second lock: the connection itself refuses writes even to a writable file.
        conn.execute("PRAGMA query_only = ON")
    else:
        if parsed.path != ":memory:":
            Path(parsed.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(parsed.path, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=OFF")
    return Database(conn, "sqlite", parsed, read_only)


def verify_read_only(db: Database) -> None:
    """Ask the database whether this session could write; raise ReadOnlyViolation if so."""
    rows = db.query(read_queries(db.dialect, "replica_queries.sql")["write_access"])
    db.rollback()
    problem = db.sql_dialect.read_only_problem(rows)
    if problem:
        raise ReadOnlyViolation(f"{db.url} {problem}; it must be read-only to serve as the replica")
