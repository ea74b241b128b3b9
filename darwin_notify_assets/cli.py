"""``darwin-notify``: seed, baseline, run windows, run workers, check, grants, audit, resolve,
webhooks, demo."""

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
from typing import TYPE_CHECKING, NoReturn

from darwin_notify_assets.config import REPLICA_PASSWORD_ENV, Settings
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
    from darwin_notify_assets.progress import progress

    db = connect(target)
    bar = progress(total=args.windows, desc="seed windows", unit="window", quiet=args.quiet)
    changes = 0

    def applied(window: "seed.WindowSummary") -> None:
        nonlocal changes
        changes += sum(window.by_kind.values())
        bar.update(1)
        bar.set_postfix(changes=changes, refresh=False)
        log.info("seeded window %s: %d changes", window.start, sum(window.by_kind.values()))

    try:
        summary = seed.seed_database(
            db, size, args.seed, start, args.windows, _settings().window_minutes, on_window=applied
        )
    finally:
        bar.close()
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
    from darwin_notify_assets.progress import progress

    instance = DagsterInstance.get()
    failed = 0
    bar = progress(total=len(keys), desc="windows", unit="window", quiet=args.quiet)
    try:
        for done, key in enumerate(keys, 1):
            bar.set_description(f"window {key}")
            result = run_window(key, instance, run_config={})
            if result.success:
                say(f"{key}: ok (run {result.run_id})")
            else:
                say(f"{key}: FAILED (run {result.run_id}): {_failure(result)}")
            failed += not result.success
            bar.update(1)
            bar.set_postfix(ok=done - failed, failed=failed)
            log.info("%d/%d windows run, %d failed", done, len(keys), failed)
    finally:
        bar.close()
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
    from darwin_notify_assets.domain.pipeline import (
        Runtime,
        load_schedules,
        schedules_of_version,
    )
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

            def window_snapshot(
                partition_key: str,
            ) -> tuple[str, ScheduleSet, Mapping[int, CompiledTemplate | str]] | None:
                version = (rt.store.window_info(partition_key) or {}).get("schedule_version")
                loaded = (
                    schedules_of_version(rt.store, str(version), rt.replica) if version else None
                )
                return (loaded.version, loaded.schedules, loaded.templates) if loaded else None

            schedules, templates = reload()
            handler: RenderWorker | SendWorker = RenderWorker(
                rt.replica,
                rt.store,
                schedules,
                templates,
                settings.window_minutes,
                reload=reload,
                sms_max_segments=settings.sms_max_segments,
                window_snapshot=window_snapshot,
            )
        else:
            senders = rt.senders_factory()
            handler = SendWorker(
                rt.store,
                senders,
                settings.send_concurrency,
                request_group=settings.send_request_group or None,
                budgets=build_budgets(rt.store, senders, settings.send_rates),
                rules=settings.send_rules,
            )
        log.info("%s worker started", kind)
        handled = rt.bus.consume(kind, handler, stop)
        log.info("%s worker stopped after %d jobs", kind, handled)
    finally:
        rt.close()
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from darwin_notify_assets.domain.audit import audit_frame, audit_report, export_audit
    from darwin_notify_assets.domain.pipeline import Runtime
    from darwin_notify_assets.domain.windows import PARTITION_FORMAT

    settings = _settings()
    for key in [*args.partition, args.since, args.until]:
        try:
            if key:
                datetime.strptime(key, PARTITION_FORMAT)
        except ValueError:
            raise DarwinNotifyError(
                f"{key!r} is not a window's partition key; expected YYYY-MM-DD-HH:MM"
            ) from None
    if args.since and args.until and args.since > args.until:
        raise DarwinNotifyError(f"--since {args.since} is after --until {args.until}")
    exports = [(p, "csv") for p in args.csv] + [(p, "parquet") for p in args.parquet]
    rt = Runtime.from_settings(settings)
    try:
        report = audit_report(rt.store, args.partition, args.since, args.until)
    finally:
        rt.close()
    if exports:
        frame = audit_frame(report)
        for path, fmt in exports:
            export_audit(frame, path, fmt)
            log.info("audit written to %s (%d rows)", path, len(frame))
    for line in report.lines():
        say(line)
    say(json.dumps(report.as_dict(), separators=(",", ":")))
    return 0 if report.clean else 1


def cmd_resolve(args: argparse.Namespace) -> int:
    """A person's decision on an ``unknown`` message, after checking with the provider."""
    import getpass

    from darwin_notify_assets.config import STORE_PASSWORD_ENV
    from darwin_notify_assets.domain.messages import MessageStatus
    from darwin_notify_assets.storage.store import NotificationStore

    reason = " ".join(args.reason.split())
    if not reason:
        raise DarwinNotifyError("--reason must say why (what the provider showed)")
    who = " ".join((args.by or getpass.getuser()).split())
    if not who:
        raise DarwinNotifyError("--by must name who decides")
    new = MessageStatus.SENT if args.sent else MessageStatus.FAILED
    store = NotificationStore.open(_settings().store_url, STORE_PASSWORD_ENV)
    try:
        store.ensure_schema()
        store.resolve_unknown(args.key, new, f"resolved by {who}: {reason}")
    finally:
        store.close()
    say(f"{args.key}: unknown -> {new} (resolved by {who}: {reason})")
    return 0


