"""The replica-lag sensor: a window runs only once the replica has applied it, plus grace."""

from datetime import datetime

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from darwin_notify_assets.jobs import notify_window_job
from darwin_notify_assets.partitions import change_windows
from darwin_notify_assets.resources import DarwinNotifyResource
from darwin_notify_assets.windows import PARTITION_FORMAT

MAX_RUNS_PER_TICK = 12


def ready_windows(
    partition_keys: list[str], cursor: str | None, applied_through: datetime,
    window_minutes: int, grace_seconds: int,
) -> list[str]:
    """Keys after ``cursor`` whose ``end + grace`` the replica has applied, oldest first."""
    from datetime import timedelta

    ready = []
    for key in partition_keys:
        if cursor and key <= cursor:
            continue
        start = datetime.strptime(key, PARTITION_FORMAT)
        needed = start + timedelta(minutes=window_minutes, seconds=grace_seconds)
        if needed > applied_through:
            break
        ready.append(key)
    return ready


@sensor(
    job=notify_window_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Starts each change window once the replica has applied its end plus grace; "
    "catches up a backlog oldest first, a few windows per tick.",
)
def replica_lag_sensor(context: SensorEvaluationContext, darwin: DarwinNotifyResource):
    settings = darwin.settings()
    rt = darwin.runtime()
    try:
        watermark = rt.replica.watermark()
    finally:
        rt.close()
    if watermark.applied_through is None:
        return SkipReason(f"replica reports no applied position (state {watermark.state})")
    keys = change_windows.get_partition_keys(
        current_time=min(watermark.applied_through, datetime.utcnow())
    )
    cursor = context.cursor or (keys[-2] if len(keys) >= 2 else None)
    ready = ready_windows(keys, cursor, watermark.applied_through,
                          settings.window_minutes, settings.grace_seconds)
    if not ready:
        lag = (datetime.utcnow() - watermark.applied_through).total_seconds()
        paused = ", replay paused" if watermark.replay_paused else ""
        return SkipReason(
            f"replica applied through {watermark.applied_through:%Y-%m-%d %H:%M:%S} UTC "
            f"({lag:.0f}s behind{paused}); next window needs its end + "
            f"{settings.grace_seconds}s"
        )
    batch = ready[:MAX_RUNS_PER_TICK]
    return SensorResult(
        run_requests=[RunRequest(run_key=key, partition_key=key) for key in batch],
        cursor=batch[-1],
    )
