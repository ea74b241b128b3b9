"""The day's send audit as an asset: its summary and table preview match the store."""

from dagster import TableMetadataValue, materialize

from darwin_notify_assets.defs.audit.assets import send_audit
from darwin_notify_tests.conftest import env_resources, materialization_metadata


def test_send_audit_summarizes_the_day_from_the_store(embedded_env):
    env = embedded_env
    assert env.run_window(0).success
    assert env.run_window(1).success
    day = env.key(0)[:10]
    result = materialize(
        [send_audit], partition_key=day, resources=env_resources(), instance=env.instance
    )
    assert result.success
    meta = materialization_metadata(env.instance, "send_audit")
    assert meta["windows"] == 2 and meta["clean"] is True
    assert meta["missed"] == meta["duplicate"] == 0
    not_sent = env.store_rows(
        "SELECT COUNT(*) AS n FROM message WHERE status IN ('suppressed', 'render_failed', 'failed')"
    )[0]["n"]
    unknown = env.store_rows("SELECT COUNT(*) AS n FROM message WHERE status = 'unknown'")[0]["n"]
    assert meta["not_sent"] == not_sent and meta["unknown"] == unknown
    per_window = meta["per_window"]
    assert isinstance(per_window, TableMetadataValue) or hasattr(per_window, "records")
    rows = per_window.records if hasattr(per_window, "records") else per_window
    assert [r.data["window"] for r in rows] == [env.key(0), env.key(1)]
    messages = env.store_rows(
        "SELECT COUNT(*) AS n FROM message WHERE partition_key = ?", [env.key(0)]
    )
    assert rows[0].data["messages"] == messages[0]["n"]
    listed = meta["listed"]
    listed_rows = listed.records if hasattr(listed, "records") else listed
    assert len(listed_rows) == meta["listed_shown"] == min(100, not_sent + unknown)
