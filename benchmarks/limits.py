"""Each stage's standalone limit, on the same data and stack (a child process of bench.py).

* render-only: the window's own render contexts (built by the product's RenderWorker from a
  random sample of the window's candidates), rendered with the same compiled templates by
  ``render_email`` / ``render_sms``, in a process pool with one process per core (and in one
  process, for reference). Nothing else: no database, no bus, no address checks.
* insert-only: the window's message rows, as the staged run stored them, inserted into an
  empty store by the product's ``NotificationStore.insert_messages`` in batches of
  ``render_batch`` (insert-if-absent plus history rows), and as plain multi-row INSERTs.
* Kafka produce+consume-only: the window's render jobs and send jobs (same ids, same batch
  sizes, same envelopes) through the product's ``KafkaBus``, consumed by as many consumers as
  the pipeline runs, with a handler that does nothing.
* replica range reads: the change reads of the window (``ReplicaReader.read_changes`` of each
  watched table, same columns and range), and merge-field reads by id for reference.
* provider-only: emails through the product's SendGrid sender to the sink, with as many
  threads as the send stage uses (2 workers x ``send_concurrency``), no database.
"""

import multiprocessing
import os
import pickle
import random
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from benchmarks.instrument import peak_rss_mb

RENDER_CHUNK = 1000


# -- render-only ------------------------------------------------------------------------------
_BARRIER = None


def _init_pool(barrier) -> None:
    global _BARRIER
    _BARRIER = barrier


def _render_slice(path: str, index: int, parts: int) -> dict[str, Any]:
    """Runs in a pool process: load the contexts, wait for the others, then time rendering
    this slice only."""
    from darwin_notify_assets.domain.render import compile_template, render_email, render_sms

    with open(path, "rb") as f:
        templates, items = pickle.load(f)
    compiled = {tid: compile_template(t) for tid, t in templates.items()}
    mine = items[index::parts]
    _BARRIER.wait(timeout=120)
    started = time.time()
    cpu = time.process_time()
    for tid, channel, context in mine:
        if channel == "email":
            render_email(compiled[tid], context)
        else:
            render_sms(compiled[tid], context)
    return {
        "rendered": len(mine),
        "started": started,
        "ended": time.time(),
        "cpu": time.process_time() - cpu,
        "pid": os.getpid(),
        "peak_rss_mb": peak_rss_mb(),
    }


def render_contexts(settings, partition_key: str, sample: int) -> tuple[dict, list]:
    """(templates by id, [(template id, channel, context)]) for a sample of the window."""
    from darwin_notify_assets.delivery.workers import RenderWorker, TotalsNotFresh
    from darwin_notify_assets.domain.pipeline import load_schedules
    from darwin_notify_assets.domain.render import address_for
    from darwin_notify_assets.storage.replica import ReplicaReader
    from darwin_notify_assets.storage.store import NotificationStore

    replica = ReplicaReader.open(settings.replica_url)
    store = NotificationStore.open(settings.store_url)
    try:
        loaded = load_schedules(replica)
        ids = [
            int(r[0])
            for r in store.db.query(
                "SELECT candidate_id FROM candidate WHERE partition_key = ?", [partition_key]
            )
        ]
        store.db.commit()
        random.Random(7).shuffle(ids)
        ids = sorted(ids[:sample])
        worker = RenderWorker(
            replica, store, loaded.schedules, loaded.templates, settings.window_minutes
        )
        out = []
        for start in range(0, len(ids), settings.render_batch):
            # load_render_items skips candidates that have a message: read them directly.
            items = _render_items(store, ids[start : start + settings.render_batch])
            data = worker.fetch(items)
            for item in items:
                schedule = loaded.schedules.by_id(item.schedule_id)
                record = (
                    item.row_values
                    if item.event_type == "delete"
                    else data.records.get((item.source_table, item.record_id))
                )
                agent = data.agents.get(item.agent_id) if item.agent_id is not None else None
                recipient = (
                    agent
                    if item.recipient_kind == "agent"
                    else data.contacts.get(item.recipient_id)
                )
                if record is None or recipient is None:
                    continue
                model = replica.model
                flag = model.contact.opt_in_column(item.channel)
                if item.recipient_kind != "agent" and flag and not recipient.get(flag):
                    continue
                try:
                    address_for(item.channel, recipient, model.recipients[item.recipient_kind])
                    context = worker.context(item, schedule, record, agent, recipient, data)
                except (ValueError, TotalsNotFresh):
                    continue
                out.append((schedule.template_id, item.channel, context))
        return dict(loaded.schedules.templates), out
    finally:
        replica.close()
        store.close()


