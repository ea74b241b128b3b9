"""The workers' health, as a data team watches it: the bus's backlog per worker group, the
messages waiting to be sent and since when, and claims that never finished."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from darwin_notify_assets.bus.base import JobBus, JobKind
from darwin_notify_assets.storage.store import NotificationStore


@dataclass(frozen=True)
class Limits:
    """Where a check turns red."""

    max_backlog_jobs: int = 200
    max_queued_age_seconds: float = 900.0
    max_stuck_claims: int = 0


@dataclass(frozen=True)
class WorkerHealth:
    measured_at: datetime
    # Jobs not yet acknowledged per worker group; None when the bus cannot tell.
    backlog: dict[str, int | None]
    queued: int
    oldest_queued_age_seconds: float | None
    stuck_claims: int

    def backlog_ok(self, kind: JobKind, limits: Limits) -> bool:
        value = self.backlog.get(str(kind))
        return value is not None and value <= limits.max_backlog_jobs

    def queue_ok(self, limits: Limits) -> bool:
        age = self.oldest_queued_age_seconds
        return age is None or age <= limits.max_queued_age_seconds

    def claims_ok(self, limits: Limits) -> bool:
        return self.stuck_claims <= limits.max_stuck_claims

    def metadata(self, kind: JobKind) -> dict[str, Any]:
        out: dict[str, Any] = {"measured_at": self.measured_at.isoformat(sep=" ")}
        backlog = self.backlog.get(str(kind))
        out["bus_backlog_jobs"] = -1 if backlog is None else backlog
        if kind == JobKind.SEND:
            out["queued_messages"] = self.queued
            out["oldest_queued_age_seconds"] = round(self.oldest_queued_age_seconds or 0.0, 1)
            out["stuck_claims"] = self.stuck_claims
        return out


def measure(
    store: NotificationStore,
    bus: JobBus,
    sending_expiry: timedelta,
    now: datetime,
    lag: Callable[[JobKind], int | None] | None = None,
) -> WorkerHealth:
    """One reading: ``lag`` (by default the bus's) per worker group, the store's queue."""

    def backlog(kind: JobKind) -> int | None:
        if lag is not None:
            return lag(kind)
        reader = getattr(bus, "lag", None)
        if reader is None:
            return None if bus.idle(kind) is None else 0 if bus.idle(kind) else None
        try:
            return int(reader(kind))
        except Exception:  # noqa: BLE001 - a broker that cannot answer is reported, not raised
            return None

    queued, oldest, stuck = store.queue_health(now - sending_expiry)
    return WorkerHealth(
        measured_at=now,
        backlog={str(k): backlog(k) for k in JobKind},
        queued=queued,
        oldest_queued_age_seconds=(now - oldest).total_seconds() if oldest else None,
        stuck_claims=stuck,
    )
