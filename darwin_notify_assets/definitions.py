"""The code location: every Dagster object of darwin-notify, assembled in one place.

``build_defs`` takes the resources; ``defs`` binds those the environment describes
(``defs/resources.py``, the one place where the environment chooses them).
"""

from collections.abc import Mapping
from typing import Any

from dagster import (
    ConfigurableResource,
    Definitions,
    in_process_executor,
    load_assets_from_modules,
)

from darwin_notify_assets.defs.audit import assets as audit_assets
from darwin_notify_assets.defs.audit.jobs import reconcile_job, reconcile_schedule
from darwin_notify_assets.defs.notifications import assets as notification_assets
from darwin_notify_assets.defs.notifications.jobs import notify_window_job
from darwin_notify_assets.defs.notifications.sensors import (
    deferred_messages_sensor,
    replica_lag_sensor,
)
from darwin_notify_assets.defs.operations import health
from darwin_notify_assets.defs.resources import resources_from_env


def build_defs(resources: Mapping[str, ConfigurableResource[Any]] | None = None) -> Definitions:
    """The definitions with ``resources`` (by default, those of the current environment)."""
    return Definitions.merge(
        Definitions(
            assets=load_assets_from_modules([notification_assets]),
            jobs=[notify_window_job],
            sensors=[replica_lag_sensor, deferred_messages_sensor],
        ),
        Definitions(
            assets=load_assets_from_modules([audit_assets]),
            jobs=[reconcile_job],
            schedules=[reconcile_schedule],
        ),
        Definitions(
            assets=[health.render_workers, health.send_workers],
            asset_checks=health.health_checks,
            sensors=[health.worker_health_sensor],
        ),
        # A window's steps run one after the other and share the resources' connections: in
        # one process, a run starts no process per step (seconds each on a busy machine).
        Definitions(
            resources=dict(resources or resources_from_env()), executor=in_process_executor
        ),
    )


defs = build_defs()
