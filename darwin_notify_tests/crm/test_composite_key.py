"""A composite primary key (``crm.Showing`` keyed by ``(ListingNo, ShowingSeq)``): validated by
name, read by all of its columns at once (one statement per batch, never one per row), from a
tombstone's key columns and from a merge-field query."""

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from darwin_notify_assets import cli
from darwin_notify_assets.domain.model import Tombstone, load_model, parse_model
from darwin_notify_assets.errors import ConfigurationError
from darwin_notify_assets.storage.db import connect
from darwin_notify_assets.storage.replica import ReplicaReader
from darwin_notify_tests.crm import world
from darwin_notify_tests.crm.test_crm_chain import build_crm_env


def _reader(home: Path, **model_update) -> ReplicaReader:
    model = load_model(world.MODEL)
    if model_update:
        model = model.model_copy(update=model_update)
    return ReplicaReader(connect(f"sqlite:///{home / 'darwin.db'}", read_only=True), model)


def test_check_names_a_composite_key_column_the_replica_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = build_crm_env(tmp_path / "home", monkeypatch)
    try:
        broken = tmp_path / "broken.model.yaml"
        broken.write_text(
            world.MODEL.read_text(encoding="utf-8").replace(
                "key: [ListingNo, ShowingSeq]", "key: [ListingNo, ShowingNo]"
            ),
            encoding="utf-8",
        )
        monkeypatch.setenv("DARWIN_NOTIFY_SOURCE_MODEL", str(broken))
        capsys.readouterr()
        assert cli.main(["check"]) == 1
        lines = capsys.readouterr().out.strip().splitlines()
        assert (
            "model tables.crm.Showing: column crm.Showing.ShowingNo does not exist on the replica"
            in lines
        )
        # Only the showings' three schedules are skipped.
        assert lines[-1] == f"{len(lines) - 1} problem(s); 6 schedule(s) would run"
    finally:
        env.source.close()
        env.instance.dispose()


def _model_text(**replace: str) -> str:
    text = world.MODEL.read_text(encoding="utf-8")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return text


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "key: [ListingNo, ShowingSeq]",
            "key: [ListingNo, ListingNo]",
            r"tables.crm.Showing.key: .*names a column twice",
        ),
        ("key: [ListingNo, ShowingSeq]", "key: []", r"a key names at least one column"),
        (
            "crm.Listing: {through: crm.ListingInterest",
            "crm.Showing: {through: crm.ListingInterest",
            r"relations.record_contacts.crm.Showing: a join table names a record by one column",
        ),
        (
            "  crm.Sale:\n    key: SaleNo",
            "  crm.Sale:\n    key: [SaleNo, BrokerNo]",
            r"totals names crm.Sale, whose key is composite",
        ),
    ],
    ids=["twice", "empty", "join-table", "ledger"],
)
def test_a_composite_key_the_model_cannot_use_is_refused_on_load(old, new, message) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_model(_model_text(**{old: new}), "crm.model.yaml")


def test_a_one_column_list_is_a_single_key() -> None:
    model = parse_model(_model_text(**{"key: BranchNo": "key: [BranchNo]"}))
    assert model.tables["crm.Branch"].key == "BranchNo"
    assert model.key_columns("crm.Showing") == ("ListingNo", "ShowingSeq")


def test_records_are_read_by_their_composite_key_in_one_statement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = build_crm_env(tmp_path / "home", monkeypatch)
    reader = _reader(env.home)
    try:
        showings = env.world.base[world.SHOWING]
        # The same ShowingSeq on several listings: only the pairs asked for come back.
        wanted = sorted(k for k in showings if k[1] == 1)[:6]
        assert len({seq for _, seq in wanted}) == 1 and len(wanted) >= 3
        statements: list[str] = []
        reader.columns(world.SHOWING)
        reader.db.conn.set_trace_callback(statements.append)
        ids = [f"[{a},{b}]" for a, b in wanted]
        rows = reader.fetch_by_ids(world.SHOWING, [*ids, "[9999,1]"])
        reader.db.conn.set_trace_callback(None)
        q = reader.db.quote
        sql, params = next(
            reader.db.sql_dialect.rows_by_keys(
                [q("Note")], q(world.SHOWING), [q("ListingNo"), q("ShowingSeq")], wanted
            )
        )
        plan = reader.db.query("EXPLAIN QUERY PLAN " + sql, params)
    finally:
        reader.close()
        env.source.close()
        env.instance.dispose()
    assert sorted(rows) == sorted(ids)
    for listing_no, seq in wanted:
        assert rows[f"[{listing_no},{seq}]"]["Note"] == f"visit {listing_no}-{seq}"
    reads = [s for s in statements if 'JOIN "crm.Showing"' in s]
    assert len(reads) == 1 and len(statements) == 1
    assert 't."ListingNo" = v.column1 AND t."ShowingSeq" = v.column2' in reads[0]
    # The primary key's index answers it, not a scan of the table.
    steps = [str(r[-1]) for r in plan]
    assert any(s.startswith("SEARCH t USING INDEX") for s in steps), steps
    assert "SCAN t" not in steps


