"""Deletions from SQL Server Change Data Capture, on recorded rows of the ``cdc_*`` queries.

No SQL Server with CDC runs here (Babelfish has none, docs/sqlserver.md): the rows below have
the shape and the Python types the queries return through pyodbc (LSNs as ``bytes`` of 10,
times as naive UTC datetimes after the query's conversion), with values made up, not captured
from a server. What is tested is the Python side: the LSN range and its clamp, the retention
and capture-lag errors, the rows turned into deletions, the statements formed for a capture
instance, and the model option on every dialect.
"""

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from darwin_notify_assets import cli
from darwin_notify_assets.domain.detect import detect_changes, reconcile
from darwin_notify_assets.domain.model import SAMPLE_MODEL, SourceModel, load_model, parse_model
from darwin_notify_assets.domain.pipeline import load_schedules
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.errors import CdcRetentionExceeded, ConfigurationError, ReplicaBehind
from darwin_notify_assets.storage.db import Database, DatabaseUrl
from darwin_notify_assets.storage.mssql_cdc import (
    NO_LSN,
    CaptureInstance,
    LsnRange,
    capture_instance_from_rows,
    capture_problems,
    deletions_from_rows,
    lsn_range,
)
from darwin_notify_assets.storage.replica import ReplicaReader
from darwin_notify_tests.conftest import PARTITION, EmbeddedEnv
from darwin_notify_tests.storage.tsql import problems

SAMPLE = SAMPLE_MODEL.read_text(encoding="utf-8")
# The sample's Property read from CDC instead of the tombstone.
CDC_TEXT = SAMPLE.replace(
    "  Property:\n    key: PropertyID\n    watch: [CreateDate, ModifiedDate]\n"
    "    created: CreateDate\n    deletions: tombstone\n",
    "  Property:\n    key: PropertyID\n    watch: [CreateDate, ModifiedDate]\n"
    "    created: CreateDate\n    deletions: {cdc: dbo_Property}\n",
)
START = datetime(2026, 3, 2, 13, 50)  # a window's start less a 10-minute lookback
END = datetime(2026, 3, 2, 14, 5)


def lsn(n: int) -> bytes:
    return n.to_bytes(10, "big")


def bounds(**changes: Any) -> dict[str, Any]:
    """A ``cdc_lsn_bounds`` row of a healthy capture instance: it keeps three days, the
    capture job is 3 seconds behind the log, and the window had transactions."""
    row = {
        "min_lsn": lsn(1000),
        "min_time": datetime(2026, 2, 27, 14, 0),
        "max_lsn": lsn(9000),
        "max_time": datetime(2026, 3, 2, 14, 19, 57),
        "from_lsn": lsn(5000),
        "to_lsn": lsn(6000),
    }
    row.update(changes)
    return row


def cdc_model() -> SourceModel:
    return parse_model(CDC_TEXT, "cdc.model.yaml")


# -- the model option ------------------------------------------------------------------------
def test_a_table_may_read_its_deletions_from_cdc_and_tombstones_stay_the_default() -> None:
    model = cdc_model()
    assert model.capture_instance_of("Property") == "dbo_Property"
    assert model.cdc_tables == {"Property": "dbo_Property"}
    assert model.tombstoned(["Property", "Deal", "Office"]) == ["Deal"]
    assert load_model().cdc_tables == {}


@pytest.mark.parametrize("name", ["dbo-Property", "1dbo", "dbo_Property]; DROP TABLE x", "x" * 101])
def test_a_capture_instance_name_that_could_not_be_a_function_name_is_refused(name) -> None:
    text = CDC_TEXT.replace("{cdc: dbo_Property}", json.dumps({"cdc": name}))
    with pytest.raises(ConfigurationError) as exc:
        parse_model(text, "m.yaml")
    assert "tables.Property.deletions" in str(exc.value) and "capture instance" in str(exc.value)


# -- the LSN range -----------------------------------------------------------------------------
def test_the_range_is_the_mapped_lsns_of_the_window() -> None:
    assert lsn_range(bounds(), "dbo_Property", "Property", START, END) == LsnRange(
        lsn(5000), lsn(6000)
    )


def test_the_range_is_clamped_to_the_capture_instances_min_and_max_lsn() -> None:
    # The window starts at the oldest change kept; the database-wide mapping is older still.
    row = bounds(from_lsn=lsn(900), min_time=START, to_lsn=lsn(9500))
    assert lsn_range(row, "dbo_Property", "Property", START, END) == LsnRange(lsn(1000), lsn(9000))


