"""How far a SQL Server replica has applied the primary's commits, from the raw row of the
``watermark`` query (``sql/mssql/replica_queries.sql``): ``sys.databases`` joined to the local
row of ``sys.dm_hadr_database_replica_states``.

The meaning is PostgreSQL's (``sql/postgresql/replica_queries.sql``): "applied through" is
the primary's commit time up to which every commit is visible here.

- A secondary that is caught up (data movement running, not suspended, nothing waiting to be
  redone or sent) is applied through the server's current time, as a streaming standby with
  all received WAL replayed is.
- Otherwise it is applied through ``last_commit_time``: on a secondary, the primary's time of
  the last commit record redone here (Microsoft documents it as the primary's time). Where the
  view also reports ``secondary_lag_seconds``, the earlier of the two is taken.
- A suspended secondary (``is_suspended``) is like a paused replay: applied through its last
  redone commit, ``replay_paused`` set, and its state names the suspension and its reason.
- The primary replica, and a database in no availability group that accepts writes, is the
  primary itself: applied through now, state ``primary`` (PostgreSQL's ``NOT
  pg_is_in_recovery()``).
- A database in no availability group that does not accept writes (a log-shipping standby,
  a database snapshot, a read-only or restoring copy) is some copy of unknown age: no applied
  position, so nothing runs, and the state says why.

The view's times are in the server's local time; they are moved to UTC by the server's
current offset (``SYSUTCDATETIME()`` against ``SYSDATETIME()``, read by the same statement).
"""

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from darwin_notify_assets.storage.db import as_datetime
from darwin_notify_assets.storage.replica import ReplicaWatermark

MOVING = frozenset({"SYNCHRONIZING", "SYNCHRONIZED"})


def _utc_offset(row: Mapping[str, Any]) -> tuple[datetime, timedelta]:
    now = as_datetime(row["server_utc_now"])
    local = as_datetime(row["server_local_now"])
    if now is None or local is None:
        raise ValueError("the watermark row lacks the server's clocks")
    # Both were read by one statement; time zones are whole minutes.
    minutes = round((now - local).total_seconds() / 60)
    return now, timedelta(minutes=minutes)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def watermark_from_row(row: Mapping[str, Any] | None) -> ReplicaWatermark:
    """The replica's watermark from one row of the SQL Server ``watermark`` query."""
    if row is None:
        return ReplicaWatermark(None, None, None, False, None, "unknown (no row for the database)")
    now, offset = _utc_offset(row)
    sync = _text(row.get("synchronization_state_desc")).upper()
    if not sync:
        return _outside_availability_group(row, now)
    hardened = row.get("last_hardened_lsn")
    redone = row.get("last_redone_lsn")
    receive = None if hardened is None else str(hardened)
    replay = None if redone is None else str(redone)
    if row.get("is_primary_replica"):
        return ReplicaWatermark(now, receive, replay, False, None, "primary")
    commit = as_datetime(row.get("last_commit_time"))
    last_commit = commit + offset if commit is not None else None
    suspended = bool(row.get("is_suspended"))
    redo_queue = _int(row.get("redo_queue_size"))
    send_queue = _int(row.get("log_send_queue_size"))
    lag = _int(row.get("secondary_lag_seconds"))
    caught_up = (
        not suspended
        and sync in MOVING
        and redo_queue == 0
        and send_queue in (None, 0)
        and lag in (None, 0)
    )
    if caught_up:
        applied: datetime | None = now
    else:
        applied = last_commit
        if applied is not None and lag is not None and lag > 0:
            applied = min(applied, now - timedelta(seconds=lag))
    if suspended:
        reason = _text(row.get("suspend_reason_desc")) or "reason not reported"
        state = f"suspended ({reason})"
    else:
        state = sync.lower()
    return ReplicaWatermark(applied, receive, replay, suspended, last_commit, state)


def _outside_availability_group(row: Mapping[str, Any], now: datetime) -> ReplicaWatermark:
    database_state = _text(row.get("database_state")).upper()
    updateability = _text(row.get("updateability")).upper()
    standby = bool(row.get("is_in_standby"))
    snapshot = bool(row.get("is_snapshot"))
    if database_state == "ONLINE" and updateability == "READ_WRITE" and not (standby or snapshot):
        return ReplicaWatermark(now, None, None, False, None, "primary")
    why = (
        "a database snapshot"
        if snapshot
        else "a standby (log shipping)"
        if standby
        else f"{database_state or 'state unknown'}, {updateability or 'updateability unknown'}"
    )
    return ReplicaWatermark(
        None,
        None,
        None,
        False,
        None,
        f"not in an availability group and not the primary ({why}): how far it has applied "
        "is unknown",
    )
