"""The benchmark's summary figures, its targets, and the printed table."""

from typing import Any

STATUS_KEYS = (
    "queued",
    "sending",
    "sent",
    "failed",
    "unknown",
    "suppressed",
    "render_failed",
)
WATCHED = ("People", "Property", "Deal", "DeletedRecord")
STAGES = ("detect", "totals", "candidates", "render", "send")


def _rate(n: float, seconds: float | None) -> float | None:
    return round(n / seconds, 1) if seconds else None


def _rows_read(reads: dict[str, dict[str, int]], tables=WATCHED) -> int:
    return sum(
        v.get("seq_tup_read", 0) + v.get("idx_tup_fetch", 0)
        for t, v in reads.items()
        if t in tables
    )


def summarize(r: dict[str, Any]) -> dict[str, Any]:
    staged = r.get("staged") or {}
    stages = staged.get("stages", {})
    final = (staged.get("results") or {}).get("deliver", {})
    statuses = {k: v for k, v in final.items() if k in STATUS_KEYS}
    notifications = sum(statuses.values())
    sent = statuses.get("sent", 0)
    sinks = r.get("sinks", {})
    emails = sinks.get("sendgrid", {}).get("accepted", 0)
    sms = sinks.get("sms", {}).get("accepted", 0)
    sendable = sum(statuses.get(k, 0) for k in ("sent", "failed", "unknown"))
    sec = {name: stages.get(name, {}).get("seconds") for name in STAGES}
    render_timers = _render_timers(r)
    queue_seconds = render_timers.get("store.insert_messages", {}).get("seconds")
    replay = r.get("replay_seconds", 0.0)
    to_queued = replay + sum(sec[s] or 0 for s in ("detect", "totals", "candidates", "render"))
    to_sent = sec["send"]
    s: dict[str, Any] = {
        "notifications": notifications,
        "statuses": statuses,
        "sendable": sendable,
        "sent": sent,
        "emails_accepted": emails,
        "sms_accepted": sms,
        "expected_sends": sendable,
        "sends_match": (
            emails + sms == sent == sendable
            and sinks.get("sendgrid", {}).get("count", 0) == emails
            and sinks.get("sms", {}).get("count", 0) == sms
        ),
        "oracle": r.get("expected_oracle"),
        "stage_seconds": {**sec, "queue": queue_seconds, "replay": replay},
        "change_to_queued_seconds": round(to_queued, 3),
        "change_to_queued_per_second": _rate(notifications, to_queued),
        "change_to_queued_wall_seconds": round(staged["queued_at"] - staged["committed_at"], 3)
        if staged
        else None,
        "queued_to_accepted_seconds": to_sent,
        "queued_to_accepted_per_second": _rate(sent, to_sent),
        "emails_per_second": _rate(emails, to_sent),
        "change_to_accepted_per_second": _rate(notifications, to_queued + (to_sent or 0)),
    }
    if r.get("expected_oracle"):
        o = r["expected_oracle"]
        s["oracle_match"] = o["email"] == emails and o["sms"] == sms
    # Dagster in process.
    d = r.get("dagster")
    if d:
        s["dagster_seconds"] = d["seconds"]
        s["dagster_per_second"] = d["notifications_per_second"]
        s["dagster_success"] = d["success"]
    # Naive.
    n = r.get("naive")
    if n:
        s["naive_per_second"] = n["notifications_per_second"]
        s["naive_sends_per_second"] = n["sends_per_second"]
        s["naive_complete"] = n["complete"]
        s["naive_vs_pipeline"] = (
            round(s["change_to_accepted_per_second"] / n["notifications_per_second"], 1)
            if n["notifications_per_second"]
            else None
        )
        s["naive_to_queued_per_second"] = n.get("to_queued_per_second")
        # The sample's notifications scaled to the whole window: close to the pipeline's count
        # when the random sample has the window's mix.
        s["naive_extrapolated_notifications"] = (
            round(n["notifications"] * n["records_total"] / n["records_done"])
            if n["records_done"]
            else None
        )
        s["naive_vs_pipeline_to_queued"] = (
            round(s["change_to_queued_per_second"] / n["to_queued_per_second"], 1)
            if n.get("to_queued_per_second")
            else None
        )
    # Standalone limits, each as notifications per second for the whole window.
    lim = r.get("limits")
    if lim and notifications:
        rendered = statuses.get("sent", 0) + statuses.get("failed", 0) + statuses.get("unknown", 0)
        limits = {}
        rate = lim["render"]["pool"]["per_second"]
        limits["render"] = round(notifications / (rendered / rate), 1) if rate else None
        limits["insert"] = lim["insert"]["insert_messages"]["per_second"]
        k = lim["kafka"]
        kafka_seconds = sum(v["seconds"] for v in k.values())
        limits["kafka"] = _rate(notifications, kafka_seconds)
        limits["replica_range_read"] = _rate(notifications, lim["replica"]["range_seconds"])
        limits = {k: v for k, v in limits.items() if v}
        slowest = min(limits, key=limits.get)
        s["limits_per_second"] = limits
        s["slowest_limit"] = slowest
        s["vs_slowest_limit"] = round(s["change_to_queued_per_second"] / limits[slowest], 3)
        s["provider_only_emails_per_second"] = lim["provider"]["per_second"]
        s["provider_only_emails_per_second_1_process"] = (
            lim["provider"].get("processes_1") or {}
        ).get("per_second")
        s["insert_plain_rows_per_second"] = lim["insert"]["multirow_insert"]["per_second"]
        s["render_one_process_per_second"] = lim["render"]["one_process"]["per_second"]
        s["render_pool_per_second"] = lim["render"]["pool"]["per_second"]
    # Replica reads and the primary.
    changed = sum((r.get("changes") or {}).get("rows_changed", {}).values())
    s["rows_changed"] = changed
    per_stage = {name: stages.get(name, {}).get("replica_reads", {}) for name in STAGES}
    if per_stage.get("candidates") is None:  # standing workers: read with the render stage
        per_stage = {
            ("candidates+render" if name == "render" else name): v
            for name, v in per_stage.items()
            if name != "candidates"
        }
    s["replica_rows_read_detect"] = _rows_read(per_stage["detect"])
    s["replica_rows_read_watched_all_stages"] = _rows_read(r.get("replica_reads_staged", {}))
    s["replica_rows_read_all_tables"] = _rows_read(
        r.get("replica_reads_staged", {}), tables=tuple(r.get("replica_reads_staged", {}))
    )
    s["replica_read_ratio_detect"] = (
        round(s["replica_rows_read_detect"] / changed, 3) if changed else None
    )
    s["replica_read_ratio_all"] = (
        round(s["replica_rows_read_watched_all_stages"] / changed, 3) if changed else None
    )
    s["replica_rows_read_by_stage"] = {
        name: _rows_read(v, tables=tuple(v)) for name, v in per_stage.items()
    }
    seq = {
        t: v["seq_scan"] for t, v in r.get("replica_reads_staged", {}).items() if v.get("seq_scan")
    }
    s["seq_scans"] = seq
    s["seq_scans_watched"] = sum(v for t, v in seq.items() if t in WATCHED)
    s["primary_statements"] = r.get("primary_statements")
    # Memory.
    mem = {"pipeline process (staged run)": staged.get("peak_rss_mb")}
    mem.update(staged.get("worker_peak_rss_mb") or {})
    if d:
        mem["dagster in-process run"] = d.get("peak_rss_mb")
    if n:
        mem["naive"] = n.get("peak_rss_mb")
    if lim:
        mem["limits"] = lim.get("peak_rss_mb")
        for pid, v in lim["render"]["pool"]["worker_peak_rss_mb"].items():
            mem[f"render-only pool worker {pid}"] = v
    for kind, v in (r.get("sink_peak_rss_mb") or {}).items():
        mem[f"{kind} sink"] = v
    mem["orchestrator (holds the generated dataset)"] = r.get("orchestrator_peak_rss_mb")
    s["peak_rss_mb"] = mem
    s["disturbed"] = {
        name: st.get("restarted_services")
        for name, st in stages.items()
        if st.get("restarted_services")
    }
    if r.get("tenants"):
        s["tenants"] = _tenants(staged, r["tenants"])
    s["targets"] = targets(s)
    return s


