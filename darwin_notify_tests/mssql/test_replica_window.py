"""Whole windows through the Dagster chain with the replica and the store both on the SQL
Server named by DARWIN_NOTIFY_TEST_MSSQL_URL: the sample darwin.Cloud seeded there, every
read of a window in T-SQL (changes, tombstones, records and related records by id, the
audiences, the agents' zones, the merge-field query), and exactly the notifications the
oracle expects reach a provider, once."""

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from darwin_notify_assets.config import REPLICA_PASSWORD_ENV, STORE_PASSWORD_ENV, Settings
from darwin_notify_assets.domain.model import load_model
from darwin_notify_assets.errors import MergeFieldError
from darwin_notify_assets.sample import seed
from darwin_notify_assets.storage import db as db_module
from darwin_notify_assets.storage.db import Database
from darwin_notify_assets.storage.replica import ReplicaReader
from darwin_notify_tests.conftest import (
    SEED,
    START,
    EmbeddedEnv,
    clean_environment,
    take_baseline,
)
from darwin_notify_tests.mssql.server import (
    DARWIN_TABLES,
    connect_server,
    drop_tables,
    is_babelfish,
    mssql_store,
    require_server,
    server_password,
)
from darwin_notify_tests.mssql.test_window import windows_send_what_the_oracle_expects

pytestmark = pytest.mark.mssql

WINDOWS = 2


def _insert_one(db: Database, table: str, row: Mapping[str, Any]) -> None:
    columns = seed.COLUMNS[table]
    kinds = seed.COLUMN_KINDS[table]
    values = [db.ts(row[c]) if kinds.get(c) == seed.TIMESTAMP else row[c] for c in columns]
    names = ", ".join(db.quote(c) for c in columns)
    marks = ", ".join("?" for _ in columns)
    db.execute(f"INSERT INTO {db.quote(table)} ({names}) VALUES ({marks})", values).close()


class ServerEnv(EmbeddedEnv):
    """The sample written to the server one row per statement: on Babelfish a multi-row VALUES
    insert with NULL parameters can lose the rows of the statements before it in its
    transaction (docs/sqlserver.md), which is a gap of Babelfish's, not what this test reads."""

    def write_base(self) -> None:
        for table in seed.TABLES:
            for row in self.dataset.records(table):
                _insert_one(self.source, table, row)
            self.source.commit()

    def apply(self, index: int) -> None:
        if index in self.applied:
            return
        db = self.source
        operations = self.changes[index].operations
        for op in operations:
            if isinstance(op, seed.Insert):
                _insert_one(db, op.table, op.row)
        for op in operations:
            if isinstance(op, seed.Update):
                kinds = seed.COLUMN_KINDS[op.table]
                columns = list(op.values)
                values = [
                    db.ts(op.values[c]) if kinds.get(c) == seed.TIMESTAMP else op.values[c]
                    for c in columns
                ]
                sets = ", ".join(f"{db.quote(c)} = ?" for c in columns)
                key = db.quote(seed.KEY_COLUMNS[op.table])
                db.execute(
                    f"UPDATE {db.quote(op.table)} SET {sets} WHERE {key} = ?", [*values, op.key]
                ).close()
        for op in operations:
            if isinstance(op, seed.Delete):
                key = db.quote(seed.KEY_COLUMNS[op.table])
                db.execute(f"DELETE FROM {db.quote(op.table)} WHERE {key} = ?", [op.key]).close()
                _insert_one(
                    db,
                    "DeletedRecord",
                    dict(zip(seed.COLUMNS["DeletedRecord"], op.deleted_record(), strict=True)),
                )
        db.commit()
        self.applied.add(index)


