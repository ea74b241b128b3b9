"""A code location of one asset partitioned by five-minute windows: the design that the
daily partitions replaced, loaded by ``benchmarks/ui_partitions.py --window-years N`` to time
the same page with it."""

import os

from dagster import Definitions, TimeWindowPartitionsDefinition, asset

five_minute_windows = TimeWindowPartitionsDefinition(
    cron_schedule="*/5 * * * *",
    start=os.environ.get("UI_BENCH_WINDOWS_START", "2026-01-01-00:00"),
    fmt="%Y-%m-%d-%H:%M",
    timezone="UTC",
)


@asset(partitions_def=five_minute_windows)
def delivery_log() -> None:
    """Stands in for the real asset; never materialized."""


defs = Definitions(assets=[delivery_log])
