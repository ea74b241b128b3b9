"""Jobs: one run materializes the whole chain of one change window."""

from dagster import AssetSelection, define_asset_job

from darwin_notify_assets.defs.notifications.assets import GROUP

notify_window_job = define_asset_job(
    "notify_window",
    selection=AssetSelection.groups(GROUP),
    description="Detect, total, pick, render and send the notifications of one change window.",
    # ``darwin_notify/chain`` is what dagster.yaml's concurrency limit counts: one at a time.
    tags={"dagster/max_retries": "0", "darwin_notify/chain": "notify"},
)