def test_a_window_without_a_transaction_reads_nothing() -> None:
    assert lsn_range(bounds(from_lsn=None), "dbo_Property", "Property", START, END) is None
    assert lsn_range(bounds(to_lsn=None), "dbo_Property", "Property", START, END) is None
    # Smallest at or after the start lies beyond the largest at or before the end.
    row = bounds(from_lsn=lsn(6001), to_lsn=lsn(6000))
    assert lsn_range(row, "dbo_Property", "Property", START, END) is None


def test_a_window_older_than_the_retention_is_an_error_naming_the_capture_instance() -> None:
    row = bounds(min_time=datetime(2026, 3, 2, 13, 55))
    with pytest.raises(CdcRetentionExceeded) as exc:
        lsn_range(row, "dbo_Property", "Property", START, END)
    message = str(exc.value)
    assert "capture instance dbo_Property" in message
    assert "keeps changes only from 2026-03-02 13:55:00 UTC" in message
    assert "from 2026-03-02 13:50:00 UTC" in message and "@retention" in message


def test_a_capture_behind_the_windows_end_is_retried_like_a_lagging_replica() -> None:
    row = bounds(max_time=datetime(2026, 3, 2, 14, 4, 30))
    with pytest.raises(ReplicaBehind) as exc:
        lsn_range(row, "dbo_Property", "Property", START, END)
    assert exc.value.behind_seconds == 30
    assert "capture instance dbo_Property has captured the log through 2026-03-02 14:04:30" in str(
        exc.value
    )
    with pytest.raises(ReplicaBehind, match="through nothing yet"):
        lsn_range(bounds(max_lsn=None, max_time=None), "dbo_Property", "Property", START, END)


@pytest.mark.parametrize("row", [None, {}, bounds(min_lsn=NO_LSN)])
def test_an_unknown_or_unreadable_capture_instance_is_a_configuration_error(row) -> None:
    with pytest.raises(ConfigurationError, match="capture instance dbo_Property does not exist"):
        lsn_range(row, "dbo_Property", "Property", START, END)


# -- rows to deletions -------------------------------------------------------------------------
def test_rows_become_deletions_in_the_half_open_window() -> None:
    rows = [
        {"record_id": 7, "deleted_at": START - timedelta(milliseconds=3), "start_lsn": lsn(4999)},
        {"record_id": 8, "deleted_at": START, "start_lsn": lsn(5000)},
        {"record_id": 9, "deleted_at": datetime(2026, 3, 2, 14, 1), "start_lsn": lsn(5500)},
        {"record_id": 9, "deleted_at": datetime(2026, 3, 2, 14, 3), "start_lsn": lsn(5800)},
        {"record_id": 10, "deleted_at": END, "start_lsn": lsn(6000)},
    ]
    assert deletions_from_rows("Property", rows, START, END) == [
        ("Property", 8, START),
        ("Property", 9, datetime(2026, 3, 2, 14, 1)),
        ("Property", 9, datetime(2026, 3, 2, 14, 3)),
    ]


def capture_rows(**changes: Any) -> list[dict[str, Any]]:
    base = {
        "source_schema": "dbo",
        "source_table": "Property",
        "can_select": 1,
        "can_read_changes": 1,
    }
    base.update(changes)
    return [{**base, "column_name": c} for c in ("PropertyID", "AgentID", "Address")]


def test_check_names_each_reason_a_capture_instance_cannot_be_read() -> None:
    found = capture_instance_from_rows("dbo_Property", capture_rows())
    assert found == CaptureInstance(
        "dbo_Property", "dbo", "Property", ("PropertyID", "AgentID", "Address"), True, True
    )
    assert capture_problems("Property", "PropertyID", "dbo_Property", found) == []
    [missing] = capture_problems("Property", "PropertyID", "dbo_Property", None)
    assert str(missing).startswith(
        "tables.Property.deletions: capture instance dbo_Property is not in cdc.change_tables"
    )
    assert missing.table == "cdc:dbo_Property"
    bad = capture_instance_from_rows(
        "dbo_Property", capture_rows(source_table="Deal", can_select=0, can_read_changes=0)
    )
    messages = [p.message for p in capture_problems("Property", "ListingKey", "dbo_Property", bad)]
    assert messages == [
        "capture instance dbo_Property captures dbo.Deal, not Property",
        "capture instance dbo_Property does not capture the key column ListingKey",
        "this login may not select from cdc.fn_cdc_get_all_changes_dbo_Property "
        "(GRANT SELECT ON SCHEMA::cdc)",
        "this login may not read the changes of capture instance dbo_Property "
        "(add it to the capture instance's gating role)",
    ]