def _render_items(store, candidate_ids):
    import json

    from darwin_notify_assets.storage.dialects import placeholders
    from darwin_notify_assets.storage.store import RenderItem

    rows = store.db.query(
        "SELECT c.candidate_id, c.candidate_key, c.partition_key, c.schedule_id, c.channel, "
        "c.source_table, c.record_id, c.agent_id, c.recipient_kind, c.recipient_id, "
        "c.uses_totals, e.event_type, e.old_values, e.row_values FROM candidate c "
        "JOIN change_event e ON e.event_id = c.event_id "
        f"WHERE c.candidate_id IN ({placeholders(len(candidate_ids))})",
        candidate_ids,
    )
    store.db.commit()
    return [
        RenderItem(
            int(r[0]),
            r[1],
            r[2],
            int(r[3]),
            r[4],
            r[5],
            int(r[6]),
            None if r[7] is None else int(r[7]),
            r[8],
            None if r[9] is None else int(r[9]),
            bool(r[10]),
            r[11],
            json.loads(r[12]) if r[12] else None,
            json.loads(r[13]) if r[13] else None,
        )
        for r in rows
    ]


def render_limit(settings, config: dict[str, Any], say) -> dict[str, Any]:
    t = time.monotonic()
    templates, items = render_contexts(
        settings, config["partition_key"], int(config.get("render_sample", 20000))
    )
    path = os.path.join(os.path.dirname(config["result_path"]), "render-contexts.pickle")
    with open(path, "wb") as f:
        pickle.dump((templates, items), f)
    prepare = time.monotonic() - t
    out: dict[str, Any] = {"sample": len(items), "prepare_seconds": round(prepare, 2)}
    ctx = multiprocessing.get_context("spawn")
    for label, procs in (("one_process", 1), ("pool", os.cpu_count() or 2)):
        barrier = ctx.Barrier(procs)
        with ProcessPoolExecutor(
            max_workers=procs, mp_context=ctx, initializer=_init_pool, initargs=(barrier,)
        ) as pool:
            parts = list(pool.map(_render_slice, [path] * procs, range(procs), [procs] * procs))
        wall = max(p["ended"] for p in parts) - min(p["started"] for p in parts)
        n = sum(p["rendered"] for p in parts)
        out[label] = {
            "processes": procs,
            "rendered": n,
            "seconds": round(wall, 3),
            "per_second": round(n / wall, 1) if wall else None,
            "cpu_seconds": round(sum(p["cpu"] for p in parts), 3),
            "worker_peak_rss_mb": {str(p["pid"]): p["peak_rss_mb"] for p in parts},
        }
        say(
            f"  render-only ({procs} process{'es' if procs > 1 else ''}): "
            f"{out[label]['per_second'] or 0:.0f} messages/s"
        )
    os.unlink(path)
    return out


