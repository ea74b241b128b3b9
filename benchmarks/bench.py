"""darwin-notify benchmark on the real stack (``make bench``).

One change window of about ``--size`` notifications (default 100,000) goes through the
pipeline: PostgreSQL primary -> streaming standby -> change detection -> agent totals ->
candidates -> render jobs on Kafka -> render workers -> messages in the PostgreSQL store ->
send jobs on Kafka -> send workers -> the SendGrid / Twilio-compatible sinks.

Measured in the same run, on the same data and stack:

* the pipeline stage by stage (``staged``: the stage functions with a Runtime, inline workers,
  Kafka bus), and the same window through Dagster in process (``dagster``: the job's assets up
  to ``rendered_messages``, on a second store baselined like the first);
* a naive per-row pipeline (``naive``), on a random sample of the window's changed records
  for a time budget (rate-based comparison);
* each stage's standalone limit (``limits``): Jinja2 render-only on both cores, bulk insert-only
  into the store, Kafka produce+consume-only, replica range reads;
* statements on the primary, replica rows read per row changed, sequential scans, peak memory.

Each measured part runs in a child process (one process tree); the table goes to stdout and
the same figures as JSON on the last line. ``--size 300`` is a quick smoke run.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report  # noqa: E402
from benchmarks.stack import (  # noqa: E402
    BenchStack,
    StackError,
    service_pids,
    services_env,
    stats_delta,
)
from benchmarks.workload import (  # noqa: E402
    changed_rows,
    operation_counts,
    seed_source,
    window_changes,
    workload_for,
)

DEFAULT_SIZE = 100_000


# The orchestrator's bar of steps done (its log lines are the steps); None in the phases' own
# processes and until main starts it.
_steps: Any = None


def log(message: str) -> None:
    if _steps is not None and not _steps.disable:
        _steps.write(f"[bench] {message}", file=sys.stderr)
        _steps.update(1)
        return
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


# -- child processes --------------------------------------------------------------------------
class Child:
    """A measured part of the benchmark in its own process: ``bench.py --phase NAME``."""

    def __init__(
        self, stack: BenchStack, phase: str, config: dict[str, Any], store: str, topic_prefix: str
    ):
        self.phase = phase
        run_dir = stack.run_dir
        self.result_path = run_dir / f"{phase}.result.json"
        config = {**config, "result_path": str(self.result_path)}
        config_path = run_dir / f"{phase}.config.json"
        config_path.write_text(json.dumps(config, default=str))
        self.log_path = run_dir / f"{phase}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--phase",
                phase,
                "--config",
                str(config_path),
            ],
            env=stack.child_env(store, topic_prefix),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )

    def wait_line(self, expected: str) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line == expected:
                return
            log(f"{self.phase}: {line}")
        raise StackError(f"{self.phase} exited before saying {expected!r}; see {self.log_path}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            log(f"{self.phase}: {line.rstrip()}")
        code = self.proc.wait()
        self._log.close()
        if code != 0 or not self.result_path.exists():
            tail = self.log_path.read_text()[-3000:]
            raise StackError(f"{self.phase} failed (exit {code}); {self.log_path}:\n{tail}")
        return json.loads(self.result_path.read_text())


def run_phase(phase: str, config_path: str) -> int:
    config = json.loads(Path(config_path).read_text())

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    if phase == "staged":
        from benchmarks import staged

        result = staged.run(config, say)
    elif phase == "dagster":
        from benchmarks import dagster_run

        result = dagster_run.run(config, say)
    elif phase == "naive":
        from benchmarks import naive

        result = naive.run(config, say)
    elif phase == "limits":
        from benchmarks import limits

        result = limits.run(config, say)
    else:
        raise SystemExit(f"unknown phase {phase}")
    Path(config["result_path"]).write_text(json.dumps(result, default=str))
    return 0


# -- the whole run ------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_mb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_mb = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "memory_mb": mem_mb,
        "cpu_model": model,
        "python": sys.version.split()[0],
    }


def background_load(seconds: float = 1.0) -> float:
    """CPUs kept busy by other processes just before the run, from /proc/stat."""

    def busy() -> tuple[float, float]:
        v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        return v[0] + v[1] + v[2] + v[5] + v[6], sum(v)

    b0, t0 = busy()
    time.sleep(seconds)
    b1, t1 = busy()
    return round((b1 - b0) / (t1 - t0) * (os.cpu_count() or 1), 2) if t1 > t0 else 0.0


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    from darwin_notify_assets.config import Settings
    from darwin_notify_assets.domain.detect import baseline
    from darwin_notify_assets.domain.pipeline import Runtime, load_schedules
    from darwin_notify_assets.sample.seed import apply_window

    run_id = uuid.uuid4().hex[:8]
    run_dir = (
        Path(args.run_dir)
        if args.run_dir
        else Path(tempfile.mkdtemp(prefix=f"darwin-notify-bench-{run_id}-"))
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "home").mkdir(exist_ok=True)
    started = time.monotonic()
    out: dict[str, Any] = {
        "run_id": run_id,
        "machine": machine(),
        "command": " ".join(["benchmarks/bench.py", *args.argv]),
        "size_requested": args.size,
    }
    stack = BenchStack(run_dir, run_id)
    out["background_busy_cpus"] = background_load()
    if out["background_busy_cpus"] > 0.3:
        log(
            f"note: {out['background_busy_cpus']:.1f} CPUs were busy before the run started "
            "(other processes); the figures include their interference"
        )
    workload = workload_for(args.size)
    out["workload"] = {
        "seed_size": workload.size.__dict__,
        "intensity": workload.intensity,
        "partition_key": workload.partition_key,
    }
    log(f"run {run_id} in {run_dir}; seed size {workload.size}")
    try:
        stack.create_databases(index_reads_only=args.index_reads_only)
        stack.sinks.start()
        primary = stack.primary()
        dataset, seed_timings = seed_source(primary, workload)
        stack.wait_replayed(primary)
        log(f"seeded darwin_bench in {sum(seed_timings.values()):.1f}s: {dataset.counts()}")
        changes = window_changes(dataset, workload)
        rows_changed = changed_rows(changes)
        out["changes"] = {
            "operations": len(changes.operations),
            "by_kind": operation_counts(changes),
            "rows_changed": rows_changed,
        }
        expected = None
        if args.oracle or workload.size.contacts <= 20_000:
            from darwin_notify_tests.oracle import expected_sends

            exp = expected_sends(dataset, [changes])
            expected = {"email": len(exp.email), "sms": len(exp.sms)}
        del dataset

        # Every store starts from the same baseline of last-seen values, before the window.
        t = time.monotonic()
        for store_name in ("staged", "dagster"):
            settings = Settings(
                home=str(run_dir / "home"),
                replica_url=stack.replica_url,
                store_url=stack.store_urls[store_name],
            )
            rt = Runtime.from_settings(settings, bus=_NoBus())
            try:
                baseline(rt.replica, rt.store, load_schedules(rt.replica).schedules)
            finally:
                rt.close()
        if not args.skip_naive:
            from benchmarks import naive

            naive.prepare(stack.replica_url, stack.store_urls["naive"])
        log(f"baselines in {time.monotonic() - t:.1f}s")

        common = {
            "partition_key": workload.partition_key,
            "replica_admin_url": stack.replica_admin_url,
            "services_dir": stack.env.get("DARWIN_NOTIFY_SERVICES_DIR", ""),
            "kafka_pid_file": stack.env.get("DARWIN_NOTIFY_KAFKA_PID_FILE", ""),
            "sink_pids": stack.sinks.pids(),
            "settings": {},
        }
        staged_prefix = f"bench-{run_id}-staged"
        staged = Child(
            stack,
            "staged",
            {
                **common,
                "topic_prefix": staged_prefix,
                "profile_dir": str(run_dir) if args.profile else None,
                "workers": args.workers,
            },
            "staged",
            staged_prefix,
        )
        staged.wait_line("ready")
        stack.reset_replica_stats()
        replica_stats_start = stack.replica_table_stats()
        primary_before = stack.primary_statements()
        sinks_before = stack.sinks.counts()
        log(f"applying {len(changes.operations)} operations on the primary")
        apply_window(primary, changes)
        committed_at = time.time()
        # As the sensor does, the window is read only once the standby has applied it.
        replay = stack.wait_replayed(primary)
        staged.send(f"go {committed_at}")
        log(f"standby replayed the window {replay:.2f}s after the commit")
        staged_result = staged.wait()
        if not staged_result["results"]["detect"]["rows_read"]:
            raise StackError("the staged run read no changed rows from the standby")
        sinks_after = stack.sinks.counts()
        replica_stats_staged = stack.replica_table_stats()
        out["staged"] = staged_result
        out["replay_seconds"] = round(replay, 3)
        out["sinks"] = {
            kind: {k: sinks_after[kind][k] - sinks_before[kind][k] for k in ("count", "accepted")}
            for kind in sinks_after
        }
        out["replica_reads_staged"] = stats_delta(replica_stats_start, replica_stats_staged)
        out["expected_oracle"] = expected

        if not args.skip_dagster:
            prefix = f"bench-{run_id}-dagster"
            child = Child(
                stack,
                "dagster",
                {**common, "topic_prefix": prefix, "workers": args.workers},
                "dagster",
                prefix,
            )
            child.wait_line("ready")
            child.send("go")
            out["dagster"] = child.wait()
        if not args.skip_naive:
            prefix = f"bench-{run_id}-naive"
            child = Child(
                stack,
                "naive",
                {
                    **common,
                    "topic_prefix": prefix,
                    "seconds": args.naive_seconds,
                    "replica_url": stack.replica_url,
                },
                "naive",
                prefix,
            )
            child.wait_line("ready")
            child.send("go")
            out["naive"] = child.wait()
        if not args.skip_limits:
            prefix = f"bench-{run_id}-limits"
            child = Child(
                stack,
                "limits",
                {
                    **common,
                    "topic_prefix": prefix,
                    "staged_store_url": stack.store_urls["staged"],
                    "scratch_store_url": stack.store_urls["scratch"],
                    "replica_url": stack.replica_url,
                    "render_sample": args.render_sample,
                },
                "scratch",
                prefix,
            )
            child.wait_line("ready")
            child.send("go")
            out["limits"] = child.wait()
        out["primary_statements"] = stack.primary_statements() - primary_before
        out["primary_statements_total"] = stack.primary_statements()
        primary.close()
    finally:
        from benchmarks.instrument import peak_rss_mb

        out["sink_peak_rss_mb"] = {k: peak_rss_mb(p) for k, p in stack.sinks.pids().items()}
        stack.sinks.stop()
        if not args.keep:
            try:
                stack.drop_databases()
                stack.delete_topics(f"bench-{run_id}-")
            except Exception as exc:  # noqa: BLE001 - cleanup must not hide the result
                log(f"could not clean up the run's databases or topics: {exc}")
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            log(
                f"kept {run_dir}, the databases {stack.source_db} and "
                f"notify_bench_{run_id}_*, and the topics bench-{run_id}-*"
            )
    # Peak memory is VmHWM from /proc (per process, reset by exec). getrusage's ru_maxrss is
    # not usable here: Linux carries it across fork + exec, so every child would report at
    # least the orchestrator's peak (which holds the generated dataset).
    from benchmarks.instrument import peak_rss_mb

    out["orchestrator_peak_rss_mb"] = peak_rss_mb()
    out["wall_seconds"] = round(time.monotonic() - started, 1)
    return out


class _NoBus:
    """The baseline needs no bus."""

    def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size",
        type=int,
        default=DEFAULT_SIZE,
        help="notifications in the window (about; default %(default)s)",
    )
    parser.add_argument(
        "--naive-seconds",
        type=float,
        default=40.0,
        help="time budget of the naive pipeline's sample (default %(default)s)",
    )
    parser.add_argument(
        "--render-sample",
        type=int,
        default=20_000,
        help="messages rendered by the render-only limit (default %(default)s)",
    )
    parser.add_argument(
        "--index-reads-only",
        action="store_true",
        help="planner told to use an index wherever one serves (enable_seqscan off on the "
        "source database): makes the zero-sequential-scans check meaningful on a small run, "
        "whose tiny tables the planner would otherwise scan; not for timing",
    )
    parser.add_argument("--skip-dagster", action="store_true")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-limits", action="store_true")
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="check sends against the test suite's oracle at any size (slow)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample every thread of the staged run; reports in the run folder",
    )
    parser.add_argument(
        "--workers",
        choices=("processes", "inline"),
        default="processes",
        help="processes (default): the pipeline publishes and waits while two "
        "render and two send `darwin-notify worker` processes do the work, the "
        "production layout; inline: the Runtime's worker threads in the "
        "pipeline's own process, the embedded default's layout",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="run again when a shared service restarted meanwhile (the fault "
        "tests restart Kafka); default %(default)s",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the run folder and the benchmark databases"
    )
    parser.add_argument("--run-dir", default="")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.phase:
        return run_phase(args.phase, args.config)
    from darwin_notify_assets.progress import progress

    global _steps
    _steps = progress(desc="bench", unit="step", quiet=args.quiet)
    env = services_env()
    attempt = 0
    while True:
        attempt += 1
        before = service_pids(env)
        failure: StackError | None = None
        try:
            result = orchestrate(args)
        except StackError as exc:
            failure, result = exc, None
        restarted = [k for k, v in service_pids(env).items() if v != before.get(k)]
        disturbed = restarted or (result and report.summarize(result)["disturbed"])
        if disturbed and attempt <= args.retries:
            log(
                f"run disturbed ({restarted or 'a service restarted during a stage'}"
                f"{': ' + str(failure).splitlines()[0] if failure else ''}); running it again"
            )
            continue
        if failure:
            log(f"ERROR: {failure}")
            return 1
        result["attempts"] = attempt
        result["restarted_services"] = restarted
        break
    summary = report.summarize(result)
    sys.stdout.write(report.table(result, summary) + "\n")
    sys.stdout.write(
        json.dumps({"summary": summary, "detail": result}, default=str, separators=(",", ":"))
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
