"""Reconciliation: a re-scan finds a change the store never recorded and a window never read,
with the decision detection makes."""

from datetime import timedelta

from darwin_notify_assets.config import Settings
from darwin_notify_assets.domain.detect import event_key, reconcile
from darwin_notify_assets.domain.pipeline import Runtime, load_schedules
from darwin_notify_assets.sample.demo import DEMO_START, DemoOptions, run_demo
from darwin_notify_assets.storage.store import jsonable
from darwin_notify_tests.domain.test_detect import (
    W0,
    W1,
    activate_only,
    add_schedule,
    delete_property,
    detect,
    new_contact,
    properties,
)


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
        # An event recorded before decisions were (no decision row) is not missing.
        rt.store.db.execute("DELETE FROM change_decision WHERE fired = ?", [True])
        rt.store.db.commit()
        assert reconcile(rt.replica, rt.store, schedules, start, end, 5).clean

        # Forget one recorded insert event (and its decision) and look one window further
        # than was processed.
        key = rt.store.db.scalar(
            "SELECT event_key FROM change_event WHERE event_type = 'insert' ORDER BY event_id"
        )
        rt.store.db.execute("DELETE FROM change_event WHERE event_key = ?", [key])
        rt.store.db.execute("DELETE FROM change_decision WHERE event_key = ?", [key])
        rt.store.db.commit()
        further = end + timedelta(minutes=10)
        quiet = reconcile(rt.replica, rt.store, schedules, start, further, 5)
        # A change in 14:20, a window never read: that window is missing; 14:15, in which
        # nothing changed, needs no run and is not.
        import sqlite3

        source = sqlite3.connect(tmp_path / "darwin.db")
        source.execute(
            'UPDATE "Property" SET "ModifiedDate" = ? WHERE "PropertyID" = '
            '(SELECT MIN("PropertyID") FROM "Property")',
            [(DEMO_START + timedelta(minutes=21)).strftime("%Y-%m-%d %H:%M:%S.%f")],
        )
        source.commit()
        source.close()
        dirty = reconcile(rt.replica, rt.store, schedules, start, further, 5)
    finally:
        rt.close()
    assert quiet.events_missing == [key] and quiet.windows_missing == []
    assert dirty.events_missing[:1] == [key]
    assert dirty.windows_missing == ["2026-03-02-14:20"]


def test_reconcile_applies_detection_s_decision_to_every_event_type(embedded_env) -> None:
    """With a criterion on each event type (welcome: insert, EmailOptIn eq true; price drop:
    update, ListPrice decreased; a delete schedule with Status eq Active), a re-scan reports
    the events detection would fire on that the store has no record of, and none that
    detection decided against or would decide against."""
    env = embedded_env
    add_schedule(
        env,
        91,
        SourceTable="Property",
        EventType="delete",
        WatchColumn="DeletedDate",
        Criteria=[{"column": "Status", "op": "eq", "value": "Active"}],
        TemplateID=5,
    )
    activate_only(env, {2, 4, 91})
    declined = new_contact(env, W0.start + timedelta(minutes=1), opted_in=False)
    welcomed = new_contact(env, W0.start + timedelta(minutes=2), opted_in=True)
    dropped_seen, raised_seen, dropped, raised, active_gone = properties(env, 5)
    [inactive_gone_seen, inactive_gone] = env.source_rows(
        'SELECT * FROM "Property" WHERE "Status" <> ? ORDER BY "PropertyID" LIMIT 2', ["Active"]
    )
    at = W0.start + timedelta(minutes=3)
    env.set_row(
        "Property",
        dropped_seen["PropertyID"],
        {"ListPrice": dropped_seen["ListPrice"] - 1000, "ModifiedDate": at},
    )
    env.set_row(
        "Property",
        raised_seen["PropertyID"],
        {"ListPrice": raised_seen["ListPrice"] + 1000, "ModifiedDate": at},
    )
    delete_property(env, inactive_gone_seen["PropertyID"], at)
    rt = env.runtime()
    detect(env, W0, rt)

    # W1 is never read: its changes are what a re-scan must judge on its own.
    later = W1.start + timedelta(minutes=1)
    env.set_row("People", declined, {"EmailOptIn": 1, "ModifiedDate": later})
    missed = new_contact(env, later + timedelta(seconds=1), opted_in=True)
    new_contact(env, later + timedelta(seconds=2), opted_in=False)
    env.set_row(
        "Property",
        dropped["PropertyID"],
        {"ListPrice": dropped["ListPrice"] - 1000, "ModifiedDate": later},
    )
    env.set_row(
        "Property",
        raised["PropertyID"],
        {"ListPrice": raised["ListPrice"] + 1000, "ModifiedDate": later},
    )
    delete_property(env, active_gone["PropertyID"], later)
    delete_property(env, inactive_gone["PropertyID"], later)

    schedules = load_schedules(rt.replica).schedules
    result = reconcile(rt.replica, rt.store, schedules, W0.start, W1.end, 5)

    def key(table: str, record_id: int, schedule_id: int, event: str, when) -> str:
        return event_key(table, record_id, schedule_id, event, str(jsonable(when)))

    assert sorted(result.events_missing) == sorted(
        [
            key("People", missed, 4, "insert", later + timedelta(seconds=1)),
            key("Property", dropped["PropertyID"], 2, "update", later),
            key("Property", active_gone["PropertyID"], 91, "delete", later),
        ]
    )
    # What detection recorded is not reported, whether it fired or was decided against.
    recorded = env.store_rows("SELECT source_table, record_id FROM change_event")
    assert {(e["source_table"], e["record_id"]) for e in recorded} == {
        ("People", welcomed),
        ("Property", dropped_seen["PropertyID"]),
    }
