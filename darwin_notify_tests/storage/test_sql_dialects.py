"""The dialect folders are one contract: the same files, tables, columns and query names, and
every query the Python code names exists in each of them.

SQL Server cannot run on this machine; its files are checked here as far as text allows, and
the store is run against a recording connection in each dialect, so that every statement it
sends binds exactly the parameters it holds, within the driver's limits.
"""

import ast
import json
import re
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from darwin_notify_assets.config import REPLICA_PASSWORD_ENV
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.errors import ConfigurationError, InvalidTransition
from darwin_notify_assets.storage import db as db_module
from darwin_notify_assets.storage.db import Database, DatabaseUrl, connect, masked
from darwin_notify_assets.storage.dialects import (
    MSSQL_JSON_ROWS,
    PG_ARRAY_ROWS,
    PostgreSQL,
    SQLite,
    SqlServer,
    dialect_for,
)
from darwin_notify_assets.storage.sqlfiles import (
    DIALECTS,
    read_queries,
    read_sample_schema,
    read_script,
    split_script,
    sql_root,
)
from darwin_notify_assets.storage.store import (
    CandidateRow,
    ChangeEvent,
    NotificationStore,
    OutboundMessage,
)

PACKAGE = Path(__file__).resolve().parents[2] / "darwin_notify_assets"
QUERY_FILES = ("store_queries.sql", "replica_queries.sql")

TABLE = re.compile(
    r"CREATE TABLE (?:IF NOT EXISTS )?(?:dbo\.)?\"?(\w+)\"? \((.*?)\n\);", re.S | re.IGNORECASE
)


def _tables(dialect: str, filename: str) -> dict[str, set[str]]:
    return {name: set(cols) for name, cols in _column_types(dialect, filename).items()}


def _column_types(dialect: str, filename: str) -> dict[str, dict[str, str]]:
    """``{table: {column: type as declared, lower case}}`` of a schema file (``darwin_schema.sql``:
    the sample's, which lives with the sample)."""
    text = (
        read_sample_schema(dialect)
        if filename == "darwin_schema.sql"
        else read_script(dialect, filename)
    )
    out = {}
    for name, body in TABLE.findall(text):
        cols = {}
        for line in body.splitlines():
            words = line.strip().split()
            word = words[0].strip('"') if words else ""
            if word and not word.startswith("--") and word.upper() not in ("PRIMARY", "CONSTRAINT"):
                cols[word] = words[1].rstrip(",").lower()
        out[name] = cols
    if filename == "store_schema.sql":
        # Columns that store_upgrades.sql adds to a store of an earlier schema.
        upgrades = read_script(dialect, "store_upgrades.sql")
        for table, column, kind in ADDED.findall(upgrades):
            out.setdefault(table, {})[column] = kind.lower()
    return out


ADDED = re.compile(
    r"ALTER TABLE (?:dbo\.)?(\w+) ADD (?:COLUMN )?(?:IF NOT EXISTS )?(?!CONSTRAINT\b)(\w+) ([\w()]+)",
    re.IGNORECASE,
)


def test_every_dialect_has_the_same_files() -> None:
    names = {d: sorted(p.name for p in (sql_root() / d).glob("*.sql")) for d in DIALECTS}
    assert names["sqlite"] == names["postgresql"] == names["mssql"]
    assert names["sqlite"]


@pytest.mark.parametrize("filename", ["store_schema.sql", "darwin_schema.sql"])
def test_every_dialect_declares_the_same_tables_and_columns(filename: str) -> None:
    reference = _tables("sqlite", filename)
    assert reference
    for dialect in ("postgresql", "mssql"):
        assert _tables(dialect, filename) == reference, dialect


# Change Data Capture is SQL Server's: the other dialects refuse a model that reads deletions
# from it (storage/replica.py), so they have no such queries.
MSSQL_ONLY = {
    "replica_queries.sql": {
        "cdc_capture_instance",
        "cdc_lsn_bounds",
        "cdc_deletions",
        "cdc_first_deletion",
    }
}


def _portable(dialect: str, filename: str) -> list[str]:
    names = set(read_queries(dialect, filename))
    if dialect == "mssql":
        only = MSSQL_ONLY.get(filename, set())
        assert only <= names, f"mssql/{filename} lacks {sorted(only - names)}"
        names -= only
    return sorted(names)


