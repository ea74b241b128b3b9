"""The notification chain of one change window, as Dagster assets.

Grain: every asset is partitioned by change window (``change_windows``); its data lives in
the notification store, keyed by the partition key, and a materialization records the
window's counts as metadata. Reruns and backfills are safe: every write is insert-if-absent
or a conditional transition.
"""

from collections.abc import Iterator
from datetime import datetime, timedelta

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)

from darwin_notify_assets.defs.notifications.partitions import change_windows
from darwin_notify_assets.defs.resources import DarwinNotifyResource
from darwin_notify_assets.domain.detect import reconcile
from darwin_notify_assets.domain.pipeline import (
    load_schedules,
    stage_agent_totals,
    stage_candidates,
    stage_change_window,
    stage_deliver,
    stage_render,
)
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.storage.store import FINAL_STATUSES, MessageStatus, utcnow

GROUP = "notifications"
AUDIT_GROUP = "audit"


@asset(partitions_def=change_windows, group_name=GROUP, kinds={"sql"})
def notification_schedules(
    context: AssetExecutionContext, darwin: DarwinNotifyResource
) -> MaterializeResult:
    """The active notification schedules and their templates, as read from the replica for
    this window. Criteria are checked against the source tables' real columns and templates
    are compiled here, so a broken schedule or template is reported once, by name, and
    skipped while the others run."""
    rt = darwin.runtime()
    try:
        loaded = load_schedules(rt.replica)
    finally:
        rt.close()
    for r in loaded.rejected:
        context.log.warning(f"skipped {r.reason}")
    return MaterializeResult(
        metadata={
            **loaded.as_metadata(),
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
    partitions_def=change_windows,
    group_name=GROUP,
    kinds={"sql"},
    deps=[notification_schedules],
    check_specs=[AssetCheckSpec("replica_caught_up", asset="change_window")],
)
def change_window(
    context: AssetExecutionContext, darwin: DarwinNotifyResource
) -> MaterializeResult:
    """The window's changes: for each table with an active schedule, the rows whose watch
    column falls in ``[window_start - lookback, window_end)`` (one bounded index-range read),
    plus deletions, turned into one change event per schedule that fires. Each change is
    decided once, the first time its version is read, fired or not. Grain: one row per
    (record, schedule, version) in the store's ``change_decision``, and for those that fire
    in ``change_event``."""
    rt = darwin.runtime()
    try:
        window = rt.window(context.partition_key)
        loaded = load_schedules(rt.replica)
        result, watermark = stage_change_window(rt, window, loaded)
    finally:
        rt.close()
    needed = window.end + rt.settings.grace
    caught_up = watermark.applied_through is not None and watermark.applied_through >= needed
    return MaterializeResult(
        metadata={
            **result.as_metadata(),
            **watermark.as_metadata(),
            "window_start": str(window.start),
            "window_end": str(window.end),
        },
        check_results=[
            AssetCheckResult(
                check_name="replica_caught_up",
                passed=caught_up,
                severity=AssetCheckSeverity.ERROR,
                metadata={
                    "needed_through": str(needed),
                    "applied_through": str(watermark.applied_through),
                },
            )
        ],
    )


@asset(
    partitions_def=change_windows,
    group_name=GROUP,
    kinds={"sql"},
    deps=[change_window],
    check_specs=[AssetCheckSpec("agent_totals_fresh", asset="agent_totals", blocking=True)],
)
def agent_totals(context: AssetExecutionContext, darwin: DarwinNotifyResource) -> MaterializeResult:
    """Production totals (units, volume and commission year to date, active listings) of
    every agent the window touches, recomputed in the store from its ledgers of the replica's
    deals and listings. Blocks rendering until every touched agent's totals include the
    window."""
    rt = darwin.runtime()
    try:
        window = rt.window(context.partition_key)
        written = stage_agent_totals(rt, window)
        agents = rt.store.window_agents(window.partition_key)
        totals = rt.store.totals(agents)
    finally:
        rt.close()
    stale = [a for a in agents if a not in totals or totals[a].computed_through < window.end]
    return MaterializeResult(
        metadata={"agents_touched": len(agents), "totals_written": written},
        check_results=[
            AssetCheckResult(
                check_name="agent_totals_fresh",
                passed=not stale,
                metadata={"stale_agents": ", ".join(map(str, stale[:50])) or "(none)"},
            )
        ],
    )


@asset(partitions_def=change_windows, group_name=GROUP, kinds={"sql"}, deps=[agent_totals])
def candidate_notifications(
    context: AssetExecutionContext, darwin: DarwinNotifyResource
) -> MaterializeResult:
    """One candidate per (change event, recipient): the schedule's audience resolved with
    set-based reads (``agent``, ``record_contact``, ``agent_contacts`` fan-out), each with a
    deterministic idempotency key for its DedupeScope, inserted if absent."""
    rt = darwin.runtime()
    try:
        window = rt.window(context.partition_key)
        loaded = load_schedules(rt.replica)
        result = stage_candidates(rt, window, loaded)
    finally:
        rt.close()
    return MaterializeResult(metadata=result.as_metadata())


@asset(
    partitions_def=change_windows,
    group_name=GROUP,
    kinds={"python"},
    deps=[candidate_notifications],
)
def rendered_messages(
    context: AssetExecutionContext, darwin: DarwinNotifyResource
) -> MaterializeResult:
    """The outbound messages of the window: render jobs go on the bus, workers fetch merge
    fields from the replica in batches and render with Jinja2 (subject, HTML and text for
    email; body and segments for SMS). A message that cannot be rendered, or whose recipient
    opted out or has an invalid address, is kept with its status and reason."""
    rt = darwin.runtime()
    try:
        window = rt.window(context.partition_key)
        loaded = load_schedules(rt.replica)
        counts = stage_render(rt, window, loaded, context.log.info)
        failures = rt.store.messages(
            window.partition_key, [MessageStatus.RENDER_FAILED, MessageStatus.SUPPRESSED]
        )
    finally:
        rt.close()
    return MaterializeResult(
        metadata={
            **counts,
            "rendered": sum(
                n
                for status, n in counts.items()
                if status in set(MessageStatus)
                and status not in (MessageStatus.RENDER_FAILED, MessageStatus.SUPPRESSED)
            ),
            "not_sendable": MetadataValue.md(
                "\n".join(
                    f"- `{m['candidate_key']}` {m['status']}: {m['reason']}" for m in failures[:50]
                )
                or "(none)"
            ),
        }
    )


@asset(
    partitions_def=change_windows,
    group_name=GROUP,
    kinds={"python"},
    deps=[rendered_messages],
    check_specs=[
        AssetCheckSpec("no_duplicate_sends", asset="delivery_log"),
        AssetCheckSpec("no_missed_notifications", asset="delivery_log"),
    ],
)
def delivery_log(context: AssetExecutionContext, darwin: DarwinNotifyResource) -> Iterator:
    """The window's deliveries: send jobs go on the bus; send workers claim each message
    (``queued -> sending``) before calling the provider and record the outcome (``sent``,
    ``failed``, or ``unknown`` when nobody can know whether the provider took it)."""
    rt = darwin.runtime()
    try:
        window = rt.window(context.partition_key)
        counts = stage_deliver(rt, window, context.log.info)
        duplicates = rt.store.duplicate_sends(window.partition_key)
        missing = rt.store.missing_messages(window.partition_key)
        open_messages = [
            m for m in rt.store.messages(window.partition_key) if m["status"] not in FINAL_STATUSES
        ]
        unknown = rt.store.messages(window.partition_key, [MessageStatus.UNKNOWN])
    finally:
        rt.close()
    yield MaterializeResult(
        metadata={
            **counts,
            "unknown_messages": MetadataValue.md(
                "\n".join(f"- `{m['candidate_key']}`: {m['reason']}" for m in unknown[:50])
                or "(none)"
            ),
        },
        check_results=[
            AssetCheckResult(
                check_name="no_duplicate_sends",
                passed=not duplicates,
                metadata={"duplicates": ", ".join(duplicates[:50]) or "(none)"},
            ),
            AssetCheckResult(
                check_name="no_missed_notifications",
                passed=not missing and not open_messages,
                metadata={
                    "candidates_without_message": len(missing),
                    "messages_not_final": len(open_messages),
                    "unknown_listed": len(unknown),
                    "examples": ", ".join(
                        missing[:20] + [m["candidate_key"] for m in open_messages[:20]]
                    )
                    or "(none)",
                },
            ),
        ],
    )


@asset(
    group_name=AUDIT_GROUP,
    kinds={"sql"},
    check_specs=[AssetCheckSpec("nothing_missed_recently", asset="reconciliation_report")],
)
def reconciliation_report(
    context: AssetExecutionContext, darwin: DarwinNotifyResource
) -> MaterializeResult:
    """A re-scan of the recent past (``DARWIN_NOTIFY_RECONCILE_HOURS``): every window the
    replica has applied must have been read, and every insert, update or delete in the range
    that detection would fire on (the same decision, from the same code) must have a record
    in the store, an event or a decision. Reports what is missing by key; it changes
    nothing."""
    rt = darwin.runtime()
    settings = rt.settings
    try:
        watermark = rt.replica.watermark()
        applied = watermark.applied_through or utcnow()
        # Leave the sensor two windows of time to start the newest ready window.
        end = Window.containing(
            applied - settings.grace - timedelta(minutes=2 * settings.window_minutes),
            settings.window_minutes,
        ).start
        start = Window.containing(
            end - timedelta(hours=settings.reconcile_hours), settings.window_minutes
        ).start
        start = max(start, datetime.strptime(settings.partition_start, "%Y-%m-%d-%H:%M"))
        loaded = load_schedules(rt.replica)
        result = reconcile(
            rt.replica, rt.store, loaded.schedules, start, end, settings.window_minutes
        )
    finally:
        rt.close()
    for key in result.events_missing[:20]:
        context.log.error(f"change never recorded: {key}")
    return MaterializeResult(
        metadata={
            "range_start": str(result.start),
            "range_end": str(result.end),
            "rows_read": result.rows_read,
            "events_expected": result.events_expected,
            "events_missing": len(result.events_missing),
            "windows_missing": len(result.windows_missing),
        },
        check_results=[
            AssetCheckResult(
                check_name="nothing_missed_recently",
                passed=result.clean,
                metadata={
                    "missing_events": ", ".join(result.events_missing[:50]) or "(none)",
                    "missing_windows": ", ".join(result.windows_missing[:50]) or "(none)",
                },
            )
        ],
    )
