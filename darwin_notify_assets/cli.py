"""``darwin-notify``: seed, baseline, run windows, run workers, audit, demo."""

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from darwin_notify_assets.config import Settings
from darwin_notify_assets.errors import DarwinNotifyError

if TYPE_CHECKING:
    from dagster import ExecuteInProcessResult

log = logging.getLogger("darwin_notify")


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _settings() -> Settings:
    return Settings.from_env()


def cmd_demo(args: argparse.Namespace) -> int:
    from darwin_notify_assets.sample.demo import DemoOptions, run_demo

    summary = run_demo(
        DemoOptions(home=Path(args.dir), windows=args.windows, seed=args.seed, size=args.size), say
    )
    ok = summary["runs_failed"] == 0 and summary["duplicates"] == 0 and summary["missed"] == 0
    return 0 if ok else 1


def cmd_seed(args: argparse.Namespace) -> int:
    from darwin_notify_assets.sample import seed
    from darwin_notify_assets.storage.db import connect

    target = args.target or _settings().replica_url
    if args.size == "small":
        size = seed.SeedSize.small()
    elif args.size == "demo":
        size = seed.SeedSize.demo()
    else:
        size = seed.SeedSize.scaled(int(args.size))
    start = datetime.fromisoformat(args.start) if args.start else datetime(2026, 3, 2, 14, 0)
    db = connect(target)
    try:
        summary = seed.seed_database(
            db, size, args.seed, start, args.windows, _settings().window_minutes
        )
    finally:
        db.close()
    say(json.dumps({"target": str(db.url), **summary.as_dict()}, default=str))
    return 0


def cmd_baseline(_args: argparse.Namespace) -> int:
    from darwin_notify_assets.domain.detect import baseline
    from darwin_notify_assets.domain.pipeline import Runtime, load_schedules

    rt = Runtime.from_settings(_settings())
    try:
        counts = baseline(rt.replica, rt.store, load_schedules(rt.replica).schedules)
    finally:
        rt.close()
    say(json.dumps({"baseline": counts}))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from darwin_notify_assets.defs.notifications.runs import check_partition_key, run_window

    settings = _settings()
    keys = [check_partition_key(key, settings) for key in args.partition]
    instance = DagsterInstance.get()
    failed = 0
    for key in keys:
        result = run_window(key, instance, run_config={})
        if result.success:
            say(f"{key}: ok (run {result.run_id})")
        else:
            say(f"{key}: FAILED (run {result.run_id}): {_failure(result)}")
        failed += not result.success
    return 1 if failed else 0


def _failure(result: "ExecuteInProcessResult") -> str:
    """The first failed step's own message, in one line."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            err = event.step_failure_data.error
            while err.cause is not None and err.cls_name in ("DagsterExecutionStepExecutionError",):
                err = err.cause
            first = (err.message or "").strip().splitlines()
            return f"{event.step_key}: {first[0] if first else err.cls_name}"
    return "see the run's events in the Dagster UI"


def cmd_worker(args: argparse.Namespace) -> int:
    from darwin_notify_assets.bus.base import JobKind
    from darwin_notify_assets.delivery.throttle import build_budgets
    from darwin_notify_assets.delivery.workers import RenderWorker, SendWorker
    from darwin_notify_assets.domain.pipeline import Runtime, load_schedules
    from darwin_notify_assets.domain.render import CompiledTemplate
    from darwin_notify_assets.domain.schedules import ScheduleSet

    settings = _settings()
    if not settings.uses_kafka:
        raise DarwinNotifyError(
            "workers run as separate processes only with Kafka: set DARWIN_NOTIFY_KAFKA_BOOTSTRAP"
        )
    rt = Runtime.from_settings(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    kind = JobKind(args.kind)
    try:
        if kind == JobKind.RENDER:

            def reload() -> tuple[ScheduleSet, Mapping[int, CompiledTemplate | str]]:
                loaded = load_schedules(rt.replica)
                return loaded.schedules, loaded.templates

            schedules, templates = reload()
            handler: RenderWorker | SendWorker = RenderWorker(
                rt.replica,
                rt.store,
                schedules,
                templates,
                settings.window_minutes,
                reload=reload,
                sms_max_segments=settings.sms_max_segments,
            )
        else:
            senders = rt.senders_factory()
            handler = SendWorker(
                rt.store,
                senders,
                settings.send_concurrency,
                budgets=build_budgets(rt.store, senders, settings.send_rates),
            )
        log.info("%s worker started", kind)
        handled = rt.bus.consume(kind, handler, stop)
        log.info("%s worker stopped after %d jobs", kind, handled)
    finally:
        rt.close()
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from darwin_notify_assets.domain.audit import audit_report
    from darwin_notify_assets.domain.pipeline import Runtime

    rt = Runtime.from_settings(_settings())
    try:
        report = audit_report(rt.store, args.partition, args.since, args.until)
    finally:
        rt.close()
    for line in report.lines():
        say(line)
    say(json.dumps(report.as_dict(), separators=(",", ":")))
    return 0 if report.clean else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="darwin-notify", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser(
        "demo", help="seed an embedded darwin.Cloud and process windows through Dagster"
    )
    d.add_argument(
        "--dir", default=".demo", help="folder for the SQLite files, outbox and Dagster home"
    )
    d.add_argument("--windows", type=int, default=6)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--size", choices=("small", "demo"), default="demo")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("seed", help="create the sample darwin.Cloud schema, data and changes")
    s.add_argument("--target", help="database URL to write (default: the replica URL, for SQLite)")
    s.add_argument("--size", default="demo", help="small, demo, or a number of contacts")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--start", help="first window's start, ISO (UTC)")
    s.add_argument("--windows", type=int, default=6)
    s.set_defaults(func=cmd_seed)

    b = sub.add_parser("baseline", help="record last-seen values before the first window")
    b.set_defaults(func=cmd_baseline)

    r = sub.add_parser("run", help="process change windows through Dagster, in process")
    r.add_argument("partition", nargs="+", help="partition keys, e.g. 2026-03-02-14:00")
    r.set_defaults(func=cmd_run)

    w = sub.add_parser("worker", help="run a render or send worker on the Kafka bus")
    w.add_argument("kind", choices=("render", "send"))
    w.set_defaults(func=cmd_worker)

    a = sub.add_parser("audit", help="reconcile changes, candidates, messages and sends")
    a.add_argument("--partition", action="append", default=[], help="a window's partition key")
    a.add_argument("--since", help="first window's start, e.g. 2026-03-02-14:00")
    a.add_argument("--until", help="last window's start, e.g. 2026-03-02-15:00")
    a.set_defaults(func=cmd_audit)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    started = time.monotonic()
    try:
        return int(args.func(args))
    except DarwinNotifyError as exc:
        sys.stderr.write(f"darwin-notify {args.command}: {exc}\n")
        return 2
    finally:
        log.info("%s finished in %.1fs", args.command, time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
