"""A connection asked to be read-only is checked by the database before it is used: SQLite
for real, SQL Server by its decision on recorded permission rows, PostgreSQL by its answer."""

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from darwin_notify_assets.errors import ReadOnlyViolation
from darwin_notify_assets.storage.db import Database, DatabaseUrl, connect, verify_read_only
from darwin_notify_assets.storage.dialects import PostgreSQL, SQLite, mssql_write_permissions
from darwin_notify_assets.storage.sqlfiles import read_queries

# What the replica's write_access query returns for logins of SQL Server's fixed database
# roles: (permission_name, granted), CREATE TABLE from HAS_PERMS_BY_NAME first, then what
# fn_my_permissions(NULL, 'DATABASE') lists.
PUBLIC = [
    ("CONNECT", 1),
    ("VIEW ANY COLUMN ENCRYPTION KEY DEFINITION", 1),
    ("VIEW ANY COLUMN MASTER KEY DEFINITION", 1),
]
DATAREADER = [("CREATE TABLE", 0), *PUBLIC, ("SELECT", 1)]
DATAWRITER = [("CREATE TABLE", 0), *PUBLIC, ("DELETE", 1), ("INSERT", 1), ("UPDATE", 1)]
DDLADMIN = [("CREATE TABLE", 1), *PUBLIC, ("CREATE TABLE", 1), ("CREATE VIEW", 1)]
OWNER = [
    ("CREATE TABLE", 1),
    *PUBLIC,
    ("ALTER", 1),
    ("CONTROL", 1),
    ("CREATE TABLE", 1),
    ("DELETE", 1),
    ("EXECUTE", 1),
    ("INSERT", 1),
    ("SELECT", 1),
    ("TAKE OWNERSHIP", 1),
    ("UPDATE", 1),
]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (DATAREADER, []),
        ([("CREATE TABLE", 0), ("CONNECT", 1)], []),
        (DATAWRITER, ["DELETE", "INSERT", "UPDATE"]),
        (DDLADMIN, ["CREATE TABLE"]),
        (OWNER, ["ALTER", "CONTROL", "CREATE TABLE", "DELETE", "INSERT", "UPDATE"]),
        ([("CREATE TABLE", None), ("SELECT", 1)], ["CREATE TABLE (cannot tell)"]),
        ([], ["(no permission rows: cannot tell)"]),
    ],
    ids=["datareader", "connect-only", "datawriter", "ddladmin", "owner", "null", "empty"],
)
def test_sql_server_decides_from_the_logins_permissions(rows, expected):
    assert mssql_write_permissions(rows) == expected


class _Cursor:
    def __init__(self, conn: "_FakeOdbc") -> None:
        self.conn = conn
        self.description: Any = None
        self.rows: list = []

    def execute(self, sql: str, params: tuple = ()) -> None:
        self.conn.statements.append(sql)
        if "fn_my_permissions" in sql:
            self.description = [("permission_name",), ("granted",)]
            self.rows = self.conn.permissions

    def fetchall(self) -> list:
        return self.rows

    def nextset(self) -> bool:
        return False

    def close(self) -> None:
        pass


class _FakeOdbc:
    """A SQL Server connection that answers the permission query with recorded rows."""

    def __init__(self, permissions: list) -> None:
        self.permissions = permissions
        self.statements: list[str] = []
        self.closed = False

    def cursor(self) -> _Cursor:
        return _Cursor(self)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def sql_server(monkeypatch):
    import pyodbc

    opened: list[tuple[str, _FakeOdbc]] = []

    def open_with(permissions: list):
        def fake_connect(conn_str: str, **_: Any) -> _FakeOdbc:
            conn = _FakeOdbc(permissions)
            opened.append((conn_str, conn))
            return conn

        monkeypatch.setattr(pyodbc, "connect", fake_connect)
        return opened

    return open_with


def test_a_sql_server_login_that_can_write_is_refused(sql_server):
    opened = sql_server(DATAWRITER)
    with pytest.raises(ReadOnlyViolation) as caught:
        connect("mssql://reader@ag-listener:1433/darwin", read_only=True)
    message = str(caught.value)
    assert "mssql://reader@ag-listener:1433/darwin" in message
    assert "DELETE, INSERT, UPDATE" in message and "SELECT on the watched tables" in message
    [(conn_str, conn)] = opened
    assert "ApplicationIntent=ReadOnly" in conn_str
    assert any("fn_my_permissions" in s for s in conn.statements)
    assert conn.closed


def test_a_sql_server_reader_login_is_accepted(sql_server):
    opened = sql_server(DATAREADER)
    db = connect("mssql://reader@ag-listener:1433/darwin", read_only=True)
    assert db.read_only and not opened[0][1].closed
    assert read_queries("mssql", "replica_queries.sql")["write_access"] in opened[0][1].statements


def test_a_sql_server_store_connection_is_not_checked(sql_server):
    opened = sql_server(OWNER)
    connect("mssql://pipeline@store:1433/store")
    [(conn_str, conn)] = opened
    assert "ApplicationIntent" not in conn_str
    assert not any("fn_my_permissions" in s for s in conn.statements)


def test_postgresql_decides_from_transaction_read_only():
    assert PostgreSQL().read_only_problem([("on",)]) is None
    assert "read-write" in PostgreSQL().read_only_problem([("off",)])


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    path = tmp_path / "darwin.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (a INTEGER)")
    conn.commit()
    conn.close()
    return path


def test_a_sqlite_replica_refuses_every_write(sqlite_file: Path):
    db = connect(f"sqlite:///{sqlite_file}", read_only=True)
    try:
        assert db.query(read_queries("sqlite", "replica_queries.sql")["write_access"]) == [(1,)]
        for statement in ("INSERT INTO t VALUES (1)", "CREATE TABLE u (b)", "DELETE FROM t"):
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                db.execute(statement)
        # Without query_only the file itself still refuses: it was opened with mode=ro.
        db.execute("PRAGMA query_only = OFF").close()
        with pytest.raises(sqlite3.OperationalError, match="readonly database"):
            db.execute("INSERT INTO t VALUES (1)")
    finally:
        db.close()
    check = sqlite3.connect(sqlite_file)
    assert check.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)
    check.close()


def test_a_writable_sqlite_connection_is_refused_as_the_replica(sqlite_file: Path):
    url = DatabaseUrl.parse(f"sqlite:///{sqlite_file}")
    db = Database(sqlite3.connect(sqlite_file), "sqlite", url, read_only=True)
    with pytest.raises(ReadOnlyViolation, match="query_only is off"):
        verify_read_only(db)
    db.close()
    assert SQLite().read_only_problem([(1,)]) is None