@pytest.fixture
def server_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedEnv]:
    url = require_server()
    with mssql_store():
        pass  # the store's schema present and its tables empty
    source = connect_server()
    if is_babelfish(source):
        # Babelfish has no fn_my_permissions, which the read-only guard asks (a gap named by
        # test_executed.py); this tier's login owns its database, so the guard would refuse
        # it on SQL Server too. The replica's reads are what this test executes.
        monkeypatch.setattr(db_module, "verify_read_only", lambda db: None)
    home = tmp_path / "home"
    home.mkdir()
    clean_environment(monkeypatch, home)
    password = server_password() or ""
    for name, value in {
        "DARWIN_NOTIFY_REPLICA_URL": url,
        REPLICA_PASSWORD_ENV: password,
        "DARWIN_NOTIFY_STORE_URL": url,
        STORE_PASSWORD_ENV: password,
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env(overrides={"home": str(home)})
    drop_tables(source, DARWIN_TABLES)
    seed.create_schema(source)
    dataset = seed.generate_base(seed.SeedSize.small(), SEED, START)
    changes = seed.generate_changes(dataset, SEED, START, WINDOWS, settings.window_minutes)
    env = ServerEnv(
        home, settings, dataset, changes, source, DagsterInstance.ephemeral(), monkeypatch
    )
    env.write_base()
    take_baseline(settings)
    env = EmbeddedEnv(
        home, settings, dataset, changes, source, DagsterInstance.ephemeral(), monkeypatch
    )
    try:
        yield env
    finally:
        source.rollback()
        drop_tables(source, DARWIN_TABLES)
        env.close()


def test_windows_read_from_a_sql_server_replica_send_what_the_oracle_expects(
    server_env: EmbeddedEnv,
) -> None:
    env = server_env
    assert env.settings.replica_url.startswith("mssql://")
    windows_send_what_the_oracle_expects(env, WINDOWS)
    # the deal-posted emails show their property, read as a related record by id
    sent_bodies = env.source.query(
        "SELECT candidate_key, text_body FROM dbo.message WHERE candidate_key LIKE ? "
        "AND status = ?",
        ["s3|%", "sent"],
    )
    address = dict(
        env.source.query(
            "SELECT d.DealID, p.Address FROM dbo.Deal d "
            "JOIN dbo.Property p ON p.PropertyID = d.PropertyID"
        )
    )
    assert sent_bodies
    for key, text in sent_bodies:
        deal = int(key.split("|")[1].split(":")[1])
        assert f"Deal {deal} on {address[deal]}," in text


def _reader(source: Database, merge_fields_dir: Path | None = None) -> ReplicaReader:
    # the tier's own login, marked read-only: the guard is tested by test_executed.py
    return ReplicaReader(
        Database(source.conn, source.dialect, source.url, True), load_model(), merge_fields_dir
    )


def test_merge_fields_by_query_and_by_stored_procedure_on_sql_server(
    server_env: EmbeddedEnv, tmp_path: Path
) -> None:
    env = server_env
    listings = sorted(r["PropertyID"] for r in env.dataset.records("Property"))[:25]
    active: dict[int, int] = {}
    for r in env.dataset.records("Property"):
        active[r["AgentID"]] = active.get(r["AgentID"], 0) + (r["Status"] == "Active")
    agent_of = {r["PropertyID"]: r["AgentID"] for r in env.dataset.records("Property")}
    expected = {p: {"AgentActiveListings": active[agent_of[p]]} for p in listings}
    # the sample's query, one SELECT over OPENJSON of the ids
    reader = _reader(env.source)
    assert reader.merge_fields("agent_active_listings", listings, table="Property") == expected
    # the same fields from a stored procedure that takes the ids as one JSON parameter
    env.source.execute(
        "IF OBJECT_ID(N'dbo.usp_AgentActiveListings', N'P') IS NOT NULL "
        "DROP PROCEDURE dbo.usp_AgentActiveListings"
    ).close()
    env.source.execute(
        "CREATE PROCEDURE dbo.usp_AgentActiveListings @ids nvarchar(max) AS "
        "SELECT p.PropertyID AS record_id, COUNT(o.PropertyID) AS AgentActiveListings "
        "FROM OPENJSON(@ids) WITH (id bigint '$') AS ids "
        "JOIN dbo.Property AS p ON p.PropertyID = ids.id "
        "LEFT JOIN dbo.Property AS o ON o.AgentID = p.AgentID AND o.Status = N'Active' "
        "GROUP BY p.PropertyID"
    ).close()
    env.source.commit()
    queries = tmp_path / "merge_fields"
    queries.mkdir()
    (queries / "by_procedure.sql").write_text(
        "-- The listings' agents' active listings, from a procedure.\n"
        "EXEC dbo.usp_AgentActiveListings ?\n",
        encoding="utf-8",
    )
    (queries / "broken.sql").write_text(
        "SELECT p.PropertyID AS record_id, p.NoSuchColumn FROM OPENJSON(?) WITH (id bigint '$')"
        " AS ids JOIN dbo.Property AS p ON p.PropertyID = ids.id\n",
        encoding="utf-8",
    )
    try:
        reader = _reader(env.source, queries)
        assert reader.merge_fields("by_procedure", listings, table="Property") == expected
        # a failing query ends in MergeFieldError with the server's message, and the
        # connection still serves
        with pytest.raises(MergeFieldError, match="(?i)nosuchcolumn"):
            reader.merge_fields("broken", listings, table="Property")
        assert reader.fetch_by_ids("Property", listings[:3]).keys() == set(listings[:3])
    finally:
        env.source.execute("DROP PROCEDURE dbo.usp_AgentActiveListings").close()
        env.source.commit()
