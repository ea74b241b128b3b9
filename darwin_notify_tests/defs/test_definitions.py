"""The code location loads, and its asset graph is the documented chain."""

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from dagster import AssetKey, DailyPartitionsDefinition

from darwin_notify_assets.definitions import defs
from darwin_notify_assets.defs.notifications.partitions import (
    notification_days,
    windows_of_run,
)
from darwin_notify_assets.errors import ConfigurationError
from darwin_notify_tests.conftest import ASSET_CHAIN

REPO_ROOT = Path(__file__).resolve().parents[2]


def _asset_graph():
    return defs.resolve_asset_graph()


def test_definitions_load_with_the_job_and_the_sensor():
    job = defs.resolve_job_def("notify_window")
    assert job.partitions_def == notification_days
    sensor = defs.resolve_sensor_def("replica_lag_sensor")
    assert sensor.job_name == "notify_window"
    assert sensor.description


def test_the_asset_keys_and_their_dependency_chain():
    graph = _asset_graph()
    keys = {k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable}
    deps = {
        key.to_user_string(): sorted(p.to_user_string() for p in graph.get(key).parent_keys)
        for key in keys
    }
    assert deps == {
        "notification_schedules": [],
        "change_window": ["notification_schedules"],
        "agent_totals": ["change_window"],
        "candidate_notifications": ["agent_totals"],
        "rendered_messages": ["candidate_notifications"],
        "delivery_log": ["rendered_messages"],
        # the hourly re-scan reads the store and the replica, not the chain's outputs
        "reconciliation_report": [],
        # the day's send audit reads the store
        "send_audit": [],
    }
    groups = {k.to_user_string(): graph.get(k).group_name for k in keys}
    assert sorted(k for k, g in groups.items() if g == "notifications") == sorted(ASSET_CHAIN)


def test_the_job_materializes_the_whole_chain():
    job = defs.resolve_job_def("notify_window")
    selected = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert selected == set(ASSET_CHAIN)


def test_every_asset_is_described_and_the_chain_is_partitioned():
    graph = _asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if not node.is_materializable:
            continue
        assert node.description and len(node.description.split()) >= 10, key
        assert node.kinds, key
    for name in ASSET_CHAIN:
        node = graph.get(AssetKey(name))
        assert node.partitions_def == notification_days, name
        assert node.group_name == "notifications", name


def test_the_reconciliation_job_runs_hourly():
    job = defs.resolve_job_def("reconcile")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        "reconciliation_report"
    }
    schedule = defs.resolve_schedule_def("reconcile_schedule")
    assert schedule.job_name == "reconcile"
    assert schedule.cron_schedule.split()[1:] == ["*", "*", "*", "*"]


def test_the_partitions_are_utc_days_and_a_decade_stays_far_under_dagsters_advice():
    assert isinstance(notification_days, DailyPartitionsDefinition)
    assert notification_days.timezone == "UTC"
    keys = notification_days.get_partition_keys(current_time=datetime(2036, 1, 1))
    assert keys[0] == "2026-01-01" and keys[-1] == "2036-01-01"
    # Ten years of days, against about 100,000 advised per asset.
    assert len(keys) == 3653


GRACE = timedelta(seconds=30)


def _keys(windows):
    return [w.partition_key for w in windows]


def test_a_run_tag_names_one_window_or_a_range_of_its_day():
    late = datetime(2026, 3, 3)
    assert _keys(windows_of_run("2026-03-02", "14:05", 5, late, GRACE)) == ["2026-03-02-14:05"]
    assert _keys(windows_of_run("2026-03-02", "14:05..14:15", 5, late, GRACE)) == [
        "2026-03-02-14:05",
        "2026-03-02-14:10",
        "2026-03-02-14:15",
    ]
    assert _keys(windows_of_run("2026-03-02", "2026-03-02-23:55", 5, late, GRACE)) == [
        "2026-03-02-23:55"
    ]


def test_a_run_without_tag_takes_the_windows_ready_when_it_was_created():
    created = datetime(2026, 3, 2, 0, 15, 29)
    # 00:10 ends at 00:15 and needs 30 s of grace: not yet.
    assert _keys(windows_of_run("2026-03-02", None, 5, created, GRACE)) == [
        "2026-03-02-00:00",
        "2026-03-02-00:05",
    ]
    assert len(windows_of_run("2026-03-02", None, 5, datetime(2026, 3, 4), GRACE)) == 288


@pytest.mark.parametrize("tag", ["14:03", "25:00", "14:10..14:05", "2026-03-03-14:05", "x"])
def test_a_tag_that_names_no_window_of_the_day_is_refused(tag):
    with pytest.raises(ConfigurationError, match="darwin_notify/windows"):
        windows_of_run("2026-03-02", tag, 5, datetime(2026, 3, 4), GRACE)


def test_the_asset_checks_audit_each_window():
    graph = _asset_graph()
    checks = {
        (k.asset_key.to_user_string(), k.name): graph.get_check_spec(k)
        for k in graph.asset_check_keys
    }
    assert set(checks) == {
        ("change_window", "replica_caught_up"),
        ("agent_totals", "agent_totals_fresh"),
        ("delivery_log", "no_duplicate_sends"),
        ("delivery_log", "no_missed_notifications"),
        ("reconciliation_report", "nothing_missed_recently"),
        ("render_workers", "backlog_within_limit"),
        ("send_workers", "backlog_within_limit"),
        ("send_workers", "oldest_queued_within_limit"),
        ("send_workers", "no_stuck_claims"),
    }
    # rendering must not start from stale totals
    assert checks[("agent_totals", "agent_totals_fresh")].blocking


def test_dg_check_defs_passes(tmp_path):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DARWIN_NOTIFY_")}
    env.update(
        DAGSTER_HOME=str(dagster_home),
        DARWIN_NOTIFY_HOME=str(tmp_path / "home"),
        DG_CLI_SUPPRESS_WARNINGS="1",
    )
    dg = Path(sys.executable).with_name("dg")
    result = subprocess.run(
        [str(dg), "check", "defs"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "All definitions loaded successfully" in result.stdout + result.stderr
