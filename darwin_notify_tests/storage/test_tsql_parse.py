"""Every T-SQL statement of darwin-notify parsed by a real T-SQL parser, in CI.

No SQL Server runs here, so this is syntax only, not execution (docs/sqlserver.md lists what
is and is not verified). It covers every batch of every file in ``sql/mssql`` (found anew on
each run, so files and queries added later are checked too) and of the sample's T-SQL
(``sample/schema``, ``sample/merge_fields``), the statements the Python layer
builds for SQL Server, and the T-SQL in the DBA's guide. Known-bad statements must each be
rejected, so that a check that passes everything fails here.
"""

import re
from pathlib import Path

import pytest

from darwin_notify_assets.domain.model import Tombstone, load_model
from darwin_notify_assets.storage.db import Database, DatabaseUrl
from darwin_notify_assets.storage.replica import ReplicaReader
from darwin_notify_assets.storage.sqlfiles import sample_merge_fields, sample_schema, sql_root
from darwin_notify_tests.storage.tsql import (
    bind_parameters,
    fill_markers,
    markdown_blocks,
    problems,
    statements,
)

ROOT = Path(__file__).resolve().parents[2]
# The product's files, and the sample's T-SQL (its schema and merge-field query), which lives
# with the sample; the generated grants are parsed in test_grants.py.
TSQL_FILES = (
    sorted((sql_root() / "mssql").rglob("*.sql"))
    + [sample_schema("mssql")]
    + sorted(sample_merge_fields("mssql").glob("*.sql"))
)
GUIDE = ROOT / "docs" / "sqlserver.md"

# Each is wrong for SQL Server; the comment says how. Every one must be rejected.
KNOWN_BAD = [
    "SELECT TOP 5 FROM t",  # TOP with no select list
    "SELECT a FROM t LIMIT 10",  # PostgreSQL/MySQL row limit
    "SELECT TOP (5) a FROM t LIMIT 5",
    "DELETE FROM t WHERE a = 1 LIMIT 1",
    "INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO NOTHING",  # PostgreSQL upsert
    "UPDATE t SET a = 1 RETURNING a",  # PostgreSQL; T-SQL has OUTPUT
    "INSERT INTO t DEFAULT VALUES RETURNING id",
    "SELECT CAST(a AS int) + 1::int FROM t",  # PostgreSQL cast
    "SELECT a FROM t WHERE (a = 1",  # unbalanced parentheses
    "SELECT COALESCE(a, 0 FROM t",
    "SELECT a FROM t WITH (NOLOCK",
    "SELEC a FROM t",  # misspelled keywords
    "SELEC a",
    "UPDTAE t SET a = 1",
    "SELECT a FORM t",
    "INSERT INTO t (a) VALUE (1)",
    "UPDATE TOP 5 t SET a = 1",  # TOP needs parentheses in UPDATE
    "SELECT a FROM t ORDER BY a OFFSET 5",  # OFFSET needs ROWS
    "SELECT a FROM t ORDER BY a OFFSET 0 ROWS FETCH NEXT 5 ROWS",  # needs ONLY
    "SELECT a FROM t ORDER BY a NULLS FIRST",  # not T-SQL
    "SELECT a FROM t WHERE a ILIKE 'x'",  # PostgreSQL
    "SELECT a FROM t FOR UPDATE SKIP LOCKED",  # PostgreSQL row locks
    "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE",  # PostgreSQL form
    "CREATE TABLE t (a int AUTO_INCREMENT)",  # MySQL
    "INSERT IGNORE INTO t VALUES (1)",
    "CREATE OR REPLACE VIEW v AS SELECT 1 AS a",  # T-SQL says CREATE OR ALTER
    "ALTER TABLE t ADD COLUMN b int",  # T-SQL has no COLUMN here
    "SELECT a, FROM t",  # dangling comma
    "SELECT a FROM t WHERE a IN ()",
    "SELECT a FROM t WHERE a = 1 AND",
    "SELECT a FROM t WHERE a BETWEEN 1",
    "UPDATE t SET a = 1 WHERE",
    "SELECT a FROM t GROUP a",
    "SELECT a FROM t WHERE a = 'unterminated",
    "SELECT a FROM t WHERE a = %s",  # other drivers' parameter styles
    "SELECT a FROM t WHERE a = :a",
    "MERGE t USING s ON t.a = s.a WHEN MATCHED UPDATE SET a = 1;",  # THEN missing
    # Shapes of the CDC reads (sql/mssql/replica_queries.sql), each broken.
    "SELECT c.__$start_lsn FROM cdc.fn_cdc_get_all_changes_x(?, ?, N'all') AS c LIMIT 1",
    "SELECT c.__$start_lsn FROM cdc.fn_cdc_get_all_changes_x(?, ?, N'all') AS c "
    "WHERE c.__$operation == 1",
    "SELECT c.__$start_lsn FROM cdc.fn_cdc_get_all_changes_x(?, ?, N'all' AS c",
    "SELECT c.__$start_lsn FROM cdc.fn_cdc_get_all_changes_x(?, ?, N'all') AS c "
    "ORDER BY c.__$start_lsn,",
]

