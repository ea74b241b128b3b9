"""The SQL Server the executed T-SQL tier runs on (``make test-mssql``), named by the
environment; without one, every test marked ``mssql`` is skipped with ``SKIP_REASON``.

The server's database is a scratch database: the tier drops and recreates the store's tables
and the sample darwin.Cloud tables in its ``dbo`` schema.
"""

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from darwin_notify_assets.storage.db import Database, connect
from darwin_notify_assets.storage.sqlfiles import read_sample_schema, read_script
from darwin_notify_assets.storage.store import NotificationStore

URL_ENV = "DARWIN_NOTIFY_TEST_MSSQL_URL"
PASSWORD_ENV = "DARWIN_NOTIFY_TEST_MSSQL_PASSWORD"
SKIP_REASON = (
    f"{URL_ENV} names no SQL Server: the executed T-SQL tier (make test-mssql) did not run here"
)

# The store's tables, as sql/mssql/store_schema.sql creates them (a table added there is
# dropped and emptied here too), and the sample darwin.Cloud's.
STORE_TABLES = tuple(
    dict.fromkeys(
        re.findall(
            r"OBJECT_ID\(N'dbo\.(\w+)', N'U'\) IS NULL", read_script("mssql", "store_schema.sql")
        )
    )
)
DARWIN_TABLES = (
    "Office",
    "Agent",
    "People",
    "Property",
    "Deal",
    "DeletedRecord",
    "NotificationTemplate",
    "NotificationSchedule",
)


# Read once, at import: the embedded tier's fixtures clear every DARWIN_NOTIFY_ variable.
_URL = os.environ.get(URL_ENV) or None
_PASSWORD = os.environ.get(PASSWORD_ENV) or None


def server_url() -> str | None:
    return _URL


def server_password() -> str | None:
    return _PASSWORD


def require_server() -> str:
    url = server_url()
    if url is None:
        pytest.skip(SKIP_REASON)
    return url


def connect_server(read_only: bool = False) -> Database:
    return connect(require_server(), read_only=read_only, password=_PASSWORD)


def is_babelfish(db: Database) -> bool:
    return "babelfish" in str(db.scalar("SELECT @@VERSION")).lower()


def drop_tables(db: Database, tables: tuple[str, ...]) -> None:
    with db.transaction():
        for table in tables:
            db.execute(f"DROP TABLE IF EXISTS dbo.{db.quote(table)}").close()


def empty_store(db: Database) -> None:
    with db.transaction():
        for table in STORE_TABLES:
            db.execute(f"DELETE FROM dbo.{db.quote(table)}").close()


# One connection for the session: Babelfish's T-SQL parser warms up per connection (a new
# one parses its first statements in seconds), and SQL Server does not mind.
_shared: list[NotificationStore] = []


@contextmanager
def mssql_store() -> Iterator[NotificationStore]:
    """An empty store on the server: its schema made afresh once per test session, its
    tables emptied for each test."""
    if not _shared:
        store = NotificationStore(connect_server())
        drop_tables(store.db, STORE_TABLES)
        store.ensure_schema()
        _shared.append(store)
    else:
        store = _shared[0]
        store.db.rollback()
        empty_store(store.db)
    try:
        yield store
    finally:
        store.db.rollback()


def apply_darwin_schema(db: Database) -> None:
    db.run_script(read_sample_schema("mssql"))


#: The dialects a store suite runs on: SQLite always, and the tier's SQL Server when one is
#: named (``make test-mssql``).
STORE_DIALECTS = ["sqlite", pytest.param("mssql", marks=pytest.mark.mssql)]


@contextmanager
def dialect_store(dialect: str, path: Path) -> Iterator[NotificationStore]:
    """An empty store of ``dialect``: a SQLite file at ``path``, or the tier's server."""
    if dialect == "mssql":
        with mssql_store() as s:
            yield s
        return
    s = NotificationStore.open(f"sqlite:///{path}")
    s.ensure_schema()
    try:
        yield s
    finally:
        s.close()