@pytest.mark.parametrize("filename", QUERY_FILES)
def test_named_queries_match_across_dialects(filename: str) -> None:
    names = {d: _portable(d, filename) for d in DIALECTS}
    assert names["sqlite"] == names["postgresql"] == names["mssql"]
    assert names["sqlite"]


def test_the_replica_watermark_reads_the_availability_group_on_sql_server() -> None:
    watermark = read_queries("mssql", "replica_queries.sql")["watermark"]
    assert "sys.dm_hadr_database_replica_states" in watermark


# -- the names the Python code uses ------------------------------------------------------------
STORE_HELPERS = frozenset({"_sql", "_rows", "_listed", "_execute_listed", "_count"})


def query_names_used(sources: dict[str, str]) -> dict[str, set[str]]:
    """``{query file: names}`` that Python sources refer to: the store's helpers in
    ``storage/store.py`` (whose first argument must be a literal name), ``self.queries[...]``
    (the replica's file) and ``read_queries(dialect, file)[...]``."""
    used: dict[str, set[str]] = defaultdict(set)
    for path, text in sources.items():
        tree = ast.parse(text)
        # The helpers pass on the name they were given.
        inside_helpers = {
            id(inner)
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef) and f.name in STORE_HELPERS
            for inner in ast.walk(f)
        }
        for node in ast.walk(tree):
            if id(node) in inside_helpers:
                continue
            if (
                path.endswith("storage/store.py")
                and isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in STORE_HELPERS
            ):
                arg = node.args[0] if node.args else None
                if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                    raise AssertionError(f"{path}:{node.lineno}: a query name must be a literal")
                used["store_queries.sql"].add(arg.value)
            elif (
                isinstance(node, ast.Subscript)
                and isinstance(node.slice, ast.Constant)
                and isinstance(node.slice.value, str)
            ):
                value = node.value
                if isinstance(value, ast.Attribute) and value.attr == "queries":
                    used["replica_queries.sql"].add(node.slice.value)
                elif (
                    isinstance(value, ast.Call)
                    and getattr(value.func, "id", None) == "read_queries"
                    and isinstance(value.args[1], ast.Constant)
                ):
                    used[value.args[1].value].add(node.slice.value)
    return used


def _package_sources() -> dict[str, str]:
    return {p.as_posix(): p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}


def test_the_name_scan_finds_names_and_refuses_computed_ones() -> None:
    found = query_names_used(
        {
            "x/storage/store.py": "self._rows('a', [])\nself._sql('b', 3)\n"
            "def _rows(self, name):\n    return self._sql(name)\n",
            "x/storage/replica.py": "self.queries['c']\nread_queries(d, 'store_queries.sql')['e']",
        }
    )
    assert found == {"store_queries.sql": {"a", "b", "e"}, "replica_queries.sql": {"c"}}
    with pytest.raises(AssertionError, match="literal"):
        query_names_used({"x/storage/store.py": "self._sql(name)"})


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_query_the_code_names_exists_in_every_dialect(dialect: str) -> None:
    used = query_names_used(_package_sources())
    assert set(used) == set(QUERY_FILES)
    assert len(used["store_queries.sql"]) >= 40
    for filename, names in used.items():
        defined = set(read_queries(dialect, filename))
        if dialect != "mssql":
            names = names - MSSQL_ONLY.get(filename, set())
        assert names - defined == set(), f"{dialect}/{filename} lacks them"
        assert defined - names == set(), f"{dialect}/{filename}: queries no code uses"


def test_the_store_module_holds_no_sql() -> None:
    text = (PACKAGE / "storage" / "store.py").read_text(encoding="utf-8")
    strings = [
        n.value
        for n in ast.walk(ast.parse(text))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]
    statement = re.compile(
        r"\b(SELECT\s.*\bFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|MERGE)\b", re.S
    )
    assert [s for s in strings if statement.search(s)] == []
    for module in ("domain/pipeline.py", "domain/audit.py"):
        text = (PACKAGE / module).read_text(encoding="utf-8")
        assert not statement.search(text), module


# -- the shape of each statement ---------------------------------------------------------------
def _tokens(text: str) -> list[str]:
    return re.findall(r"\?(?:::[\w(),]+\[\])?|\{list\}|\{values\}", text)


def _is_bulk(name: str) -> bool:
    return "{values}" in read_queries("sqlite", "store_queries.sql")[name]


STORE_NAMES = sorted(read_queries("sqlite", "store_queries.sql"))


