"""The notification chain of change windows, as Dagster assets.

Grain: every asset is partitioned by UTC day (``notification_days``); a run processes the
windows of its day that its tag names (see ``partitions.py``), one after the other, and its
materialization records the counts, in total and per window. The data lives in the
notification store, keyed by window. Reruns and backfills are safe: every write is
insert-if-absent or a conditional transition.
"""

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from dagster import (
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from darwin_notify_assets.defs.notifications import checks
from darwin_notify_assets.defs.notifications.partitions import (
    WINDOWS_TAG,
    notification_days,
    run_created_at,
    windows_of_run,
)
from darwin_notify_assets.defs.resources import (
    JobBusResource,
    PipelineResource,
    ReplicaResource,
    SendersResource,
    StoreResource,
    runtime,
)
from darwin_notify_assets.domain.audit import rendered_count
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.domain.pipeline import (
    LoadedSchedules,
    merge_field_problems,
    schedules_for_run,
    stage_agent_totals,
    stage_candidates,
    stage_change_window,
    stage_deliver,
    stage_render,
)
from darwin_notify_assets.domain.plots import markdown_image, outcomes_png
from darwin_notify_assets.domain.preview import failures_by_reason, safe_preview
from darwin_notify_assets.domain.privacy import mask_text
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.errors import ConfigurationError, ReplicaBehind
from darwin_notify_assets.storage.replica import ReplicaWatermark
from darwin_notify_assets.storage.store import utcnow

GROUP = "notifications"


def run_windows(context: AssetExecutionContext, pipeline: PipelineResource) -> list[Window]:
    """The windows this run processes (its tag, or its day's windows ready at its creation)."""
    record = context.instance.get_run_record_by_id(context.run_id)
    created = run_created_at(record.create_timestamp) if record else utcnow()
    try:
        return windows_of_run(
            context.partition_key,
            context.run.tags.get(WINDOWS_TAG),
            pipeline.window_minutes,
            created,
            timedelta(seconds=pipeline.grace_seconds),
        )
    except ConfigurationError as exc:
        raise Failure(description=str(exc), allow_retries=False) from None


def per_window_metadata(
    rows: Sequence[tuple[Window, Mapping[str, Any]]], maxima: Sequence[str] = ()
) -> dict[str, Any]:
    """The run's counts: numbers summed over its windows (the largest for the keys in
    ``maxima``), the rest from the last window, and a table with one row per window."""
    total: dict[str, Any] = {}
    for _, counts in rows:
        for k, v in counts.items():
            if isinstance(v, bool) or not isinstance(v, int | float):
                total[k] = v
            elif k in maxima:
                total[k] = max(total.get(k, v), v)
            else:
                total[k] = total.get(k, 0) + v
    numeric = [
        k for k, v in total.items() if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    floats = {k for _, c in rows for k, v in c.items() if isinstance(v, float)}
    total["windows"] = len(rows)
    if rows:
        total["first_window"] = rows[0][0].partition_key
        total["last_window"] = rows[-1][0].partition_key
        total["per_window"] = MetadataValue.table(
            records=[
                TableRecord({"window": w.partition_key, **{k: c.get(k, 0) for k in numeric}})
                for w, c in rows
            ],
            schema=TableSchema(
                columns=[TableColumn("window", "string")]
                + [TableColumn(k, "float" if k in floats else "int") for k in numeric]
            ),
        )
    return total


def failure_table(messages: Sequence[Mapping[str, Any]]) -> MetadataValue:
    """Messages not sent, counted by the class of their reason (masked) and status."""
    return MetadataValue.table(
        records=[
            TableRecord({"reason_class": r, "status": st, "count": n})
            for r, st, n in failures_by_reason(messages)
        ],
        schema=TableSchema(
            columns=[
                TableColumn("reason_class", "string"),
                TableColumn("status", "string"),
                TableColumn("count", "int"),
            ]
        ),
    )


def replica_timing(
    window: Window, watermark: ReplicaWatermark, read_at: datetime
) -> dict[str, Any]:
    """How far the replica had applied when the window was read: past the window's end, and
    behind the time of the read, in seconds (absent when the replica does not say)."""
    applied = watermark.applied_through
    if applied is None:
        return {}
    return {
        "replica_applied_past_window_end_seconds": round((applied - window.end).total_seconds(), 1),
        "replica_lag_seconds": round(max(0.0, (read_at - applied).total_seconds()), 1),
    }


def message_previews(
    store: Any, windows: Sequence[Window], loaded: LoadedSchedules
) -> MetadataValue:
    """One rendered message per schedule (the first of the run's windows that has one),
    masked and shown as text."""
    seen: dict[int, str] = {}
    for window in windows:
        for p in store.window_previews(window.partition_key):
            sid = p["schedule_id"]
            if sid in seen:
                continue
            try:
                schedule = loaded.schedules.by_id(sid)
            except KeyError:
                continue
            template = loaded.schedules.templates.get(schedule.template_id)
            sources = (
                [template.subject, template.text_body, template.sms_body, template.html_body]
                if template is not None
                else []
            )
            seen[sid] = (
                f"**{schedule.name}** ({p['channel']}, {p['status']}, "
                f"{window.partition_key})\n\n"
                + safe_preview(p["subject"], p["text"], sources, p["values"])
            )
    return MetadataValue.md("\n\n".join(seen[k] for k in sorted(seen)) or "(no rendered message)")


def outcome_plots(store: Any, last: Window, window_minutes: int) -> dict[str, Any]:
    """Sent, suppressed, failed and unknown per window over the day and the week up to the
    run's last window, as images."""
    out: dict[str, Any] = {}
    for name, span in (
        ("outcomes_last_day", timedelta(days=1)),
        ("outcomes_last_week", timedelta(days=7)),
    ):
        first = last.start - span + timedelta(minutes=window_minutes)
        keys = []
        at = first
        while at <= last.start:
            keys.append(Window.containing(at, window_minutes).partition_key)
            at += timedelta(minutes=window_minutes)
        counts = store.status_counts_by_window(keys[0], keys[-1])
        title = f"messages per window, {keys[0]} to {keys[-1]}"
        out[name] = MetadataValue.md(markdown_image(outcomes_png(counts, keys, title), title))
    return out


@asset(partitions_def=notification_days, group_name=GROUP, kinds={"sql"})
def notification_schedules(
    context: AssetExecutionContext, replica: ReplicaResource, store: StoreResource
) -> MaterializeResult:
    """The active notification schedules and their templates, read from the replica once for
    the run: a snapshot kept in the store by version (a hash of what was read), which every
    later step of the run and every message it renders refers to. Criteria are checked
    against the source tables' real columns and templates are compiled here, so a broken
    schedule or template is reported once, by name, and skipped while the others run."""
    loaded = schedules_for_run(replica.reader, store.store, context.run_id)
    queries = merge_field_problems(replica.reader, loaded.schedules)
    for p in loaded.model_problems:
        context.log.warning(f"source model: {p}")
    for r in loaded.rejected:
        context.log.warning(f"skipped {r.reason}")
    for q in queries:
        context.log.warning(f"merge fields: {q}")
    return MaterializeResult(
        metadata={
            **loaded.as_metadata(),
            # The schedules keep running: their messages end render_failed with the reason.
            "merge_field_problems": "; ".join(queries) or "(none)",
            "schedules": MetadataValue.md(
                "\n".join(
                    f"- {s.schedule_id} **{s.name}**: {s.source_table} {s.event_type} "
                    f"-> {s.channel} to {s.audience} ({s.dedupe_scope})"
                    for s in loaded.schedules.schedules
                )
                or "(none)"
            ),
        }
    )


@asset(
    partitions_def=notification_days,
    group_name=GROUP,
    kinds={"sql"},
    deps=[notification_schedules],
    check_specs=[checks.REPLICA_CAUGHT_UP],
)
def change_window(
    context: AssetExecutionContext,
    pipeline: PipelineResource,
    replica: ReplicaResource,
    store: StoreResource,
) -> MaterializeResult:
    """The window's changes: for each table with an active schedule, the rows whose watch
    column falls in ``[window_start - lookback, window_end)`` (one bounded index-range read),
    plus deletions, turned into one change event per schedule that fires. Each change is
    decided once, the first time its version is read, fired or not. Grain: one row per
    (record, schedule, version) in the store's ``change_decision``, and for those that fire
    in ``change_event``. Nothing is read before the
    replica has applied the window's end plus grace: until then the step fails, saying how
    far behind the replica is, and a retry later reads the whole window."""
    rt = runtime(pipeline, replica, store)
    loaded = schedules_for_run(rt.replica, rt.store, context.run_id)
    rows: list[tuple[Window, Mapping[str, Any]]] = []
    watermark = None
    windows = run_windows(context, pipeline)
    for window in windows:
        try:
            result, watermark = stage_change_window(rt, window, loaded)
        except ReplicaBehind as exc:
            raise Failure(
                description=str(exc),
                metadata={
                    "behind_seconds": exc.behind_seconds or -1.0,
                    "windows_done": len(rows),
                },
                allow_retries=True,
            ) from None
        timing = replica_timing(window, watermark, utcnow())
        rows.append((window, {**result.as_metadata(), **timing}))
        context.log.info(
            f"window {len(rows)}/{len(windows)} {window.partition_key}: "
            f"{result.total_rows_read} rows read"
        )
    metadata = per_window_metadata(
        rows, maxima=["replica_applied_past_window_end_seconds", "replica_lag_seconds"]
    )
    if watermark is not None:
        metadata.update(watermark.as_metadata())
    return MaterializeResult(
        metadata=metadata,
        check_results=[checks.replica_caught_up(watermark, windows, rt.settings.grace)],
    )


@asset(
    partitions_def=notification_days,
    group_name=GROUP,
    kinds={"sql"},
    deps=[change_window],
    check_specs=[checks.AGENT_TOTALS_FRESH],
)
def agent_totals(
    context: AssetExecutionContext,
    pipeline: PipelineResource,
    replica: ReplicaResource,
    store: StoreResource,
) -> MaterializeResult:
    """Production totals (units, volume and commission year to date, active listings) of
    every agent the window touches, recomputed in the store from its ledgers of the replica's
    deals and listings. Blocks rendering until every touched agent's totals include the
    window."""
    rt = runtime(pipeline, replica, store)
    rows = []
    touched: list[tuple[list[int], Window]] = []
    for window in run_windows(context, pipeline):
        result = stage_agent_totals(rt, window)
        agents = rt.store.window_agents(window.partition_key)
        touched.append((agents, window))
        rows.append((window, result.as_metadata()))
    return MaterializeResult(
        metadata=per_window_metadata(rows),
        check_results=[checks.agent_totals_fresh(rt.store, touched)],
    )


@asset(partitions_def=notification_days, group_name=GROUP, kinds={"sql"}, deps=[agent_totals])
def candidate_notifications(
    context: AssetExecutionContext,
    pipeline: PipelineResource,
    replica: ReplicaResource,
    store: StoreResource,
    bus: JobBusResource,
) -> MaterializeResult:
    """One candidate per (change event, recipient): the schedule's audience resolved with
    set-based reads (``agent``, ``record_contact``, ``agent_contacts`` fan-out,
    ``record_contacts`` through a join table), each with a
    deterministic idempotency key for its DedupeScope, inserted if absent."""
    rt = runtime(pipeline, replica, store, bus)
    loaded = schedules_for_run(rt.replica, rt.store, context.run_id)
    rows = [
        (window, stage_candidates(rt, window, loaded).as_metadata())
        for window in run_windows(context, pipeline)
    ]
    return MaterializeResult(metadata=per_window_metadata(rows))


@asset(
    partitions_def=notification_days,
    group_name=GROUP,
    kinds={"python"},
    deps=[candidate_notifications],
)
def rendered_messages(
    context: AssetExecutionContext,
    pipeline: PipelineResource,
    replica: ReplicaResource,
    store: StoreResource,
    bus: JobBusResource,
) -> MaterializeResult:
    """The outbound messages of the window: render jobs go on the bus, workers fetch merge
    fields from the replica in batches and render with Jinja2 (subject, HTML and text for
    email; body and segments for SMS). A message that cannot be rendered, or whose recipient
    opted out or has an invalid address, is kept with its status and reason."""
    rt = runtime(pipeline, replica, store, bus)
    loaded = schedules_for_run(rt.replica, rt.store, context.run_id)
    rows = []
    failures = []
    windows = run_windows(context, pipeline)
    for window in windows:
        counts = stage_render(rt, window, loaded, context.log.info)
        rows.append((window, {**counts, "rendered": rendered_count(counts)}))
        failures += rt.store.messages(
            window.partition_key, [MessageStatus.RENDER_FAILED, MessageStatus.SUPPRESSED]
        )
        context.log.info(
            f"window {len(rows)}/{len(windows)} {window.partition_key}: "
            f"{rows[-1][1]['rendered']} rendered, {len(failures)} not sendable so far"
        )
    return MaterializeResult(
        metadata={
            **per_window_metadata(rows),
            "failures_by_reason": failure_table(failures),
            "message_preview": message_previews(rt.store, windows, loaded),
            "not_sendable": MetadataValue.md(
                "\n".join(
                    f"- `{m['candidate_key']}` {m['status']}: {mask_text(m['reason'] or '')}"
                    for m in failures[:50]
                )
                or "(none)"
            ),
        }
    )


@asset(
    partitions_def=notification_days,
    group_name=GROUP,
    kinds={"python"},
    deps=[rendered_messages],
    check_specs=[checks.NO_DUPLICATE_SENDS, checks.NO_MISSED_NOTIFICATIONS],
)
def delivery_log(
    context: AssetExecutionContext,
    pipeline: PipelineResource,
    replica: ReplicaResource,
    store: StoreResource,
    bus: JobBusResource,
    senders: SendersResource,
) -> Iterator[MaterializeResult]:
    """The window's deliveries: send jobs go on the bus; send workers claim each message
    (``queued -> sending``) before calling the provider and record the outcome (``sent``,
    ``failed``, or ``unknown`` when nobody can know whether the provider took it)."""
    rt = runtime(pipeline, replica, store, bus, senders)
    windows = run_windows(context, pipeline)
    rows = []
    unknown = []
    failed = []
    for window in windows:
        rows.append((window, stage_deliver(rt, window, context.log.info)))
        unknown += rt.store.messages(window.partition_key, [MessageStatus.UNKNOWN])
        failed += rt.store.messages(window.partition_key, [MessageStatus.FAILED])
        counts = rows[-1][1]
        context.log.info(
            f"window {len(rows)}/{len(windows)} {window.partition_key}: "
            + ", ".join(f"{s} {counts.get(str(s), 0)}" for s in MessageStatus)
        )
    keys = [w.partition_key for w in windows]
    plots = outcome_plots(rt.store, windows[-1], pipeline.window_minutes) if windows else {}
    yield MaterializeResult(
        metadata={
            **per_window_metadata(rows),
            # Provider events folded so far (webhook service), by delivery status per window;
            # events that arrive later show at the next materialization of the window.
            "delivery_outcomes": MetadataValue.json(
                {key: rt.store.delivery_counts(key) for key in keys}
            ),
            "failures_by_reason": failure_table(failed + unknown),
            **plots,
            "unknown_messages": MetadataValue.md(
                "\n".join(
                    f"- `{m['candidate_key']}`: {mask_text(m['reason'] or '')}"
                    for m in unknown[:50]
                )
                or "(none)"
            ),
        },
        check_results=[
            checks.no_duplicate_sends(rt.store, keys),
            checks.no_missed_notifications(rt.store, keys),
        ],
    )
