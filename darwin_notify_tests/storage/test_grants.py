"""``darwin-notify grants``: least-privilege grants generated from the source model, for the
sample and the CRM, on SQL Server and PostgreSQL; bad input answered in one line."""

import re
from pathlib import Path

import pytest

from darwin_notify_assets import cli
from darwin_notify_assets.domain.model import SAMPLE_MODEL, load_model, parse_model
from darwin_notify_assets.errors import ConfigurationError
from darwin_notify_assets.storage.grants import Principals, grant_script
from darwin_notify_assets.storage.sqlfiles import sample_merge_fields, split_script
from darwin_notify_tests.crm import world
from darwin_notify_tests.storage.tsql import problems

SAMPLE_TABLES = {
    "Office",
    "Agent",
    "People",
    "Property",
    "Deal",
    "DeletedRecord",
    "NotificationSchedule",
    "NotificationTemplate",
}
CRM_TABLES = {
    "Branch",
    "Broker",
    "Client",
    "Listing",
    "Sale",
    "Showing",
    "ListingInterest",
    "Alert",
    "AlertLayout",
}
MSSQL_SELECT = re.compile(r"^GRANT SELECT ON OBJECT::\[(\w+)\]\.\[(\w+)\] TO \[(\w+)\];", re.M)
PG_SELECT = re.compile(r'^GRANT SELECT ON TABLE (?:"(\w+)"\.)?"(\w+)" TO "(\w+)";', re.M)


def _selects(script: str, dialect: str) -> set[tuple[str | None, str, str]]:
    pattern = MSSQL_SELECT if dialect == "mssql" else PG_SELECT
    return {(m.group(1), m.group(2), m.group(3)) for m in pattern.finditer(script)}


def _cdc_model() -> str:
    text = SAMPLE_MODEL.read_text(encoding="utf-8")
    property_ = "  Property:\n    key: PropertyID\n    watch: [CreateDate, ModifiedDate]\n"
    assert property_ + "    created: CreateDate\n    deletions: tombstone\n" in text
    return text.replace(
        property_ + "    created: CreateDate\n    deletions: tombstone\n",
        property_ + "    created: CreateDate\n    deletions: {cdc: dbo_Property}\n",
    )


def test_sql_server_grants_of_the_sample_name_every_table_it_reads_and_no_other() -> None:
    script = grant_script(load_model(), "mssql", merge_fields_dir=sample_merge_fields("mssql"))
    assert _selects(script, "mssql") == {("dbo", t, "darwin_notify_readers") for t in SAMPLE_TABLES}
    # The watermark's server permission, writes denied, the user in its role, the store's own.
    assert "GRANT VIEW SERVER STATE TO [darwin_notify_reader];" in script
    assert "GRANT VIEW SERVER PERFORMANCE STATE TO [darwin_notify_reader];" in script
    assert (
        "DENY INSERT, UPDATE, DELETE, ALTER, EXECUTE, REFERENCES ON SCHEMA::[dbo] TO "
        "[darwin_notify_readers];" in script
    )
    assert "ALTER ROLE [darwin_notify_readers] ADD MEMBER [darwin_notify_reader];" in script
    assert "GRANT CREATE TABLE TO [darwin_notify_store];" in script
    # No Change Data Capture in the sample: nothing of cdc is granted.
    assert "cdc" not in script.lower().replace("fn_cdc", "")
    # The sample's merge-field query is a SELECT: the DBA is told it reads tables of its own.
    assert "Merge-field query agent_active_listings reads tables" in script


def test_sql_server_grants_of_the_crm_are_schema_qualified() -> None:
    script = grant_script(load_model(world.MODEL), "mssql")
    assert _selects(script, "mssql") == {("crm", t, "darwin_notify_readers") for t in CRM_TABLES}
    assert "ON SCHEMA::[crm] TO [darwin_notify_readers];" in script
    assert "SCHEMA::[dbo] TO [darwin_notify_readers]" not in script


def test_postgresql_grants_of_both_models() -> None:
    sample = grant_script(load_model(), "postgresql")
    assert _selects(sample, "postgresql") == {
        (None, t, "darwin_notify_reader") for t in SAMPLE_TABLES
    }
    assert 'GRANT pg_read_all_stats TO "darwin_notify_reader";' in sample
    assert "GRANT USAGE ON SCHEMA" not in sample
    assert 'GRANT USAGE, CREATE ON SCHEMA public TO "darwin_notify_store";' in sample
    crm = grant_script(load_model(world.MODEL), "postgresql")
    assert _selects(crm, "postgresql") == {("crm", t, "darwin_notify_reader") for t in CRM_TABLES}
    assert 'GRANT USAGE ON SCHEMA "crm" TO "darwin_notify_reader";' in crm
    # Every statement is one line ending in a semicolon, as psql takes them.
    for statement in split_script("postgresql", crm):
        assert statement.startswith("GRANT ") and "\n" not in statement, statement


