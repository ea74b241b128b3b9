"""Change windows: the time ranges partitions stand for."""

from dataclasses import dataclass
from datetime import datetime, timedelta

PARTITION_FORMAT = "%Y-%m-%d-%H:%M"


@dataclass(frozen=True)
class Window:
    """``[start, end)`` in naive UTC, named by its partition key."""

    partition_key: str
    start: datetime
    end: datetime

    @classmethod
    def from_key(cls, partition_key: str, minutes: int) -> "Window":
        start = datetime.strptime(partition_key, PARTITION_FORMAT)
        return cls(partition_key, start, start + timedelta(minutes=minutes))

    @classmethod
    def containing(cls, moment: datetime, minutes: int) -> "Window":
        floor = moment.replace(second=0, microsecond=0)
        floor -= timedelta(minutes=floor.minute % minutes)
        return cls(floor.strftime(PARTITION_FORMAT), floor, floor + timedelta(minutes=minutes))

    def read_from(self, lookback: timedelta) -> datetime:
        return self.start - lookback
