"""The code location: every Dagster object of darwin-notify, assembled in one place."""

from dagster import Definitions, load_assets_from_modules

from darwin_notify_assets import assets
from darwin_notify_assets.jobs import notify_window_job, reconcile_job, reconcile_schedule
from darwin_notify_assets.resources import DarwinNotifyResource
from darwin_notify_assets.sensors import replica_lag_sensor

defs = Definitions(
    assets=load_assets_from_modules([assets]),
    jobs=[notify_window_job, reconcile_job],
    schedules=[reconcile_schedule],
    sensors=[replica_lag_sensor],
    resources={"darwin": DarwinNotifyResource()},
)