# Valid T-SQL that the extra rules must not refuse.
KNOWN_GOOD = [
    "EXEC sys.sp_who",
    "EXEC (N'SELECT 1')",
    "SELECT N'why?' AS q, [odd?name], \"x?\" FROM t /* ? */ WHERE a = ? -- ?",
    "UPDATE TOP (5) t WITH (READPAST, UPDLOCK, ROWLOCK) SET a = 1 OUTPUT inserted.a WHERE b = ?",
    "SELECT TOP (?) a FROM t ORDER BY a",
    "SELECT a FROM t ORDER BY a OFFSET 0 ROWS FETCH NEXT ? ROWS ONLY",
    "MERGE t WITH (HOLDLOCK) AS tg USING (VALUES (?, ?)) AS s (a, b) ON tg.a = s.a "
    "WHEN NOT MATCHED THEN INSERT (a, b) VALUES (s.a, s.b);",
    "CREATE OR ALTER VIEW dbo.v AS SELECT 1 AS a",
    "SELECT a FROM t WHERE a = $1",  # a money literal in T-SQL
    "SELECT [a]]b] FROM [t]]]",  # a doubled ] inside [...] is one ]
    "GRANT SELECT ON OBJECT::dbo.t TO [r]; DENY INSERT ON SCHEMA::dbo TO [r]",
]


def _batches() -> list:
    return [pytest.param(label, sql, id=label) for p in TSQL_FILES for label, sql in statements(p)]


def test_every_tsql_file_has_statements() -> None:
    assert TSQL_FILES, "no files in sql/mssql"
    for path in TSQL_FILES:
        assert statements(path), f"{path.name}: no statement found"


@pytest.mark.parametrize(("label", "sql"), _batches())
def test_every_tsql_statement_parses(label: str, sql: str) -> None:
    assert problems(sql) == [], label


@pytest.mark.parametrize("sql", KNOWN_BAD)
def test_known_bad_statements_are_rejected(sql: str) -> None:
    assert problems(sql), f"the T-SQL check accepted a bad statement: {sql}"


@pytest.mark.parametrize("sql", KNOWN_GOOD)
def test_known_good_statements_are_accepted(sql: str) -> None:
    assert problems(sql) == []


def test_parameters_are_numbered_outside_strings_names_and_comments() -> None:
    sql = "SELECT '?', [a?], \"b?\" FROM t /* ? /* ? */ ? */ WHERE a = ? AND b = ? -- ?\n"
    assert bind_parameters(sql) == sql.replace("a = ?", "a = @P1").replace("b = ?", "b = @P2")
    assert bind_parameters("SELECT 'it''s ?', ?") == "SELECT 'it''s ?', @P1"
    assert (
        bind_parameters("SELECT [a]]?] FROM t WHERE b = ?") == "SELECT [a_?] FROM t WHERE b = @P1"
    )
    assert fill_markers("IN ({list})") == "IN (?, ?, ?)"
    with pytest.raises(ValueError, match="no sample for the marker"):
        fill_markers("VALUES {rows}")


