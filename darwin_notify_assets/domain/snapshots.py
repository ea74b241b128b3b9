"""Schedule snapshots: one run works from one reading of the schedules and templates.

A snapshot is what the schedules are built from (their rows, the templates' rows, and the
columns of the tables they name), as canonical JSON; its version is the hash of that text,
so the same schedules always have the same version. The store keeps each version once, the
run that took it names it, and every message rendered from it carries it.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from darwin_notify_assets.domain.model import SourceModel
from darwin_notify_assets.domain.schedules import ScheduleSet, build_schedule_set


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


@dataclass(frozen=True)
class ScheduleSnapshot:
    version: str
    body: str

    @classmethod
    def of(cls, source: Mapping[str, Any]) -> "ScheduleSnapshot":
        """The snapshot of ``schedule_source()``'s result."""
        plain = {
            # In the order read (the query orders them); templates are looked up by id.
            "schedule_rows": [dict(r) for r in source["schedule_rows"]],
            "template_rows": sorted(
                (dict(r) for r in source["template_rows"]),
                key=lambda r: json.dumps(r, sort_keys=True, default=_plain),
            ),
            "catalog": {k: list(v) for k, v in sorted(source["catalog"].items())},
        }
        body = json.dumps(plain, sort_keys=True, separators=(",", ":"), default=_plain)
        return cls(hashlib.sha256(body.encode()).hexdigest()[:16], body)

    def schedules(self, model: SourceModel | None = None) -> ScheduleSet:
        """The schedules, read through ``model`` (the source model the process runs with)."""
        data = json.loads(self.body)
        return build_schedule_set(
            data["schedule_rows"],
            data["template_rows"],
            {k: tuple(v) for k, v in data["catalog"].items()},
            model,
        )
