"""The pipeline, stage by stage, as the Dagster assets run it (a child process of bench.py).

Each stage opens its own ``Runtime`` (replica, store, a Kafka bus) and closes it, as each asset
does; render and send jobs go through Kafka and are handled by the Runtime's inline workers.
Between stages, outside the timings, the standby's table statistics are read, so the replica
rows each stage read can be told apart.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.cpu import CpuGroups
from benchmarks.instrument import Timers, peak_rss_mb
from benchmarks.sampler import Sampler
from benchmarks.stack import replica_table_stats, stats_delta
from darwin_notify_assets.bus.kafka import KafkaBus
from darwin_notify_assets.config import Settings
from darwin_notify_assets.delivery.senders import SendGridSender, TwilioSmsSender
from darwin_notify_assets.delivery.workers import RenderWorker, SendWorker
from darwin_notify_assets.domain.pipeline import (
    Runtime,
    load_schedules,
    stage_agent_totals,
    stage_candidates,
    stage_change_window,
    stage_deliver,
    stage_render,
)
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.storage.replica import ReplicaReader
from darwin_notify_assets.storage.store import NotificationStore
from darwin_notify_tests.services import start_worker, stop_processes


def instrument(timers: Timers) -> None:
    for name in ("read_changes",):
        timers.wrap(ReplicaReader, name, f"replica.{name}", generator=True)
    for name in ("read_deletions", "fetch_by_ids", "fetch_grouped", "load_schedules", "watermark"):
        timers.wrap(ReplicaReader, name, f"replica.{name}")
    for name in (
        "save_detection",
        "snapshots",
        "record_window",
        "window_agents",
        "recompute_totals",
        "totals",
        "insert_candidates",
        "stream_events",
        "stream_unrendered",
        "unrendered_count",
        "load_render_items",
        "insert_messages",
        "queued_ids",
        "claim",
        "finish",
        "expire_sending",
        "open_message_count",
        "status_counts",
    ):
        generator = name.startswith("stream_")
        timers.wrap(NotificationStore, name, f"store.{name}", generator=generator)
    timers.wrap(RenderWorker, "render_one", "render.render_one")
    timers.wrap(RenderWorker, "fetch", "render.fetch")
    timers.wrap(RenderWorker, "handle", "render.handle")
    timers.wrap(SendWorker, "handle", "send.handle")
    timers.wrap(SendGridSender, "send", "send.sendgrid")
    timers.wrap(TwilioSmsSender, "send", "send.twilio")
    timers.wrap(KafkaBus, "publish", "kafka.publish")


def start_workers(config: dict[str, Any], count: int) -> list[subprocess.Popen]:
    env = dict(os.environ)
    if config.get("profile_dir"):
        env["DARWIN_NOTIFY_BENCH_PROFILE_DIR"] = config["profile_dir"]
    env["DARWIN_NOTIFY_BENCH_TIMERS_DIR"] = str(Path(config["result_path"]).parent)
    logs = Path(config["result_path"]).parent
    worker = str(Path(__file__).with_name("worker.py"))
    return [
        start_worker(kind, logs / f"worker-{kind}-{i}.log", env, [sys.executable, worker, kind])
        for kind in ("render", "send")
        for i in range(count)
    ]


def stop_workers(workers: list[subprocess.Popen]) -> dict[str, float]:
    """Stop the worker processes; their peak RSS, by name."""
    rss = {f"{p.args[-1]} worker {p.pid}": peak_rss_mb(p.pid) for p in workers}
    stop_processes(workers)
    return rss


def run(config: dict[str, Any], say) -> dict[str, Any]:
    overrides = dict(config.get("settings", {}))
    external = config.get("workers", "processes") == "processes"
    if external:
        overrides["inline_workers"] = 0
    settings = Settings.from_env(overrides=overrides)
    window = Window.from_key(config["partition_key"], settings.window_minutes)
    prefix = config["topic_prefix"]
    cpu = CpuGroups(config["services_dir"], config["sink_pids"], config.get("kafka_pid_file", ""))
    timers = Timers()
    instrument(timers)

    def new_bus() -> KafkaBus:
        # Consumer groups of the benchmark's own: the suite's workers never join them.
        return KafkaBus(
            settings.kafka_bootstrap,
            topic_prefix=prefix,
            partitions=settings.kafka_partitions,
            group_prefix=prefix,
        )

    # Topics exist before the first window in production; create them outside the timings.
    warm = new_bus()
    warm.ensure_topics()
    warm.close()

    profile_dir = config.get("profile_dir")
    workers = start_workers(config, 2) if external else []
    if workers:
        time.sleep(5)  # standing workers: started and in their groups before the window
    say("ready")
    go = sys.stdin.readline().split()
    committed_at = float(go[1]) if len(go) > 1 else time.time()

    stages: dict[str, dict[str, Any]] = {}
    results: dict[str, Any] = {}
    # Standing worker processes keep their replica sessions, so the per-stage statistics are
    # only complete with inline workers; do not wait long for sessions that never end.
    settle = 1.0 if external else 10.0
    stats_before = replica_table_stats(config["replica_admin_url"], settle)

    def stage(name: str, fn, read_stats: bool = True) -> Any:
        nonlocal stats_before
        timers.reset()
        cpu_before = cpu.snapshot()
        started = time.time()
        rt = Runtime.from_settings(settings, bus=new_bus())
        sampler = Sampler() if profile_dir else None
        try:
            if sampler:
                sampler.start()
            value = fn(rt)
        finally:
            if sampler:
                sampler.stop()
            rt.close()
        ended = time.time()
        cpu_after = cpu.snapshot()
        cpu_used = CpuGroups.delta(cpu_before, cpu_after)
        restarted = cpu.restarted(cpu_before, cpu_after)
        # With standing workers, rendering starts during the candidates stage: no pause to
        # read statistics between the two, whose reads are then counted together.
        stats_after = (
            replica_table_stats(config["replica_admin_url"], settle) if read_stats else None
        )
        stages[name] = {
            "seconds": round(ended - started, 3),
            "started": started,
            "ended": ended,
            "cpu_seconds": cpu_used,
            "restarted_services": restarted,
            "timers": timers.snapshot(),
            "replica_reads": stats_delta(stats_before, stats_after) if read_stats else None,
            "rss_mb": peak_rss_mb(),
        }
        if read_stats:
            stats_before = stats_after
        if sampler:
            sampler.write(f"{profile_dir}/profile-{name}.txt")
            stages[name]["profile"] = f"{profile_dir}/profile-{name}.txt"
        say(
            f"  {name:<11} {ended - started:7.2f} s"
            + (f"  DISTURBED: {', '.join(restarted)} restarted" if restarted else "")
        )
        return value

    loaded_box: dict[str, Any] = {}

    def detect(rt: Runtime):
        loaded_box["loaded"] = load_schedules(rt.replica)
        result, watermark = stage_change_window(rt, window, loaded_box["loaded"])
        return result

    detection = stage("detect", detect)
    results["detect"] = detection.as_metadata()
    results["totals"] = stage("totals", lambda rt: stage_agent_totals(rt, window)).as_metadata()
    candidates = stage(
        "candidates",
        lambda rt: stage_candidates(rt, window, loaded_box["loaded"]),
        read_stats=not external,
    )
    results["candidates"] = candidates.as_metadata()
    results["render"] = stage(
        "render", lambda rt: stage_render(rt, window, loaded_box["loaded"], lambda m: None)
    )
    if not config.get("skip_send"):
        results["deliver"] = stage("send", lambda rt: stage_deliver(rt, window, lambda m: None))

    worker_rss = stop_workers(workers)
    # The workers' own method timings, summed per kind (worker time over their whole run).
    worker_timers: dict[str, dict[str, dict[str, float]]] = {}
    for path in sorted(Path(config["result_path"]).parent.glob("worker-timers-*.json")):
        data = json.loads(path.read_text())
        into = worker_timers.setdefault(data["kind"], {})
        for label, t in data["timers"].items():
            acc = into.setdefault(label, {"seconds": 0.0, "calls": 0})
            acc["seconds"] = round(acc["seconds"] + t["seconds"], 3)
            acc["calls"] += t["calls"]
    out: dict[str, Any] = {
        "worker_timers": worker_timers,
        "workers": config.get("workers", "processes"),
        "worker_peak_rss_mb": worker_rss,
        "committed_at": committed_at,
        "queued_at": stages["render"]["ended"],
        "sent_at": stages["send"]["ended"] if "send" in stages else None,
        "pipeline_started": stages["detect"]["started"],
        "stages": stages,
        "results": results,
        "peak_rss_mb": peak_rss_mb(),
        "settings": {
            k: getattr(settings, k)
            for k in (
                "inline_workers",
                "render_batch",
                "send_batch",
                "send_concurrency",
                "kafka_partitions",
            )
        },
    }
    return out
