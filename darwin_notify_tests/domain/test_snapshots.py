"""One run, one snapshot of the schedules and templates: recorded by version, referred to by
every later step and every message, even when the schedules change while the run goes on."""

from darwin_notify_assets.domain import pipeline
from darwin_notify_assets.domain.snapshots import ScheduleSnapshot
from darwin_notify_tests.conftest import materialization_metadata


def test_the_same_schedules_have_the_same_version(embedded_env):
    replica = embedded_env.replica()
    a = ScheduleSnapshot.of(replica.schedule_source())
    b = ScheduleSnapshot.of(replica.schedule_source())
    assert a.version == b.version and len(a.version) == 16
    assert [s.schedule_id for s in a.schedules().schedules] == [
        s.schedule_id for s in replica.load_schedules().schedules
    ]


def test_a_run_renders_with_the_snapshot_its_first_step_took(embedded_env, monkeypatch):
    env = embedded_env
    env.apply(0)
    before = ScheduleSnapshot.of(env.replica().schedule_source()).version
    edited = {"done": False}
    real = pipeline.stage_candidates

    def edit_templates_mid_run(rt, window, loaded):
        # A person edits every template while the run is between its steps.
        if not edited["done"]:
            env.source.execute(
                'UPDATE "NotificationTemplate" SET "Subject" = \'EDITED \' || "Subject"'
            ).close()
            env.source.commit()
            edited["done"] = True
        return real(rt, window, loaded)

    monkeypatch.setattr(
        "darwin_notify_assets.defs.notifications.assets.stage_candidates", edit_templates_mid_run
    )
    assert env.run_window(0).success
    after = ScheduleSnapshot.of(env.replica().schedule_source()).version
    assert after != before
    meta = materialization_metadata(env.instance, "notification_schedules", env.key(0))
    assert meta["schedule_version"] == before
    messages = env.store_rows("SELECT subject, schedule_version FROM message")
    assert messages and {m["schedule_version"] for m in messages} == {before}
    assert not any((m["subject"] or "").startswith("EDITED") for m in messages)
    [window] = env.store_rows("SELECT schedule_version FROM window_run")
    assert window["schedule_version"] == before
    # The next run reads the edited schedules: a new version.
    env.apply(1)
    assert env.run_window(1).success
    second = env.store_rows(
        "SELECT DISTINCT schedule_version FROM message WHERE partition_key = ?", [env.key(1)]
    )
    assert [r["schedule_version"] for r in second] == [after]


def test_an_older_store_gains_the_new_columns(tmp_path):
    import sqlite3

    from darwin_notify_assets.storage.store import NotificationStore

    path = tmp_path / "store.db"
    store = NotificationStore.open(f"sqlite:///{path}")
    store.ensure_schema()
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE message DROP COLUMN schedule_version")
    conn.commit()
    conn.close()
    store = NotificationStore.open(f"sqlite:///{path}")
    store.ensure_schema()
    store.close()
    conn = sqlite3.connect(path)
    columns = [r[1] for r in conn.execute("PRAGMA table_info(message)")]
    conn.close()
    assert "schedule_version" in columns