@pytest.mark.parametrize("name", STORE_NAMES)
def test_every_statement_takes_the_same_parameters_in_every_dialect(name: str) -> None:
    sqlite, pg, mssql = (read_queries(d, "store_queries.sql")[name] for d in DIALECTS)
    if not _is_bulk(name):
        assert _tokens(mssql) == _tokens(sqlite)
        assert _tokens(pg) == _tokens(sqlite)
        return
    if "{values}" in mssql:
        assert _tokens(mssql) == _tokens(sqlite)
    else:
        # The rows as one JSON parameter, the first, then the same trailing parameters.
        assert mssql.find("?") == mssql.find("OPENJSON(?)") + len("OPENJSON(")
        assert _tokens(mssql) == ["?"] + _tokens(sqlite)[1:]
    # Rows first: {values} before every other parameter; PostgreSQL: its arrays first.
    assert _tokens(sqlite)[0] == "{values}"
    arrays = [t for t in _tokens(pg) if t.startswith("?::")]
    assert arrays and _tokens(pg)[: len(arrays)] == arrays
    assert ["?"] + _tokens(pg)[len(arrays) :] == ["?"] + _tokens(sqlite)[1:]
    columns = re.search(r"(?:INSERT INTO \w+|AS v) \(([^)]*)\)", pg)
    assert columns and len(arrays) == len(columns.group(1).split(","))


@pytest.mark.parametrize("name", [n for n in STORE_NAMES if _is_bulk(n)])
def test_bulk_columns_have_the_types_of_the_schema(name: str) -> None:
    pg = read_queries("postgresql", "store_queries.sql")[name]
    insert = re.search(r"INSERT INTO (\w+) \(([^)]*)\)", pg)
    if insert is not None:
        table, columns = insert.group(1), [c.strip() for c in insert.group(2).split(",")]
        types = _column_types("postgresql", "store_schema.sql")[table]
        casts = re.findall(r"\?::([\w(),]+)\[\]", pg)
        assert casts == [types[c] for c in columns]
    mssql = read_queries("mssql", "store_queries.sql")[name]
    variable = re.search(
        r"DECLARE @s TABLE \((.*?)\n\);\nINSERT INTO @s.*?INSERT INTO dbo\.(\w+)", mssql, re.S
    )
    if variable is not None:
        types = _column_types("mssql", "store_schema.sql")[variable.group(2)]
        declared = {
            line.split()[0]: line.split()[1].lower()
            for line in variable.group(1).strip().splitlines()
        }
        assert declared == {c: types[c] for c in declared}
    json_rows_ = re.search(
        r"INSERT INTO dbo\.(\w+) \(([^)]*)\)\s*SELECT.*?OPENJSON\(\?\) WITH \((.*?)\n\) AS s",
        mssql,
        re.S,
    )
    if json_rows_ is not None:
        types = _column_types("mssql", "store_schema.sql")[json_rows_.group(1)]
        inserted = [c.strip() for c in json_rows_.group(2).split(",")]
        read = [
            re.fullmatch(r"(\w+) ([\w(),]+) '\$\[(\d+)\]',?", line.strip())
            for line in json_rows_.group(3).strip().splitlines()
        ]
        assert all(read), json_rows_.group(3)
        # every column of the insert, by position in each row
        assert [(m.group(1), int(m.group(3))) for m in read if m] == [
            (c, i) for i, c in enumerate(inserted)
        ]
        for m in read:
            assert m is not None
            column, kind = m.group(1), m.group(2).lower()
            # text is read whole (nvarchar(max)): a narrower read would cut a value short
            # where the column's own width makes the insert fail
            want = "nvarchar(max)" if types[column].startswith("nvarchar") else types[column]
            assert kind == want, (column, kind, types[column])


def test_sql_server_forms_avoid_merge_and_output() -> None:
    for filename in QUERY_FILES:
        for name, text in read_queries("mssql", filename).items():
            code = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("--"))
            assert not re.search(r"\b(MERGE|OUTPUT)\b", code, re.IGNORECASE), name
    for name in STORE_NAMES:
        text = read_queries("mssql", "store_queries.sql")[name]
        if re.search(r"WHERE NOT EXISTS", text) and text.lstrip("- \n").startswith("INSERT"):
            assert "WITH (UPDLOCK, HOLDLOCK)" in text, name


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_status_check_lists_exactly_the_enum(dialect: str) -> None:
    text = read_script(dialect, "store_schema.sql")
    checks = re.findall(r"CHECK \(status IN \(([^)]*)\)\)", text)
    assert checks
    for listed in checks:
        assert sorted(v.strip().lstrip("N").strip("'") for v in listed.split(",")) == sorted(
            str(s) for s in MessageStatus
        )


