"""The replica-lag sensor: windows run only once the replica has applied them, plus grace.

It decides and does no work: its cursor is the last window it requested. Each tick it asks
the replica how far it has applied, and (with index seeks only) when the next change in the
watched tables is. Windows with nothing to read need no run; the others are requested a run
at a time, at most ``MAX_WINDOWS_PER_RUN`` consecutive windows of one day per run, and only
when no run of the chain is in flight, so a backlog is caught up oldest first at the pace
of one run after the other.
"""

from datetime import datetime, timedelta

from dagster import (
    AssetKey,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from darwin_notify_assets.defs.notifications.jobs import notify_window_job
from darwin_notify_assets.defs.notifications.partitions import (
    WINDOWS_TAG,
    day_of,
    window_keys_by_day,
    windows_tag,
)
from darwin_notify_assets.defs.resources import PipelineResource, ReplicaResource, StoreResource
from darwin_notify_assets.domain.detect import first_change_since
from darwin_notify_assets.domain.pipeline import load_schedules
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.storage.store import utcnow

MAX_WINDOWS_PER_RUN = 24
IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def ready_windows(
    after: Window, applied_through: datetime, grace: timedelta, cap: int = MAX_WINDOWS_PER_RUN
) -> list[Window]:
    """Windows after ``after``, oldest first, whose ``end + grace`` the replica has applied."""
    minutes = int((after.end - after.start).total_seconds() // 60)
    ready: list[Window] = []
    window = Window.containing(after.end, minutes)
    while len(ready) < cap and window.end + grace <= applied_through:
        ready.append(window)
        window = Window.containing(window.end, minutes)
    return ready


def backlog(after: Window, applied_through: datetime, grace: timedelta) -> int:
    """How many windows after ``after`` are ready."""
    minutes = (after.end - after.start).total_seconds() / 60
    span = (applied_through - grace - after.end).total_seconds() / 60
    return max(0, int(span // minutes))


def one_day(windows: list[Window]) -> list[Window]:
    """The leading windows that share the first one's day (a run is one day's partition)."""
    day = day_of(windows[0])
    return [w for w in windows if day_of(w) == day]


@sensor(
    job=notify_window_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Starts change windows once the replica has applied their end plus grace: one "
    f"run at a time, up to {MAX_WINDOWS_PER_RUN} windows of a day per run; windows in which "
    "nothing changed need no run.",
)
def replica_lag_sensor(
    context: SensorEvaluationContext,
    pipeline: PipelineResource,
    replica: ReplicaResource,
    store: StoreResource,
) -> SensorResult | SkipReason:
    """The cursor is the last window requested. Without one, the sensor continues after the
    newest window the store has processed, or else starts with the newest ready window."""
    settings = pipeline.settings()
    minutes = settings.window_minutes
    watermark = replica.reader.watermark()
    last_done = context.cursor or store.store.last_window()
    if watermark.applied_through is None:
        return SkipReason(f"the replica reports no applied position (state {watermark.state})")
    applied = watermark.applied_through
    if last_done:
        after = Window.from_key(last_done, minutes)
    else:
        newest = Window.containing(applied - settings.grace, minutes)
        after = Window.containing(newest.start - timedelta(minutes=1), minutes)
    ready = ready_windows(after, applied, settings.grace)
    if not ready:
        nxt = Window.containing(after.end, minutes)
        behind = (utcnow() - applied).total_seconds()
        return SkipReason(
            f"window {nxt.partition_key} needs the replica applied through "
            f"{nxt.end + settings.grace:%Y-%m-%d %H:%M:%S} UTC; it is applied through "
            f"{applied:%Y-%m-%d %H:%M:%S} UTC ({behind:.0f}s behind now, state "
            f"{watermark.describe()})"
        )
    in_flight = context.instance.get_runs(
        filters=RunsFilter(job_name=notify_window_job.name, statuses=IN_FLIGHT), limit=1
    )
    waiting = backlog(after, applied, settings.grace)
    if in_flight:
        return SkipReason(
            f"run {in_flight[0].run_id[:8]} of the chain is in flight; {waiting} ready "
            f"window(s) from {ready[0].partition_key} wait for it"
        )
    # Nothing to read in a window: no run. The next window reads from its start - lookback.
    first_change = first_change_since(
        replica.reader, load_schedules(replica.reader).schedules, ready[0].start - settings.lookback
    )
    newest_ready = Window.containing(applied - settings.grace - timedelta(minutes=minutes), minutes)
    if first_change is None or first_change >= newest_ready.end:
        return SensorResult(
            cursor=newest_ready.partition_key,
            skip_reason=SkipReason(
                f"nothing changed in the watched tables since "
                f"{ready[0].start - settings.lookback:%Y-%m-%d %H:%M} UTC: windows "
                f"{ready[0].partition_key} to {newest_ready.partition_key} need no run"
            ),
        )
    first = Window.containing(first_change, minutes)
    if first.start > ready[0].start:
        after = Window.containing(first.start - timedelta(minutes=1), minutes)
        ready = ready_windows(after, applied, settings.grace)
    run = one_day(ready)
    left = backlog(run[-1], applied, settings.grace)
    tag = windows_tag(run)
    context.log.info(
        f"requesting {day_of(run[0])} {tag} ({len(run)} window(s)); {left} more ready after it"
    )
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=f"{run[0].partition_key}..{run[-1].partition_key}",
                partition_key=day_of(run[0]),
                tags={WINDOWS_TAG: tag},
            )
        ],
        cursor=run[-1].partition_key,
    )


#: The tag of a run the deferred-messages sensor requested (only the delivery step).
DEFERRED_TAG = "darwin_notify/deferred"


@sensor(
    job=notify_window_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Sends deferred messages (quiet hours, daily caps) once their time has come: "
    "requests a run of delivery_log for the windows that have due ones, one run a day; that "
    "step queues them again (deferred -> queued, once) and sends them.",
)
def deferred_messages_sensor(
    context: SensorEvaluationContext, pipeline: PipelineResource, store: StoreResource
) -> SensorResult | SkipReason:
    """Decides from the store alone (an indexed count of deferred messages); the run works."""
    now = utcnow()
    due = store.store.due_deferred_windows(now)
    if not due:
        waiting, first = store.store.deferred_summary()
        if waiting and first is not None:
            return SkipReason(
                f"no deferred message is due; {waiting} deferred, the first may go at "
                f"{first:%Y-%m-%d %H:%M} UTC"
            )
        return SkipReason("no message is deferred")
    in_flight = context.instance.get_runs(
        filters=RunsFilter(
            job_name=notify_window_job.name, statuses=IN_FLIGHT, tags={DEFERRED_TAG: "true"}
        ),
        limit=1,
    )
    if in_flight:
        return SkipReason(
            f"run {in_flight[0].run_id[:8]} sends deferred messages; "
            f"{sum(due.values())} due in {len(due)} window(s) wait for it"
        )
    requests = []
    for day, keys in window_keys_by_day(sorted(due)).items():
        windows = [Window.from_key(k, pipeline.window_minutes) for k in (keys[0], keys[-1])]
        tag = windows_tag(windows)
        context.log.info(
            f"requesting delivery of {day} {tag}: {sum(due[k] for k in keys)} deferred "
            "message(s) due"
        )
        requests.append(
            RunRequest(
                run_key=f"deferred {keys[0]}..{keys[-1]} at {now:%Y-%m-%dT%H:%M}",
                partition_key=day,
                asset_selection=[AssetKey("delivery_log")],
                tags={WINDOWS_TAG: tag, DEFERRED_TAG: "true"},
            )
        )
    return SensorResult(run_requests=requests)
