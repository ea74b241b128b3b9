"""Deletions from SQL Server Change Data Capture, decided from the raw rows of the ``cdc_*``
queries (``sql/mssql/replica_queries.sql``).

A window reads its deletions over ``[start, end)`` (start already less the lookback). The
LSN range is ``sys.fn_cdc_map_time_to_lsn('smallest greater than or equal', start)`` to
``('largest less than or equal', end)``, clamped to the capture instance's
``sys.fn_cdc_get_min_lsn`` and to ``sys.fn_cdc_get_max_lsn()``, and the rows read are cut
to ``[start, end)`` by their commit time, so that a deletion committed at ``end`` belongs to
the next window only. Two cases are errors rather than an empty answer, because an empty
answer would be a silent miss:

- ``start`` is older than the oldest change the capture instance still keeps (its retention
  has removed what the window needs): ``CdcRetentionExceeded``;
- the capture has recorded the log only up to a time before ``end`` (the capture job on the
  primary is behind or stopped; it records its progress in ``cdc.lsn_time_mapping`` even
  when nothing changes): ``ReplicaBehind``, retried like a lagging replica.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from darwin_notify_assets.domain import keys
from darwin_notify_assets.domain.keys import RecordId
from darwin_notify_assets.domain.model import Problem
from darwin_notify_assets.errors import CdcRetentionExceeded, ConfigurationError, ReplicaBehind
from darwin_notify_assets.storage.db import as_datetime

# What sys.fn_cdc_get_min_lsn answers for a capture instance that does not exist, or that the
# login may not read.
NO_LSN = bytes(10)


@dataclass(frozen=True)
class LsnRange:
    """The LSNs to pass to ``cdc.fn_cdc_get_all_changes_<capture instance>``."""

    from_lsn: bytes
    to_lsn: bytes


def _lsn(value: Any) -> bytes | None:
    if value is None:
        return None
    return bytes(value)


def _when(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC"


def lsn_range(
    row: Mapping[str, Any] | None,
    capture_instance: str,
    table: str,
    start: datetime,
    end: datetime,
) -> LsnRange | None:
    """The LSN range of ``table``'s deletions in ``[start, end)`` from one ``cdc_lsn_bounds``
    row, or ``None`` when the capture recorded no transaction in it."""
    min_lsn = _lsn(row.get("min_lsn")) if row else None
    if min_lsn is None or min_lsn == NO_LSN:
        raise ConfigurationError(
            f"tables.{table}.deletions: capture instance {capture_instance} does not exist on "
            "the replica, or this login may not read its changes (darwin-notify check says which)"
        )
    assert row is not None
    min_time = as_datetime(row.get("min_time"))
    max_lsn = _lsn(row.get("max_lsn"))
    max_time = as_datetime(row.get("max_time"))
    if min_time is not None and start < min_time:
        raise CdcRetentionExceeded(
            f"deletions of {table} cannot be read from {_when(start)}: capture instance "
            f"{capture_instance} keeps changes only from {_when(min_time)} (its retention, "
            "sys.sp_cdc_change_job @retention, removed older ones, or CDC was enabled later); "
            "read no further back than that, or lengthen the retention"
        )
    if max_lsn is None or max_time is None or max_time < end:
        through = _when(max_time) if max_time is not None else "nothing yet"
        behind = (end - max_time).total_seconds() if max_time is not None else None
        raise ReplicaBehind(
            f"deletions of {table} not read: capture instance {capture_instance} has captured "
            f"the log through {through}, before {_when(end)}; the capture job on the primary is "
            "behind or stopped. Retry once it has caught up.",
            behind,
        )
    from_lsn, to_lsn = _lsn(row.get("from_lsn")), _lsn(row.get("to_lsn"))
    if from_lsn is None or to_lsn is None:
        return None
    # fn_cdc_get_all_changes_* refuses a range outside [min, max] (error 313).
    from_lsn, to_lsn = max(from_lsn, min_lsn), min(to_lsn, max_lsn)
    if from_lsn > to_lsn:
        return None
    return LsnRange(from_lsn, to_lsn)


def deletions_from_rows(
    table: str,
    rows: Sequence[Mapping[str, Any]],
    start: datetime,
    end: datetime,
    width: int = 1,
) -> list[tuple[str, RecordId, datetime]]:
    """``(table, record id, deleted at)`` per ``cdc_deletions`` row whose commit time falls
    in ``[start, end)``; a key deleted twice in the range (deleted, inserted again, deleted)
    is two deletions. A composite key of ``width`` columns comes as ``record_key_1``, ..."""
    out: list[tuple[str, RecordId, datetime]] = []
    names = ["record_id"] if width == 1 else [f"record_key_{n}" for n in range(1, width + 1)]
    for r in rows:
        at = as_datetime(r.get("deleted_at"))
        values = [r.get(n) for n in names]
        if at is None or not start <= at < end or any(v is None for v in values):
            continue
        out.append((table, keys.encode(values), at))
    return out


@dataclass(frozen=True)
class CaptureInstance:
    """What ``cdc.change_tables`` says of a capture instance, as this login sees it."""

    name: str
    source_schema: str
    source_table: str
    columns: tuple[str, ...]
    can_select: bool
    can_read_changes: bool


def capture_instance_from_rows(
    name: str, rows: Sequence[Mapping[str, Any]]
) -> CaptureInstance | None:
    """The capture instance from its ``cdc_capture_instance`` rows (one per captured
    column), or ``None`` when there are none."""
    if not rows:
        return None
    first = rows[0]
    return CaptureInstance(
        name=name,
        source_schema=str(first.get("source_schema") or ""),
        source_table=str(first.get("source_table") or ""),
        columns=tuple(str(r["column_name"]) for r in rows),
        can_select=bool(first.get("can_select")),
        can_read_changes=bool(first.get("can_read_changes")),
    )


def capture_part(capture_instance: str) -> str:
    """The name a capture instance's problems are filed under (``Problem.table``), so that
    only what reads it (delete schedules, totals) is skipped when it is broken."""
    return f"cdc:{capture_instance}"


def capture_problems(
    table: str, key: str | Sequence[str], capture_instance: str, found: CaptureInstance | None
) -> list[Problem]:
    """What stops ``table``'s deletions being read from ``capture_instance``, one each."""
    path = f"tables.{table}.deletions"
    part = capture_part(capture_instance)
    if found is None:
        return [
            Problem(
                path,
                part,
                f"capture instance {capture_instance} is not in cdc.change_tables (enable it "
                "with sys.sp_cdc_enable_table, or grant this login SELECT on cdc.change_tables)",
            )
        ]
    messages = []
    if found.source_table != table.rsplit(".", 1)[-1]:
        messages.append(
            f"capture instance {capture_instance} captures "
            f"{found.source_schema}.{found.source_table}, not {table}"
        )
    for column in keys.columns(key):
        if column not in found.columns:
            messages.append(
                f"capture instance {capture_instance} does not capture the key column {column}"
            )
    if not found.can_select:
        messages.append(
            "this login may not select from "
            f"cdc.fn_cdc_get_all_changes_{capture_instance} (GRANT SELECT ON SCHEMA::cdc)"
        )
    if not found.can_read_changes:
        messages.append(
            f"this login may not read the changes of capture instance {capture_instance} "
            "(add it to the capture instance's gating role)"
        )
    return [Problem(path, part, m) for m in messages]