def test_tsql_scripts_split_on_go_lines_only() -> None:
    batches = split_script("mssql", read_script("mssql", "store_schema.sql"))
    assert len(batches) >= 10
    assert all("GO" not in b.split() for b in batches)
    assert sum(b.count("CREATE TABLE") for b in batches) == len(
        _tables("mssql", "store_schema.sql")
    )


# -- the dialect objects -----------------------------------------------------------------------
def test_sql_server_bulk_statements_stay_within_its_limits() -> None:
    sql = read_queries("mssql", "store_queries.sql")["insert_change_events"]
    rows = [tuple(range(i, i + 12)) for i in range(2500)]
    chunks = list(SqlServer().bulk_statements(sql, rows))
    assert sum(n for _, _, n in chunks) == len(rows)
    for text, params, n in chunks:
        assert len(params) <= 2100 and n <= 1000
        assert text.count("?") == len(params) == 12 * n and "{values}" not in text
    assert [v for _, params, _ in chunks for v in params] == [v for r in rows for v in r]


def test_sql_server_json_bulk_statements_bind_their_rows_as_one_parameter() -> None:
    sql = read_queries("mssql", "store_queries.sql")["insert_messages"]
    row = (
        7,
        "k'é\"",
        "p",
        "email",
        None,
        "Zoë",
        "<p>",
        "t",
        None,
        None,
        None,
        "queued",
        None,
        0,
        "2026-03-02T14:00:00.1234560",
        datetime(2026, 3, 2, 14, 0, 0, 1),
        Decimal("8.10"),
    )
    rows = [row] * (MSSQL_JSON_ROWS * 2 + 3)
    chunks = list(SqlServer().bulk_statements(sql, rows))
    assert [n for _, _, n in chunks] == [MSSQL_JSON_ROWS, MSSQL_JSON_ROWS, 3]
    for text, params, n in chunks:
        assert text == sql and len(params) == 1
        assert json.loads(params[0]) == [[*row[:15], "2026-03-02T14:00:00.0000010", "8.10"]] * n
    with pytest.raises(ValueError, match="0 trailing parameters; it has 2"):
        list(SqlServer().bulk_statements(sql + " AND 1 = ?", rows))
    with pytest.raises(TypeError, match="bytes"):
        list(SqlServer().bulk_statements(sql, [(b"x",)]))


def test_trailing_parameters_follow_the_rows() -> None:
    sql = read_queries("sqlite", "store_queries.sql")["finish_messages"]
    [(text, params, n)] = SQLite().bulk_statements(sql, [(1, "sent", None, "p", "t")], ["sending"])
    assert n == 1 and params == [1, "sent", None, "p", "t", "sending"]
    assert text.count("?") == 6
    with pytest.raises(ValueError, match="besides its rows"):
        list(SQLite().bulk_statements(sql, [(1, "sent", None, "p", "t")]))


def test_postgresql_bulk_statements_send_one_array_per_column() -> None:
    sql = read_queries("postgresql", "store_queries.sql")["insert_window_agents"]
    rows = [("2026-03-02-14:00", i) for i in range(PG_ARRAY_ROWS + 1)]
    chunks = list(PostgreSQL().bulk_statements(sql, rows))
    assert [n for _, _, n in chunks] == [PG_ARRAY_ROWS, 1]
    assert chunks[1][1] == ['{"2026-03-02-14:00"}', "{5000}"]
    with pytest.raises(ValueError, match="need 3"):
        list(PostgreSQL().bulk_statements(sql, [("p", 1, 2)]))
    with pytest.raises(ValueError, match="arrays"):
        list(PostgreSQL().bulk_statements("INSERT INTO t VALUES {values}", rows))


def test_each_dialect_says_its_forms() -> None:
    assert SqlServer().quote("Property") == "[Property]"
    assert PostgreSQL().quote('a"b') == '"a""b"'
    assert SqlServer().ts(datetime(2026, 3, 2, 14, 0)) == "2026-03-02T14:00:00.0000000"
    assert SQLite().ts(datetime(2026, 3, 2, 14, 0)) == "2026-03-02 14:00:00.000000"
    with pytest.raises(ConfigurationError, match="unknown SQL dialect"):
        dialect_for("oracle")


