"""Randomized soak of darwin-notify on the real stack (``make services-up``, then ``make soak``).

Many change windows of random workload (the seed's change generator, a random intensity per
window) go through Dagster, with render and send workers as separate processes on Kafka and
the provider sinks of ``infra/services.sh``. For each window a few faults are drawn at random:

* ``render_kill``, ``send_kill_claim``, ``send_kill_provider``: a worker that dies by SIGKILL
  at a failpoint (``render.before_write``, ``send.after_claim``, ``send.after_provider``); it
  is alone in its group when the window's jobs arrive, and normal workers replace it;
* ``kafka_restart``: the broker is stopped and started again while the run works;
* ``sink_429``, ``sink_500``: the provider refuses a request once (retried);
* ``sink_accept_timeout``, ``sink_reject_timeout``: the provider answers after the client's
  timeout, having accepted or refused (the message becomes ``unknown``);
* ``replay_pause``: replay is paused on the standby while the window is written; the sensor
  must refuse the window until replay resumes;
* ``rerun``: an earlier window is materialized again; ``replay``: every Kafka job so far is
  consumed again by a fresh consumer group. Neither may reach a provider.

At the end the audit and the sinks are reconciled with the oracle: expected vs sent vs
unknown vs failed, duplicates (must be 0), missed (0 beyond ``unknown``), and timings. A
progress line per window; the last line is one JSON object. Exit status 1 on a duplicate, a
miss, an unexpected send or a fault the pipeline did not survive.

Usage: ``python scripts/soak.py [--windows 20] [--seed 1] [--size small|demo]``.
"""

import argparse
import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SERVICES_SH = REPO / "infra" / "services.sh"
sys.path.insert(0, str(REPO))

from darwin_notify_tests.services import (  # noqa: E402 - needs the repository on the path
    STORE_TABLES,
    own_dagster_storage,
    services_env,
    sink_control,
    sink_records,
    start_worker,
    stop_processes,
)

FAULTS = (
    "render_kill",
    "send_kill_claim",
    "send_kill_provider",
    "kafka_restart",
    "sink_429",
    "sink_500",
    "sink_accept_timeout",
    "sink_reject_timeout",
    "replay_pause",
    "rerun",
    "replay",
)
KILL_FAILPOINTS = {
    "render_kill": ("render", "render.before_write=kill"),
    "send_kill_claim": ("send", "send.after_claim=kill"),
    "send_kill_provider": ("send", "send.after_provider=kill"),
}
WORKERS_PER_KIND = 2
PROVIDER_TIMEOUT = 1
LATE_ANSWER = 2.5  # seconds a sink waits on a timeout fault; longer than PROVIDER_TIMEOUT
SOAK_ENV = {
    "DARWIN_NOTIFY_INLINE_WORKERS": "0",
    "DARWIN_NOTIFY_STAGE_TIMEOUT_SECONDS": "120",
    "DARWIN_NOTIFY_SENDING_EXPIRY_SECONDS": "4",
    "DARWIN_NOTIFY_PROVIDER_TIMEOUT_SECONDS": str(PROVIDER_TIMEOUT),
    "DARWIN_NOTIFY_SEND_BATCH": "10",
    "DARWIN_NOTIFY_RENDER_BATCH": "25",
}

