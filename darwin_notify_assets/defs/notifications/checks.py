"""The window's asset checks, one property each, computed from the store.

The checks are declared on their assets (``check_specs``) and evaluated in the same step, so
each one reads the windows its run processed (the run's ``darwin_notify/windows`` tag), as the
asset did, not the whole day of its partition; each says which windows in its metadata.
"""

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec

from darwin_notify_assets.domain.messages import FINAL_STATUSES, MessageStatus
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.storage.replica import ReplicaWatermark
from darwin_notify_assets.storage.store import NotificationStore

REPLICA_CAUGHT_UP = AssetCheckSpec(
    "replica_caught_up",
    asset="change_window",
    description="The replica had applied the window's end plus grace when it was read.",
)
AGENT_TOTALS_FRESH = AssetCheckSpec(
    "agent_totals_fresh",
    asset="agent_totals",
    blocking=True,
    description="Every agent the window touches has totals that include the window.",
)
NO_DUPLICATE_SENDS = AssetCheckSpec(
    "no_duplicate_sends",
    asset="delivery_log",
    description="No candidate key was handed to a provider twice.",
)
NO_MISSED_NOTIFICATIONS = AssetCheckSpec(
    "no_missed_notifications",
    asset="delivery_log",
    description="Every candidate has a message and every message reached a final status.",
)


def checked_windows(keys: Sequence[str]) -> dict[str, Any]:
    """Which windows a check evaluated: how many, the first and the last."""
    if not keys:
        return {"windows_checked": 0}
    return {"windows_checked": len(keys), "first_window": keys[0], "last_window": keys[-1]}


def replica_caught_up(
    watermark: ReplicaWatermark | None, windows: Sequence[Window], grace: timedelta
) -> AssetCheckResult:
    """The replica had applied the last window's end plus grace (a run with no window reads
    nothing and passes)."""
    if watermark is None or not windows:
        return AssetCheckResult(
            check_name=REPLICA_CAUGHT_UP.name, passed=True, metadata=checked_windows([])
        )
    needed = windows[-1].end + grace
    applied = watermark.applied_through
    return AssetCheckResult(
        check_name=REPLICA_CAUGHT_UP.name,
        passed=applied is not None and applied >= needed,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "needed_through": str(needed),
            "applied_through": str(applied),
            "replica_state": watermark.describe(),
            **checked_windows([w.partition_key for w in windows]),
        },
    )


def agent_totals_fresh(
    store: NotificationStore, touched: Sequence[tuple[list[int], Window]]
) -> AssetCheckResult:
    stale: list[int] = []
    for agents, window in touched:
        totals = store.totals(agents)
        stale += [a for a in agents if a not in totals or totals[a].computed_through < window.end]
    return AssetCheckResult(
        check_name=AGENT_TOTALS_FRESH.name,
        passed=not stale,
        metadata={
            "stale_agents": len(stale),
            "examples": ", ".join(map(str, stale[:50])) or "(none)",
            **checked_windows([w.partition_key for _, w in touched]),
        },
    )


def no_duplicate_sends(store: NotificationStore, window_keys: Sequence[str]) -> AssetCheckResult:
    duplicates = [d for key in window_keys for d in store.duplicate_sends(key)]
    return AssetCheckResult(
        check_name=NO_DUPLICATE_SENDS.name,
        passed=not duplicates,
        metadata={
            "duplicates": len(duplicates),
            "duplicate_keys": ", ".join(duplicates[:50]) or "(none)",
            **checked_windows(window_keys),
        },
    )


def no_missed_notifications(
    store: NotificationStore, window_keys: Sequence[str]
) -> AssetCheckResult:
    missing = [m for key in window_keys for m in store.missing_messages(key)]
    messages = [m for key in window_keys for m in store.messages(key)]
    open_messages = [m["candidate_key"] for m in messages if m["status"] not in FINAL_STATUSES]
    unknown = [m["candidate_key"] for m in messages if m["status"] == MessageStatus.UNKNOWN]
    return AssetCheckResult(
        check_name=NO_MISSED_NOTIFICATIONS.name,
        passed=not missing and not open_messages,
        metadata={
            "candidates_without_message": len(missing),
            "messages_not_final": len(open_messages),
            "unknown": len(unknown),
            "unknown_keys": ", ".join(unknown[:50]) or "(none)",
            "examples": ", ".join(missing[:20] + open_messages[:20]) or "(none)",
            **checked_windows(window_keys),
        },
    )
