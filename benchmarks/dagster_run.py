"""The same window through Dagster, in process (a child process of bench.py).

The ``notify_window`` job runs with its assets up to ``rendered_messages`` (change -> queued),
on a store of its own that was baselined like the staged run's, with Dagster's run storage in
PostgreSQL (the repository's ``dagster.yaml``), and the same worker layout as the staged run
(standing ``darwin-notify worker`` processes unless ``--workers inline``). Sending is measured by the staged run only, so
the sinks see each notification once from the pipeline.
"""

import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.instrument import peak_rss_mb
from benchmarks.stack import REPO_ROOT

ASSETS = (
    "notification_schedules",
    "change_window",
    "agent_totals",
    "candidate_notifications",
    "rendered_messages",
)


def run(config: dict[str, Any], say) -> dict[str, Any]:
    import os

    from dagster import AssetKey, DagsterEventType, DagsterInstance

    from darwin_notify_assets.bus.kafka import KafkaBus
    from darwin_notify_assets.config import Settings
    from darwin_notify_assets.defs.notifications.partitions import WINDOWS_TAG
    from darwin_notify_assets.defs.notifications.runs import QUIET_RUN_CONFIG
    from darwin_notify_assets.storage.store import NotificationStore

    standing = config.get("workers", "processes") == "processes"
    if standing:
        os.environ["DARWIN_NOTIFY_INLINE_WORKERS"] = "0"
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    instance = DagsterInstance.from_config(str(home))
    from darwin_notify_assets.definitions import build_defs

    job = build_defs().resolve_job_def("notify_window")
    settings = Settings.from_env()
    KafkaBus.from_settings(settings).ensure_topics()
    workers = []
    if standing:
        from benchmarks.staged import start_workers, stop_workers

        workers = start_workers(config, 2)
        time.sleep(5)  # standing workers: in their groups before the window
    say("ready")
    sys.stdin.readline()
    try:
        started = time.monotonic()
        window = config["partition_key"]
        result = job.execute_in_process(
            partition_key=window[:10],
            tags={WINDOWS_TAG: window[11:]},
            instance=instance,
            run_config=QUIET_RUN_CONFIG,
            raise_on_error=False,
            asset_selection=[AssetKey(a) for a in ASSETS],
        )
        elapsed = time.monotonic() - started
    finally:
        if workers:
            stop_workers(workers)
    steps: dict[str, dict[str, float]] = {}
    for entry in instance.all_logs(result.run_id):
        ev = entry.dagster_event
        if ev is None or not ev.step_key:
            continue
        if ev.event_type == DagsterEventType.STEP_START:
            steps.setdefault(ev.step_key, {})["start"] = entry.timestamp
        elif ev.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            steps.setdefault(ev.step_key, {})["end"] = entry.timestamp
    step_seconds = {
        k: round(v["end"] - v["start"], 3) for k, v in steps.items() if "start" in v and "end" in v
    }
    store = NotificationStore.open(settings.store_url)
    try:
        counts = store.status_counts(config["partition_key"])
    finally:
        store.close()
    messages = sum(counts.values())
    say(
        f"  dagster: {messages} messages queued in {elapsed:.1f}s "
        f"({'success' if result.success else 'FAILED'})"
    )
    return {
        "success": result.success,
        "workers": "processes" if standing else "inline",
        "seconds": round(elapsed, 3),
        "step_seconds": step_seconds,
        "messages": messages,
        "status_counts": counts,
        "notifications_per_second": round(messages / elapsed, 1) if elapsed else None,
        "peak_rss_mb": peak_rss_mb(),
    }
