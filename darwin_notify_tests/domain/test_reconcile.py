"""Reconciliation: a re-scan finds a change the store never recorded and a window never read."""

from datetime import timedelta

from darwin_notify_assets.config import Settings
from darwin_notify_assets.domain.detect import reconcile
from darwin_notify_assets.domain.pipeline import Runtime, load_schedules
from darwin_notify_assets.sample.demo import DEMO_START, DemoOptions, run_demo


def test_reconcile_reports_missing_events_and_windows(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DARWIN_NOTIFY_HOME", str(tmp_path))
    summary = run_demo(DemoOptions(home=tmp_path, windows=3, size="small"), lambda _line: None)
    assert summary["runs_failed"] == 0
    rt = Runtime.from_settings(Settings(home=str(tmp_path)))
    try:
        schedules = load_schedules(rt.replica).schedules
        start, end = DEMO_START, DEMO_START + timedelta(minutes=15)
        clean = reconcile(rt.replica, rt.store, schedules, start, end, 5)
        assert clean.clean and clean.events_expected > 0

        # Forget one recorded insert event and look one window further than was processed.
        key = rt.store.db.scalar(
            "SELECT event_key FROM change_event WHERE event_type = 'insert' ORDER BY event_id"
        )
        rt.store.db.execute("DELETE FROM change_event WHERE event_key = ?", [key])
        rt.store.db.commit()
        dirty = reconcile(rt.replica, rt.store, schedules, start, end + timedelta(minutes=5), 5)
    finally:
        rt.close()
    assert dirty.events_missing == [key]
    assert dirty.windows_missing == ["2026-03-02-14:15"]
