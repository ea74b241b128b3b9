"""The reconciliation job and its hourly schedule."""

from dagster import AssetSelection, DefaultScheduleStatus, ScheduleDefinition, define_asset_job

from darwin_notify_assets.defs.audit.assets import GROUP

reconcile_job = define_asset_job(
    "reconcile",
    selection=AssetSelection.groups(GROUP),
    description="Re-scan the recent past and report any window or change never processed.",
)

reconcile_schedule = ScheduleDefinition(
    job=reconcile_job,
    cron_schedule="17 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly reconciliation of the last DARWIN_NOTIFY_RECONCILE_HOURS hours.",
)
