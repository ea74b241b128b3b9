"""Reads by a composite primary key executed on the SQL Server named by
DARWIN_NOTIFY_TEST_MSSQL_URL: the CRM's ``crm.Showing``, keyed by ``(ListingNo, ShowingSeq)``,
fetched by both columns at once (``OPENJSON ... WITH``, one statement per batch), its changes,
its deletions from a tombstone's two key columns, and a merge-field query given the keys as
one JSON parameter."""

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from darwin_notify_assets.domain.model import Tombstone, load_model
from darwin_notify_assets.storage.db import Database
from darwin_notify_assets.storage.dialects import MSSQL_JSON_ROWS
from darwin_notify_assets.storage.replica import ReplicaReader
from darwin_notify_tests.crm import world
from darwin_notify_tests.mssql.server import connect_server

pytestmark = pytest.mark.mssql

T0 = datetime(2026, 5, 4, 9, 0)
# Showings numbered per listing: the same ShowingSeq recurs across listings.
SHOWINGS = [(listing, seq) for listing in range(1, 41) for seq in range(1, 4)]

SCHEMA = """
IF SCHEMA_ID(N'crm') IS NULL EXEC(N'CREATE SCHEMA crm');
GO
CREATE TABLE crm.Showing (
    ListingNo int NOT NULL, ShowingSeq int NOT NULL, BrokerNo int NOT NULL,
    ClientNo int NOT NULL, Note nvarchar(200) NOT NULL,
    CreatedAt datetime2(6) NOT NULL, ChangedAt datetime2(6) NOT NULL, CancelledAt datetime2(6),
    CONSTRAINT PK_crm_Showing PRIMARY KEY (ListingNo, ShowingSeq)
);
GO
CREATE INDEX ix_crm_Showing_ChangedAt ON crm.Showing (ChangedAt);
GO
CREATE TABLE crm.Gone (
    TableName nvarchar(128) NOT NULL, RecordID int NOT NULL, RecordID2 int,
    GoneAt datetime2(6) NOT NULL
);
"""


def _drop(db: Database) -> None:
    for table in ("crm.Showing", "crm.Gone"):
        db.execute(f"IF OBJECT_ID(N'{table}', N'U') IS NOT NULL DROP TABLE {table}")
    db.commit()


@pytest.fixture
def showings() -> Iterator[Database]:
    db = connect_server()
    try:
        _drop(db)
        db.run_script(SCHEMA)
        db.bulk_execute(
            "INSERT INTO crm.Showing (ListingNo, ShowingSeq, BrokerNo, ClientNo, Note, CreatedAt, "
            "ChangedAt) VALUES {values}",
            [
                (
                    a,
                    b,
                    1 + a % 4,
                    a * 10 + b,
                    f"showing {a}/{b}",
                    db.ts(T0),
                    db.ts(T0 + timedelta(minutes=a)),
                )
                for a, b in SHOWINGS
            ],
        )
        # one row per statement: a NULL parameter of a multi-row VALUES is what Babelfish
        # cannot always describe (docs/sqlserver.md)
        for row in (("crm.Showing", 41, 1, T0 + timedelta(minutes=2)), ("crm.Client", 7, None, T0)):
            db.execute(
                "INSERT INTO crm.Gone (TableName, RecordID, RecordID2, GoneAt) VALUES (?, ?, ?, ?)",
                [row[0], row[1], row[2], db.ts(row[3])],
            )
        db.commit()
        yield db
    finally:
        db.rollback()
        _drop(db)
        db.close()


def _reader(merge_fields_dir: Path | None = None) -> ReplicaReader:
    model = load_model(world.MODEL)
    tables = dict(model.tables)
    tables["crm.Showing"] = tables["crm.Showing"].model_copy(update={"deletions": "tombstone"})
    tomb = Tombstone.model_validate(
        {
            "table": "crm.Gone",
            "table_column": "TableName",
            "key_column": ["RecordID", "RecordID2"],
            "time_column": "GoneAt",
        }
    )
    model = model.model_copy(update={"tables": tables, "tombstone": tomb})
    # The tier's login owns its database, so the read-only guard refuses it as a replica (a
    # test of test_executed.py); these reads go through a connection of it marked read-only.
    db = connect_server()
    return ReplicaReader(Database(db.conn, db.dialect, db.url, True), model, merge_fields_dir)


