"""Worker health: the sensor observes the workers and its checks turn red on a threshold."""

from datetime import timedelta

from dagster import AssetCheckEvaluation, AssetObservation, DagsterInstance, build_sensor_context

from darwin_notify_assets.defs.operations.health import worker_health_sensor
from darwin_notify_assets.defs.resources import resources_from_env
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_tests.conftest import make_messages


def _tick():
    with DagsterInstance.ephemeral() as instance:
        with build_sensor_context(instance=instance, resources=resources_from_env()) as context:
            return worker_health_sensor(context)


def _checks(result) -> dict[tuple[str, str], AssetCheckEvaluation]:
    return {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.asset_events
        if isinstance(e, AssetCheckEvaluation)
    }


def test_a_quiet_store_is_healthy(embedded_env):
    result = _tick()
    observations = [e for e in result.asset_events if isinstance(e, AssetObservation)]
    assert {o.asset_key.to_user_string() for o in observations} == {
        "render_workers",
        "send_workers",
    }
    checks = _checks(result)
    assert len(checks) == 4 and all(c.passed for c in checks.values())


def test_old_queued_messages_and_stuck_claims_turn_the_checks_red(embedded_env):
    store = embedded_env.store()
    ids = make_messages(store, 3)
    store.claim(ids[:1])
    long_ago = store.db.ts(embedded_env.window(0).start - timedelta(days=1))
    store.db.execute("UPDATE message SET created_at = ?, updated_at = ?", [long_ago, long_ago])
    store.db.commit()
    result = _tick()
    checks = _checks(result)
    assert not checks[("send_workers", "oldest_queued_within_limit")].passed
    assert not checks[("send_workers", "no_stuck_claims")].passed
    assert checks[("send_workers", "no_stuck_claims")].metadata["stuck_claims"].value == 1
    [send] = [
        e
        for e in result.asset_events
        if isinstance(e, AssetObservation) and e.asset_key.to_user_string() == "send_workers"
    ]
    assert send.metadata["queued_messages"].value == 2
    assert send.metadata["oldest_queued_age_seconds"].value > 86_000
    assert MessageStatus.SENDING in store.status_counts()
