"""The workers outside Dagster, as observed assets: render and send workers (Kafka consumer
groups or inline threads). A sensor reads their health every minute and records it as
observations, with checks that turn red when a threshold is crossed."""

from datetime import timedelta

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetKey,
    AssetObservation,
    AssetSpec,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    asset_check,
    sensor,
)

from darwin_notify_assets.bus.base import JobKind
from darwin_notify_assets.defs.resources import JobBusResource, PipelineResource, StoreResource
from darwin_notify_assets.domain.health import Limits, WorkerHealth, measure
from darwin_notify_assets.storage.store import utcnow

GROUP = "operations"
LIMITS = Limits()

render_workers = AssetSpec(
    "render_workers",
    group_name=GROUP,
    kinds={"kafka", "python"},
    description="The render workers (`darwin-notify worker render`, or inline threads): "
    "observed every minute, with the bus's backlog of render jobs.",
)
send_workers = AssetSpec(
    "send_workers",
    group_name=GROUP,
    kinds={"kafka", "python"},
    description="The send workers (`darwin-notify worker send`, or inline threads): observed "
    "every minute, with the bus's backlog of send jobs, the messages waiting to be sent, the "
    "oldest one's age and claims that never finished.",
)

KEYS = {JobKind.RENDER: render_workers.key, JobKind.SEND: send_workers.key}


def _health(pipeline: PipelineResource, store: StoreResource, bus: JobBusResource) -> WorkerHealth:
    return measure(
        store.store,
        bus.bus,
        timedelta(seconds=pipeline.sending_expiry_seconds),
        utcnow(),
    )


def evaluations(health: WorkerHealth) -> list[AssetCheckEvaluation]:
    """One evaluation per check, from one reading."""
    out = []
    for kind, key in KEYS.items():
        backlog = health.backlog.get(str(kind))
        out.append(
            AssetCheckEvaluation(
                asset_key=key,
                check_name="backlog_within_limit",
                passed=health.backlog_ok(kind, LIMITS),
                metadata={
                    "bus_backlog_jobs": -1 if backlog is None else backlog,
                    "limit": LIMITS.max_backlog_jobs,
                },
            )
        )
    out.append(
        AssetCheckEvaluation(
            asset_key=send_workers.key,
            check_name="oldest_queued_within_limit",
            passed=health.queue_ok(LIMITS),
            metadata={
                "oldest_queued_age_seconds": round(health.oldest_queued_age_seconds or 0.0, 1),
                "queued_messages": health.queued,
                "limit_seconds": LIMITS.max_queued_age_seconds,
            },
        )
    )
    out.append(
        AssetCheckEvaluation(
            asset_key=send_workers.key,
            check_name="no_stuck_claims",
            passed=health.claims_ok(LIMITS),
            metadata={"stuck_claims": health.stuck_claims, "limit": LIMITS.max_stuck_claims},
        )
    )
    return out


def _as_result(evaluation: AssetCheckEvaluation) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=evaluation.asset_key,
        check_name=evaluation.check_name,
        passed=evaluation.passed,
        metadata=evaluation.metadata,
    )


def _check(kind_key: AssetKey, name: str, description: str) -> AssetChecksDefinition:
    @asset_check(asset=kind_key, name=name, description=description)
    def check(
        context: AssetCheckExecutionContext,
        pipeline: PipelineResource,
        store: StoreResource,
        bus: JobBusResource,
    ) -> AssetCheckResult:
        health = _health(pipeline, store, bus)
        [evaluation] = [
            e for e in evaluations(health) if e.asset_key == kind_key and e.check_name == name
        ]
        return _as_result(evaluation)

    return check


health_checks = [
    _check(render_workers.key, "backlog_within_limit", "The render jobs' backlog is small."),
    _check(send_workers.key, "backlog_within_limit", "The send jobs' backlog is small."),
    _check(
        send_workers.key,
        "oldest_queued_within_limit",
        "No message has waited to be sent longer than the limit.",
    ),
    _check(send_workers.key, "no_stuck_claims", "Every claim older than the expiry finished."),
]


@sensor(
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Observes the render and send workers every minute: bus backlog per worker "
    "group, queued messages, the oldest one's age, stuck claims; reports the checks.",
)
def worker_health_sensor(
    context: SensorEvaluationContext,
    pipeline: PipelineResource,
    store: StoreResource,
    bus: JobBusResource,
) -> SensorResult:
    health = _health(pipeline, store, bus)
    events: list[AssetObservation | AssetCheckEvaluation] = [
        AssetObservation(asset_key=key, metadata=health.metadata(kind))
        for kind, key in KEYS.items()
    ]
    events += evaluations(health)
    return SensorResult(asset_events=events)
