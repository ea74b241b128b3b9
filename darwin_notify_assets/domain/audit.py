"""The audit: per window, changes -> candidates -> messages -> provider handoffs -> outcomes,
with every missed, duplicate or ``unknown`` notification listed by its key.

``audit_frame`` is the same as one table for the data team's tools (CSV, Parquet): one
``window`` row of counts per window, then one row per missed, duplicate, unknown, suppressed
or failed notification, with its key, status and reason (masked).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from darwin_notify_assets.domain.messages import FINAL_STATUSES, MessageStatus
from darwin_notify_assets.domain.privacy import mask_text
from darwin_notify_assets.errors import DarwinNotifyError
from darwin_notify_assets.storage.db import as_datetime
from darwin_notify_assets.storage.store import NotificationStore, utcnow

#: A deferred message still deferred this long after its time is stranded, not waiting: the
#: deferred-messages sensor releases due ones within a minute or two.
STRANDED_AFTER = timedelta(minutes=30)

NOT_RENDERED = (MessageStatus.RENDER_FAILED, MessageStatus.SUPPRESSED)
NOT_SENT = (MessageStatus.RENDER_FAILED, MessageStatus.SUPPRESSED, MessageStatus.FAILED)


def rendered_count(status_counts: Mapping[str, int]) -> int:
    """Messages that were rendered: every message but those that failed or were suppressed."""
    statuses = set(MessageStatus)
    return sum(n for s, n in status_counts.items() if s in statuses and s not in NOT_RENDERED)


def accounted_for(message: Mapping[str, Any], now: datetime | None = None) -> bool:
    """Final, or deferred and waiting for its time (not stranded past it)."""
    if message["status"] in FINAL_STATUSES:
        return True
    if message["status"] != MessageStatus.DEFERRED:
        return False
    until = as_datetime(message.get("deferred_until"))
    return until is not None and until + STRANDED_AFTER > (now or utcnow())


@dataclass
class WindowAudit:
    partition_key: str
    events: int
    candidates: int
    messages: int
    claimed: int
    outcomes: dict[str, int]
    missed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    # Every message that will not be sent: candidate key, status and reason.
    not_sent: list[dict[str, str]] = field(default_factory=list)
    # The unknown messages' reasons, by candidate key.
    unknown_reasons: dict[str, str] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)


@dataclass
class AuditReport:
    windows: list[WindowAudit]
    duplicates: list[str]

    @property
    def clean(self) -> bool:
        return not self.duplicates and not any(w.missed for w in self.windows)

    def lines(self) -> list[str]:
        out = [f"{'window':<18}{'changes':>9}{'cands':>7}{'msgs':>7}{'claimed':>9}  outcomes"]
        for w in self.windows:
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(w.outcomes.items())) or "-"
            out.append(
                f"{w.partition_key:<18}{w.events:>9}{w.candidates:>7}{w.messages:>7}"
                f"{w.claimed:>9}  {outcomes}"
            )
        for w in self.windows:
            out += [f"MISSED  {w.partition_key}  {key}" for key in w.missed]
            out += [f"UNKNOWN {w.partition_key}  {key}" for key in w.unknown]
        out += [f"DUPLICATE {key}" for key in self.duplicates]
        out.append(
            f"{len(self.windows)} windows; {sum(len(w.missed) for w in self.windows)} missed, "
            f"{len(self.duplicates)} duplicates, {sum(len(w.unknown) for w in self.windows)} "
            "unknown (a person decides: see docs/guarantees.md)"
        )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "windows": [
                {k: v for k, v in w.__dict__.items() if k != "unknown_reasons"}
                for w in self.windows
            ],
            "duplicates": self.duplicates,
            "clean": self.clean,
        }


def audit_window(store: NotificationStore, partition_key: str) -> WindowAudit:
    messages = store.messages(partition_key)
    outcomes: dict[str, int] = {}
    for m in messages:
        outcomes[m["status"]] = outcomes.get(m["status"], 0) + 1
    now = utcnow()
    missed = store.missing_messages(partition_key) + [
        m["candidate_key"] for m in messages if not accounted_for(m, now)
    ]
    return WindowAudit(
        partition_key=partition_key,
        events=store.event_count(partition_key),
        candidates=store.candidate_count(partition_key),
        messages=len(messages),
        claimed=sum(1 for m in messages if int(m["attempts"] or 0) > 0),
        outcomes=outcomes,
        missed=missed,
        unknown=[m["candidate_key"] for m in messages if m["status"] == MessageStatus.UNKNOWN],
        unknown_reasons={
            m["candidate_key"]: m["reason"] or ""
            for m in messages
            if m["status"] == MessageStatus.UNKNOWN
        },
        duplicates=store.duplicate_sends(partition_key),
        not_sent=[
            {"candidate_key": m["candidate_key"], "status": m["status"], "reason": m["reason"]}
            for m in messages
            if m["status"] in NOT_SENT
        ],
    )


def audit_report(
    store: NotificationStore,
    partitions: list[str],
    since: str | None = None,
    until: str | None = None,
) -> AuditReport:
    keys = list(partitions)
    if since or until or not keys:
        keys += [k for k in store.candidate_windows(since or None, until or None) if k not in keys]
    windows = [audit_window(store, k) for k in sorted(keys)]
    duplicates = sorted({d for w in windows for d in w.duplicates})
    return AuditReport(windows=windows, duplicates=duplicates)


#: The export's columns, in order: the window's counts, then an item's key, status, reason.
COUNT_COLUMNS = ["changes", "candidates", "messages", "provider_requests"] + [
    str(s) for s in MessageStatus
]
FRAME_COLUMNS = ["window", "kind", "candidate_key", "status", "reason", *COUNT_COLUMNS]


def audit_frame(report: AuditReport) -> pd.DataFrame:
    """The audit as one table: a ``window`` row per window with its counts, and a row per
    ``missed``, ``duplicate``, ``unknown`` and not-sent (``suppressed``, ``render_failed``,
    ``failed``) notification by key, with its status and masked reason."""
    rows: list[dict[str, Any]] = []
    for w in report.windows:
        rows.append(
            {
                "window": w.partition_key,
                "kind": "window",
                "changes": w.events,
                "candidates": w.candidates,
                "messages": w.messages,
                "provider_requests": w.claimed,
                **{str(s): w.outcomes.get(str(s), 0) for s in MessageStatus},
            }
        )
        rows += [
            {"window": w.partition_key, "kind": "missed", "candidate_key": k} for k in w.missed
        ]
        rows += [
            {"window": w.partition_key, "kind": "duplicate", "candidate_key": k, "status": "sent"}
            for k in w.duplicates
        ]
        rows += [
            {
                "window": w.partition_key,
                "kind": "unknown",
                "candidate_key": k,
                "status": str(MessageStatus.UNKNOWN),
                "reason": mask_text(w.unknown_reasons.get(k, "")),
            }
            for k in w.unknown
        ]
        rows += [
            {
                "window": w.partition_key,
                "kind": str(m["status"]),
                "candidate_key": m["candidate_key"],
                "status": str(m["status"]),
                "reason": mask_text(m["reason"] or ""),
            }
            for m in w.not_sent
        ]
    frame = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    for c in COUNT_COLUMNS:
        frame[c] = frame[c].astype("Int64")
    for c in ("window", "kind", "candidate_key", "status", "reason"):
        frame[c] = frame[c].astype("string")
    return frame


def export_audit(frame: pd.DataFrame, path: str, fmt: str) -> None:
    """Write the audit frame as ``csv`` or ``parquet`` to ``path``.

    Raises:
        DarwinNotifyError: Parquet without pyarrow installed, or a path that cannot be
            written; in one line.
    """
    try:
        if fmt == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise DarwinNotifyError(
                    "--parquet needs pyarrow: pip install 'darwin-notify[parquet]'"
                ) from None
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
    except OSError as exc:
        raise DarwinNotifyError(f"cannot write {path}: {exc.strerror or exc}") from None
