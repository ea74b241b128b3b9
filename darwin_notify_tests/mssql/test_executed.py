"""The T-SQL of darwin-notify executed on the SQL Server named by DARWIN_NOTIFY_TEST_MSSQL_URL:
the schemas applied twice, every replica query, timestamps, the parameter limit, bulk
inserts of many rows as one JSON parameter, and what a T-SQL engine without availability
groups cannot show (skipped with the gap named). Every store query is run by
``darwin_notify_tests/storage/test_store_queries.py``."""

from datetime import UTC, datetime, timedelta

import pytest

from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.errors import ReadOnlyViolation
from darwin_notify_assets.storage.db import Database, verify_read_only
from darwin_notify_assets.storage.dialects import MSSQL_JSON_ROWS, SqlServer
from darwin_notify_assets.storage.mssql_watermark import watermark_from_row
from darwin_notify_assets.storage.sqlfiles import read_queries
from darwin_notify_assets.storage.store import (
    CandidateRow,
    ChangeEvent,
    NotificationStore,
    OutboundMessage,
)
from darwin_notify_tests.mssql.server import (
    DARWIN_TABLES,
    STORE_TABLES,
    apply_darwin_schema,
    connect_server,
    drop_tables,
    is_babelfish,
    mssql_store,
)

pytestmark = pytest.mark.mssql

P1, P2 = "2026-03-02-14:00", "2026-03-02-14:05"

# Found here on Babelfish 4.2: pyodbc asks ODBC Driver 18 to describe every NULL parameter,
# the driver asks the server (sp_describe_undeclared_parameters), and where Babelfish cannot
# describe a statement (a multi-row VALUES insert past a few hundred parameters) the failure
# rolls back the open transaction without an error to the client: of three 400-row inserts
# with NULLs in one transaction, only the last one's rows remain (without NULLs, all do).
BABELFISH_LOST_STATEMENT = (
    "not verifiable on Babelfish 4.2: there a failed describe of a NULL parameter (ODBC "
    "Driver 18's sp_describe_undeclared_parameters) silently rolls back the open transaction, "
    "so multi-row VALUES inserts with NULLs lose the rows of the statements before"
)


def objects(db: Database, tables: tuple[str, ...]) -> list[tuple]:
    """Each table's indexes and check constraints, as the catalog lists them."""
    names = ", ".join(f"N'{t}'" for t in tables)
    return sorted(
        db.query(
            "SELECT OBJECT_NAME(i.object_id), COALESCE(i.name, N''), i.type_desc "
            f"FROM sys.indexes i WHERE OBJECT_NAME(i.object_id) IN ({names}) "
            "UNION ALL SELECT OBJECT_NAME(c.parent_object_id), c.name, N'CHECK' "
            f"FROM sys.check_constraints c WHERE OBJECT_NAME(c.parent_object_id) IN ({names})"
        )
    )


def test_the_store_schema_runs_twice_and_the_second_run_changes_nothing() -> None:
    db = connect_server()
    try:
        drop_tables(db, STORE_TABLES)
        NotificationStore(db).ensure_schema()
        first = objects(db, STORE_TABLES)
        NotificationStore(db).ensure_schema()
        assert objects(db, STORE_TABLES) == first
        kinds = {(t, k) for t, _, k in first}
        assert ("message", "CHECK") in kinds and ("change_event", "NONCLUSTERED") in kinds
        # seven named indexes, besides the keys and unique constraints
        assert (
            sum(1 for _, name, _ in first if "_" in name and name.lower()[:3] not in ("pk_", "uq_"))
            >= 7
        )
    finally:
        db.close()


def test_the_sample_darwin_schema_runs_twice() -> None:
    db = connect_server()
    try:
        drop_tables(db, DARWIN_TABLES)
        apply_darwin_schema(db)
        first = objects(db, DARWIN_TABLES)
        apply_darwin_schema(db)
        assert objects(db, DARWIN_TABLES) == first
        assert len({t for t, _, _ in first}) == len(DARWIN_TABLES)
    finally:
        drop_tables(db, DARWIN_TABLES)
        db.close()


