"""Jobs: one run materializes the whole chain of one change window."""

from dagster import AssetSelection, DefaultScheduleStatus, ScheduleDefinition, define_asset_job

from darwin_notify_assets.defs.notifications.assets import AUDIT_GROUP, GROUP

notify_window_job = define_asset_job(
    "notify_window",
    selection=AssetSelection.groups(GROUP),
    description="Detect, total, pick, render and send the notifications of one change window.",
    tags={"dagster/max_retries": "0"},
)

reconcile_job = define_asset_job(
    "reconcile",
    selection=AssetSelection.groups(AUDIT_GROUP),
    description=(
        "Re-scan the recent past and report any window never read and any change that "
        "would fire without a record in the store."
    ),
)

reconcile_schedule = ScheduleDefinition(
    job=reconcile_job,
    cron_schedule="17 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly reconciliation of the last DARWIN_NOTIFY_RECONCILE_HOURS hours.",
)
