"""The one-command demo on the embedded default: seed, process windows through Dagster, audit.

Everything lives under one folder (``.demo`` by default): the sample darwin.Cloud
(``darwin.db``, opened read-only by the pipeline), the store (``store.db``), the file outbox
and a Dagster home whose runs the UI shows. Running it again regenerates the same darwin.Cloud
from the same seed and processes the same windows: the store's keys make every send happen
once, so a second run sends nothing new.
"""

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from darwin_notify_assets.config import Settings
from darwin_notify_assets.domain.audit import audit_report, rendered_count
from darwin_notify_assets.domain.detect import baseline
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.domain.pipeline import Runtime, load_schedules
from darwin_notify_assets.domain.privacy import mask_text
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.storage.db import connect

if TYPE_CHECKING:
    from dagster import DagsterInstance

DEMO_START = datetime(2026, 3, 2, 14, 0)


# The demo's Dagster instance: the chain's runs one at a time, as in a deployment.
DEMO_INSTANCE = """\
concurrency:
  runs:
    max_concurrent_runs: 2
    tag_concurrency_limits:
      - key: darwin_notify/chain
        limit: 1
telemetry:
  enabled: false
"""


@dataclass(frozen=True)
class DemoOptions:
    home: Path
    windows: int = 6
    seed: int = 7
    size: str = "demo"


def _dagster_instance(home: Path) -> "DagsterInstance":
    from dagster import DagsterInstance

    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    config.write_text(DEMO_INSTANCE, encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(dagster_home.resolve())
    return DagsterInstance.get()


def run_demo(options: DemoOptions, say: Callable[[str], None]) -> dict[str, Any]:
    from darwin_notify_assets.sample import seed

    home = options.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DARWIN_NOTIFY_HOME"] = str(home)
    settings = Settings.from_env(overrides={"home": str(home)})
    size = seed.SeedSize.small() if options.size == "small" else seed.SeedSize.demo()
    started = time.monotonic()

    say(f"darwin-notify demo in {home}")
    replica_path = home / "darwin.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{replica_path}{suffix}").unlink(missing_ok=True)
    source = connect(f"sqlite:///{replica_path}")
    seed.create_schema(source)
    dataset = seed.generate_base(size, options.seed, DEMO_START)
    seed.write_base(source, dataset)
    changes = seed.generate_changes(
        dataset, options.seed, DEMO_START, options.windows, settings.window_minutes
    )
    say("seeded darwin.Cloud: " + ", ".join(f"{n} {t}" for t, n in dataset.counts().items()))

    rt = Runtime.from_settings(settings)
    loaded = load_schedules(rt.replica)
    counts = baseline(rt.replica, rt.store, loaded.schedules)
    say("baseline of last-seen values: " + ", ".join(f"{n} {t}" for t, n in counts.items()))
    rt.close()

    instance = _dagster_instance(home)
    from darwin_notify_assets.defs.notifications.runs import run_window

    sent_before = _outbox_count(Path(settings.outbox_dir))
    per_window = []
    say("")
    say(
        f"{'window (UTC)':<18}{'changes':>9}{'read':>7}{'cands':>7}{'rendered':>9}"
        f"{'sent':>6}{'suppr':>7}{'failed':>8}{'new sends':>11}"
    )
    for wc in changes:
        seed.apply_window(source, wc)
        window = Window.containing(wc.start, settings.window_minutes)
        before = _sent(settings, window.partition_key)
        result = run_window(window.partition_key, instance)
        row = _window_row(settings, window, len(wc.operations), result.success)
        row["new_sends"] = row["sent"] - before
        per_window.append(row)
        say(
            f"{window.partition_key:<18}{row['changes']:>9}{row['rows_read']:>7}"
            f"{row['candidates']:>7}{row['rendered']:>9}{row['sent']:>6}{row['suppressed']:>7}"
            f"{row['failed']:>8}{row['new_sends']:>11}" + ("" if result.success else "  RUN FAILED")
        )
    source.close()

    audit = _audit(settings, [r["window"] for r in per_window])
    outbox = Path(settings.outbox_dir)
    sent_files = _outbox_count(outbox)
    say("")
    say(
        f"audit: {audit['duplicates']} duplicate sends, {audit['missed']} missed notifications, "
        f"{audit['unknown']} unknown"
    )
    for line in audit["reasons"][:8]:
        say(f"  not sent: {line}")
    say(f"emails and SMS are in {outbox} ({sent_files} files; {sent_files - sent_before} new)")
    say("open the Dagster UI on the same data:")
    say(
        f"  DAGSTER_HOME={os.environ['DAGSTER_HOME']} DARWIN_NOTIFY_HOME={home} "
        ".venv/bin/dagster dev -w workspace.yaml   (or: make ui)"
    )
    totals = {
        k: sum(r[k] for r in per_window)
        for k in (
            "changes",
            "rows_read",
            "candidates",
            "rendered",
            "sent",
            "suppressed",
            "failed",
            "new_sends",
        )
    }
    summary = {
        "home": str(home),
        "windows": per_window,
        "totals": totals,
        "duplicates": audit["duplicates"],
        "missed": audit["missed"],
        "unknown": audit["unknown"],
        "outbox": str(outbox),
        "outbox_files": sent_files,
        "runs_failed": sum(1 for r in per_window if not r["success"]),
        "seconds": round(time.monotonic() - started, 1),
    }
    say(json.dumps(summary, separators=(",", ":")))
    return summary


def _outbox_count(outbox: Path) -> int:
    if not outbox.exists():
        return 0
    return sum(1 for p in outbox.rglob("*") if p.suffix in (".eml", ".json"))


def _sent(settings: Settings, partition_key: str) -> int:
    rt = Runtime.from_settings(settings)
    try:
        return rt.store.status_counts(partition_key).get(MessageStatus.SENT, 0)
    finally:
        rt.close()


def _window_row(settings: Settings, window: Window, changes: int, success: bool) -> dict[str, Any]:
    rt = Runtime.from_settings(settings)
    try:
        store = rt.store
        status = store.status_counts(window.partition_key)
        info = store.window_info(window.partition_key) or {}
        return {
            "window": window.partition_key,
            "changes": changes,
            "rows_read": int(info.get("rows_read") or 0),
            "candidates": store.candidate_count(window.partition_key),
            "rendered": rendered_count(status),
            "sent": status.get(MessageStatus.SENT, 0),
            "suppressed": status.get(MessageStatus.SUPPRESSED, 0),
            "failed": status.get(MessageStatus.FAILED, 0)
            + status.get(MessageStatus.RENDER_FAILED, 0),
            "success": success,
        }
    finally:
        rt.close()


def _audit(settings: Settings, partitions: list[str]) -> dict[str, Any]:
    rt = Runtime.from_settings(settings)
    try:
        report = audit_report(rt.store, partitions)
    finally:
        rt.close()
    return {
        "duplicates": len(report.duplicates),
        "missed": sum(len(w.missed) for w in report.windows),
        "unknown": sum(len(w.unknown) for w in report.windows),
        "reasons": [
            f"{m['candidate_key']}: {m['status']} ({mask_text(m['reason'] or '')})"
            for w in report.windows
            for m in w.not_sent
            if m["status"] != MessageStatus.SUPPRESSED
        ],
    }
