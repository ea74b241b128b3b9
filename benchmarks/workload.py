"""The benchmark's workload: a sample darwin.Cloud sized so one change window yields about
``--size`` notifications, from the five sample schedules.

Most of the volume is fan-out: "New listing" emails every contact of the listing agent (about
30 per agent), so a window with many new listings gives many notifications. The other
schedules contribute their share (welcome emails to new opted-in contacts, price-drop SMS to
agents, deal-posted emails with year-to-date totals, listing-removed emails).
"""

import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime

from darwin_notify_assets.sample import seed
from darwin_notify_assets.sample.demo import DEMO_START
from darwin_notify_assets.storage.db import Database

SEED = 7
INTENSITY = 8.0
# Candidates per contact of the base dataset in one window at INTENSITY (measured: 266,666
# contacts gave 92,476 candidates, 86% of them "New listing" fan-out).
CANDIDATES_PER_CONTACT = 0.347
WINDOW_MINUTES = 5


@dataclass(frozen=True)
class Workload:
    size: seed.SeedSize
    intensity: float
    window_start: datetime

    @property
    def partition_key(self) -> str:
        return self.window_start.strftime("%Y-%m-%d-%H:%M")


def workload_for(target_notifications: int, offices: int | None = None) -> Workload:
    """The workload of about ``target_notifications``; ``offices`` spreads the same agents,
    contacts and changes over that many offices instead of the usual 25 agents each."""
    contacts = max(120, int(target_notifications / CANDIDATES_PER_CONTACT))
    size = seed.SeedSize.scaled(contacts)
    if offices:
        size = replace(size, offices=offices)
    return Workload(size, INTENSITY, DEMO_START)


def seed_source(primary: Database, workload: Workload) -> tuple[seed.Dataset, dict[str, float]]:
    """Create the sample tables on the primary and write the base dataset."""
    timings = {}
    t = time.monotonic()
    dataset = seed.generate_base(workload.size, SEED, DEMO_START)
    timings["generate_base"] = time.monotonic() - t
    t = time.monotonic()
    seed.create_schema(primary)
    seed.write_base(primary, dataset)
    primary.execute("ANALYZE").close()
    primary.commit()
    timings["write_base"] = time.monotonic() - t
    return dataset, timings


def window_changes(dataset: seed.Dataset, workload: Workload) -> seed.WindowChanges:
    (changes,) = seed.generate_changes(
        dataset, SEED, workload.window_start, 1, WINDOW_MINUTES, intensity=workload.intensity
    )
    return changes


def changed_rows(changes: seed.WindowChanges) -> dict[str, int]:
    """Distinct rows changed per table (a row updated twice counts once); deletions also
    count their DeletedRecord row."""
    keys: dict[str, set[int]] = {}
    for op in changes.operations:
        if isinstance(op, seed.Insert):
            keys.setdefault(op.table, set()).add(op.key)
        elif isinstance(op, seed.Update):
            keys.setdefault(op.table, set()).add(op.key)
        else:
            keys.setdefault(op.table, set()).add(op.key)
            keys.setdefault("DeletedRecord", set()).add(op.deleted_record_id)
    return {t: len(v) for t, v in sorted(keys.items())}


def operation_counts(changes: seed.WindowChanges) -> dict[str, int]:
    return dict(sorted(Counter(str(op.kind) for op in changes.operations).items()))
