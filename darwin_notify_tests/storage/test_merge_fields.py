"""Merge-field query files: what is accepted, and what the database's message may show."""

import pytest

from darwin_notify_assets.errors import MergeFieldError
from darwin_notify_assets.storage import merge_fields as mf
from darwin_notify_assets.storage.sqlfiles import DIALECTS, sample_merge_fields


# Not the bare id "mssql": that marks a test of the executed SQL Server tier.
@pytest.mark.parametrize("dialect", DIALECTS, ids=[f"{d}-file" for d in DIALECTS])
def test_the_sample_queries_are_accepted_in_every_dialect(dialect):
    text = mf.query_text(sample_merge_fields(dialect), dialect, "agent_active_listings")
    assert text.lstrip().upper().startswith("SELECT") and text.count("?") == 1
    assert "--" not in text


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("mssql", "EXEC dbo.usp_AgentActiveListings ?"),
        ("mssql", "-- why\nEXECUTE [dbo].[usp_Odd?Name] ?;"),
        ("postgresql", "WITH ids AS (SELECT 1) SELECT 'a;b' AS record_id, ? AS x"),
        ("sqlite", "/* the ids */ SELECT value AS record_id FROM json_each(?)"),
    ],
)
def test_one_read_only_statement_with_one_parameter_is_accepted(dialect, sql):
    assert mf.checked(sql, dialect, "q")


@pytest.mark.parametrize(
    ("dialect", "sql", "problem"),
    [
        ("sqlite", "", "must be one SELECT or WITH statement, not empty"),
        ("postgresql", "EXEC x ?", "must be one SELECT or WITH statement, not EXEC"),
        ("sqlite", "DELETE FROM t WHERE id IN (SELECT value FROM json_each(?))", "not DELETE"),
        ("sqlite", "SELECT 1 FROM json_each(?); DROP TABLE t", "must be one statement"),
        ("mssql", "SELECT a INTO #t FROM OPENJSON(?)", "must only read (it says INTO)"),
        ("postgresql", "WITH d AS (DELETE FROM t RETURNING 1) SELECT ?", "it says DELETE"),
        ("sqlite", "SELECT 1 AS record_id", "one parameter (?), not 0"),
        ("sqlite", "SELECT ? AS record_id, ? AS x", "one parameter (?), not 2"),
    ],
)
def test_anything_else_is_refused_saying_why(dialect, sql, problem):
    with pytest.raises(MergeFieldError, match="merge-field query 'q' ") as exc:
        mf.checked(sql, dialect, "q")
    assert problem in str(exc.value)


@pytest.mark.parametrize("name", ["../secrets", "a b", "", "x.sql"])
def test_a_query_name_is_a_name_not_a_path(tmp_path, name):
    with pytest.raises(MergeFieldError, match="is not a query name"):
        mf.query_text(tmp_path, "sqlite", name)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(MergeFieldError) as exc:
        mf.query_text(tmp_path, "sqlite", "nowhere")
    assert (
        str(exc.value) == f"merge-field query 'nowhere' not found: no file {tmp_path}/nowhere.sql"
    )


def test_rows_are_keyed_by_record_id_in_any_case():
    rows = [{"RECORD_ID": 3, "n": 1}, {"RECORD_ID": "4", "n": 2}]
    assert mf.keyed(rows, "q") == {3: {"n": 1}, 4: {"n": 2}}
    with pytest.raises(MergeFieldError, match="returns no column record_id .it returns id, n"):
        mf.keyed([{"id": 1, "n": 1}], "q")
    with pytest.raises(MergeFieldError, match="more than one row for record 3"):
        mf.keyed([{"record_id": 3}, {"record_id": 3}], "q")
    with pytest.raises(MergeFieldError, match="not a number"):
        mf.keyed([{"record_id": None}], "q")


def test_the_ids_are_one_json_array():
    assert mf.ids_parameter([5, 3, 5, 10]) == "[3,5,10]"


class _OdbcError(Exception):
    """As pyodbc raises: (SQLSTATE, message)."""


SQL = 'SELECT p."Email" AS record_id, "NoSuch" FROM "Person" p'


@pytest.mark.parametrize(
    ("exc", "shown"),
    [
        # The query's own names stay; a row's values do not.
        (
            _OdbcError("42703", '[42703] ERROR: column "NoSuch" does not exist;\nError while'),
            'ERROR: column "NoSuch" does not exist',
        ),
        (
            _OdbcError(
                "22018",
                "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Conversion failed when "
                "converting the nvarchar value 'Jane Roe' to data type int. (245)",
            ),
            "Conversion failed when converting the nvarchar value '…' to data type int. (245)",
        ),
        (
            _OdbcError("22P02", 'ERROR: invalid input syntax for type bigint: "jane@roe.example"'),
            'ERROR: invalid input syntax for type bigint: "…"',
        ),
        (
            ValueError("call +1 312 555 0100 or jane@roe.example"),
            "call +1******0100 or j***@r***.example",
        ),
    ],
)
def test_the_databases_message_is_shown_without_personal_data(exc, shown):
    assert mf.database_message(exc, SQL) == shown
