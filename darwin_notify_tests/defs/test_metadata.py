"""What a materialization shows a data person: failures by reason, a masked preview per
template, replica lag, outcomes per window as numbers and as pictures."""

import base64
import re

from dagster import AssetKey, TableMetadataValue

from darwin_notify_tests.conftest import build_env, materialization_metadata


def _latest(instance, asset):
    event = instance.get_latest_materialization_event(AssetKey(asset))
    assert event is not None
    return event.asset_materialization.metadata


def _suppress_some(db, dataset, changes):
    db.execute("""UPDATE "People" SET "Email" = 'x ' || "Email" """).close()


def test_metadata_has_tables_preview_lag_and_plots(tmp_path, monkeypatch):
    env = build_env(tmp_path / "home", monkeypatch, windows=2, customize=_suppress_some)
    try:
        for i in range(2):
            assert env.run_window(i).success
        rendered = _latest(env.instance, "rendered_messages")
        table = rendered["failures_by_reason"]
        assert isinstance(table, TableMetadataValue)
        assert [c.name for c in table.schema.columns] == ["reason_class", "status", "count"]
        suppressed = env.store_rows(
            "SELECT COUNT(*) AS n FROM message WHERE status = 'suppressed' AND partition_key = ?",
            [env.key(1)],
        )[0]["n"]
        assert suppressed > 0
        emails = env.source_rows('SELECT "Email" FROM "People" WHERE "Email" IS NOT NULL')
        by_status = {}
        for r in table.records:
            by_status[r.data["status"]] = by_status.get(r.data["status"], 0) + r.data["count"]
            for row in emails:
                assert row["Email"].removeprefix("x ") not in r.data["reason_class"]
        # One class of reason for every recipient whose address is invalid the same way.
        assert len(table.records) < suppressed
        assert by_status["suppressed"] >= suppressed

        preview = rendered["message_preview"].value
        schedules = env.store_rows(
            "SELECT DISTINCT c.schedule_id FROM message m JOIN candidate c ON c.candidate_id = m.candidate_id WHERE m.partition_key = ? AND (m.text_body IS NOT NULL OR m.sms_body IS NOT NULL)",
            [env.key(1)],
        )
        assert preview.count("```text") >= len(schedules) > 0

        change = materialization_metadata(env.instance, "change_window", env.key(1))
        assert isinstance(change["replica_lag_seconds"], float)
        assert isinstance(change["replica_applied_past_window_end_seconds"], float)
        assert change["replica_lag_seconds"] >= 0

        delivery = materialization_metadata(env.instance, "delivery_log", env.key(1))
        sent = env.store_rows(
            "SELECT COUNT(*) AS n FROM message WHERE status = 'sent' AND partition_key = ?",
            [env.key(1)],
        )[0]["n"]
        assert delivery["sent"] == sent > 0
        for status in ("sent", "suppressed", "failed", "unknown"):
            assert isinstance(delivery[status], int)
        assert isinstance(
            _latest(env.instance, "delivery_log")["failures_by_reason"], TableMetadataValue
        )
        for name in ("outcomes_last_day", "outcomes_last_week"):
            m = re.fullmatch(
                r"!\[([^\]]*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", delivery[name]
            )
            assert m, delivery[name][:80]
            assert base64.b64decode(m.group(2)).startswith(b"\x89PNG\r\n\x1a\n")
        assert env.key(1) in delivery["outcomes_last_day"].split("](")[0]
    finally:
        env.close()