# -- statements the Python layer builds ------------------------------------------------------
class _Recorder:
    """A pyodbc stand-in that keeps every statement, and answers the replica's catalog query
    with columns whose names need quoting."""

    COLUMNS = ("ListingID", "AgentID", "Modified On", "Odd]Name", "CreateDate")

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple]] = []
        self.rowcount = 1
        self.description = None
        self._rows: list[tuple] = []

    def cursor(self) -> "_Recorder":
        return self

    def execute(self, sql: str, params: tuple = ()) -> None:
        self.statements.append((sql, tuple(params)))
        if "INFORMATION_SCHEMA.COLUMNS" in sql:
            self._rows = [(c,) for c in self.COLUMNS]
            self.description = [("COLUMN_NAME",)]
        else:
            self._rows = []
            self.description = [(c,) for c in self.COLUMNS]

    def fetchall(self) -> list[tuple]:
        rows, self._rows = self._rows, []
        return rows

    def fetchmany(self, size: int) -> list[tuple]:
        return self.fetchall()

    def nextset(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass


def _database(read_only: bool) -> tuple[Database, _Recorder]:
    conn = _Recorder()
    url = DatabaseUrl.parse("mssql://u@host:1433/db")
    return Database(conn, "mssql", url, read_only=read_only), conn


def _generated_forms() -> list[tuple[str, str, tuple]]:
    """(label, statement, parameters) of every SQL Server form db.py and replica.py build,
    for a sample table."""
    from datetime import datetime

    forms: list[tuple[str, str, tuple]] = []
    db, conn = _database(read_only=False)
    table, cols = "dbo.candidate", ("candidate_key", "partition_key", "created_at")
    rows = [("k1", "p", datetime(2026, 3, 2)), ("k2", "p", datetime(2026, 3, 2))]
    # Insert-if-absent and upsert forms are named queries of sql/mssql/store_queries.sql,
    # parsed with the files.
    calls = {"insert_rows": lambda: db.insert_rows(table, cols, rows)}
    for label, call in calls.items():
        conn.statements.clear()
        call()
        forms += [(f"db.{label}", sql, params) for sql, params in conn.statements]

    replica_db, conn = _database(read_only=True)
    # A tombstone whose names need quoting, among the columns the recorder's catalog has.
    tombstone = Tombstone(
        table="Deleted Record",
        table_column="Odd]Name",
        key_column="ListingID",
        time_column="Modified On",
    )
    reader = ReplicaReader(replica_db, load_model().model_copy(update={"tombstone": tombstone}))
    start, end = datetime(2026, 3, 2, 14, 0), datetime(2026, 3, 2, 14, 5)
    reads = {
        "read_changes": lambda: [
            b
            for b in reader.read_changes("Listing Item", ["Modified On", "CreateDate"], start, end)
        ],
        "read_deletions": lambda: reader.read_deletions(["Listing Item", "Agent"], start, end),
        "read_all": lambda: [b for b in reader.read_all("Listing Item")],
        "fetch_by_ids": lambda: reader.fetch_by_ids("Listing Item", [3, 1, 2], key="ListingID"),
        "fetch_by_ids_composite": lambda: reader.fetch_by_ids(
            "Listing Item", ['[3,"a"]', '[1,"b"]'], key=("ListingID", "Odd]Name")
        ),
        "fetch_grouped": lambda: reader.fetch_grouped(
            "Listing Item", "AgentID", [7, 8], ["ListingID", "Odd]Name"]
        ),
        "earliest_change": lambda: reader.earliest_change(
            "Listing Item", ["Modified On", "CreateDate"], start
        ),
        "earliest_deletion": lambda: reader.earliest_deletion(["Listing Item", "Agent"], start),
    }
    for label, call in reads.items():
        conn.statements.clear()
        call()
        forms += [
            (f"replica.{label}", sql, params)
            for sql, params in conn.statements
            if "INFORMATION_SCHEMA.COLUMNS" not in sql
        ]
    return forms


def test_the_generated_forms_are_all_there() -> None:
    labels = {label for label, _, _ in _generated_forms()}
    assert {"db.insert_rows", "replica.read_changes", "replica.fetch_grouped"} <= labels
    assert len(labels) >= 8


@pytest.mark.parametrize(
    ("label", "sql", "params"), [pytest.param(*f, id=f[0]) for f in _generated_forms()]
)
def test_every_generated_statement_parses_with_bound_values(label, sql, params) -> None:
    assert problems(sql) == [], (label, sql)
    # Every value is a bound parameter: one marker per value, no value in the text.
    assert sql.count("?") == len(params), (label, sql)
    assert "k1" not in sql and "2026" not in sql


def test_generated_identifiers_are_quoted() -> None:
    sql = next(s for label, s, _ in _generated_forms() if label == "replica.read_changes")
    assert "[Listing Item]" in sql and "[Odd]]Name]" in sql and "[Modified On] >= ?" in sql
    assert not re.search(r"(?<!\[)Modified On(?!\])", sql)


# -- the DBA's guide -------------------------------------------------------------------------
def test_the_guide_has_tsql_blocks_and_none_is_missed() -> None:
    blocks = {label.rsplit(".", 1)[0] for label, _ in markdown_blocks(GUIDE)}
    assert blocks, "docs/sqlserver.md has no ```sql blocks"
    assert len(blocks) == GUIDE.read_text(encoding="utf-8").count("```sql\n")


@pytest.mark.parametrize(
    ("label", "sql"),
    [pytest.param(*b, id=b[0]) for b in markdown_blocks(GUIDE)],
)
def test_every_tsql_block_of_the_guide_parses(label: str, sql: str) -> None:
    assert problems(sql) == [], label