class _Cursor:
    def __init__(self, conn: "_Recorder") -> None:
        self.conn = conn
        self.description: list | None = None
        self.rowcount = 0

    def execute(self, sql: str, params: tuple = ()) -> None:
        self.conn.statements.append((sql, params))
        assert sql.count("?") == len(params), sql
        assert len(params) <= self.conn.max_params, sql
        assert "{list}" not in sql and "{values}" not in sql, sql
        self.description = [("c",)] if re.search(r"\b(SELECT|RETURNING)\b", sql) else None

    def fetchall(self) -> list:
        return []

    def nextset(self) -> bool:
        return False

    def close(self) -> None:
        pass


class _Recorder:
    """A DB-API stand-in that keeps the statements it is given and checks their parameters."""

    def __init__(self, max_params: int) -> None:
        self.statements: list[tuple[str, tuple]] = []
        self.max_params = max_params

    def cursor(self) -> _Cursor:
        return _Cursor(self)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass


@pytest.mark.parametrize(("dialect", "limit"), [("mssql", 2100), ("postgresql", 7000)])
def test_every_store_statement_binds_what_it_holds(dialect: str, limit: int) -> None:
    """The store, run against a recording connection, sends statements whose placeholders
    match their parameters, within the driver's limit, with nothing left to fill in."""
    conn = _Recorder(limit)
    store = NotificationStore(Database(conn, dialect, DatabaseUrl(dialect), read_only=False))
    now = datetime(2026, 3, 2, 14, 0)
    many = list(range(1, 4500))
    event = ChangeEvent("k", "p", 1, "Property", 1, "insert", "v", 1, None, None, {"a": 1})
    store.record_window("p", now, now, now, "streaming", 3)
    store.known_event_keys([str(i) for i in many])
    store.windows_between(now, now)
    store.last_window()
    store.window_info("p")
    store.snapshots("Property", many)
    store.save_detection(
        [event] * 1200,
        {("Property", i): {"a": i} for i in many},
        [(i, 1, now, 10, 1) for i in many],
        [(i, 1, "Active") for i in many],
        [("deal", i) for i in many] + [("listing", i) for i in many],
        [("p", i) for i in many],
    )
    store.window_agents("p")
    store.recompute_totals(many, now, "Active")
    store.totals(many)
    list(store.stream_events("p", 10))
    store.schedule_events("p", 1)
    candidate = CandidateRow("c", "p", 1, "email", 1, "Property", 1, 1, "contact", 1, False)
    store.insert_candidates([candidate] * 1200, expanded=many, on_inserted=lambda ids: None)
    store.candidate_count("p")
    store.event_count("p")
    list(store.stream_unrendered("p", 10))
    store.unrendered_count("p")
    store.load_render_items(many)
    message = OutboundMessage(1, "c", "p", "email", MessageStatus.QUEUED, to_address="a@b.c")
    store.insert_messages([message] * 1200)
    store.queued_ids("p")
    store.claim(many)
    store.finish([(i, MessageStatus.SENT, None, "x") for i in many])
    with pytest.raises(InvalidTransition, match="is not sending"):
        store.transition(1, MessageStatus.SENDING, MessageStatus.UNKNOWN, "r")
    store.expire_sending(now, "p")
    store.expire_sending(now)
    store.status_counts("p")
    store.status_counts()
    store.open_message_count("p")
    store.messages("p", [MessageStatus.SENT])
    store.messages()
    store.missing_messages("p")
    store.duplicate_sends("p")
    store.duplicate_sends()
    store.candidate_windows("a", None)
    assert len(conn.statements) > 60


# -- secrets -----------------------------------------------------------------------------------
SECRET = "pw-7f3a}9-must-not-leak"


def test_sql_server_connection_string_asks_for_a_readable_secondary() -> None:
    url = DatabaseUrl.parse(
        "mssql://reader@ag-listener:1433/darwin?driver=ODBC+Driver+18+for+SQL+Server"
    )
    text = SqlServer().connection_string(url, SECRET, read_only=True)
    assert "ApplicationIntent=ReadOnly" in text and "SERVER=ag-listener,1433" in text
    assert "PWD={pw-7f3a}}9-must-not-leak}" in text  # a } inside braces is doubled
    assert SECRET not in masked(text) and "PWD=***" in masked(text)


class _DriverError(Exception):
    pass


