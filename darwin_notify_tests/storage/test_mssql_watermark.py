"""The SQL Server replica watermark, decided from the ``watermark`` query's raw row
(the rows: ``mssql_rows.py``), for a caught-up, a lagging and a suspended secondary, the
primary, and databases in no availability group."""

from datetime import datetime, timedelta

import pytest

from darwin_notify_assets.storage.db import Database, DatabaseUrl
from darwin_notify_assets.storage.mssql_watermark import watermark_from_row
from darwin_notify_assets.storage.replica import ReplicaReader
from darwin_notify_tests.storage.mssql_rows import (
    UTC_NOW,
    local,
    outside_availability_group,
    secondary,
)

CAUGHT_UP = secondary()
LAGGING = secondary(
    redo_queue_size=48213,
    secondary_lag_seconds=None,
    last_redone_time=local(UTC_NOW - timedelta(seconds=2)),
    last_commit_time=local(datetime(2026, 3, 2, 14, 18, 31, 250000)),
)
SUSPENDED = secondary(
    synchronization_state_desc="NOT SYNCHRONIZING",
    is_suspended=True,
    suspend_reason_desc="SUSPEND_FROM_USER",
    redo_queue_size=0,
    secondary_lag_seconds=None,
    last_commit_time=local(datetime(2026, 3, 2, 14, 2, 10)),
)


def test_a_caught_up_secondary_is_applied_through_the_servers_now() -> None:
    wm = watermark_from_row(CAUGHT_UP)
    assert wm.applied_through == UTC_NOW
    assert wm.state == "synchronizing" and not wm.replay_paused
    assert wm.last_replay_at == datetime(2026, 3, 2, 14, 19, 58, 500000)  # UTC
    assert (wm.receive_lsn, wm.replay_lsn) == ("48000000131200001", "48000000131100002")


def test_a_lagging_secondary_is_applied_through_its_last_redone_commit_in_utc() -> None:
    wm = watermark_from_row(LAGGING)
    assert wm.applied_through == datetime(2026, 3, 2, 14, 18, 31, 250000)
    assert wm.state == "synchronizing" and not wm.replay_paused


def test_the_reported_lag_in_seconds_can_only_move_the_position_back() -> None:
    # A lag figure that is further behind than the last redone commit wins ...
    wm = watermark_from_row(secondary(redo_queue_size=10, secondary_lag_seconds=300))
    assert wm.applied_through == UTC_NOW - timedelta(seconds=300)
    # ... and one that is nearer does not move it forward.
    wm = watermark_from_row(LAGGING | {"secondary_lag_seconds": 5})
    assert wm.applied_through == datetime(2026, 3, 2, 14, 18, 31, 250000)
    # Empty queues with a lag reported is not caught up either.
    wm = watermark_from_row(secondary(secondary_lag_seconds=40))
    assert wm.applied_through == datetime(2026, 3, 2, 14, 19, 20, 123456)


def test_a_suspended_secondary_is_held_at_its_last_redone_commit_and_says_so() -> None:
    wm = watermark_from_row(SUSPENDED)
    assert wm.applied_through == datetime(2026, 3, 2, 14, 2, 10)
    assert wm.replay_paused
    assert wm.state == "suspended (SUSPEND_FROM_USER)"
    assert wm.describe() == "suspended (SUSPEND_FROM_USER), replay paused"
    # Suspended with empty queues and a synchronizing state is still not caught up.
    wm = watermark_from_row(CAUGHT_UP | {"is_suspended": True})
    assert wm.applied_through < UTC_NOW and wm.replay_paused


@pytest.mark.parametrize("state", ["NOT SYNCHRONIZING", "INITIALIZING", "REVERTING"])
def test_a_secondary_without_data_movement_is_held_at_its_last_commit(state) -> None:
    wm = watermark_from_row(CAUGHT_UP | {"synchronization_state_desc": state})
    assert wm.applied_through == datetime(2026, 3, 2, 14, 19, 58, 500000)
    assert wm.state == state.lower()


def test_a_secondary_that_has_redone_no_commit_has_no_position() -> None:
    wm = watermark_from_row(LAGGING | {"last_commit_time": None})
    assert wm.applied_through is None


def test_the_primary_replica_is_applied_through_now() -> None:
    wm = watermark_from_row(secondary(is_primary_replica=True, redo_queue_size=None))
    assert (wm.applied_through, wm.state, wm.replay_paused) == (UTC_NOW, "primary", False)


def test_a_writable_database_in_no_availability_group_is_its_own_primary() -> None:
    wm = watermark_from_row(outside_availability_group())
    assert (wm.applied_through, wm.state) == (UTC_NOW, "primary")


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"updateability": "READ_ONLY", "is_in_standby": True}, "a standby (log shipping)"),
        ({"updateability": "READ_ONLY", "is_snapshot": 1}, "a database snapshot"),
        ({"updateability": "READ_ONLY"}, "ONLINE, READ_ONLY"),
        ({"database_state": "RESTORING"}, "RESTORING, READ_WRITE"),
    ],
)
def test_a_read_only_copy_in_no_availability_group_has_no_position(changes, why) -> None:
    wm = watermark_from_row(outside_availability_group(**changes))
    assert wm.applied_through is None
    assert wm.state.startswith("not in an availability group and not the primary")
    assert why in wm.state


def test_no_row_at_all_is_unknown() -> None:
    wm = watermark_from_row(None)
    assert wm.applied_through is None and wm.state.startswith("unknown")


class _OneRow:
    """A pyodbc stand-in whose every query returns one given row."""

    def __init__(self, row: dict) -> None:
        self.row = row
        self.description = [(k,) for k in row]
        self.sql: list[str] = []

    def cursor(self) -> "_OneRow":
        return self

    def execute(self, sql: str, params: tuple = ()) -> None:
        self.sql.append(sql)

    def fetchall(self) -> list[tuple]:
        return [tuple(self.row.values())]

    def nextset(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def rollback(self) -> None:
        pass


def test_the_replica_reader_decides_sql_server_watermarks_this_way() -> None:
    conn = _OneRow(SUSPENDED)
    db = Database(conn, "mssql", DatabaseUrl.parse("mssql://u@ag:1433/darwin"), read_only=True)
    wm = ReplicaReader(db).watermark()
    assert "sys.dm_hadr_database_replica_states" in conn.sql[0]
    assert wm == watermark_from_row(SUSPENDED)
