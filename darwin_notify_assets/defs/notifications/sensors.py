"""The replica-lag sensor: a window runs only once the replica has applied it, plus grace."""

from datetime import datetime, timedelta

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from darwin_notify_assets.defs.notifications.jobs import notify_window_job
from darwin_notify_assets.defs.resources import PipelineResource, ReplicaResource, StoreResource
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.storage.store import utcnow

MAX_RUNS_PER_TICK = 12


def ready_windows(
    after: Window, applied_through: datetime, grace: timedelta, cap: int = MAX_RUNS_PER_TICK
) -> list[Window]:
    """Windows after ``after``, oldest first, whose ``end + grace`` the replica has applied."""
    minutes = int((after.end - after.start).total_seconds() // 60)
    ready: list[Window] = []
    window = Window.containing(after.end, minutes)
    while len(ready) < cap and window.end + grace <= applied_through:
        ready.append(window)
        window = Window.containing(window.end, minutes)
    return ready


@sensor(
    job=notify_window_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Starts each change window once the replica has applied its end plus grace; "
    "a backlog is caught up oldest first, at most 12 windows per tick.",
)
def replica_lag_sensor(
    context: SensorEvaluationContext,
    pipeline: PipelineResource,
    replica: ReplicaResource,
    store: StoreResource,
):
    """The cursor is the last window requested. Without one, the sensor continues after the
    newest window the store has processed, or else starts with the newest ready window."""
    settings = pipeline.settings()
    watermark = replica.reader.watermark()
    last_done = context.cursor or store.store.last_window()
    if watermark.applied_through is None:
        return SkipReason(f"the replica reports no applied position (state {watermark.state})")
    applied = watermark.applied_through
    if last_done:
        after = Window.from_key(last_done, settings.window_minutes)
    else:
        newest = Window.containing(applied - settings.grace, settings.window_minutes)
        after = Window.containing(newest.start - timedelta(minutes=1), settings.window_minutes)
    ready = ready_windows(after, applied, settings.grace)
    if not ready:
        nxt = Window.containing(after.end, settings.window_minutes)
        behind = (utcnow() - applied).total_seconds()
        paused = "; replay is paused" if watermark.replay_paused else ""
        return SkipReason(
            f"window {nxt.partition_key} needs the replica applied through "
            f"{nxt.end + settings.grace:%Y-%m-%d %H:%M:%S} UTC; it is applied through "
            f"{applied:%Y-%m-%d %H:%M:%S} UTC ({behind:.0f}s behind now, state "
            f"{watermark.state}{paused})"
        )
    return SensorResult(
        run_requests=[
            RunRequest(run_key=w.partition_key, partition_key=w.partition_key) for w in ready
        ],
        cursor=ready[-1].partition_key,
    )