def cmd_check(_args: argparse.Namespace) -> int:
    """The source model and the schedules against the replica's catalog: one line per
    problem, exit 1 when there is any."""
    from darwin_notify_assets.domain.model import load_model
    from darwin_notify_assets.domain.pipeline import (
        load_schedules,
        merge_field_problems,
        zone_problems,
    )
    from darwin_notify_assets.storage.replica import ReplicaReader

    settings = _settings()
    model = load_model(settings.source_model)
    replica = ReplicaReader.open(
        settings.replica_url,
        REPLICA_PASSWORD_ENV,
        model=model,
        merge_fields_dir=settings.merge_fields_dir or None,
    )
    try:
        loaded = load_schedules(replica)
        query_problems = merge_field_problems(replica, loaded.schedules)
        query_problems += zone_problems(replica, settings.default_time_zone)
    finally:
        replica.close()
    for p in loaded.model_problems:
        say(f"model {p}")
    for r in loaded.rejected:
        say(r.reason)
    for line in query_problems:
        say(line)
    problems = len(loaded.model_problems) + len(loaded.rejected) + len(query_problems)
    say(
        f"{problems} problem(s); {len(loaded.schedules.schedules)} schedule(s) would run"
        if problems
        else f"ok: {len(loaded.schedules.schedules)} schedule(s) would run"
    )
    return 1 if problems else 0


def cmd_grants(args: argparse.Namespace) -> int:
    """Print the least-privilege grants for the configured source model; connects nowhere."""
    from darwin_notify_assets.domain.model import SAMPLE_MODEL, load_model
    from darwin_notify_assets.storage.grants import Principals, grant_script
    from darwin_notify_assets.storage.sqlfiles import sample_merge_fields

    settings = _settings()
    path = args.model or settings.source_model
    model = load_model(path or None)
    merge_dir = (
        Path(settings.merge_fields_dir)
        if settings.merge_fields_dir
        else sample_merge_fields(args.dialect)
    )
    principals = Principals(args.reader, args.readers_role, args.store)
    source = str(Path(path).resolve()) if path else f"of the sample ({SAMPLE_MODEL.name})"
    sys.stdout.write(grant_script(model, args.dialect, principals, merge_dir, source))
    return 0


def cmd_webhooks(args: argparse.Namespace) -> int:
    from darwin_notify_assets.webhooks.service import serve

    serve(_settings(), args.host, args.port)
    return 0


class _Parser(argparse.ArgumentParser):
    """Answers bad arguments in one line (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="darwin-notify", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars (they are off anyway when stderr is not a terminal, or in CI)",
    )
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

    c = sub.add_parser(
        "check", help="check the source model and the schedules against the replica's catalog"
    )
    c.set_defaults(func=cmd_check)

    a = sub.add_parser("audit", help="reconcile changes, candidates, messages and sends")
    a.add_argument("--partition", action="append", default=[], help="a window's partition key")
    a.add_argument("--since", help="first window's start, e.g. 2026-03-02-14:00")
    a.add_argument("--until", help="last window's start, e.g. 2026-03-02-15:00")
    a.add_argument(
        "--csv", action="append", default=[], metavar="PATH", help="also write the audit as CSV"
    )
    a.add_argument(
        "--parquet",
        action="append",
        default=[],
        metavar="PATH",
        help="also write the audit as Parquet (needs the parquet extra: pyarrow)",
    )
    a.set_defaults(func=cmd_audit)

    v = sub.add_parser(
        "resolve", help="decide an unknown message (sent or failed) after checking the provider"
    )
    v.add_argument("key", help="the message's key, as the audit lists it")
    outcome = v.add_mutually_exclusive_group(required=True)
    outcome.add_argument("--sent", action="store_true", help="the provider has it")
    outcome.add_argument("--failed", action="store_true", help="the provider never took it")
    v.add_argument("--reason", required=True, help="why: what the provider showed")
    v.add_argument("--by", help="who decides (default: the login name)")
    v.set_defaults(func=cmd_resolve)

    g = sub.add_parser(
        "grants", help="print the least-privilege grants the source model needs (connects nowhere)"
    )
    g.add_argument("--dialect", required=True, choices=("mssql", "postgresql"))
    g.add_argument("--model", help="the source model (default: DARWIN_NOTIFY_SOURCE_MODEL)")
    g.add_argument("--reader", default="darwin_notify_reader", help="the replica's login")
    g.add_argument(
        "--readers-role",
        default="darwin_notify_readers",
        help="the role that holds the reader's grants (SQL Server)",
    )
    g.add_argument("--store", default="darwin_notify_store", help="the store's login")
    g.set_defaults(func=cmd_grants)

    h = sub.add_parser(
        "webhooks", help="serve provider webhooks, SMS replies and one-click unsubscribe"
    )
    h.add_argument("--host", default="0.0.0.0", help="address to listen on")
    h.add_argument("--port", type=int, default=8080)
    h.set_defaults(func=cmd_webhooks)
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