# -- the reader on SQL Server, through a recorded connection ----------------------------------
class RecordedCdc:
    """A pyodbc stand-in answering the ``cdc_*`` queries with recorded rows."""

    def __init__(self, capture: list[dict[str, Any]], bounds_row: dict[str, Any], deleted: list):
        self.answers = {
            "cdc.change_tables": capture,
            "fn_cdc_get_min_lsn": [bounds_row],
            "fn_cdc_get_all_changes": deleted,
        }
        self.statements: list[tuple[str, tuple]] = []
        self.description: list[tuple[str]] | None = None
        self.rowcount = -1
        self._rows: list[tuple] = []

    def cursor(self) -> "RecordedCdc":
        return self

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.statements.append((sql, tuple(params)))
        rows = next((r for k, r in self.answers.items() if k in sql), [])
        names = list(rows[0]) if rows else ["x"]
        self.description = [(n,) for n in names]
        self._rows = [tuple(r[n] for n in names) for r in rows]

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


def sql_server_reader(conn: RecordedCdc) -> ReplicaReader:
    db = Database(conn, "mssql", DatabaseUrl.parse("mssql://u@host:1433/db"), read_only=True)
    return ReplicaReader(db, cdc_model())


def test_the_reader_reads_a_windows_deletions_from_the_capture_instance() -> None:
    deleted = [
        {"record_id": 41, "deleted_at": datetime(2026, 3, 2, 14, 2), "start_lsn": lsn(5400)},
        {"record_id": 42, "deleted_at": END, "start_lsn": lsn(6000)},
    ]
    conn = RecordedCdc(capture_rows(), bounds(), deleted)
    reader = sql_server_reader(conn)
    found = reader.read_cdc_deletions(["Deal", "Property"], START, END)
    assert found == [("Property", 41, datetime(2026, 3, 2, 14, 2))]
    # Deal's deletions are the tombstone's: not read here.
    [window, capture, changes] = conn.statements
    assert "sys.fn_cdc_map_time_to_lsn" in window[0] and "cdc.change_tables" in capture[0]
    assert window[1] == ("dbo_Property", reader.db.ts(START), reader.db.ts(END))
    assert capture[1] == ("dbo_Property",)
    sql, params = changes
    assert "FROM [cdc].[fn_cdc_get_all_changes_dbo_Property](?, ?, N'all') AS c" in sql
    assert "c.[PropertyID] AS record_id" in sql
    assert params == (lsn(5000), lsn(6000))
    for statement, _ in conn.statements:
        assert problems(statement) == [], statement


def test_the_reader_refuses_to_format_a_capture_instance_the_catalog_lacks() -> None:
    conn = RecordedCdc([], bounds(), [])
    reader = sql_server_reader(conn)
    with pytest.raises(ConfigurationError, match="dbo_Property is not in cdc.change_tables"):
        reader.read_cdc_deletions(["Property"], START, END)
    assert not any("[fn_cdc_get_all_changes" in s for s, _ in conn.statements)


def test_the_sensors_earliest_deletion_is_the_first_captured_one_or_the_captures_progress():
    first = [{"deleted_at": datetime(2026, 3, 2, 14, 2)}]
    conn = RecordedCdc(capture_rows(), bounds(), first)
    reader = sql_server_reader(conn)
    assert reader.earliest_cdc_deletion(["Property"], START) == datetime(2026, 3, 2, 14, 2)
    assert "TOP (1)" in conn.statements[-1][0]
    # Nothing deleted: nothing is known past what the capture has read of the log.
    reader = sql_server_reader(RecordedCdc(capture_rows(), bounds(), []))
    assert reader.earliest_cdc_deletion(["Property"], START) == bounds()["max_time"]
    # Older than the retention: the window must be read, and its run says why.
    old = bounds(min_time=START + timedelta(minutes=1))
    reader = sql_server_reader(RecordedCdc(capture_rows(), old, first))
    assert reader.earliest_cdc_deletion(["Property"], START) == START


# -- other dialects -----------------------------------------------------------------------------
def test_a_cdc_model_on_another_dialect_is_refused_in_one_line(embedded_env, tmp_path):
    db = embedded_env.runtime().replica.db
    with pytest.raises(ConfigurationError) as exc:
        ReplicaReader(db, cdc_model())
    assert str(exc.value) == (
        "CDC deletions need SQL Server: tables.Property.deletions names capture instance "
        "dbo_Property, and the replica is sqlite"
    )


