"""The change-window partitions.

Dagster advises at most about 100,000 partitions per asset; five-minute windows reach that in
about a year. The partitions therefore start at ``DARWIN_NOTIFY_PARTITION_START``, which an
operator moves forward (say, once a year, to the first of the previous month): windows before
it leave the UI's partition list but keep their run history, and the store keeps every
candidate, message and send for the audit, which reads the store and not the partitions.
"""

from dagster import TimeWindowPartitionsDefinition

from darwin_notify_assets.config import Settings
from darwin_notify_assets.domain.windows import PARTITION_FORMAT


def change_windows_for(settings: Settings) -> TimeWindowPartitionsDefinition:
    return TimeWindowPartitionsDefinition(
        start=settings.partition_start,
        fmt=PARTITION_FORMAT,
        cron_schedule=f"*/{settings.window_minutes} * * * *",
        timezone="UTC",
    )


change_windows = change_windows_for(Settings.from_env())