# -- insert-only ------------------------------------------------------------------------------
def insert_limit(settings, config: dict[str, Any], say) -> dict[str, Any]:
    from darwin_notify_assets.domain.messages import MessageStatus
    from darwin_notify_assets.storage.db import connect
    from darwin_notify_assets.storage.store import (
        MESSAGE_COLUMNS,
        NotificationStore,
        OutboundMessage,
    )

    source = connect(config["staged_store_url"])
    scratch = NotificationStore.open(config["scratch_store_url"])
    scratch.ensure_schema()
    batch = settings.render_batch
    cols = [c for c in MESSAGE_COLUMNS if c != "message_id"]
    timings = {"insert_messages": 0.0, "insert_returning": 0.0, "multirow_insert": 0.0}
    n = 0
    try:
        for _names, rows in source.stream(
            f"SELECT {', '.join(cols)} FROM message WHERE partition_key = ? ORDER BY message_id",
            [config["partition_key"]],
            batch,
        ):
            messages = [
                # Created as a render worker creates them (queued): the store refuses to
                # create a message in a later state, and the insert costs the same.
                OutboundMessage(
                    **dict(zip(cols, r, strict=True)) | {"status": MessageStatus.QUEUED}
                )
                for r in rows
            ]
            t = time.perf_counter()
            scratch.insert_messages(messages)
            timings["insert_messages"] += time.perf_counter() - t
            n += len(messages)
        source.commit()
        # The proposed form: the history rows come from the INSERT's RETURNING (psqlODBC's
        # cursor mode does not take a data-modifying WITH), with no NOT EXISTS probe.
        scratch.db.execute("TRUNCATE message, message_event").close()
        scratch.db.commit()
        for _names, rows in source.stream(
            f"SELECT {', '.join(cols)} FROM message WHERE partition_key = ? ORDER BY message_id",
            [config["partition_key"]],
            batch,
        ):
            t = time.perf_counter()
            _insert_returning(scratch.db, cols, rows)
            timings["insert_returning"] += time.perf_counter() - t
        source.commit()
        # The same rows again as plain multi-row INSERTs, into a table without the history.
        scratch.db.execute("CREATE TABLE plain_message (LIKE message INCLUDING ALL)").close()
        scratch.db.commit()
        plain_cols = [*cols, "attempts", "created_at", "updated_at"]
        for _names, rows in source.stream(
            f"SELECT {', '.join(plain_cols)} FROM message WHERE partition_key = ? "
            "ORDER BY message_id",
            [config["partition_key"]],
            batch,
        ):
            t = time.perf_counter()
            scratch.db.insert_rows("plain_message", plain_cols, rows)
            scratch.db.commit()
            timings["multirow_insert"] += time.perf_counter() - t
        source.commit()
    finally:
        source.close()
        scratch.close()
    out = {"rows": n, "batch": batch}
    for k, v in timings.items():
        out[k] = {"seconds": round(v, 3), "per_second": round(n / v, 1) if v else None}
    say(
        f"  insert-only: insert_messages {out['insert_messages']['per_second'] or 0:.0f} rows/s,"
        f" with RETURNING {out['insert_returning']['per_second'] or 0:.0f} rows/s,"
        f" plain multi-row {out['multirow_insert']['per_second'] or 0:.0f} rows/s"
    )
    return out


