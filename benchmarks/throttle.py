"""The shared provider budget, measured: two send worker processes against a rate-limited sink.

On the running services (``make services-up``), in a store database of its own and with a
SendGrid sink of its own that answers ``429`` (``Retry-After: 1``) to sends above
``--sink-rate`` a second, ``--messages`` queued email messages get send jobs on Kafka and two
``darwin-notify worker send`` processes send them, once for each budget of ``--budgets``
(``DARWIN_NOTIFY_EMAIL_RATE_PER_SECOND``; 0 is no budget). Per budget it prints the accepted
rate (first to last accepted request), the busiest second at the sink, the ``429`` answers,
the messages accepted more than once and the messages left without a final status; a JSON
line at the end holds the figures.

    PYTHONPATH=. .venv/bin/python benchmarks/throttle.py --messages 1500 --sink-rate 50
"""

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.stack import (  # noqa: E402
    PIPELINE_ROLE,
    Sinks,
    StackError,
    read_jsonl_from,
    services_env,
    with_database,
)

PARTITION_KEY = "2026-01-05-10:00"


def log(message: str) -> None:
    sys.stderr.write(f"[throttle] {message}\n")
    sys.stderr.flush()


def control(url: str, command: dict[str, Any]) -> None:
    import urllib.request

    request = urllib.request.Request(
        f"{url}/_control",
        data=json.dumps(command).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        answer.read()


def queue_messages(store_url: str, count: int, tag: str, first_id: int) -> list[int]:
    from darwin_notify_assets.domain.messages import MessageStatus
    from darwin_notify_assets.storage.store import NotificationStore, OutboundMessage

    store = NotificationStore.open(store_url)
    try:
        store.ensure_schema()
        messages = [
            OutboundMessage(
                candidate_id=first_id + i,
                candidate_key=f"throttle:{tag}:{i}",
                partition_key=PARTITION_KEY,
                channel="email",
                status=MessageStatus.QUEUED,
                to_address=f"recipient{i}@example.com",
                subject="A new listing",
                html_body="<p>A new listing</p>",
                text_body="A new listing",
            )
            for i in range(1, count + 1)
        ]
        store.insert_messages(messages)
        ids = [
            int(r[0])
            for r in store.db.query(
                "SELECT message_id FROM message WHERE candidate_key LIKE ? ORDER BY message_id",
                [f"throttle:{tag}:%"],
            )
        ]
        store.db.commit()
        return ids
    finally:
        store.close()


def statuses(store_url: str, tag: str) -> Counter:
    from darwin_notify_assets.storage.db import connect

    db = connect(store_url)
    try:
        rows = db.query(
            "SELECT status, count(*) FROM message WHERE candidate_key LIKE ? GROUP BY status",
            [f"throttle:{tag}:%"],
        )
        db.commit()
        return Counter({str(s): int(n) for s, n in rows})
    finally:
        db.close()


def publish(env: dict[str, str], prefix: str, ids: list[int], batch: int) -> int:
    from darwin_notify_assets.bus.base import JobKind, make_jobs
    from darwin_notify_assets.bus.kafka import KafkaBus

    bus = KafkaBus(env["DARWIN_NOTIFY_KAFKA_BOOTSTRAP"], topic_prefix=prefix, group_prefix=prefix)
    try:
        return bus.publish(make_jobs(JobKind.SEND, PARTITION_KEY, ids, batch))
    finally:
        bus.close()


def measure(
    args: argparse.Namespace,
    env: dict[str, str],
    store_url: str,
    sinks: Sinks,
    run_dir: Path,
    budget: int,
    first_id: int,
) -> dict[str, Any]:
    tag = f"b{budget}-{first_id}"
    prefix = f"throttle-{uuid.uuid4().hex[:8]}-"
    record = sinks.records["sendgrid"]
    offset = record.stat().st_size if record.exists() else 0
    control(sinks.urls["sendgrid"], {"reset": True})
    control(sinks.urls["sendgrid"], {"rate_limit": args.sink_rate, "burst": args.sink_rate})
    ids = queue_messages(store_url, args.messages, tag, first_id)
    child = {k: v for k, v in os.environ.items() if not k.startswith("DARWIN_NOTIFY_")}
    child.update(env)
    child.update(
        {
            "DARWIN_NOTIFY_STORE_URL": store_url,
            "DARWIN_NOTIFY_KAFKA_TOPIC_PREFIX": prefix,
            "DARWIN_NOTIFY_SENDGRID_HOST": sinks.urls["sendgrid"],
            "DARWIN_NOTIFY_SMS_BASE_URL": sinks.urls["sms"],
            "DARWIN_NOTIFY_EMAIL_RATE_PER_SECOND": str(budget),
            "DARWIN_NOTIFY_HOME": str(run_dir / "home"),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
    )
    workers = []
    for i in range(2):
        out = open(run_dir / f"worker-{tag}-{i}.log", "w")  # noqa: SIM115 - lives with it
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "darwin_notify_assets.cli", "worker", "send"],
                env=child,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        time.sleep(3)  # both consumers join the group before the jobs arrive
        started = time.monotonic()
        publish(env, prefix, ids, args.batch)
        deadline = started + args.timeout
        while True:
            counts = statuses(store_url, tag)
            open_ = counts["queued"] + counts["sending"]
            if not open_ or time.monotonic() > deadline:
                break
            if any(w.poll() is not None for w in workers):
                raise StackError(f"a send worker exited; logs in {run_dir}")
            time.sleep(0.5)
        elapsed = time.monotonic() - started
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(timeout=20)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
    entries = [
        e
        for e in read_jsonl_from(record, offset)
        if str((e.get("custom_args") or {}).get("darwin_notify_key", "")).startswith(
            f"throttle:{tag}:"
        )
    ]
    accepted = [e for e in entries if int(e.get("status") or 0) == 202]
    per_key = Counter(e["custom_args"]["darwin_notify_key"] for e in accepted)
    times = sorted(datetime.fromisoformat(e["received_at"]) for e in accepted)
    span = (times[-1] - times[0]).total_seconds() if len(times) > 1 else 0.0
    per_second = Counter(t.replace(microsecond=0) for t in times)
    result = {
        "budget_per_second": budget,
        "sink_rate_per_second": args.sink_rate,
        "messages": args.messages,
        "seconds": round(elapsed, 1),
        "accepted": len(accepted),
        "accepted_per_second": round((len(times) - 1) / span, 1) if span else None,
        "busiest_second": max(per_second.values(), default=0),
        "refused_429": sum(1 for e in entries if int(e.get("status") or 0) == 429),
        "accepted_twice": sum(1 for n in per_key.values() if n > 1),
        "statuses": dict(counts),
        "not_final": counts["queued"] + counts["sending"],
    }
    log(
        f"budget {budget or 'none'}/s, sink {args.sink_rate}/s: {result['accepted']} accepted "
        f"in {result['seconds']}s ({result['accepted_per_second']}/s, busiest second "
        f"{result['busiest_second']}), {result['refused_429']} refused with 429, "
        f"{result['accepted_twice']} accepted twice, {result['not_final']} not final, "
        f"statuses {dict(counts)}"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1500, help="default %(default)s")
    parser.add_argument(
        "--sink-rate", type=int, default=50, help="sink's accepted sends a second (%(default)s)"
    )
    parser.add_argument(
        "--budgets",
        default="40,0",
        help="comma-separated DARWIN_NOTIFY_EMAIL_RATE_PER_SECOND values; 0 is no budget "
        "(default %(default)s)",
    )
    parser.add_argument("--batch", type=int, default=100, help="messages a send job (%(default)s)")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds a budget (%(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--budgets must be integers, not {args.budgets!r}")
    if args.messages < 1 or args.sink_rate < 1 or any(b < 0 for b in budgets):
        parser.error("--messages and --sink-rate must be positive and budgets not negative")
    try:
        env = services_env()
    except Exception as exc:  # the services' own one-line reason
        sys.stderr.write(f"throttle: {exc}\n")
        return 1
    from darwin_notify_assets.storage.db import connect

    run_id = uuid.uuid4().hex[:8]
    run_dir = Path(".artifacts") / f"throttle-{run_id}"
    run_dir.mkdir(parents=True, exist_ok=True)
    store_db = f"notify_throttle_{run_id}"
    store_url = with_database(env["DARWIN_NOTIFY_STORE_URL"], store_db)
    admin_url = with_database(
        env["DARWIN_NOTIFY_STORE_URL"].replace(f"{PIPELINE_ROLE}@", "postgres@"), "postgres"
    )
    admin = connect(admin_url)
    admin.conn.autocommit = True
    admin.execute(f"CREATE DATABASE {store_db} OWNER {PIPELINE_ROLE}").close()
    sinks = Sinks(run_dir)
    results = []
    try:
        sinks.start()
        for n, budget in enumerate(budgets):
            results.append(measure(args, env, store_url, sinks, run_dir, budget, n * args.messages))
    except StackError as exc:
        log(f"ERROR: {exc}")
        return 1
    finally:
        sinks.stop()
        admin.execute(f"DROP DATABASE IF EXISTS {store_db} WITH (FORCE)").close()
        admin.close()
    sys.stdout.write(json.dumps({"throttle": results}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
