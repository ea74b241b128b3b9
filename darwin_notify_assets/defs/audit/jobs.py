"""The reconciliation job and its hourly schedule."""

from dagster import AssetSelection, DefaultScheduleStatus, ScheduleDefinition, define_asset_job

reconcile_job = define_asset_job(
    "reconcile",
    # The reconciliation only: the day-partitioned send audit is materialized per day.
    selection=AssetSelection.assets("reconciliation_report"),
    description="Re-scan the recent past and report any window or change never processed.",
)

reconcile_schedule = ScheduleDefinition(
    job=reconcile_job,
    cron_schedule="17 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly reconciliation of the last DARWIN_NOTIFY_RECONCILE_HOURS hours.",
)
