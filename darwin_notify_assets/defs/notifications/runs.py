"""Running change windows through Dagster in this process: the CLI's ``run``, the tests, the
soak and the benchmark start windows the same way."""

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from dagster import (
    ConfigurableResource,
    DagsterInstance,
    ExecuteInProcessResult,
)

from darwin_notify_assets.config import Settings
from darwin_notify_assets.defs.notifications.partitions import DAY_FORMAT, WINDOWS_TAG
from darwin_notify_assets.domain.windows import PARTITION_FORMAT, Window
from darwin_notify_assets.errors import ConfigurationError
from darwin_notify_assets.storage.store import utcnow

# The run's events still reach the Dagster instance (and the UI); only the console is quiet.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def check_partition_key(key: str, settings: Settings) -> str:
    """``key`` if it names a window of the partitions, else a one-line ConfigurationError."""
    try:
        start = datetime.strptime(key, PARTITION_FORMAT)
    except ValueError:
        raise ConfigurationError(
            f"{key!r} is not a window's partition key; expected YYYY-MM-DD-HH:MM, "
            "e.g. 2026-03-02-14:05"
        ) from None
    window = Window.containing(start, settings.window_minutes)
    if window.start != start:
        raise ConfigurationError(
            f"{key!r} is not the start of a {settings.window_minutes}-minute window; "
            f"the window containing it starts at {window.partition_key}"
        )
    first = datetime.strptime(settings.partition_start, PARTITION_FORMAT)
    if start < first:
        raise ConfigurationError(
            f"{key!r} is before the first window {settings.partition_start} "
            "(DARWIN_NOTIFY_PARTITION_START)"
        )
    if window.end > utcnow():
        raise ConfigurationError(f"window {key} has not ended yet (it ends {window.end} UTC)")
    return key


def run_window(
    window_key: str,
    instance: DagsterInstance,
    resources: Mapping[str, ConfigurableResource[Any]] | None = None,
    run_config: Mapping[str, Any] | None = QUIET_RUN_CONFIG,
    tags: Mapping[str, str] | None = None,
    last_window_key: str | None = None,
) -> ExecuteInProcessResult:
    """Materialize the chain of one change window (or of the consecutive windows of one day
    from ``window_key`` to ``last_window_key``) through Dagster, in this process."""
    from darwin_notify_assets.definitions import build_defs

    first = datetime.strptime(window_key, PARTITION_FORMAT)
    last = datetime.strptime(last_window_key or window_key, PARTITION_FORMAT)
    if last.date() != first.date():
        raise ConfigurationError(f"{window_key} and {last_window_key} are not of one day")
    span = f"{first:%H:%M}" if last == first else f"{first:%H:%M}..{last:%H:%M}"
    job = build_defs(resources).resolve_job_def("notify_window")
    return job.execute_in_process(
        partition_key=first.strftime(DAY_FORMAT),
        instance=instance,
        run_config=dict(run_config or {}),
        tags={WINDOWS_TAG: span, **(tags or {})},
        raise_on_error=False,
    )


def run_windows(
    keys: Iterable[str],
    instance: DagsterInstance,
    resources: Mapping[str, ConfigurableResource[Any]] | None = None,
    on_result: Callable[[str, ExecuteInProcessResult], None] | None = None,
) -> list[ExecuteInProcessResult]:
    results = []
    for key in keys:
        result = run_window(key, instance, resources)
        if on_result is not None:
            on_result(key, result)
        results.append(result)
    return results


def evaluate_sensor(
    instance: DagsterInstance,
    cursor: str | None = None,
    resources: Mapping[str, ConfigurableResource[Any]] | None = None,
) -> Any:
    """One tick of ``replica_lag_sensor`` with the environment's resources: its result."""
    from dagster import build_sensor_context

    from darwin_notify_assets.defs.notifications.sensors import replica_lag_sensor
    from darwin_notify_assets.defs.resources import resources_from_env

    with build_sensor_context(
        instance=instance, cursor=cursor, resources=dict(resources or resources_from_env())
    ) as context:
        return replica_lag_sensor(context)


def requested_windows(result: Any, window_minutes: int = 5) -> list[str]:
    """The window keys a sensor result's run requests name, in order."""
    from darwin_notify_assets.defs.notifications.partitions import windows_of_run

    keys: list[str] = []
    for request in getattr(result, "run_requests", None) or []:
        windows = windows_of_run(
            request.partition_key,
            request.tags.get(WINDOWS_TAG),
            window_minutes,
            datetime.max,
            timedelta(0),
        )
        keys += [w.partition_key for w in windows]
    return keys