def _counting(reader: ReplicaReader) -> list[str]:
    seen: list[str] = []
    query_dicts = reader.db.query_dicts

    def counted(sql, params=()):
        seen.append(sql)
        return query_dicts(sql, params)

    reader.db.query_dicts = counted  # type: ignore[method-assign]
    return seen


def test_rows_are_fetched_by_both_key_columns_in_one_statement_per_batch(showings) -> None:
    reader = _reader()
    try:
        statements = _counting(reader)
        wanted = [f"[{a},{b}]" for a, b in SHOWINGS[::7]] + ["[99,1]"]
        rows = reader.fetch_by_ids("crm.Showing", wanted)
        assert len(statements) == 1 and "OPENJSON" in statements[0]
        assert set(rows) == set(wanted) - {"[99,1]"}
        for rid, row in rows.items():
            a, b = (int(x) for x in rid.strip("[]").split(","))
            assert (row["ListingNo"], row["ShowingSeq"], row["Note"]) == (a, b, f"showing {a}/{b}")
        # more keys than one JSON parameter carries: one statement per batch of them
        statements.clear()
        many = [f"[{a},{b}]" for a in range(1, MSSQL_JSON_ROWS // 2 + 2) for b in (1, 2, 3)]
        assert len(reader.fetch_by_ids("crm.Showing", many)) == len(SHOWINGS)
        assert len(statements) == -(-len(many) // MSSQL_JSON_ROWS)
    finally:
        reader.close()


def test_changes_and_tombstoned_deletions_name_records_by_the_whole_key(showings) -> None:
    reader = _reader()
    try:
        batches = list(
            reader.read_changes(
                "crm.Showing", ["ChangedAt"], T0 + timedelta(minutes=3), T0 + timedelta(minutes=5)
            )
        )
        changed = sorted((r["ListingNo"], r["ShowingSeq"]) for b in batches for r in b)
        assert changed == [(3, 1), (3, 2), (3, 3), (4, 1), (4, 2), (4, 3)]
        found = reader.read_deletions(["crm.Showing", "crm.Client"], T0, T0 + timedelta(hours=1))
        assert sorted((t, rid) for t, rid, _ in found) == [
            ("crm.Client", 7),
            ("crm.Showing", "[41,1]"),
        ]
    finally:
        reader.close()


def test_a_merge_field_query_gets_the_composite_keys_as_one_json_parameter(
    showings, tmp_path: Path
) -> None:
    queries = tmp_path / "merge_fields"
    queries.mkdir()
    (queries / "showing_note.sql").write_text(
        "-- Each showing's note; the ids are [[ListingNo, ShowingSeq], ...].\n"
        "SELECT s.ListingNo, s.ShowingSeq, s.Note AS ShowingNote\n"
        "FROM OPENJSON(?) WITH (ListingNo int '$[0]', ShowingSeq int '$[1]') AS j\n"
        "JOIN crm.Showing AS s ON s.ListingNo = j.ListingNo AND s.ShowingSeq = j.ShowingSeq\n",
        encoding="utf-8",
    )
    reader = _reader(queries)
    try:
        statements = _counting(reader)
        wanted = ["[2,3]", "[5,1]", "[40,2]"]
        rows = reader.merge_fields("showing_note", wanted, table="crm.Showing")
        assert len([s for s in statements if "OPENJSON" in s]) == 1
    finally:
        reader.close()
    assert rows == {
        "[2,3]": {"ShowingNote": "showing 2/3"},
        "[5,1]": {"ShowingNote": "showing 5/1"},
        "[40,2]": {"ShowingNote": "showing 40/2"},
    }