log = logging.getLogger("soak")


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def services(*args: str) -> str:
    return subprocess.run(
        ["bash", str(SERVICES_SH), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=180,
    ).stdout


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path, prefix: str):
        from darwin_notify_assets.config import Settings

        self.args = args
        self.work = work
        self.prefix = prefix
        self.rng = random.Random(f"soak-{args.seed}")
        self.settings = Settings.from_env()
        self.pool: dict[str, list[subprocess.Popen]] = {"render": [], "send": []}
        self.all_procs: list[subprocess.Popen] = []
        self.kafka_touched = False
        self.fired: Counter = Counter()
        self.drawn: Counter = Counter()
        self.violations: list[str] = []
        self.run_seconds: list[float] = []
        self.run_retries = 0
        self.runs_failed: list[str] = []
        self.replica_paused = False

    # -- connections ----------------------------------------------------------------------------
    def admin(self, which: str):
        from darwin_notify_assets.storage.db import connect

        db = connect(os.environ[f"DARWIN_NOTIFY_{which}_ADMIN_URL"])
        if which == "PRIMARY":
            # The services' primary runs with synchronous_commit off: without this, a commit
            # can return before pg_current_wal_lsn() covers it and a replay wait ends early.
            db.execute("SET synchronous_commit = on").close()
            db.commit()
        return db

    def store(self):
        from darwin_notify_assets.storage.store import NotificationStore

        return NotificationStore.open(self.settings.store_url)

    def wait_replayed(self, timeout: float = 60) -> None:
        lsn = self.primary.scalar("SELECT pg_current_wal_lsn()::text")
        self.primary.commit()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.replica.scalar(
                "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), ?::pg_lsn) >= 0", [lsn]
            )
            self.replica.commit()
            if done:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the standby did not replay up to {lsn} within {timeout}s")

    # -- setup ----------------------------------------------------------------------------------
    def setup(self) -> None:
        from darwin_notify_assets.domain.detect import baseline
        from darwin_notify_assets.domain.pipeline import Runtime, load_schedules
        from darwin_notify_assets.domain.windows import Window
        from darwin_notify_assets.sample import seed
        from darwin_notify_assets.sample.demo import DEMO_START
        from darwin_notify_assets.storage.store import utcnow

        self.primary = self.admin("PRIMARY")
        self.replica = self.admin("REPLICA")
        size = seed.SeedSize.small() if self.args.size == "small" else seed.SeedSize.demo()
        for table in seed.TABLES:
            self.primary.execute(f'DROP TABLE IF EXISTS "{table}"').close()
        self.primary.commit()
        seed.create_schema(self.primary)
        self.base = seed.generate_base(size, self.args.seed, DEMO_START)
        seed.write_base(self.primary, self.base)
        self.primary.execute("ANALYZE").close()
        self.primary.commit()
        store = self.store()
        try:
            for table in STORE_TABLES:
                store.db.execute(f"DROP TABLE IF EXISTS {table}").close()
            store.db.commit()
            store.ensure_schema()
        finally:
            store.close()
        self.wait_replayed()
        rt = Runtime.from_settings(self.settings)
        try:
            baseline(rt.replica, rt.store, load_schedules(rt.replica).schedules)
        finally:
            rt.close()
        # Recent windows, all complete: the sensor compares a paused standby's watermark (its
        # last replayed commit) with real time, so the lag fault needs windows near now.
        n = self.args.windows
        first = Window.containing(utcnow() - timedelta(minutes=5 * (n + 1)), 5)
        self.windows = [
            Window.containing(first.start + timedelta(minutes=5 * i), 5) for i in range(n)
        ]
        self.keys = [w.partition_key for w in self.windows]
        self.changes: list[Any] = []
        self.state = {
            t: {int(r[seed.KEY_COLUMNS[t]]): r for r in self.base.records(t)}
            for t in seed.TABLES
            if t in seed.KEY_COLUMNS
        }
        home = self.work / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
        from dagster import DagsterInstance

        self.instance = DagsterInstance.from_config(str(home))
        email, sms = self.sink_records()
        self.mark = (len(email), len(sms))
        for kind in self.pool:
            self.fill_pool(kind)

    def next_changes(self, i: int):
        """Window ``i``'s changes at a random intensity, drawn from the state after window
        ``i - 1`` (the generator's world is rebuilt from a dataset of that state)."""
        from darwin_notify_assets.sample import seed

        tables = {}
        for t in seed.TABLES:
            if t in self.state:
                rows = sorted(self.state[t].values(), key=lambda r: r[seed.KEY_COLUMNS[t]])
                tables[t] = [tuple(r[c] for c in seed.COLUMNS[t]) for r in rows]
            else:
                tables[t] = list(self.base.rows(t))
        current = seed.Dataset(self.base.size, self.base.seed, self.base.start, tables)
        intensity = round(
            self.rng.choice([0.2, 0.5, 1.0, 1.0, 2.0, 3.0]) * self.rng.uniform(0.7, 1.3), 2
        )
        (wc,) = seed.generate_changes(
            current, self.args.seed * 10_000 + i, self.windows[i].start, 1, 5, intensity=intensity
        )
        for op in wc.operations:
            rows = self.state.setdefault(op.table, {})
            if isinstance(op, seed.Insert):
                rows[op.key] = dict(op.row)
            elif isinstance(op, seed.Update):
                rows[op.key] = {**rows[op.key], **op.values}
            else:
                rows.pop(op.key, None)
                dr = dict(zip(seed.COLUMNS["DeletedRecord"], op.deleted_record(), strict=True))
                self.state.setdefault("DeletedRecord", {})[op.deleted_record_id] = dr
        self.changes.append(wc)
        return wc, intensity

    # -- workers --------------------------------------------------------------------------------
    def spawn(self, kind: str, failpoints: str = "") -> subprocess.Popen:
        name = f"{len(self.all_procs):03d}-{kind}{'-' + failpoints.split('=')[0] if failpoints else ''}"
        proc = start_worker(
            kind, self.work / "workers" / f"{name}.log", {"DARWIN_NOTIFY_FAILPOINTS": failpoints}
        )
        self.all_procs.append(proc)
        return proc

    def fill_pool(self, kind: str) -> None:
        alive = [p for p in self.pool[kind] if p.poll() is None]
        while len(alive) < WORKERS_PER_KIND:
            alive.append(self.spawn(kind))
        self.pool[kind] = alive

    stop = staticmethod(stop_processes)

    def arm_victim(self, fault: str) -> tuple[subprocess.Popen, threading.Thread]:
        """The kind's normal workers leave; a victim with the failpoint is alone in the group
        when the window's jobs arrive; when it exits (killed at its failpoint, or for any other
        reason, as a supervisor would see it), normal workers replace it."""
        kind, failpoint = KILL_FAILPOINTS[fault]
        self.stop(self.pool[kind])
        self.pool[kind] = []
        victim = self.spawn(kind, failpoint)

        def replace() -> None:
            code = victim.wait()
            if code == 0:  # stopped by the soak: the window never needed it
                return
            if code != -9:
                log.warning("%s victim exited with %s before its failpoint", kind, code)
            self.pool[kind] += [self.spawn(kind) for _ in range(WORKERS_PER_KIND)]

        watcher = threading.Thread(target=replace, daemon=True)
        watcher.start()
        return victim, watcher

    # -- sinks ----------------------------------------------------------------------------------
    def sink_records(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return sink_records(dict(os.environ))

    def sink_control(self, which: str, **command: Any) -> None:
        sink_control(dict(os.environ), which, **command)

    def pipeline_requests(self, mark: tuple[int, int]) -> list[tuple[str, str | None, dict]]:
        """(channel, key, record) of the pipeline's requests since ``mark``; SMS keys come
        from the store's messages by (to, body), ``None`` when none matches."""
        email, sms = self.sink_records()
        store = self.store()
        try:
            rows = store.db.query(
                "SELECT candidate_key, to_address, sms_body FROM message WHERE channel = ?",
                ["sms"],
            )
            store.db.commit()
        finally:
            store.close()
        by_identity = {(to, body or ""): key for key, to, body in rows}
        out = []
        for r in email[mark[0] :]:
            key = (r.get("custom_args") or {}).get("darwin_notify_key")
            if key:
                out.append(("email", key, r))
        for r in sms[mark[1] :]:
            if r.get("from") != self.settings.sms_from:
                continue
            to = r.get("to")
            to = to[0] if isinstance(to, list) else to
            out.append(("sms", by_identity.get((to, r.get("body") or "")), r))
        return out

    def sink_lengths(self) -> tuple[int, int]:
        email, sms = self.sink_records()
        return len(email), len(sms)

    # -- runs -----------------------------------------------------------------------------------
    def run_key(self, key: str, tags: dict[str, str] | None = None):
        from darwin_notify_assets.defs.notifications.runs import run_window

        return run_window(key, self.instance, tags=tags)

    def run_window(self, key: str) -> float:
        """Runs a window, again after a failure (as a Dagster retry would), up to 3 times."""
        started = time.monotonic()
        for attempt in range(1, 4):
            result = self.run_key(key)
            if result.success:
                break
            self.run_retries += 1
            log.warning("run of %s failed (attempt %d); retrying", key, attempt)
            self.ensure_kafka()
            time.sleep(2)
        else:
            self.runs_failed.append(key)
        return time.monotonic() - started

    def ensure_kafka(self) -> None:
        if self.kafka_touched:
            services("kafka-start")

    def kafka_restart_later(
        self, delay: float, down: float, run_done: threading.Event
    ) -> threading.Thread:
        def restart() -> None:
            time.sleep(delay)
            self.kafka_touched = True
            during = not run_done.is_set()
            try:
                services("kafka-stop")
                time.sleep(down)
            finally:
                services("kafka-start")
            self.fired["kafka_restart"] += 1
            self.fired["kafka_restart_during_run"] += during

        t = threading.Thread(target=restart, daemon=True)
        t.start()
        return t

    # -- the lag fault --------------------------------------------------------------------------
    def sensor(self, cursor: str):
        from darwin_notify_assets.defs.notifications.runs import evaluate_sensor, requested_windows

        result = evaluate_sensor(self.instance, cursor)
        return requested_windows(result, self.settings.window_minutes), result

    def apply_while_paused(self, i: int, wc) -> None:
        """Writes the window with replay paused: the sensor must refuse it, also once its end
        plus grace has passed on the clock, and request it once replay resumes."""
        from darwin_notify_assets.domain.windows import Window
        from darwin_notify_assets.sample import seed
        from darwin_notify_assets.storage.store import utcnow

        window = self.windows[i]
        cursor = Window.containing(window.start - timedelta(minutes=1), 5).partition_key
        grace_before = os.environ.get("DARWIN_NOTIFY_GRACE_SECONDS")
        self.replica.execute("SELECT pg_wal_replay_pause()").close()
        self.replica.commit()
        self.replica_paused = True
        try:
            deadline = time.monotonic() + 10
            while self.replica.scalar("SELECT pg_get_wal_replay_pause_state()") != "paused":
                self.replica.commit()
                if time.monotonic() > deadline:
                    raise RuntimeError("the standby did not pause its replay")
                time.sleep(0.05)
            self.replica.commit()
            seed.apply_window(self.primary, wc)
            grace = math.ceil((utcnow() - window.end).total_seconds()) + 2
            os.environ["DARWIN_NOTIFY_GRACE_SECONDS"] = str(grace)
            needed = window.end + timedelta(seconds=grace)
            time.sleep(max(0.0, (needed - utcnow()).total_seconds()) + 0.3)
            requested, result = self.sensor(cursor)
            message = getattr(result, "skip_message", None) or ""
            if window.partition_key in requested or "paused" not in message:
                self.violations.append(
                    f"{window.partition_key}: the sensor did not hold the window back while "
                    f"replay was paused: {requested or message}"
                )
        finally:
            self.replica.execute("SELECT pg_wal_replay_resume()").close()
            self.replica.commit()
            self.replica_paused = False
        self.wait_replayed()
        deadline = time.monotonic() + 20
        while True:
            requested, result = self.sensor(cursor)
            if window.partition_key in requested:
                break
            if time.monotonic() > deadline:
                self.violations.append(
                    f"{window.partition_key}: the sensor did not request the window after "
                    f"replay resumed: {getattr(result, 'skip_message', result)}"
                )
                break
            time.sleep(0.5)
        if grace_before is None:
            os.environ.pop("DARWIN_NOTIFY_GRACE_SECONDS", None)
        else:
            os.environ["DARWIN_NOTIFY_GRACE_SECONDS"] = grace_before
        self.fired["replay_pause"] += 1

    # -- after-window faults ----------------------------------------------------------------------
    def rerun(self, i: int) -> None:
        j = self.rng.randrange(0, i + 1)
        mark = self.sink_lengths()
        tags = {"dagster/backfill": f"soak-{self.prefix}"}
        if not self.run_key(self.keys[j], tags).success:
            self.violations.append(f"rerun of {self.keys[j]} failed")
        if self.pipeline_requests(mark):
            self.violations.append(f"rerun of {self.keys[j]} reached a provider")
        self.fired["rerun"] += 1

    def replay(self, i: int) -> None:
        from darwin_notify_assets.bus.base import JobKind
        from darwin_notify_assets.bus.kafka import KafkaBus
        from darwin_notify_assets.delivery.workers import RenderWorker, SendWorker
        from darwin_notify_assets.domain.pipeline import Runtime, load_schedules

        mark = self.sink_lengths()
        s = self.settings
        bus = KafkaBus(
            s.kafka_bootstrap,
            topic_prefix=s.kafka_topic_prefix,
            partitions=s.kafka_partitions,
            group_prefix=f"{self.prefix}-replay-{i}",
        )
        rt = Runtime.from_settings(s)
        try:
            loaded = load_schedules(rt.replica)
            sender = SendWorker(rt.store, rt.senders_factory(), s.send_concurrency)
            handlers = {
                JobKind.RENDER: RenderWorker(
                    rt.replica, rt.store, loaded.schedules, loaded.templates, s.window_minutes
                ),
                JobKind.SEND: sender,
            }
            for kind, handler in handlers.items():
                stop = threading.Event()
                t = threading.Thread(target=bus.consume, args=(kind, handler, stop), daemon=True)
                t.start()
                deadline = time.monotonic() + 90
                try:
                    while bus.lag(kind) > 0:
                        if time.monotonic() > deadline:
                            self.violations.append(f"replay of the {kind} jobs did not finish")
                            break
                        time.sleep(0.5)
                finally:
                    stop.set()
                    t.join(timeout=30)
            sender.close()
        finally:
            rt.close()
            try:
                bus.delete_groups()
            except Exception as exc:  # noqa: BLE001 - a leftover group is harmless here
                log.warning("could not delete the replay groups: %s", exc)
            bus.close()
        if self.pipeline_requests(mark):
            self.violations.append(f"replaying the jobs after window {i} reached a provider")
        self.fired["replay"] += 1

    # -- one window -----------------------------------------------------------------------------
    def draw_faults(self) -> list[str]:
        k = self.rng.choices([0, 1, 2, 3], weights=[2, 4, 3, 1])[0]
        faults = self.rng.sample(FAULTS, k)
        if "send_kill_claim" in faults and "send_kill_provider" in faults:
            faults.remove("send_kill_provider")
        return faults

    def window(self, i: int) -> dict[str, Any]:
        from darwin_notify_assets.domain.messages import MessageStatus
        from darwin_notify_assets.sample import seed
        from darwin_notify_tests.oracle import expected_sends

        key = self.keys[i]
        wc, intensity = self.next_changes(i)
        faults = self.draw_faults()
        self.drawn.update(faults)
        mark = self.sink_lengths()
        victims: list[tuple[str, subprocess.Popen, threading.Thread]] = []
        for fault in faults:
            if fault in KILL_FAILPOINTS:
                victims.append((fault, *self.arm_victim(fault)))
        sink_faults = [f for f in faults if f.startswith("sink_")]
        for fault in sink_faults:
            which = self.rng.choice(["sendgrid", "sms"])
            if fault == "sink_429":
                self.sink_control(which, fail=1, status=429)
            elif fault == "sink_500":
                self.sink_control(which, fail=1, status=500)
            elif fault == "sink_accept_timeout":
                self.sink_control(which, accept_then_delay=1, seconds=LATE_ANSWER)
            else:
                self.sink_control(which, delay_then_reject=1, seconds=LATE_ANSWER, status=503)
        if "replay_pause" in faults:
            self.apply_while_paused(i, wc)
        else:
            seed.apply_window(self.primary, wc)
            self.wait_replayed()
        restart = None
        run_done = threading.Event()
        if "kafka_restart" in faults:
            restart = self.kafka_restart_later(
                self.rng.uniform(0.2, 2.0), self.rng.uniform(0.5, 3.0), run_done
            )
        try:
            seconds = self.run_window(key)
        finally:
            run_done.set()
            if restart is not None:
                restart.join(timeout=120)
                self.ensure_kafka()
        self.run_seconds.append(seconds)
        for which in ("sendgrid", "sms"):
            self.sink_control(which, reset=True)
        if {"sink_accept_timeout", "sink_reject_timeout"} & set(faults):
            time.sleep(LATE_ANSWER + 0.5)  # the late answers reach the record files
        for fault, victim, watcher in victims:
            kind = KILL_FAILPOINTS[fault][0]
            if victim.poll() == -9:
                self.fired[fault] += 1
            else:  # never got a job of this window (nothing to render or send)
                self.stop([victim])
            watcher.join(timeout=10)
            self.fill_pool(kind)
        for _, _, r in self.pipeline_requests(mark):
            if r.get("fault"):
                self.fired[f"sink_{r['fault']}_{r.get('status')}"] += 1
        if "rerun" in faults:
            self.rerun(i)
        if "replay" in faults:
            self.replay(i)
        store = self.store()
        try:
            counts = store.status_counts(key)
        finally:
            store.close()
        expected_now = expected_sends(self.base, self.changes)
        expected_before = expected_sends(self.base, self.changes[:-1])
        row = {
            "window": key,
            "operations": len(wc.operations),
            "intensity": intensity,
            "expected": (
                len(expected_now.email)
                + len(expected_now.sms)
                - len(expected_before.email)
                - len(expected_before.sms)
            ),
            "sent": counts.get(MessageStatus.SENT, 0),
            "unknown": counts.get(MessageStatus.UNKNOWN, 0),
            "failed": counts.get(MessageStatus.FAILED, 0),
            "faults": faults,
            "seconds": round(seconds, 1),
        }
        say(
            f"window {i + 1:>3}/{len(self.keys)} {key}  ops {row['operations']:>4} "
            f"(x{intensity:<4})  expected {row['expected']:>4}  sent {row['sent']:>4}  "
            f"unknown {row['unknown']:>2}  failed {row['failed']:>2}  run {seconds:5.1f}s  "
            f"faults: {', '.join(faults) or '-'}"
        )
        return row

    # -- the reckoning --------------------------------------------------------------------------
    def reckon(self, rows: list[dict[str, Any]], started: float) -> dict[str, Any]:
        from darwin_notify_assets.domain.audit import audit_report
        from darwin_notify_assets.domain.messages import MessageStatus
        from darwin_notify_tests.oracle import expected_sends

        time.sleep(LATE_ANSWER + 0.5)  # late refusals reach the record files
        expected = expected_sends(self.base, self.changes)
        everything = expected.email | expected.sms
        store = self.store()
        try:
            report = audit_report(store, self.keys)
            messages = {m["candidate_key"]: m for m in store.messages()}
        finally:
            store.close()
        requests = self.pipeline_requests(self.mark)
        accepted: Counter = Counter()
        stray = 0
        for channel, key, r in requests:
            ok = 202 if channel == "email" else 201
            if key is None:
                stray += 1
            elif int(r.get("status") or 0) == ok:
                accepted[key] += 1
        by_status: dict[str, set[str]] = {}
        for k, m in messages.items():
            by_status.setdefault(m["status"], set()).add(k)
        sent = by_status.get(MessageStatus.SENT, set())
        unknown = by_status.get(MessageStatus.UNKNOWN, set())
        failed = by_status.get(MessageStatus.FAILED, set())
        duplicates = sorted({k for k, n in accepted.items() if n > 1} | set(report.duplicates))
        missed = sorted(everything - sent - unknown)
        extra = sorted(set(accepted) - everything)
        sent_without_request = sorted(k for k in sent & everything if accepted[k] != 1)
        unknown_accepted = sum(1 for k in unknown if accepted[k] == 1)
        open_ = sorted(
            k
            for k, m in messages.items()
            if m["status"] in (MessageStatus.QUEUED, MessageStatus.SENDING)
        )
        audit_missed = sum(len(w.missed) for w in report.windows)
        audit_unknown = {k for w in report.windows for k in w.unknown}
        problems = list(self.violations)
        if duplicates:
            problems.append(f"{len(duplicates)} duplicates: {duplicates[:5]}")
        if missed:
            problems.append(f"{len(missed)} missed: {missed[:5]}")
        if extra or stray:
            problems.append(f"{len(extra) + stray} unexpected sends: {extra[:5]}")
        if sent_without_request:
            problems.append(
                f"sent but not exactly one accepted request: {sent_without_request[:5]}"
            )
        if open_ or audit_missed:
            problems.append(
                f"{len(open_)} messages never finished, audit lists {audit_missed} missed"
            )
        if audit_unknown != unknown:
            problems.append("the audit does not list exactly the unknown messages")
        if self.runs_failed:
            problems.append(f"runs that failed 3 times: {self.runs_failed}")
        total = time.monotonic() - started
        figures = {
            "windows": len(rows),
            "seed": self.args.seed,
            "size": self.args.size,
            "operations": sum(r["operations"] for r in rows),
            "expected": len(everything),
            "sent": len(sent & everything),
            "unknown": len(unknown),
            "unknown_accepted_once": unknown_accepted,
            "unknown_never_accepted": len(unknown) - unknown_accepted,
            "failed": len(failed),
            "duplicates": len(duplicates),
            "missed": len(missed),
            "unexpected_sends": len(extra) + stray,
            "provider_requests": len(requests),
            "faults_drawn": dict(sorted(self.drawn.items())),
            "faults_fired": dict(sorted(self.fired.items())),
            "run_retries": self.run_retries,
            "runs_failed": len(self.runs_failed),
            "violations": len(self.violations),
            "seconds_total": round(total, 1),
            "seconds_per_run_mean": round(sum(self.run_seconds) / max(1, len(self.run_seconds)), 1),
            "seconds_per_run_max": round(max(self.run_seconds, default=0), 1),
            "ok": not problems,
        }
        say("")
        for line in report.lines()[-12:]:
            say(line)
        say("")
        say(
            f"expected {figures['expected']}  sent {figures['sent']}  unknown {figures['unknown']} "
            f"({unknown_accepted} accepted once, {figures['unknown_never_accepted']} never)  "
            f"failed {figures['failed']}  duplicates {figures['duplicates']}  missed "
            f"{figures['missed']}  unexpected {figures['unexpected_sends']}"
        )
        say(f"faults fired: {figures['faults_fired']}")
        say(
            f"{len(rows)} windows in {total:.0f}s; runs {figures['seconds_per_run_mean']}s mean, "
            f"{figures['seconds_per_run_max']}s max; {self.run_retries} run retries"
        )
        for p in problems:
            say(f"PROBLEM: {p}")
        if problems or self.args.keep:
            say(f"worker logs and Dagster home: {self.work}")
        say(json.dumps(figures, separators=(",", ":")))
        return figures

    def run(self) -> int:
        started = time.monotonic()
        say(
            f"soak: {self.args.windows} windows, seed {self.args.seed}, size {self.args.size}, "
            f"topics {self.prefix}.*"
        )
        rows = []
        try:
            self.setup()
            say(
                f"setup done in {time.monotonic() - started:.1f}s; windows "
                f"{self.keys[0]} .. {self.keys[-1]}"
            )
            from darwin_notify_assets.progress import progress

            bar = progress(total=len(self.keys), desc="soak", unit="window", quiet=self.args.quiet)
            try:
                for i in range(len(self.keys)):
                    rows.append(self.window(i))
                    bar.update(1)
                    bar.set_postfix(
                        sent=sum(r["sent"] for r in rows),
                        unknown=sum(r["unknown"] for r in rows),
                        failed=sum(r["failed"] for r in rows),
                    )
            finally:
                bar.close()
            figures = self.reckon(rows, started)
        finally:
            self.cleanup()
        return 0 if figures["ok"] else 1

    def cleanup(self) -> None:
        if self.replica_paused:
            self.replica.execute("SELECT pg_wal_replay_resume()").close()
            self.replica.commit()
        self.ensure_kafka()
        for kind in self.pool:
            self.stop(self.pool[kind])
        self.stop(self.all_procs)
        try:
            from darwin_notify_assets.bus.kafka import KafkaBus

            bus = KafkaBus.from_settings(self.settings)
            try:
                bus.delete_topics()
                bus.delete_groups()
            finally:
                bus.close()
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the figures
            log.warning("could not delete the soak's Kafka topics: %s", exc)
        for name in ("primary", "replica"):
            db = getattr(self, name, None)
            if db is not None:
                db.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--windows", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--size", choices=("small", "demo"), default="small")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.windows < 1:
        p.error("--windows must be at least 1")
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The broker restarts on purpose: the client's reconnection chatter is expected.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    os.environ.update(services_env())
    work = Path(tempfile.mkdtemp(prefix="darwin-notify-soak-"))
    prefix = f"soak-{uuid.uuid4().hex[:8]}"
    os.environ.update(
        {
            **SOAK_ENV,
            "DARWIN_NOTIFY_HOME": str(work),
            "DAGSTER_HOME": str(work / "dagster_home"),
            "DARWIN_NOTIFY_KAFKA_TOPIC_PREFIX": prefix,
        }
    )
    os.environ.pop("DARWIN_NOTIFY_FAILPOINTS", None)
    with own_dagster_storage(dict(os.environ), "dagster_soak") as dagster_db:
        os.environ["DAGSTER_PG_DB"] = dagster_db
        status = Soak(args, work, prefix).run()
    if status == 0 and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