QUEUED_STAGES = ("detect", "totals", "candidates", "render")


def _to_queued(run: dict[str, Any]) -> dict[str, Any]:
    """One staged run's stages up to queued: seconds, candidates and notifications/s."""
    stages = run.get("stages", {})
    seconds = {name: stages.get(name, {}).get("seconds") for name in QUEUED_STAGES}
    total = sum(v or 0 for v in seconds.values())
    results = run.get("results", {})
    candidates = (results.get("candidates") or {}).get("candidates", 0)
    return {
        "candidates": candidates,
        "events": (results.get("detect") or {}).get("events_detected", 0),
        "decided_against": (results.get("detect") or {}).get("changes_decided_against", 0),
        "stage_seconds": seconds,
        "seconds": round(total, 3),
        "per_second": _rate(candidates, total),
    }


def _tenants(staged: dict[str, Any], tenants: dict[str, Any]) -> dict[str, Any]:
    """The five-schedule run beside the many-schedule run, both from detection to queued
    (without the replica's replay, which only the first one waited for)."""
    five, many = _to_queued(staged), _to_queued(tenants)
    return {
        "schedules": tenants.get("schedules"),
        "offices": tenants.get("offices"),
        "five": five,
        "many": many,
        "same_candidates": five["candidates"] == many["candidates"],
        "ratio": round(many["per_second"] / five["per_second"], 3)
        if five["per_second"] and many["per_second"]
        else None,
    }


