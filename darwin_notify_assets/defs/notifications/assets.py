"""The notification chain of one change window, as Dagster assets.

Grain: every asset is partitioned by change window (``change_windows``); its data lives in
the notification store, keyed by the partition key, and a materialization records the
window's counts as metadata. Reruns and backfills are safe: every write is insert-if-absent
or a conditional transition.
"""

from collections.abc import Iterator

from dagster import (
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from darwin_notify_assets.defs.notifications import checks
from darwin_notify_assets.defs.notifications.partitions import change_windows
from darwin_notify_assets.defs.resources import (
    JobBusResource,
    PipelineResource,
    ReplicaResource,
    SendersResource,
    StoreResource,
    runtime,
)
from darwin_notify_assets.domain.audit import rendered_count
from darwin_notify_assets.domain.pipeline import (
    load_schedules,
    stage_agent_totals,
    stage_candidates,
    stage_change_window,
    stage_deliver,
    stage_render,
)
from darwin_notify_assets.errors import ReplicaBehind
from darwin_notify_assets.storage.store import MessageStatus

GROUP = "notifications"


@asset(partitions_def=change_windows, group_name=GROUP, kinds={"sql"})
def notification_schedules(
    context: AssetExecutionContext, replica: ReplicaResource
) -> MaterializeResult:
    """The active notification schedules and their templates, as read from the replica for
    this window. Criteria are checked against the source tables' real columns and templates
    are compiled here, so a broken schedule or template is reported once, by name, and
    skipped while the others run."""
    loaded = load_schedules(replica.reader)
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
    plus deletions, turned into one change event per schedule that fires. Grain: one row per
    (record, schedule, version) in the store's ``change_event``. Nothing is read before the
    replica has applied the window's end plus grace: until then the step fails, saying how
    far behind the replica is, and a retry later reads the whole window."""
    rt = runtime(pipeline, replica, store)
    window = pipeline.window(context.partition_key)
    loaded = load_schedules(rt.replica)
    try:
        result, watermark = stage_change_window(rt, window, loaded)
    except ReplicaBehind as exc:
        raise Failure(
            description=str(exc),
            metadata={"behind_seconds": exc.behind_seconds or -1.0},
            allow_retries=True,
        ) from None
    return MaterializeResult(
        metadata={
            **result.as_metadata(),
            **watermark.as_metadata(),
            "window_start": str(window.start),
            "window_end": str(window.end),
        },
        check_results=[checks.replica_caught_up(watermark, window, rt.settings.grace)],
    )


@asset(
    partitions_def=change_windows,
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
    window = pipeline.window(context.partition_key)
    written = stage_agent_totals(rt, window)
    agents = rt.store.window_agents(window.partition_key)
    return MaterializeResult(
        metadata={"agents_touched": len(agents), "totals_written": written},
        check_results=[checks.agent_totals_fresh(rt.store, agents, window.end)],
    )


@asset(partitions_def=change_windows, group_name=GROUP, kinds={"sql"}, deps=[agent_totals])
def candidate_notifications(
    context: AssetExecutionContext,
    pipeline: PipelineResource,
    replica: ReplicaResource,
    store: StoreResource,
    bus: JobBusResource,
) -> MaterializeResult:
    """One candidate per (change event, recipient): the schedule's audience resolved with
    set-based reads (``agent``, ``record_contact``, ``agent_contacts`` fan-out), each with a
    deterministic idempotency key for its DedupeScope, inserted if absent."""
    rt = runtime(pipeline, replica, store, bus)
    window = pipeline.window(context.partition_key)
    result = stage_candidates(rt, window, load_schedules(rt.replica))
    return MaterializeResult(metadata=result.as_metadata())


@asset(
    partitions_def=change_windows,
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
    window = pipeline.window(context.partition_key)
    counts = stage_render(rt, window, load_schedules(rt.replica), context.log.info)
    failures = rt.store.messages(
        window.partition_key, [MessageStatus.RENDER_FAILED, MessageStatus.SUPPRESSED]
    )
    return MaterializeResult(
        metadata={
            **counts,
            "rendered": rendered_count(counts),
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
    window = pipeline.window(context.partition_key)
    counts = stage_deliver(rt, window, context.log.info)
    unknown = rt.store.messages(window.partition_key, [MessageStatus.UNKNOWN])
    yield MaterializeResult(
        metadata={
            **counts,
            "unknown_messages": MetadataValue.md(
                "\n".join(f"- `{m['candidate_key']}`: {m['reason']}" for m in unknown[:50])
                or "(none)"
            ),
        },
        check_results=[
            checks.no_duplicate_sends(rt.store, window.partition_key),
            checks.no_missed_notifications(rt.store, window.partition_key),
        ],
    )
