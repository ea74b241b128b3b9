"""The replica-lag sensor: pure window arithmetic, then the sensor itself on the embedded
default (whose replica is applied through now) and on a replica that reports a lag."""

from datetime import datetime, timedelta

import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, SensorResult, SkipReason

from darwin_notify_assets.defs.notifications.partitions import WINDOWS_TAG, windows_of_run
from darwin_notify_assets.defs.notifications.runs import evaluate_sensor
from darwin_notify_assets.defs.notifications.sensors import (
    MAX_WINDOWS_PER_RUN,
    backlog,
    one_day,
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
    assert backlog(after, applied, GRACE) == 1


def test_a_backlog_is_cut_into_runs_of_one_day_with_a_cap() -> None:
    after = Window.from_key("2026-03-02-14:00", 5)
    ready = ready_windows(after, datetime(2026, 3, 4, 0, 0), GRACE)
    assert len(ready) == MAX_WINDOWS_PER_RUN
    keys = [w.partition_key for w in ready]
    assert keys == sorted(keys) and keys[0] == "2026-03-02-14:05"
    assert all(b.start == a.end for a, b in zip(ready, ready[1:], strict=False))
    late = ready_windows(Window.from_key("2026-03-02-23:45", 5), datetime(2026, 3, 4), GRACE)
    assert [w.partition_key for w in one_day(late)] == ["2026-03-02-23:50", "2026-03-02-23:55"]
    assert backlog(after, datetime(2026, 3, 3, 14, 5, 30), GRACE) == 288


def _evaluate(cursor=None, instance=None):
    if instance is not None:
        return evaluate_sensor(instance, cursor)
    with DagsterInstance.ephemeral() as fresh:
        return evaluate_sensor(fresh, cursor)


def _windows_of(request) -> list[str]:
    windows = windows_of_run(
        request.partition_key, request.tags[WINDOWS_TAG], 5, datetime(2100, 1, 1), GRACE
    )
    return [w.partition_key for w in windows]


@pytest.fixture
def empty_store(tmp_path, monkeypatch):
    from darwin_notify_assets.sample import seed
    from darwin_notify_assets.storage.db import connect

    for name in list(__import__("os").environ):
        if name.startswith("DARWIN_NOTIFY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DARWIN_NOTIFY_HOME", str(tmp_path))
    db = connect(f"sqlite:///{tmp_path / 'darwin.db'}")
    seed.create_schema(db)
    db.close()
    store = NotificationStore.open(f"sqlite:///{tmp_path / 'store.db'}")
    store.ensure_schema()
    yield store
    store.close()


def test_windows_with_changes_are_requested_one_day_per_run(embedded_env) -> None:
    env = embedded_env
    env.apply(0)
    env.apply(1)
    before = Window.containing(env.window(0).start - timedelta(minutes=30), 5)
    result = _evaluate(before.partition_key)
    [request] = result.run_requests
    windows = _windows_of(request)
    assert request.partition_key == "2026-03-02"
    assert windows[0] > before.partition_key and env.key(0) in windows and env.key(1) in windows
    assert len(windows) <= MAX_WINDOWS_PER_RUN
    assert request.run_key == f"{windows[0]}..{windows[-1]}"
    assert result.cursor == windows[-1]


def test_windows_in_which_nothing_changed_need_no_run(empty_store) -> None:
    cursor = Window.containing(utcnow() - timedelta(minutes=30), 5).partition_key
    result = _evaluate(cursor)
    assert isinstance(result, SensorResult) and not result.run_requests
    assert "nothing changed" in result.skip_reason.skip_message
    newest = Window.containing(utcnow() - GRACE - timedelta(minutes=5), 5).partition_key
    assert result.cursor >= newest > cursor


def test_a_run_in_flight_holds_the_next_request(embedded_env) -> None:
    env = embedded_env
    env.apply(0)
    before = Window.containing(env.window(0).start - timedelta(minutes=30), 5)
    with DagsterInstance.ephemeral() as instance:
        instance.add_run(
            DagsterRun(job_name="notify_window", run_id="a" * 36, status=DagsterRunStatus.STARTED)
        )
        result = _evaluate(before.partition_key, instance)
    assert isinstance(result, SkipReason)
    assert "in flight" in result.skip_message and "ready" in result.skip_message


def test_sensor_resumes_after_the_newest_processed_window(embedded_env) -> None:
    env = embedded_env
    for i in range(3):
        env.apply(i)
    done = env.window(0)
    env.store().record_window(done.partition_key, done.start, done.end, utcnow(), "primary", 0)
    [request] = _evaluate().run_requests
    assert _windows_of(request)[0] > done.partition_key


def test_sensor_skip_reason_says_how_far_behind(empty_store, monkeypatch) -> None:
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
            "state suspended (SUSPEND_FROM_USER), replay paused)",
        ),
        ({"redo_queue_size": 48213}, "state synchronizing)"),
        ({"synchronization_state_desc": "NOT SYNCHRONIZING"}, "state not synchronizing)"),
    ],
)
def test_sensor_on_a_sql_server_secondary_that_has_not_applied_the_window(
    empty_store, monkeypatch, changes, says
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


def test_sensor_on_a_caught_up_sql_server_secondary_runs_the_windows(embedded_env, monkeypatch):
    from darwin_notify_assets.storage.mssql_watermark import watermark_from_row

    row = _sql_server_row(utcnow() - timedelta(minutes=7))
    monkeypatch.setattr(ReplicaReader, "watermark", lambda self: watermark_from_row(row))
    embedded_env.apply(0)
    cursor = Window.containing(embedded_env.window(0).start - timedelta(minutes=30), 5)
    result = _evaluate(cursor.partition_key)
    [request] = result.run_requests
    assert embedded_env.key(0) in _windows_of(request)
    assert result.cursor == _windows_of(request)[-1]


def test_sensor_on_a_read_only_copy_outside_an_availability_group_runs_nothing(
    empty_store, monkeypatch
) -> None:
    from darwin_notify_assets.storage.mssql_watermark import watermark_from_row
    from darwin_notify_tests.storage.mssql_rows import outside_availability_group

    row = outside_availability_group(updateability="READ_ONLY", is_in_standby=True)
    monkeypatch.setattr(ReplicaReader, "watermark", lambda self: watermark_from_row(row))
    result = _evaluate(Window.containing(utcnow() - timedelta(minutes=30), 5).partition_key)
    assert isinstance(result, SkipReason)
    assert "reports no applied position" in result.skip_message
    assert "not in an availability group and not the primary" in result.skip_message
