"""Progress of long work: bars on a terminal's stderr (off when not a terminal, under CI or
with --quiet), and counts in the runs' logs."""

import io

import pytest

from darwin_notify_assets import cli


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _terminal(monkeypatch):
    # Set in the test itself: pytest's capture sets sys.stderr again after the fixtures.
    monkeypatch.delenv("CI", raising=False)
    err = _Terminal()
    monkeypatch.setattr("sys.stderr", err)
    return err


def _dagster_home(monkeypatch, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))


def test_a_backfill_from_the_cli_shows_a_bar_with_counts(embedded_env, monkeypatch, tmp_path):
    _dagster_home(monkeypatch, tmp_path)
    terminal = _terminal(monkeypatch)
    embedded_env.apply(0)
    embedded_env.apply(1)
    assert cli.main(["run", embedded_env.key(0), embedded_env.key(1)]) == 0
    shown = terminal.getvalue()
    assert "2/2 [" in shown and "ok=2" in shown and "failed=0" in shown


@pytest.mark.parametrize("how", ["quiet", "ci", "pipe"])
def test_no_bar_when_quiet_in_ci_or_not_a_terminal(embedded_env, monkeypatch, tmp_path, how):
    _dagster_home(monkeypatch, tmp_path)
    err = _Terminal() if how != "pipe" else io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    if how == "ci":
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    embedded_env.apply(0)
    argv = ["--quiet"] if how == "quiet" else []
    code = cli.main([*argv, "run", embedded_env.key(0)])
    shown = err.getvalue()
    assert code == 0, shown[-3000:]
    assert "1/1 [" not in shown and "ok=1" not in shown, shown[-3000:]


def test_the_seed_shows_its_windows_and_changes(tmp_path, monkeypatch):
    terminal = _terminal(monkeypatch)
    target = f"sqlite:///{tmp_path / 'seed.db'}"
    assert cli.main(["seed", "--target", target, "--size", "small", "--windows", "3"]) == 0
    shown = terminal.getvalue()
    assert "3/3 [" in shown and "changes=" in shown


def test_runs_log_their_progress_with_counts(embedded_env):
    result = embedded_env.run_window(0)
    assert result.success
    messages = [e.user_message or "" for e in embedded_env.instance.all_logs(result.run_id)]
    key = embedded_env.key(0)
    for fragment in (f"window 1/1 {key}: ", "rows read", "rendered", "sent "):
        assert any(fragment in m for m in messages), fragment