def _insert_returning(db, cols: list[str], rows: list[tuple]) -> None:
    from darwin_notify_assets.storage.store import utcnow

    now = db.ts(utcnow())
    columns = [*cols, "attempts", "created_at", "updated_at"]
    per = max(1, min(1000, db.max_params // len(columns)))
    marks = "(" + ", ".join(["?"] * len(columns)) + ")"
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        params = [v for r in chunk for v in (*r, 0, now, now)]
        created = db.query(
            f"INSERT INTO message ({', '.join(columns)}) VALUES "
            f"{', '.join([marks] * len(chunk))} ON CONFLICT (candidate_id) DO NOTHING "
            "RETURNING message_id, status, reason, created_at",
            params,
        )
        db.insert_rows(
            "message_event",
            ("message_id", "from_status", "to_status", "reason", "at"),
            [(mid, None, status, reason, at) for mid, status, reason, at in created],
        )
    db.commit()


# -- Kafka ------------------------------------------------------------------------------------
def kafka_limit(settings, config: dict[str, Any], say) -> dict[str, Any]:
    from darwin_notify_assets.bus.base import JobKind
    from darwin_notify_assets.bus.kafka import KafkaBus
    from darwin_notify_assets.storage.db import connect

    source = connect(config["staged_store_url"])
    try:
        pk = config["partition_key"]
        candidate_ids = [
            int(r[0])
            for r in source.query(
                "SELECT candidate_id FROM candidate WHERE partition_key = ? ORDER BY 1", [pk]
            )
        ]
        message_ids = [
            int(r[0])
            for r in source.query(
                "SELECT message_id FROM message WHERE partition_key = ? AND status = 'sent' "
                "ORDER BY 1",
                [pk],
            )
        ]
        source.commit()
    finally:
        source.close()
    prefix = config["topic_prefix"]
    bus = KafkaBus(
        settings.kafka_bootstrap,
        topic_prefix=prefix,
        partitions=settings.kafka_partitions,
        group_prefix=prefix,
    )
    bus.ensure_topics()
    out: dict[str, Any] = {}
    for kind, ids, size in (
        (JobKind.RENDER, candidate_ids, settings.render_batch),
        (JobKind.SEND, message_ids, settings.send_batch),
    ):
        out[str(kind)] = _through_kafka(bus, kind, pk, ids, size, settings.inline_workers)
        say(
            f"  kafka-only {kind}: {out[str(kind)]['jobs']} jobs, {len(ids)} ids in "
            f"{out[str(kind)]['seconds']:.2f}s"
        )
    bus.close()
    return out


def _through_kafka(
    bus, kind, partition_key: str, ids: list[int], size: int, consumers: int
) -> dict[str, Any]:
    """Publish the jobs to standing consumers whose handlers do nothing; time until the last
    one is handled. The consumers join their group and take their partitions first, as
    standing workers have before a window arrives."""
    from darwin_notify_assets.bus.base import Job, make_jobs

    lock = threading.Lock()
    seen = {"jobs": 0, "ids": 0}
    arrived = threading.Condition(lock)

    def handle(job):
        with arrived:
            seen["jobs"] += 1
            seen["ids"] += len(job.ids)
            arrived.notify_all()

    def wait_for(n: int, timeout: float) -> bool:
        with arrived:
            return arrived.wait_for(lambda: seen["jobs"] >= n, timeout)

    stop = threading.Event()
    threads = [
        threading.Thread(target=bus.consume, args=(kind, handle, stop), daemon=True)
        for _ in range(max(2, consumers))
    ]
    for thread in threads:
        thread.start()
    try:
        # One job per partition, handled once every partition has its consumer.
        warmups = bus.publish(Job(kind, partition_key, (-1,)) for _ in range(bus.partitions))
        if not wait_for(warmups, 120):
            raise RuntimeError(f"kafka limit: the {kind} consumers never got their partitions")
        with lock:
            seen.update(jobs=0, ids=0)
        t = time.perf_counter()
        jobs = bus.publish(make_jobs(kind, partition_key, ids, size))
        produced = time.perf_counter() - t
        finished = wait_for(jobs, 300)
        total = time.perf_counter() - t
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    return {
        "jobs": jobs,
        "ids": len(ids),
        "finished": finished,
        "consumers": len(threads),
        "produce_seconds": round(produced, 3),
        "seconds": round(total, 3),
        "ids_per_second": round(len(ids) / total, 1) if total else None,
    }


# -- replica ----------------------------------------------------------------------------------
def replica_limit(settings, config: dict[str, Any], say) -> dict[str, Any]:
    from darwin_notify_assets.domain.detect import plan_reads
    from darwin_notify_assets.domain.pipeline import load_schedules
    from darwin_notify_assets.domain.windows import Window
    from darwin_notify_assets.storage.replica import ReplicaReader

    replica = ReplicaReader.open(settings.replica_url)
    try:
        loaded = load_schedules(replica)
        window = Window.from_key(config["partition_key"], settings.window_minutes)
        read_from = window.read_from(settings.lookback)
        plans = [p for p in plan_reads(loaded.schedules) if p.watch_columns]
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            rows = 0
            for plan in plans:
                for batch in replica.read_changes(
                    plan.table, plan.watch_columns, read_from, window.end
                ):
                    rows += len(batch)
            rows += len(
                replica.read_deletions(loaded.schedules.delete_tables, read_from, window.end)
            )
            runs.append((time.perf_counter() - t, rows))
        seconds, rows = sorted(runs)[1]
        people = [
            int(r[0])
            for r in replica.db.query(
                'SELECT "PeopleID" FROM "People" ORDER BY "PeopleID" LIMIT 20000'
            )
        ]
        replica.db.rollback()
        random.Random(7).shuffle(people)
        t = time.perf_counter()
        fetched = 0
        for start in range(0, len(people), settings.render_batch):
            fetched += len(
                replica.fetch_by_ids("People", people[start : start + settings.render_batch])
            )
        fetch_seconds = time.perf_counter() - t
    finally:
        replica.close()
    out = {
        "range_rows": rows,
        "range_seconds": round(seconds, 3),
        "range_rows_per_second": round(rows / seconds, 1) if seconds else None,
        "fetch_by_ids_rows": fetched,
        "fetch_by_ids_seconds": round(fetch_seconds, 3),
        "fetch_by_ids_rows_per_second": round(fetched / fetch_seconds, 1)
        if fetch_seconds
        else None,
    }
    say(
        f"  replica range read: {out['range_rows_per_second'] or 0:.0f} rows/s; "
        f"by id: {out['fetch_by_ids_rows_per_second'] or 0:.0f} rows/s"
    )
    return out


# -- provider ---------------------------------------------------------------------------------
def _send_share(settings, messages: list, threads: int) -> float:
    """Sends ``messages`` with ``threads`` threads through the product's email sender."""
    from darwin_notify_assets.domain.pipeline import make_senders

    senders = make_senders(settings)
    try:
        t = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(senders["email"].send, messages))
        return time.perf_counter() - t
    finally:
        for sender in senders.values():
            sender.close()


def provider_limit(settings, config: dict[str, Any], say) -> dict[str, Any]:
    from darwin_notify_assets.domain.messages import MessageStatus
    from darwin_notify_assets.storage.db import connect
    from darwin_notify_assets.storage.store import MESSAGE_COLUMNS, OutboundMessage

    count = int(config.get("provider_sample", 5000))
    source = connect(config["staged_store_url"])
    try:
        rows = source.query_dicts(
            f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM message WHERE partition_key = ? "
            "AND channel = 'email' AND status = 'sent' ORDER BY message_id LIMIT ?",
            [config["partition_key"], count],
        )
        source.commit()
    finally:
        source.close()
    messages = [OutboundMessage(**{**r, "status": MessageStatus.QUEUED}) for r in rows]
    threads = settings.send_concurrency
    out: dict[str, Any] = {"emails": len(messages), "threads": threads}
    # As the send workers do: one process, then two, each with its pool of sending threads.
    for processes in (1, 2):
        shares = [messages[i::processes] for i in range(processes)]
        t = time.perf_counter()
        if processes == 1:
            _send_share(settings, messages, threads)
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(processes, mp_context=ctx) as pool:
                list(pool.map(_send_share, [settings] * processes, shares, [threads] * processes))
        seconds = time.perf_counter() - t
        label = f"processes_{processes}"
        out[label] = {
            "seconds": round(seconds, 3),
            "per_second": round(len(messages) / seconds, 1) if seconds else None,
        }
        say(
            f"  provider-only, {processes} process(es) of {threads} threads: "
            f"{out[label]['per_second'] or 0:.0f} emails/s"
        )
    out["per_second"] = max(
        out["processes_1"]["per_second"] or 0, out["processes_2"]["per_second"] or 0
    )
    return out


def run(config: dict[str, Any], say) -> dict[str, Any]:
    from darwin_notify_assets.config import Settings

    settings = Settings.from_env()
    from dataclasses import replace

    staged = replace(settings, store_url=config["staged_store_url"])
    say("ready")
    sys.stdin.readline()
    out = {
        "replica": replica_limit(staged, config, say),
        "render": render_limit(staged, config, say),
        "insert": insert_limit(settings, config, say),
        "kafka": kafka_limit(settings, config, say),
        "provider": provider_limit(settings, config, say),
        "peak_rss_mb": peak_rss_mb(),
    }
    return out
