"""Schedules of many offices: each office's own copy of the five sample schedules.

An office's copy adds the criterion ``OfficeID eq <office>`` (the sample model's tenant
column) to the sample schedule's own criteria, so across all offices they send exactly what
the five sample schedules send, from ``offices x 5`` schedules. The benchmark
(``--schedules``/``--offices``) and the tests of the schedule index use them.
"""

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from darwin_notify_assets.sample.seed import COLUMNS, SAMPLE_SCHEDULES, Row
from darwin_notify_assets.sample.seed import _insert as seed_insert
from darwin_notify_assets.storage.db import Database

TENANT_COLUMN = "OfficeID"


def tenant_schedules(count: int, offices: int) -> list[dict[str, Any]]:
    """``count`` schedules, office 1's five first, then office 2's, ..., wrapping round
    ``offices``; ids from 1. Criteria as lists."""
    if count < 1 or offices < 1:
        raise ValueError("tenant schedules need a count and offices of at least 1")
    out = []
    per = len(SAMPLE_SCHEDULES)
    for i in range(count):
        base = SAMPLE_SCHEDULES[i % per]
        office = (i // per) % offices + 1
        out.append(
            {
                **base,
                "ScheduleID": i + 1,
                "Name": f"{base['Name']} (office {office})",
                "Criteria": [
                    *base["Criteria"],
                    {"column": TENANT_COLUMN, "op": "eq", "value": office},
                ],
            }
        )
    return out


def schedule_rows(schedules: Sequence[dict[str, Any]], modified: datetime) -> list[Row]:
    """NotificationSchedule rows in ``COLUMNS`` order (Criteria as JSON)."""
    rows = []
    for s in schedules:
        values = {**s, "Criteria": json.dumps(s["Criteria"]), "ModifiedDate": modified}
        rows.append(tuple(values[c] for c in COLUMNS["NotificationSchedule"]))
    return rows


def replace_schedules(db: Database, schedules: Sequence[dict[str, Any]], modified: datetime) -> int:
    """Make ``schedules`` the darwin.Cloud's only schedules, in one transaction."""
    table = db.quote("NotificationSchedule")
    try:
        db.execute(f"DELETE FROM {table}").close()
        count = seed_insert(db, "NotificationSchedule", schedule_rows(schedules, modified))
        db.commit()
    except Exception:
        db.rollback()
        raise
    return count