def test_check_on_another_dialect_says_cdc_needs_sql_server(
    embedded_env, tmp_path, monkeypatch, capsys
):
    path = tmp_path / "cdc.model.yaml"
    path.write_text(CDC_TEXT, encoding="utf-8")
    monkeypatch.setenv("DARWIN_NOTIFY_SOURCE_MODEL", str(path))
    capsys.readouterr()
    assert cli.main(["check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "darwin-notify check: CDC deletions need SQL Server: tables.Property.deletions names "
        "capture instance dbo_Property, and the replica is sqlite"
    ]


# -- through detection and reconciliation --------------------------------------------------------
class CdcSeam(ReplicaReader):
    """The embedded replica, with Property's deletions answered from recorded CDC rows: the
    reader's row-returning methods are the seam; everything above them runs."""

    def __init__(self, reader: ReplicaReader, deleted: list[dict[str, Any]]):
        super().__init__(reader.db, reader.model)
        self.model = cdc_model()
        self.deleted = deleted
        self.bounds_asked: list[tuple[datetime, datetime]] = []

    def capture_instance(self, name: str) -> CaptureInstance | None:
        return capture_instance_from_rows(name, capture_rows())

    def cdc_bounds(self, capture_instance: str, start: datetime, end: datetime) -> dict[str, Any]:
        self.bounds_asked.append((start, end))
        return bounds(min_time=datetime(2026, 1, 1), max_time=end + timedelta(minutes=1))

    def cdc_deletion_rows(
        self, table: str, capture_instance: str, lsns: LsnRange
    ) -> list[dict[str, Any]]:
        return self.deleted


def _events(env: EmbeddedEnv, schedule_id: int) -> list[Mapping[str, Any]]:
    return env.store_rows(
        "SELECT * FROM change_event WHERE schedule_id = ? ORDER BY event_id", [schedule_id]
    )


def test_a_cdc_deletion_is_one_delete_event_with_the_last_seen_values(embedded_env):
    env = embedded_env
    window = Window.from_key(PARTITION, 5)
    [p] = env.source_rows(
        'SELECT * FROM "Property" WHERE "Status" = ? ORDER BY "PropertyID" LIMIT 1', ["Active"]
    )
    # Deleted on the source with no tombstone row: only CDC knows of it.
    env.source.execute('DELETE FROM "Property" WHERE "PropertyID" = ?', [p["PropertyID"]]).close()
    env.source.commit()
    at = window.start + timedelta(minutes=2)
    rt = env.runtime()
    replica = CdcSeam(rt.replica, [{"record_id": p["PropertyID"], "deleted_at": at}])
    schedules = load_schedules(replica).schedules
    delete = next(
        s for s in schedules.schedules if (s.source_table, s.event_type) == ("Property", "delete")
    )
    result = detect_changes(replica, rt.store, schedules, window, env.settings.lookback)
    assert result.deletions_read == 1
    assert replica.bounds_asked[0] == (window.read_from(env.settings.lookback), window.end)
    [event] = _events(env, delete.schedule_id)
    assert (event["record_id"], event["event_type"]) == (p["PropertyID"], "delete")
    assert event["agent_id"] == p["AgentID"]
    assert json.loads(event["row_values"])["Address"] == p["Address"]
    # The next window's lookback reads it again: the first decision stands.
    nxt = Window.containing(window.end, 5)
    again = detect_changes(replica, rt.store, schedules, nxt, env.settings.lookback)
    assert again.deletions_read == 1 and again.events_new == 0
    assert len(_events(env, delete.schedule_id)) == 1
    # Reconciliation reads CDC too, and finds nothing missing.
    found = reconcile(replica, rt.store, schedules, window.start, nxt.end, 5)
    assert found.rows_read >= 1 and not found.events_missing


def test_a_broken_capture_instance_skips_only_the_delete_schedules_that_read_it(embedded_env):
    class Missing(CdcSeam):
        def capture_instance(self, name: str) -> CaptureInstance | None:
            return None

    replica = Missing(embedded_env.runtime().replica, [])
    loaded = load_schedules(replica)
    [problem] = loaded.model_problems
    assert str(problem).startswith("tables.Property.deletions: capture instance dbo_Property")
    rejected = {r.schedule_id for r in loaded.rejected}
    for s in loaded.schedules.schedules:
        assert (s.source_table, s.event_type) != ("Property", "delete")
    assert any(s.source_table == "Property" for s in loaded.schedules.schedules)
    assert rejected, "the Property delete schedule was not rejected"