def test_a_password_never_reaches_an_error_a_log_or_a_repr(monkeypatch, caplog) -> None:
    """The password the code reads from the environment goes to the driver and nowhere else,
    even when the driver's error repeats the whole connection string."""
    import pyodbc

    given = []

    def refuse(conn_str: str, **_: Any) -> None:
        given.append(conn_str)
        raise pyodbc.Error("08001", f"[unixODBC] cannot reach server ({conn_str})")

    monkeypatch.setenv(REPLICA_PASSWORD_ENV, SECRET)
    monkeypatch.setattr(pyodbc, "connect", refuse)
    url = "mssql://reader@ag-listener:1433/darwin"
    caplog.set_level("DEBUG", logger=db_module.__name__)
    with pytest.raises(ConfigurationError) as caught:
        connect(url, read_only=True, password_env=REPLICA_PASSWORD_ENV)
    # The secret did reach the driver: the test would see a leak if there were one.
    assert given and "PWD={pw-7f3a}}9-must-not-leak}" in given[0]
    chain, error = [], caught.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    shown = " ".join(f"{e} {e!r}" for e in chain) + caplog.text
    assert "cannot connect to mssql://reader@ag-listener:1433/darwin" in str(caught.value)
    assert "PWD=***" in caplog.text and "ag-listener" in shown
    for form in (SECRET, SECRET.replace("}", "}}"), "pw-7f3a"):
        assert form not in shown
    parsed = DatabaseUrl.parse(url)
    assert SECRET not in str(parsed) + repr(parsed)


def test_a_password_in_a_url_is_refused_without_repeating_it() -> None:
    with pytest.raises(ConfigurationError) as caught:
        DatabaseUrl.parse(f"postgresql://u:{SECRET}@host/db")
    assert SECRET not in str(caught.value) and "PASSWORD" in str(caught.value)


# -- SQL Server connection options --------------------------------------------------------------
def test_sql_server_encryption_defaults_to_verified_tls() -> None:
    text = SqlServer().connection_string(
        DatabaseUrl.parse("mssql://store@db:1433/notify"), None, read_only=False
    )
    assert "Encrypt=yes" in text and "TrustServerCertificate=no" in text
    assert "ApplicationIntent" not in text


@pytest.mark.parametrize(
    "query", ["Encrypt=no&TrustServerCertificate=yes", "encrypt=no&trustservercertificate=yes"]
)
def test_sql_server_encryption_settings_come_from_the_url_in_any_case(query: str) -> None:
    url = DatabaseUrl.parse(f"mssql://store@db:1433/notify?{query}")
    text = SqlServer().connection_string(url, None, read_only=False)
    assert "Encrypt=no" in text and "TrustServerCertificate=yes" in text
    assert "Encrypt=yes" not in text and "TrustServerCertificate=no" not in text


def test_sql_server_strict_encryption_and_a_certificate_host_name_are_passed_on() -> None:
    url = DatabaseUrl.parse(
        "mssql://store@db:1433/notify?Encrypt=strict&HostNameInCertificate=db.corp.example"
    )
    text = SqlServer().connection_string(url, None, read_only=True)
    assert "Encrypt=strict" in text and "HostNameInCertificate={db.corp.example}" in text
    assert "ApplicationIntent=ReadOnly" in text


@pytest.mark.parametrize(
    "query",
    ["Encrypt=maybe", "TrustServerCertificate=sometimes", "Encrypt=yes;UID=sa"],
)
def test_sql_server_rejects_an_encryption_setting_it_does_not_know(query: str) -> None:
    url = DatabaseUrl.parse(f"mssql://store@db:1433/notify?{query}")
    with pytest.raises(ConfigurationError, match="Encrypt|TrustServerCertificate"):
        SqlServer().connection_string(url, None, read_only=False)


def test_sql_server_timestamps_are_bound_as_iso_text_with_seven_digits() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    d = SqlServer()
    assert d.ts(datetime(2026, 3, 1, 9, 5, 7, 123456)) == "2026-03-01T09:05:07.1234560"
    aware = datetime(2026, 3, 1, 10, 5, 7, 1, tzinfo=timezone(timedelta(hours=1)))
    assert d.ts(aware) == "2026-03-01T09:05:07.0000010"
    assert d.ts(datetime(2026, 3, 1, tzinfo=UTC)) == "2026-03-01T00:00:00.0000000"
    assert d.ts(None) is None
