"""The one-command demo: run twice on the same folder, the second run sends nothing new."""

import json

from darwin_notify_assets.sample.demo import DemoOptions, run_demo
from darwin_notify_tests.conftest import clean_environment, sqlite_rows


def test_the_demo_twice_sends_each_notification_once(tmp_path, monkeypatch):
    home = tmp_path / "demo"
    clean_environment(monkeypatch, home)
    # run_demo points these at its folder; monkeypatch restores them afterwards
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    options = DemoOptions(home=home, windows=2, size="small")
    runs = []
    for _ in range(2):
        lines: list[str] = []
        summary = run_demo(options, lines.append)
        assert json.loads(lines[-1]) == summary
        runs.append(summary)
    first, second = runs
    assert first["runs_failed"] == second["runs_failed"] == 0
    assert first["duplicates"] == second["duplicates"] == 0
    assert first["missed"] == second["missed"] == 0
    assert first["totals"]["new_sends"] == first["totals"]["sent"] > 0
    assert second["totals"]["new_sends"] == 0
    assert second["outbox_files"] == first["outbox_files"]
    sent = sqlite_rows(home / "store.db", "SELECT COUNT(*) AS n FROM message WHERE status = 'sent'")
    assert first["outbox_files"] == sent[0]["n"] == first["totals"]["sent"]
    assert [w["window"] for w in second["windows"]] == [w["window"] for w in first["windows"]]