def test_timestamps_keep_their_microseconds_and_are_utc() -> None:
    with mssql_store() as store:
        start = datetime(2026, 3, 2, 14, 0, 0, 123456)
        local = datetime(2026, 3, 2, 16, 5, 0, 654321, tzinfo=UTC).astimezone(
            __import__("datetime").timezone(timedelta(hours=2))
        )
        store.record_window(P1, start, local, start, "streaming", 1)
        info = store.window_info(P1)
        assert info["window_start"] == start
        assert info["window_end"] == datetime(2026, 3, 2, 16, 5, 0, 654321)
        kind = store.db.query(
            "SELECT DATA_TYPE, DATETIME_PRECISION FROM INFORMATION_SCHEMA.COLUMNS "
            "WHERE TABLE_NAME = N'window_run' AND COLUMN_NAME = N'window_start'"
        )
        if is_babelfish(store.db):
            pytest.skip("not verifiable on Babelfish: its datetime2 keeps at most 6 digits")
        assert [(str(k).lower(), int(p)) for k, p in kind] == [("datetime2", 7)]


def test_one_statement_never_binds_more_than_the_server_takes() -> None:
    """4,000 keys in an IN list and 500 change events of 12 columns as multi-row VALUES:
    each statement within 2,100, and every row arrives."""
    with mssql_store() as store:
        keys = [f"k{i}" for i in range(4000)]
        assert store.known_event_keys(keys) == set()
        if is_babelfish(store.db):
            pytest.skip(BABELFISH_LOST_STATEMENT)
        assert SqlServer.max_params < 2100
        events = [
            ChangeEvent(f"e{i}", P1, 1, "Property", i, "insert", "v1", 1, None, None, {})
            for i in range(500)
        ]
        assert store.save_detection(events, {}, [], [], [], []) == 500
        assert store.event_count(P1) == 500


def test_bulk_inserts_of_many_rows_take_every_row_once() -> None:
    """12,000 candidates and their messages, three JSON statements each of the same text in
    one transaction: every row arrives, every new candidate's id is returned, each message
    has its first history row, and the same again inserts nothing."""
    n = MSSQL_JSON_ROWS * 2 + 2000
    with mssql_store() as store:
        candidates = [
            CandidateRow(f"c{i}", P1, 1, "email", i, "Property", i, i % 7, "contact", i, i % 2 == 0)
            for i in range(n)
        ]
        ids: list[int] = []
        assert store.insert_candidates(candidates, on_inserted=ids.extend) == n
        assert len(set(ids)) == n and store.candidate_count(P1) == n
        assert store.insert_candidates(candidates) == 0
        keys = dict(store.db.query("SELECT candidate_id, candidate_key FROM dbo.candidate"))
        assert sorted(keys) == sorted(ids)
        messages = [
            OutboundMessage(
                cid,
                keys[cid],
                P1,
                "email",
                MessageStatus.QUEUED,
                to_address=f"c{cid}@example.com",
                subject="Zoë's listing",
                html_body="<p>é</p>",
                text_body="t",
            )
            for cid in ids
        ]
        assert store.insert_messages(messages) == n
        assert store.insert_messages(messages) == 0
        assert store.status_counts(P1) == {"queued": n}
        first = store.db.scalar(
            "SELECT COUNT(*) FROM dbo.message_event WHERE from_status IS NULL AND to_status = ?",
            [str(MessageStatus.QUEUED)],
        )
        assert first == n
        assert store.unrendered_count(P1) == 0


def test_every_replica_query_runs_and_the_guard_refuses_a_login_that_can_write() -> None:
    queries = read_queries("mssql", "replica_queries.sql")
    db = connect_server()
    try:
        drop_tables(db, DARWIN_TABLES)
        apply_darwin_schema(db)
        assert db.query(queries["table_columns"], ["Agent"])
        [row] = db.query_dicts(queries["watermark"])
        assert row["server_utc_now"] is not None
        watermark_from_row(row)
        if is_babelfish(db):
            pytest.skip("not verifiable on Babelfish: it has no fn_my_permissions")
        rows = db.query(queries["write_access"])
        assert rows and rows[0][0] == "CREATE TABLE"
        # This tier's login owns its database: the guard must refuse it as a replica.
        with pytest.raises(ReadOnlyViolation, match="lets this login write"):
            verify_read_only(db)
        assert set(queries) == {"table_columns", "watermark", "write_access"}
    finally:
        drop_tables(db, DARWIN_TABLES)
        db.close()


def test_read_intent_connection_cannot_write_on_a_readable_secondary() -> None:
    db = connect_server()
    try:
        if is_babelfish(db):
            pytest.skip(
                "not verifiable on Babelfish: it has no availability groups, and "
                "ApplicationIntent=ReadOnly does not stop writes there"
            )
        [row] = db.query_dicts(read_queries("mssql", "replica_queries.sql")["watermark"])
        if row["is_primary_replica"] is None or row["is_primary_replica"]:
            pytest.skip("the named server is no readable secondary of an availability group")
        assert str(row["updateability"]).upper() == "READ_ONLY"
    finally:
        db.close()