def test_change_data_capture_tables_get_their_functions_and_gating_role() -> None:
    model = parse_model(_cdc_model(), "cdc.model.yaml")
    script = grant_script(model, "mssql")
    assert (
        "GRANT SELECT ON OBJECT::[cdc].[fn_cdc_get_all_changes_dbo_Property] TO "
        "[darwin_notify_readers];" in script
    )
    assert "GRANT SELECT ON OBJECT::[cdc].[change_tables] TO [darwin_notify_readers];" in script
    assert "GRANT SELECT ON OBJECT::[cdc].[captured_columns] TO [darwin_notify_readers];" in script
    assert "WHERE capture_instance = N'dbo_Property';" in script
    assert "IS_ROLEMEMBER(@gating, N'darwin_notify_reader') = 0" in script
    # The table itself is still read (the deletion's last-seen values come from it).
    assert ("dbo", "Property", "darwin_notify_readers") in _selects(script, "mssql")
    with pytest.raises(ConfigurationError, match=r"^tables.Property.deletions reads SQL Server"):
        grant_script(model, "postgresql")


def test_a_merge_field_procedure_gets_execute_and_a_broken_query_is_named(
    tmp_path: Path,
) -> None:
    (tmp_path / "office_counts.sql").write_text("EXEC reports.usp_OfficeCounts ?\n", "utf-8")
    (tmp_path / "bad.sql").write_text("DELETE FROM x WHERE id IN (?)\n", "utf-8")
    script = grant_script(load_model(), "mssql", merge_fields_dir=tmp_path)
    assert (
        "GRANT EXECUTE ON OBJECT::[reports].[usp_OfficeCounts] TO [darwin_notify_readers];"
        in script
    )
    assert "-- (no grant: merge-field query 'bad' must be one SELECT" in script
    # A DENY on the schema would win over the procedure's GRANT; dbo still denies EXECUTE.
    assert "DENY INSERT, UPDATE, DELETE, ALTER, EXECUTE, REFERENCES ON SCHEMA::[dbo]" in script


def test_a_merge_field_procedure_in_a_model_schema_keeps_execute_open(tmp_path: Path) -> None:
    (tmp_path / "q.sql").write_text("EXEC dbo.usp_Extra ?\n", "utf-8")
    script = grant_script(load_model(), "mssql", merge_fields_dir=tmp_path)
    assert "DENY INSERT, UPDATE, DELETE, ALTER, REFERENCES ON SCHEMA::[dbo]" in script
    assert "GRANT EXECUTE ON OBJECT::[dbo].[usp_Extra]" in script


@pytest.mark.parametrize(
    "model", [SAMPLE_MODEL, world.MODEL, "cdc"], ids=["sample", "crm", "sample-cdc"]
)
def test_every_generated_tsql_batch_parses(model, tmp_path: Path) -> None:
    (tmp_path / "q.sql").write_text("EXEC dbo.usp_Extra ?\n", "utf-8")
    loaded = parse_model(_cdc_model(), "cdc") if model == "cdc" else load_model(model)
    script = grant_script(loaded, "mssql", merge_fields_dir=tmp_path)
    batches = split_script("mssql", script)
    assert len(batches) >= 10
    for batch in batches:
        assert problems(batch) == [], batch


def test_other_names_for_the_logins(tmp_path: Path) -> None:
    who = Principals(reader="nr", readers_role="nr_role", store="ns")
    script = grant_script(load_model(), "mssql", who)
    assert "darwin_notify" not in script.replace("darwin-notify", "")
    assert "ALTER ROLE [nr_role] ADD MEMBER [nr];" in script


def test_the_command_prints_the_configured_models_grants(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("DARWIN_NOTIFY_MERGE_FIELDS_DIR", raising=False)
    monkeypatch.setenv("DARWIN_NOTIFY_HOME", str(tmp_path))
    monkeypatch.setenv("DARWIN_NOTIFY_SOURCE_MODEL", str(world.MODEL))
    assert cli.main(["grants", "--dialect", "postgresql"]) == 0
    out = capsys.readouterr().out
    assert _selects(out, "postgresql") == {("crm", t, "darwin_notify_reader") for t in CRM_TABLES}
    assert str(world.MODEL.resolve()) in out
    # --model wins over the environment.
    assert cli.main(["grants", "--dialect", "mssql", "--model", str(SAMPLE_MODEL)]) == 0
    out = capsys.readouterr().out
    assert {t for _, t, _ in _selects(out, "mssql")} == SAMPLE_TABLES


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["grants"], "the following arguments are required: --dialect"),
        (["grants", "--dialect", "sqlite"], "argument --dialect: invalid choice: 'sqlite'"),
        (["grants", "--dialect", "mssql", "--model", "/nowhere.yaml"], "cannot read the source"),
        (["grants", "--dialect", "mssql", "--reader", "a b"], "reader name 'a b' must be"),
        (["grants", "--dialect", "mssql", "--store", "darwin_notify_reader"], "three names"),
    ],
)
def test_bad_input_is_answered_in_one_line(
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("DARWIN_NOTIFY_HOME", str(tmp_path))
    monkeypatch.delenv("DARWIN_NOTIFY_SOURCE_MODEL", raising=False)
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], captured.err
