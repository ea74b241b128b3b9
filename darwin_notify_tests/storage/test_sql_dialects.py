"""The dialect folders are one contract: the same files, tables, columns and query names.

SQL Server cannot run on this machine; its files are checked here as far as text allows, and
the statements the Python layer builds for it are checked for shape.
"""

import re
from datetime import datetime

import pytest

from darwin_notify_assets.storage.db import Database, DatabaseUrl
from darwin_notify_assets.storage.sqlfiles import (
    DIALECTS,
    read_queries,
    read_script,
    split_script,
    sql_root,
)

TABLE = re.compile(
    r"CREATE TABLE (?:IF NOT EXISTS )?(?:dbo\.)?\"?(\w+)\"? \((.*?)\n\);", re.S | re.IGNORECASE
)


def _tables(dialect: str, filename: str) -> dict[str, set[str]]:
    text = read_script(dialect, filename)
    out = {}
    for name, body in TABLE.findall(text):
        cols = set()
        for line in body.splitlines():
            word = line.strip().split(" ")[0].strip('"')
            if word and not word.startswith("--") and word.upper() not in ("PRIMARY", "CONSTRAINT"):
                cols.add(word)
        out[name] = cols
    return out


# Scripts a DBA runs by hand, which the Python layer never reads.
DEPLOY_ONLY = {"mssql": {"grants.sql"}}


def test_every_dialect_has_the_same_files() -> None:
    names = {
        d: sorted(
            p.name for p in (sql_root() / d).glob("*.sql") if p.name not in DEPLOY_ONLY.get(d, ())
        )
        for d in DIALECTS
    }
    assert names["sqlite"] == names["postgresql"] == names["mssql"]
    for dialect, files in DEPLOY_ONLY.items():
        assert all((sql_root() / dialect / f).is_file() for f in files)


@pytest.mark.parametrize("filename", ["store_schema.sql", "darwin_schema.sql"])
def test_every_dialect_declares_the_same_tables_and_columns(filename: str) -> None:
    reference = _tables("sqlite", filename)
    assert reference
    for dialect in ("postgresql", "mssql"):
        assert _tables(dialect, filename) == reference, dialect


def test_named_queries_match_across_dialects() -> None:
    names = {d: sorted(read_queries(d, "replica_queries.sql")) for d in DIALECTS}
    assert names["sqlite"] == names["postgresql"] == names["mssql"]
    assert "watermark" in names["mssql"]
    assert (
        "sys.dm_hadr_database_replica_states"
        in read_queries("mssql", "replica_queries.sql")["watermark"]
    )


def test_tsql_scripts_split_on_go_lines_only() -> None:
    batches = split_script("mssql", read_script("mssql", "store_schema.sql"))
    assert len(batches) >= 10
    assert all("GO" not in b.split() for b in batches)
    assert sum(b.count("CREATE TABLE") for b in batches) == len(
        _tables("mssql", "store_schema.sql")
    )


class _Recorder:
    """A DB-API stand-in that keeps the statements it is given."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple]] = []
        self.rowcount = 1

    def cursor(self) -> "_Recorder":
        return self

    def execute(self, sql: str, params: tuple = ()) -> None:
        self.statements.append((sql, params))

    def close(self) -> None:
        pass


def test_sql_server_statements_are_merges_with_bound_parameters() -> None:
    conn = _Recorder()
    db = Database(conn, "mssql", DatabaseUrl.parse("mssql://u@host:1433/store"), read_only=False)
    db.insert_rows(
        "candidate",
        ("candidate_key", "partition_key"),
        [("k1", "p"), ("k2", "p")],
        conflict=("candidate_key",),
    )
    db.upsert_rows("agent_totals", ("agent_id", "units_ytd"), [(1, 2)], key=("agent_id",))
    (insert, params), (upsert, _) = conn.statements
    assert insert.startswith("MERGE candidate WITH (HOLDLOCK)") and "WHEN NOT MATCHED" in insert
    assert params == ("k1", "p", "k2", "p") and insert.count("?") == 4
    assert "WHEN MATCHED THEN UPDATE SET t.units_ytd = s.units_ytd" in upsert
    assert db.limit("SELECT a FROM t ORDER BY a", 5) == "SELECT TOP (5) a FROM t ORDER BY a"
    assert db.ts(datetime(2026, 3, 2, 14, 0)) == datetime(2026, 3, 2, 14, 0)
    assert db.quote("Property") == "[Property]"


def test_sql_server_connection_string_asks_for_a_readable_secondary() -> None:
    from darwin_notify_assets.storage.db import odbc_connection_string

    url = DatabaseUrl.parse(
        "mssql://reader@ag-listener:1433/darwin?driver=ODBC+Driver+18+for+SQL+Server"
    )
    text = odbc_connection_string(url, "s3cret", read_only=True)
    assert "ApplicationIntent=ReadOnly" in text and "SERVER=ag-listener,1433" in text
    assert "s3cret" not in str(url) and "s3cret" not in repr(url)
