"""The replica-lag sensor: pure window arithmetic, then the sensor itself on the embedded
default (whose replica is applied through now) and on a replica that reports a lag."""

from datetime import datetime, timedelta

import pytest
from dagster import DagsterInstance, RunRequest, SkipReason

from darwin_notify_assets.defs.notifications.runs import evaluate_sensor
from darwin_notify_assets.defs.notifications.sensors import (
    MAX_RUNS_PER_TICK,
    ready_windows,
)
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.storage.replica import ReplicaReader, ReplicaWatermark
from darwin_notify_assets.storage.store import NotificationStore, utcnow

GRACE = timedelta(seconds=30)


def test_ready_windows_wait_for_end_plus_grace() -> None:
    after = Window.from_key("2026-03-02-14:00", 5)
    applied = datetime(2026, 3, 2, 14, 10, 29)
    assert [w.partition_key for w in ready_windows(after, applied, GRACE)] == []
    applied = datetime(2026, 3, 2, 14, 10, 30)
    assert [w.partition_key for w in ready_windows(after, applied, GRACE)] == ["2026-03-02-14:05"]


def test_backlog_is_caught_up_oldest_first_with_a_cap() -> None:
    after = Window.from_key("2026-03-02-14:00", 5)
    ready = ready_windows(after, datetime(2026, 3, 3, 0, 0), GRACE)
    assert len(ready) == MAX_RUNS_PER_TICK
    keys = [w.partition_key for w in ready]
    assert keys == sorted(keys) and keys[0] == "2026-03-02-14:05"
    assert all(b.start == a.end for a, b in zip(ready, ready[1:], strict=False))


@pytest.fixture
def embedded(tmp_path, monkeypatch):
    from darwin_notify_assets.sample import seed

    monkeypatch.setenv("DARWIN_NOTIFY_HOME", str(tmp_path))
    from darwin_notify_assets.storage.db import connect

    db = connect(f"sqlite:///{tmp_path / 'darwin.db'}")
    seed.create_schema(db)
    db.close()
    store = NotificationStore.open(f"sqlite:///{tmp_path / 'store.db'}")
    store.ensure_schema()
    yield store
    store.close()


def _evaluate(cursor=None):
    with DagsterInstance.ephemeral() as instance:
        return evaluate_sensor(instance, cursor)


def test_sensor_continues_after_the_cursor_with_run_keys(embedded) -> None:
    cursor = Window.containing(utcnow() - timedelta(minutes=30), 5).partition_key
    result = _evaluate(cursor)
    requests = result.run_requests
    assert requests and all(isinstance(r, RunRequest) for r in requests)
    keys = [r.partition_key for r in requests]
    assert keys[0] > cursor and [r.run_key for r in requests] == keys
    assert result.cursor == keys[-1]
    last = Window.from_key(keys[-1], 5)
    assert last.end + GRACE <= utcnow()


def test_sensor_resumes_after_the_newest_processed_window(embedded) -> None:
    done = Window.containing(utcnow() - timedelta(minutes=20), 5)
    embedded.record_window(done.partition_key, done.start, done.end, utcnow(), "primary", 0)
    result = _evaluate()
    assert result.run_requests[0].partition_key == Window.containing(done.end, 5).partition_key


def test_sensor_skip_reason_says_how_far_behind(embedded, monkeypatch) -> None:
    behind = utcnow() - timedelta(minutes=7)
    monkeypatch.setattr(
        ReplicaReader,
        "watermark",
        lambda self: ReplicaWatermark(behind, "0/10", "0/8", True, behind, "streaming"),
    )
    cursor = Window.containing(behind - timedelta(minutes=2), 5).partition_key
    result = _evaluate(cursor)
    assert isinstance(result, SkipReason)
    text = result.skip_message
    assert "behind" in text and "paused" in text and "applied through" in text


def _sql_server_row(applied: datetime, **changes) -> dict:
    """A ``watermark`` row of a SQL Server secondary, in a server running on UTC."""
    from darwin_notify_tests.storage.mssql_rows import secondary

    now = utcnow()
    return secondary(
        last_commit_time=applied,
        server_utc_now=now,
        server_local_now=now,
        last_hardened_time=now,
        last_redone_time=now,
        **changes,
    )


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        (
            {"is_suspended": True, "suspend_reason_desc": "SUSPEND_FROM_USER"},
            "state suspended (SUSPEND_FROM_USER); replay is paused",
        ),
        ({"redo_queue_size": 48213}, "state synchronizing)"),
        ({"synchronization_state_desc": "NOT SYNCHRONIZING"}, "state not synchronizing)"),
    ],
)
def test_sensor_on_a_sql_server_secondary_that_has_not_applied_the_window(
    embedded, monkeypatch, changes, says
) -> None:
    from darwin_notify_assets.storage.mssql_watermark import watermark_from_row

    applied = utcnow() - timedelta(minutes=7)
    row = _sql_server_row(applied, **changes)
    monkeypatch.setattr(ReplicaReader, "watermark", lambda self: watermark_from_row(row))
    cursor = Window.containing(applied - timedelta(minutes=2), 5).partition_key
    result = _evaluate(cursor)
    assert isinstance(result, SkipReason)
    assert says in result.skip_message
    assert f"applied through {applied:%Y-%m-%d %H:%M:%S} UTC" in result.skip_message


def test_sensor_on_a_caught_up_sql_server_secondary_runs_the_windows(embedded, monkeypatch):
    from darwin_notify_assets.storage.mssql_watermark import watermark_from_row

    row = _sql_server_row(utcnow() - timedelta(minutes=7))
    monkeypatch.setattr(ReplicaReader, "watermark", lambda self: watermark_from_row(row))
    cursor = Window.containing(utcnow() - timedelta(minutes=30), 5).partition_key
    result = _evaluate(cursor)
    assert result.run_requests and result.cursor == result.run_requests[-1].partition_key


def test_sensor_on_a_read_only_copy_outside_an_availability_group_runs_nothing(
    embedded, monkeypatch
) -> None:
    from darwin_notify_assets.storage.mssql_watermark import watermark_from_row
    from darwin_notify_tests.storage.mssql_rows import outside_availability_group

    row = outside_availability_group(updateability="READ_ONLY", is_in_standby=True)
    monkeypatch.setattr(ReplicaReader, "watermark", lambda self: watermark_from_row(row))
    result = _evaluate(Window.containing(utcnow() - timedelta(minutes=30), 5).partition_key)
    assert isinstance(result, SkipReason)
    assert "reports no applied position" in result.skip_message
    assert "not in an availability group and not the primary" in result.skip_message