def targets(s: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []

    def add(name, value, target, ok):
        rows.append(
            {
                "target": name,
                "value": value,
                "goal": target,
                "met": None if value is None else bool(ok),
            }
        )

    v = s.get("change_to_queued_per_second")
    add("change -> queued, notifications/s", v, ">= 10,000", v is not None and v >= 10_000)
    v = s.get("naive_vs_pipeline")
    add("pipeline vs naive (change -> accepted)", v, ">= 20x", v is not None and v >= 20)
    v = s.get("naive_vs_pipeline_to_queued")
    add("pipeline vs naive (change -> queued)", v, ">= 20x", v is not None and v >= 20)
    v = s.get("vs_slowest_limit")
    add("end to end vs slowest stage limit", v, ">= 0.5", v is not None and v >= 0.5)
    v = s.get("emails_per_second")
    add("emails/s accepted by the sink", v, ">= 2,000", v is not None and v >= 2000)
    v = (s.get("peak_rss_mb") or {}).get("pipeline process (staged run)")
    add("peak RSS of the pipeline process, MB", v, "< 400", v is not None and v < 400)
    v = s.get("primary_statements")
    add("statements on the primary", v, "0", v == 0)
    v = s.get("replica_read_ratio_detect")
    add(
        "replica rows read / rows changed (change detection)",
        v,
        "<= 1.1",
        v is not None and v <= 1.1,
    )
    v = s.get("replica_read_ratio_all")
    add(
        "replica rows read / rows changed (all stages, watched tables)",
        v,
        "<= 1.1",
        v is not None and v <= 1.1,
    )
    return rows


def _n(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(r: dict[str, Any], s: dict[str, Any]) -> str:
    m = r["machine"]
    w = r["workload"]["seed_size"]
    ch = r.get("changes", {})
    lines = [
        f"darwin-notify benchmark: {m['nproc']} CPUs ({m['cpu_model']}), "
        f"{m['memory_mb'] / 1024:.1f} GiB, Python {m['python']}; run {r['run_id']}, "
        f"{r['wall_seconds']:.0f} s",
        f"command: {r['command']}; workers: "
        + (
            "2 render + 2 send `darwin-notify worker` processes"
            if (r.get("staged") or {}).get("workers", "processes") == "processes"
            else "the Runtime's inline threads in the pipeline's process"
        ),
        f"background load before the run: {r.get('background_busy_cpus', 0):.2f} CPUs busy "
        "(other processes; their CPU time per stage is 'other' below)",
        f"source: {w['contacts']:,} contacts, {w['agents']:,} agents, {w['properties']:,} "
        f"properties, {w['deals']:,} deals; window {r['workload']['partition_key']}: "
        f"{ch.get('operations', 0):,} operations, {s['rows_changed']:,} rows changed "
        f"(intensity {r['workload']['intensity']})",
        f"notifications: {s['notifications']:,} ({_status_text(s['statuses'])}); "
        f"sent {s['sent']:,} = {s['emails_accepted']:,} emails + {s['sms_accepted']:,} SMS "
        f"accepted by the sinks"
        + (
            f"; oracle {s['oracle']['email']:,}+{s['oracle']['sms']:,}"
            f" {'matches' if s.get('oracle_match') else 'DIFFERS'}"
            if s.get("oracle")
            else ""
        ),
        *(
            [
                f"DISTURBED: services restarted during {s['disturbed'] or ''} "
                f"{r.get('restarted_services') or ''}; rerun for clean figures"
            ]
            if s["disturbed"] or r.get("restarted_services")
            else []
        ),
        *(
            [f"attempt {r['attempts']} (earlier attempts were disturbed by service restarts)"]
            if r.get("attempts", 1) > 1
            else []
        ),
        "",
        f"{'stage':<34}{'seconds':>9}{'notif/s':>10}   busiest CPU (seconds) / inside",
    ]
    stages = (r.get("staged") or {}).get("stages", {})
    lines.append(
        f"{'replica replay (commit -> applied)':<34}{_n(s['stage_seconds']['replay'], 2):>9}"
    )
    for name in STAGES:
        st = stages.get(name)
        if not st:
            continue
        cpu = {k: v for k, v in st["cpu_seconds"].items() if k not in ("idle", "steal")}
        top = ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])[:3])
        lines.append(
            f"{name:<34}{_n(st['seconds'], 2):>9}"
            f"{_n(_rate(s['notifications'] if name != 'send' else s['sent'], st['seconds'])):>10}"
            f"   {top}"
        )
        if name == "render":
            standing = (r.get("staged") or {}).get("workers", "processes") == "processes"
            lines.append(
                f"{'  of which queue (insert_messages)':<34}"
                f"{_n(s['stage_seconds']['queue'], 2):>9}"
                f"{'':>10}   {_inside(_render_timers(r))}"
                + (
                    " (worker processes' time, rendering began during candidates)"
                    if standing
                    else ""
                )
            )
    lines += [
        f"{'change committed -> queued':<34}{_n(s['change_to_queued_seconds'], 2):>9}"
        f"{_n(s['change_to_queued_per_second']):>10}   (replay + stages; wall incl. the "
        f"benchmark's pauses {_n(s['change_to_queued_wall_seconds'], 2)} s)",
        f"{'queued -> accepted by the sinks':<34}{_n(s['queued_to_accepted_seconds'], 2):>9}"
        f"{_n(s['queued_to_accepted_per_second']):>10}   ({_n(s['emails_per_second'])} emails/s)",
        f"{'change committed -> accepted':<34}{'':>9}{_n(s['change_to_accepted_per_second']):>10}",
    ]
    if "dagster_seconds" in s:
        d = r["dagster"]
        steps = ", ".join(f"{k} {v:.1f}" for k, v in d["step_seconds"].items())
        layout = (
            "standing worker processes"
            if d.get("workers") == "processes"
            else "inline worker threads"
        )
        lines.append(
            f"{'Dagster in process, -> queued':<34}{_n(s['dagster_seconds'], 2):>9}"
            f"{_n(s['dagster_per_second']):>10}   {steps} ({layout})"
        )
    if "naive_per_second" in s:
        n = r["naive"]
        lines.append(
            f"{'naive per-row, change -> accepted':<34}{_n(n['seconds'], 2):>9}"
            f"{_n(s['naive_per_second']):>10}   {n['notifications']:,} notifications from "
            f"{n['records_done']:,}/{n['records_total']:,} changed records"
            f"{'' if n['complete'] else ' (random sample, time budget)'}, "
            f"{_n(s['naive_extrapolated_notifications'])} for all; pipeline is "
            f"{_n(s['naive_vs_pipeline'], 1)}x"
        )
        lines.append(
            f"{'naive per-row, change -> queued':<34}{_n(n['seconds'] - n['send_seconds'], 2):>9}"
            f"{_n(s['naive_to_queued_per_second']):>10}   the same without its sends; pipeline "
            f"is {_n(s['naive_vs_pipeline_to_queued'], 1)}x"
        )
    if "limits_per_second" in s:
        lim = r["limits"]
        lines += ["", "standalone limits (same data, same run), as notifications/s for the window:"]
        lines.append(
            f"  render-only, {lim['render']['pool']['processes']} processes: "
            f"{_n(s['render_pool_per_second'])} messages/s (1 process "
            f"{_n(s['render_one_process_per_second'])}) -> "
            f"{_n(s['limits_per_second'].get('render'))}/s"
        )
        lines.append(
            f"  insert-only, store.insert_messages: "
            f"{_n(lim['insert']['insert_messages']['per_second'])} rows/s "
            f"(history rows from RETURNING "
            f"{_n(lim['insert'].get('insert_returning', {}).get('per_second'))} rows/s; "
            f"plain multi-row INSERT {_n(s['insert_plain_rows_per_second'])} rows/s)"
        )
        k = lim["kafka"]
        lines.append(
            "  kafka produce+consume-only: "
            + "; ".join(
                f"{kind} {v['jobs']} jobs / {v['ids']:,} ids in {v['seconds']:.2f}s"
                for kind, v in k.items()
            )
            + f" -> {_n(s['limits_per_second'].get('kafka'))}/s"
        )
        rep = lim["replica"]
        lines.append(
            f"  replica range read: {rep['range_rows']:,} rows in "
            f"{rep['range_seconds']:.2f}s ({_n(rep['range_rows_per_second'])} rows/s) -> "
            f"{_n(s['limits_per_second'].get('replica_range_read'))}/s; by id "
            f"{_n(rep['fetch_by_ids_rows_per_second'])} rows/s"
        )
        lines.append(
            f"  provider-only (the email sender -> sink, no database), 2 processes of "
            f"{lim['provider']['threads']} threads: "
            f"{_n((lim['provider'].get('processes_2') or {}).get('per_second'))} "
            f"emails/s (1 process "
            f"{_n(s['provider_only_emails_per_second_1_process'])})"
        )
        lines.append(
            f"  slowest: {s['slowest_limit']}; end to end (change -> queued) is "
            f"{100 * s['vs_slowest_limit']:.0f}% of it"
        )
    if s.get("tenants"):
        t = s["tenants"]
        lines += ["", "many tenants, detect -> queued (stage seconds; no replay):"]
        for label, part in (
            ("5 sample schedules", t["five"]),
            (f"{t['schedules']:,} schedules, {t['offices']:,} offices", t["many"]),
        ):
            stages = ", ".join(f"{k} {_n(v, 2)}" for k, v in part["stage_seconds"].items())
            lines.append(
                f"  {label:<32}{_n(part['seconds'], 2):>9}{_n(part['per_second']):>10}   "
                f"{part['candidates']:,} candidates from {part['events']:,} events "
                f"({part['decided_against']:,} decided against); {stages}"
            )
        lines.append(
            f"  same candidates: {'yes' if t['same_candidates'] else 'no'} (a deletion of a "
            f"record never seen fires a sample schedule, no office's); "
            f"{_n(t['ratio'], 2)}x the five-schedule rate"
        )
    lines += [
        "",
        f"primary statements by the pipeline role: {s['primary_statements']}",
        f"replica rows read (seq_tup_read + idx_tup_fetch): detection "
        f"{s['replica_rows_read_detect']:,} for {s['rows_changed']:,} rows changed "
        f"({s['replica_read_ratio_detect']}x); all stages, watched tables "
        f"{s['replica_rows_read_watched_all_stages']:,} ({s['replica_read_ratio_all']}x); "
        f"by stage {s['replica_rows_read_by_stage']}",
        f"sequential scans on the replica: {s['seq_scans'] or 'none'} "
        f"({s['seq_scans_watched']} on watched tables)",
        "peak RSS (MB): " + ", ".join(f"{k} {v}" for k, v in s["peak_rss_mb"].items()),
        "",
        f"{'target':<62}{'value':>12}  {'goal':<10} met",
    ]
    for t in s["targets"]:
        met = "-" if t["met"] is None else ("yes" if t["met"] else "NO")
        lines.append(f"{t['target']:<62}{_n(t['value'], 2):>12}  {t['goal']:<10} {met}")
    return "\n".join(lines)


def _status_text(statuses: dict[str, int]) -> str:
    return ", ".join(f"{v:,} {k}" for k, v in sorted(statuses.items(), key=lambda kv: -kv[1]) if v)


def _render_timers(r: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The render workers' method timings: the staged process's own with inline workers,
    else those the worker processes wrote."""
    staged = r.get("staged") or {}
    own = staged.get("stages", {}).get("render", {}).get("timers", {})
    if "render.handle" in own:
        return own
    return staged.get("worker_timers", {}).get("render", {}) or own


def _inside(timers: dict[str, dict[str, float]]) -> str:
    handle = timers.get("render.handle", {}).get("seconds") or 0
    if not handle:
        return ""
    parts = {
        "render": timers.get("render.render_one", {}).get("seconds", 0),
        "merge fetch": timers.get("render.fetch", {}).get("seconds", 0),
        "load items": timers.get("store.load_render_items", {}).get("seconds", 0),
        "queue": timers.get("store.insert_messages", {}).get("seconds", 0),
    }
    return "worker time: " + ", ".join(f"{k} {100 * v / handle:.0f}%" for k, v in parts.items())
