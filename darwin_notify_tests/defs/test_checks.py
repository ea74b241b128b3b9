"""The asset checks evaluate the windows their run processed (the run's windows tag), as the
assets do, not every window of the day partition the run materializes."""

from darwin_notify_assets.defs.notifications import checks
from darwin_notify_tests.conftest import EmbeddedEnv

CHECKS = {
    "replica_caught_up",
    "agent_totals_fresh",
    "no_duplicate_sends",
    "no_missed_notifications",
}


def test_each_check_evaluates_the_windows_of_its_run(embedded_env: EmbeddedEnv) -> None:
    env = embedded_env
    first, second = env.key(0), env.key(1)
    assert first[:10] == second[:10], "the two windows must share a day partition"
    assert env.run_window(0).success and env.run_window(1).success
    store = env.store()
    # The second window of the day is left with a message that is not final.
    with store.db.transaction():
        store.db.execute(
            "UPDATE message SET status = ? WHERE message_id = (SELECT MIN(message_id) "
            "FROM message WHERE partition_key = ? AND status = ?)",
            ["queued", second, "sent"],
        ).close()
    # Evaluated over the day, the check fails ...
    day = checks.no_missed_notifications(store, [first, second])
    assert not day.passed and day.metadata["messages_not_final"].value == 1
    assert not checks.no_missed_notifications(store, [second]).passed
    # ... but a rerun of the first window checks the first window only, and passes.
    result = env.run_window(0, apply=False)
    assert result.success
    evaluations = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(evaluations) == CHECKS
    for name, evaluation in evaluations.items():
        assert evaluation.passed, name
        meta = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
        assert meta["windows_checked"] == 1, (name, meta)
        assert meta["first_window"] == meta["last_window"] == first, (name, meta)
