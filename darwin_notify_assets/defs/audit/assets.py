"""The audit domain: a re-scan of the recent past that reports anything never processed."""

from datetime import datetime, timedelta

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    asset,
)

from darwin_notify_assets.defs.resources import PipelineResource, ReplicaResource, StoreResource
from darwin_notify_assets.domain.detect import reconcile
from darwin_notify_assets.domain.pipeline import load_schedules
from darwin_notify_assets.domain.windows import PARTITION_FORMAT, Window
from darwin_notify_assets.storage.store import utcnow

GROUP = "audit"

NOTHING_MISSED_RECENTLY = AssetCheckSpec(
    "nothing_missed_recently",
    asset="reconciliation_report",
    description="Every window the replica applied was read, and every change that fires a "
    "schedule is a recorded event.",
)


@asset(group_name=GROUP, kinds={"sql"}, check_specs=[NOTHING_MISSED_RECENTLY])
def reconciliation_report(
    context: AssetExecutionContext,
    pipeline: PipelineResource,
    replica: ReplicaResource,
    store: StoreResource,
) -> MaterializeResult:
    """A re-scan of the recent past (``DARWIN_NOTIFY_RECONCILE_HOURS``): every window the
    replica has applied must have been read, and every insert, update or delete in the range
    that detection would fire on (the same decision, from the same code) must have a record
    in the store, an event or a decision. Reports what is missing by key; it changes
    nothing."""
    watermark = replica.reader.watermark()
    applied = watermark.applied_through or utcnow()
    grace = timedelta(seconds=pipeline.grace_seconds)
    # Leave the sensor two windows of time to start the newest ready window.
    end = Window.containing(
        applied - grace - timedelta(minutes=2 * pipeline.window_minutes),
        pipeline.window_minutes,
    ).start
    start = Window.containing(
        end - timedelta(hours=pipeline.reconcile_hours), pipeline.window_minutes
    ).start
    start = max(start, datetime.strptime(pipeline.partition_start, PARTITION_FORMAT))
    loaded = load_schedules(replica.reader)
    result = reconcile(
        replica.reader, store.store, loaded.schedules, start, end, pipeline.window_minutes
    )
    for key in result.events_missing[:20]:
        context.log.error(f"change never recorded: {key}")
    return MaterializeResult(
        metadata={
            "range_start": str(result.start),
            "range_end": str(result.end),
            "rows_read": result.rows_read,
            "events_expected": result.events_expected,
            "events_missing": len(result.events_missing),
            "windows_missing": len(result.windows_missing),
        },
        check_results=[
            AssetCheckResult(
                check_name=NOTHING_MISSED_RECENTLY.name,
                passed=result.clean,
                metadata={
                    "missing_events": ", ".join(result.events_missing[:50]) or "(none)",
                    "missing_windows": ", ".join(result.windows_missing[:50]) or "(none)",
                },
            )
        ],
    )
