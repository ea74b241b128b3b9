"""Rows of the SQL Server ``watermark`` query (``sql/mssql/replica_queries.sql``), for tests.

They have the shape and the Python types the query returns through pyodbc (LSNs as text,
``bit`` as bool, sizes as int, naive datetimes in the server's local time, here five hours
behind UTC), with values as SQL Server reports them in each state of a secondary. They were
not captured from a live server: none can run here (docs/sqlserver.md).
"""

from datetime import datetime, timedelta

UTC_NOW = datetime(2026, 3, 2, 14, 20, 0, 123456)
LOCAL = timedelta(hours=-5)


def local(utc: datetime) -> datetime:
    return utc + LOCAL


def secondary(**changes) -> dict:
    """A readable secondary's row; by default one that is caught up."""
    row = {
        "database_state": "ONLINE",
        "updateability": "READ_ONLY",
        "is_in_standby": False,
        "is_snapshot": 0,
        "is_primary_replica": False,
        "synchronization_state_desc": "SYNCHRONIZING",
        "is_suspended": False,
        "suspend_reason_desc": None,
        "last_hardened_lsn": "48000000131200001",
        "last_redone_lsn": "48000000131100002",
        "last_hardened_time": local(UTC_NOW - timedelta(seconds=1)),
        "last_redone_time": local(UTC_NOW - timedelta(seconds=1)),
        "last_commit_time": local(datetime(2026, 3, 2, 14, 19, 58, 500000)),
        "redo_queue_size": 0,
        "log_send_queue_size": 0,
        "secondary_lag_seconds": 0,
        # One statement reads both clocks, a few microseconds apart.
        "server_utc_now": UTC_NOW,
        "server_local_now": local(UTC_NOW) + timedelta(microseconds=40),
    }
    row.update(changes)
    return row


def outside_availability_group(**changes) -> dict:
    row = {key: None for key in secondary()}
    row.update(
        database_state="ONLINE",
        updateability="READ_WRITE",
        is_in_standby=False,
        is_snapshot=0,
        server_utc_now=UTC_NOW,
        server_local_now=local(UTC_NOW),
    )
    row.update(changes)
    return row
