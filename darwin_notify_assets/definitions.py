"""The code location: every Dagster object of darwin-notify, assembled in one place."""

from dagster import Definitions, load_assets_from_modules

from darwin_notify_assets.defs.notifications import assets
from darwin_notify_assets.defs.notifications.jobs import (
    notify_window_job,
    reconcile_job,
    reconcile_schedule,
)
from darwin_notify_assets.defs.notifications.sensors import replica_lag_sensor
from darwin_notify_assets.defs.resources import DarwinNotifyResource

defs = Definitions(
    assets=load_assets_from_modules([assets]),
    jobs=[notify_window_job, reconcile_job],
    schedules=[reconcile_schedule],
    sensors=[replica_lag_sensor],
    resources={"darwin": DarwinNotifyResource()},
)