def test_a_tombstone_names_a_composite_key_by_its_key_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = build_crm_env(tmp_path / "home", monkeypatch)
    at = world.START + timedelta(minutes=1)
    with env.source.transaction():
        env.source.execute(
            'CREATE TABLE "crm.Gone" (TableName TEXT, K1 INTEGER, K2 INTEGER, GoneAt TEXT)'
        ).close()
        for table, k1, k2 in (
            ("crm.Showing", 3, 1),
            ("crm.Showing", 4, 1),
            ("crm.Listing", 5, None),
        ):
            env.source.execute(
                'INSERT INTO "crm.Gone" VALUES (?, ?, ?, ?)', [table, k1, k2, env.source.ts(at)]
            ).close()
    model = load_model(world.MODEL)
    tables = {
        **model.tables,
        world.SHOWING: model.tables[world.SHOWING].model_copy(update={"deletions": "tombstone"}),
        "crm.Listing": model.tables["crm.Listing"].model_copy(update={"deletions": "tombstone"}),
    }
    tomb = Tombstone(
        table="crm.Gone", table_column="TableName", key_column=("K1", "K2"), time_column="GoneAt"
    )
    reader = _reader(env.home, tables=tables, tombstone=tomb)
    try:
        found = reader.read_deletions(
            [world.SHOWING, "crm.Listing"], world.START, world.START + timedelta(minutes=5)
        )
    finally:
        reader.close()
        env.source.close()
        env.instance.dispose()
    assert sorted((t, str(r)) for t, r, _ in found) == [
        ("crm.Listing", "5"),
        ("crm.Showing", "[3,1]"),
        ("crm.Showing", "[4,1]"),
    ]
    assert all(isinstance(d, datetime) for _, _, d in found)


def test_a_merge_field_query_gets_the_composite_keys_in_one_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = build_crm_env(tmp_path / "home", monkeypatch)
    queries = tmp_path / "merge_fields"
    queries.mkdir()
    (queries / "showing_street.sql").write_text(
        "-- The street of each showing's listing; the ids are [[ListingNo, ShowingSeq], ...].\n"
        "SELECT s.ListingNo, s.ShowingSeq, l.Street AS ListingStreet FROM json_each(?) AS j\n"
        "JOIN \"crm.Showing\" AS s ON s.ListingNo = json_extract(j.value, '$[0]')\n"
        "    AND s.ShowingSeq = json_extract(j.value, '$[1]')\n"
        'JOIN "crm.Listing" AS l ON l.ListingNo = s.ListingNo\n',
        encoding="utf-8",
    )
    model = load_model(world.MODEL)
    reader = ReplicaReader(
        connect(f"sqlite:///{env.home / 'darwin.db'}", read_only=True), model, queries
    )
    try:
        wanted = sorted(env.world.base[world.SHOWING])[:4]
        statements: list[str] = []
        reader.db.conn.set_trace_callback(statements.append)
        rows = reader.merge_fields(
            "showing_street", [f"[{a},{b}]" for a, b in wanted], table=world.SHOWING
        )
        reader.db.conn.set_trace_callback(None)
    finally:
        reader.close()
        env.source.close()
        env.instance.dispose()
    listings = env.world.base["crm.Listing"]
    assert rows == {f"[{a},{b}]": {"ListingStreet": listings[a]["Street"]} for a, b in wanted}
    assert len([s for s in statements if "json_each" in s]) == 1
