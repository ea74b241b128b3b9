"""The audit domain: a re-scan of the recent past that reports anything never processed, and
the day's send audit (changes -> candidates -> messages -> provider requests -> outcomes)."""

from datetime import datetime, timedelta

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from darwin_notify_assets.defs.notifications.partitions import notification_days
from darwin_notify_assets.defs.resources import PipelineResource, ReplicaResource, StoreResource
from darwin_notify_assets.domain.audit import FRAME_COLUMNS, audit_frame, audit_report
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


AUDIT_PREVIEW_ROWS = 100


@asset(group_name=GROUP, kinds={"pandas"}, partitions_def=notification_days)
def send_audit(context: AssetExecutionContext, store: StoreResource) -> MaterializeResult:
    """The day's send audit, from the store: per window, changes -> candidates -> messages ->
    provider requests -> outcomes, and every missed, duplicate, unknown, suppressed or
    failed notification by key with its status and reason (masked). The same table as
    ``darwin-notify audit --csv`` for the day; it changes nothing, so it can be
    rematerialized at any time."""
    day = context.partition_key
    report = audit_report(store.store, [], since=f"{day}-00:00", until=f"{day}-23:59")
    frame = audit_frame(report)
    items = frame[frame["kind"] != "window"]
    counts = items["kind"].value_counts()
    windows = frame[frame["kind"] == "window"]
    context.log.info(f"{day}: {len(windows)} windows audited, {len(items)} notifications listed")

    def table(rows: pd.DataFrame, columns: list[str]) -> MetadataValue:
        text = set(FRAME_COLUMNS[:5])
        records = [
            TableRecord(
                {
                    c: None if pd.isna(v) else (str(v) if c in text else int(v))
                    for c, v in zip(columns, r, strict=True)
                }
            )
            for r in rows.itertuples(index=False)
        ]
        return MetadataValue.table(
            records=records,
            schema=TableSchema(
                columns=[TableColumn(c, "string" if c in text else "int") for c in columns]
            ),
        )

    window_columns = ["window", *FRAME_COLUMNS[5:]]
    item_columns = FRAME_COLUMNS[:5]
    return MaterializeResult(
        metadata={
            "windows": len(windows),
            "clean": report.clean,
            **{k: int(counts.get(k, 0)) for k in ("missed", "duplicate", "unknown")},
            "not_sent": int(counts.drop(["missed", "duplicate", "unknown"], errors="ignore").sum()),
            "per_window": table(windows[window_columns], window_columns),
            "listed": table(items[item_columns].head(AUDIT_PREVIEW_ROWS), item_columns),
            "listed_shown": min(len(items), AUDIT_PREVIEW_ROWS),
        }
    )
