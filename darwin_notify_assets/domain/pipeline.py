"""The stages of one change window, in plain Python (the Dagster assets call these).

Each stage reads what it needs from the replica and writes its results to the store, where
the next stage finds them. Every write is insert-if-absent or a conditional transition, so a
stage may run again (a rerun, a backfill, a retry) without changing anything that was done.
"""

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from darwin_notify_assets.bus.base import (
    InProcessBus,
    Job,
    JobBus,
    JobKind,
    make_jobs,
    run_consumers,
)
from darwin_notify_assets.config import (
    MANDRILL_API_KEY_ENV,
    REPLICA_PASSWORD_ENV,
    SENDGRID_API_KEY_ENV,
    STORE_PASSWORD_ENV,
    TWILIO_AUTH_TOKEN_ENV,
    UNSUBSCRIBE_SECRET_ENV,
    Settings,
)
from darwin_notify_assets.delivery.failover import select_email_sender
from darwin_notify_assets.delivery.senders import Sender, build_senders
from darwin_notify_assets.delivery.throttle import build_budgets
from darwin_notify_assets.delivery.workers import RenderWorker, SendWorker
from darwin_notify_assets.domain import zones
from darwin_notify_assets.domain.candidates import CandidateResult, build_candidates
from darwin_notify_assets.domain.detect import DetectionResult, detect_changes
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.domain.model import (
    AGENT_YEAR,
    Problem,
    SourceModel,
    check_model,
    load_model,
)
from darwin_notify_assets.domain.render import CompiledTemplate, compile_templates
from darwin_notify_assets.domain.schedules import (
    Audience,
    EventType,
    RejectedSchedule,
    Schedule,
    ScheduleSet,
)
from darwin_notify_assets.domain.snapshots import ScheduleSnapshot
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.errors import ConfigurationError, DarwinNotifyError, ReplicaBehind
from darwin_notify_assets.storage.mssql_cdc import capture_part
from darwin_notify_assets.storage.replica import ReplicaReader, ReplicaWatermark
from darwin_notify_assets.storage.store import NotificationStore, utcnow

log = logging.getLogger(__name__)


class StageTimeout(DarwinNotifyError):
    """Workers did not finish a window's jobs in time."""


@dataclass(frozen=True)
class LoadedSchedules:
    schedules: ScheduleSet
    # A template that did not compile maps to the compiler's message.
    templates: Mapping[int, CompiledTemplate | str]
    rejected: tuple[RejectedSchedule, ...]
    # Names in the source model that the replica's catalog lacks.
    model_problems: tuple[Problem, ...] = ()
    # The snapshot they were built from (``domain/snapshots.py``).
    version: str = ""

    def as_metadata(self) -> dict[str, Any]:
        return {
            "schedule_version": self.version,
            "model_problems": "; ".join(map(str, self.model_problems)) or "(none)",
            "active_schedules": len(self.schedules.schedules),
            "rejected_schedules": len(self.rejected),
            "rejected": "; ".join(r.reason for r in self.rejected) or "(none)",
            "watched_tables": ", ".join(self.schedules.source_tables) or "(none)",
            "templates_compiled": sum(
                1 for t in self.templates.values() if isinstance(t, CompiledTemplate)
            ),
        }


def merge_field_problems(replica: ReplicaReader, schedules: ScheduleSet) -> list[str]:
    """What is wrong with each merge-field query the runnable schedules name, once per query,
    naming every schedule that uses it (``schedule 1 (New listing), 2 (Price drop): ...``).
    Each query is run once for no record, so a query the database refuses is named too."""
    users: dict[str, list[str]] = {}
    for s in schedules.schedules:
        if s.merge_fields:
            users.setdefault(s.merge_fields, []).append(f"{s.schedule_id} ({s.name})")
    return [
        f"schedule {', '.join(names)}: {problem}"
        for query, names in sorted(users.items())
        if (problem := replica.merge_field_problem(query)) is not None
    ]


def zone_problems(replica: ReplicaReader, default_zone: str) -> list[str]:
    """Values of the recipients' time-zone columns that are no IANA zone, one line each: the
    recipients they are read for are decided (and agents' years counted) in the default zone.
    A missing table or column is not named here but by the model's check."""
    model, out = replica.model, []
    seen: set[tuple[str, str]] = set()
    for kind in ("agent", "contact"):
        path = zones.zone_path(model, kind)
        if path is None:
            continue
        table = path.hops[-1].table if path.hops else model.recipients[kind].table
        if (table, path.column) in seen:
            continue
        seen.add((table, path.column))
        try:
            values = replica.distinct_values(table, path.column)
        except ConfigurationError:
            continue
        for value in sorted({str(v).strip() for v in values if v is not None} - {""}):
            if zones.zone_info(value[: zones.MAX_ZONE]) is None:
                out.append(
                    f"recipients.{kind}.time_zone: {table}.{path.column} holds {value!r}, which "
                    f"is not an IANA time zone; its recipients are decided in {default_zone} "
                    "(DARWIN_NOTIFY_DEFAULT_TIME_ZONE)"
                )
    return out


def load_schedules(replica: ReplicaReader) -> LoadedSchedules:
    """Active schedules, validated, with their templates compiled, as the replica has them now.

    A schedule whose criteria are wrong, or that needs a table the source model names but the
    replica lacks, is rejected by name and skipped. A schedule whose template does not compile
    is reported by name too, but keeps running: its changes still become candidates, and each
    message ends ``render_failed`` with the compiler's message, so nothing is lost while the
    template is fixed.
    """
    return loaded_from(ScheduleSnapshot.of(replica.schedule_source()), replica)


_COMPILED: dict[str, LoadedSchedules] = {}  # by snapshot, replica and model
_COMPILED_LOCK = threading.Lock()


def loaded_from(snapshot: ScheduleSnapshot, replica: ReplicaReader) -> LoadedSchedules:
    """The schedules of a snapshot, checked against the replica's catalog and compiled, once
    per process and version."""
    # The same snapshot read through another model or replica is checked afresh.
    key = f"{snapshot.version}|{replica.db.url}|{hash(replica.model.model_dump_json())}"
    with _COMPILED_LOCK:
        cached = _COMPILED.get(key)
    if cached is not None:
        return cached
    raw = snapshot.schedules(replica.model)
    problems = check_model(raw.model, replica.columns) + replica.cdc_problems()
    for p in problems:
        log.warning("source model problem: %s", p)
    broken = {p.table for p in problems}
    compiled, errors = compile_templates(raw)
    rejected = list(raw.rejected)
    runnable = []
    for s in raw.schedules:
        missing = sorted(_tables_needed(raw.model, s) & broken)
        if missing:
            reason = "; ".join(str(p) for p in problems if p.table in missing)
            rejected.append(
                RejectedSchedule(
                    s.schedule_id, s.name, f"schedule {s.schedule_id} ({s.name}): {reason}"
                )
            )
            continue
        runnable.append(s)
        if s.template_id in errors:
            rejected.append(
                RejectedSchedule(
                    s.schedule_id,
                    s.name,
                    f"schedule {s.schedule_id} ({s.name}): {errors[s.template_id]}",
                )
            )
    for r in rejected:
        log.warning("schedule problem: %s", r.reason)
    templates: dict[int, CompiledTemplate | str] = {**compiled, **errors}
    schedules = ScheduleSet(tuple(runnable), raw.templates, tuple(rejected), raw.model)
    loaded = LoadedSchedules(
        schedules, templates, tuple(rejected), tuple(problems), snapshot.version
    )
    with _COMPILED_LOCK:
        if len(_COMPILED) > 32:
            _COMPILED.clear()
        _COMPILED[key] = loaded
    return loaded


def _tables_needed(model: SourceModel, s: Schedule) -> set[str]:
    """The tables a schedule reads through the model: a broken one stops only its schedules."""
    tables = {s.source_table}
    capture = model.capture_instance_of(s.source_table)
    if s.event_type == EventType.DELETE and capture is not None:
        tables.add(capture_part(capture))
    elif (
        s.event_type == EventType.DELETE and model.tombstone and model.tombstoned([s.source_table])
    ):
        tables.add(model.tombstone.table)
    if s.audience in (Audience.AGENT, Audience.AGENT_CONTACTS):
        tables.add(model.agent.table)
        if model.relations.agent_office:
            tables.add(model.relations.agent_office.to)
    if s.audience in (Audience.RECORD_CONTACT, Audience.AGENT_CONTACTS, Audience.RECORD_CONTACTS):
        tables.add(model.contact.table)
    join = model.relations.record_contacts.get(s.source_table)
    if s.audience == Audience.RECORD_CONTACTS and join:
        tables.add(join.through)
    if s.audience == Audience.AGENT_CONTACTS and model.relations.agent_contacts:
        tables.add(model.relations.agent_contacts.table)
    if s.uses_agent_totals and model.totals:
        tables.update(model.totals.tables)
        # A ledger row leaves the totals when its record is deleted.
        tables.update(
            capture_part(c) for t in model.totals.tables if (c := model.capture_instance_of(t))
        )
    return tables


def schedules_of_version(
    store: NotificationStore, version: str, replica: ReplicaReader
) -> LoadedSchedules | None:
    body = store.snapshot(version)
    return loaded_from(ScheduleSnapshot(version, body), replica) if body is not None else None


def schedules_for_run(
    replica: ReplicaReader, store: NotificationStore, run_id: str
) -> LoadedSchedules:
    """The one snapshot of schedules a run works from: the one its first step took, or else
    (the first step of this run) read now, kept in the store and bound to the run."""
    version = store.run_version(run_id)
    if version is not None:
        loaded = schedules_of_version(store, version, replica)
        if loaded is not None:
            return loaded
    snapshot = ScheduleSnapshot.of(replica.schedule_source())
    store.save_snapshot(snapshot.version, snapshot.body)
    bound = store.bind_run(run_id, snapshot.version)
    if bound != snapshot.version:
        loaded = schedules_of_version(store, bound, replica)
        if loaded is not None:
            return loaded
    return loaded_from(snapshot, replica)


@dataclass
class Runtime:
    """The parts one process works with, built from Settings (see ``Runtime.from_settings``)."""

    settings: Settings
    replica_factory: Callable[[], ReplicaReader]
    store_factory: Callable[[], NotificationStore]
    bus: JobBus
    senders_factory: Callable[[], dict[str, Sender]]
    _replica: ReplicaReader | None = None
    _store: NotificationStore | None = None
    # False when the connections and the bus belong to someone else (Dagster's resources).
    owned: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, bus: JobBus | None = None) -> "Runtime":
        if bus is None:
            if settings.uses_kafka:
                from darwin_notify_assets.bus.kafka import KafkaBus

                bus = KafkaBus.from_settings(settings)
            else:
                bus = InProcessBus()
        return cls(
            settings=settings,
            replica_factory=lambda: ReplicaReader.open(
                settings.replica_url,
                REPLICA_PASSWORD_ENV,
                model=load_model(settings.source_model),
                merge_fields_dir=settings.merge_fields_dir or None,
            ),
            store_factory=lambda: NotificationStore.open(settings.store_url, STORE_PASSWORD_ENV),
            bus=bus,
            senders_factory=lambda: make_senders(settings),
        )

    @property
    def replica(self) -> ReplicaReader:
        if self._replica is None:
            self._replica = self.replica_factory()
        return self._replica

    @property
    def store(self) -> NotificationStore:
        if self._store is None:
            self._store = self.store_factory()
            self._store.ensure_schema()
        return self._store

    def close(self) -> None:
        if not self.owned:
            return
        if self._replica is not None:
            self._replica.close()
            self._replica = None
        if self._store is not None:
            self._store.close()
            self._store = None
        self.bus.close()

    def window(self, partition_key: str) -> Window:
        return Window.from_key(partition_key, self.settings.window_minutes)


def make_senders(settings: Settings) -> dict[str, Sender]:
    """The senders the environment describes (workers and commands outside Dagster)."""
    senders = build_senders(
        outbox_dir=settings.outbox_dir,
        email_from=settings.email_from,
        sms_from=settings.sms_from,
        sendgrid_api_key=os.environ.get(SENDGRID_API_KEY_ENV),
        sendgrid_host=settings.sendgrid_host,
        twilio_account_sid=settings.twilio_account_sid,
        twilio_auth_token=os.environ.get(TWILIO_AUTH_TOKEN_ENV),
        sms_base_url=settings.sms_base_url,
        timeout=settings.provider_timeout_seconds,
        pool_size=settings.send_concurrency,
        webhook_public_url=settings.webhook_public_url,
        unsubscribe_secret=os.environ.get(UNSUBSCRIBE_SECRET_ENV),
        unsubscribe_mailto=settings.unsubscribe_mailto,
    )
    return select_email_sender(
        senders,
        provider=settings.email_provider,
        failover=settings.email_failover,
        mandrill_api_key=os.environ.get(MANDRILL_API_KEY_ENV),
        mandrill_host=settings.mandrill_host,
        email_from=settings.email_from,
        timeout=settings.provider_timeout_seconds,
        pool_size=settings.send_concurrency,
        webhook_public_url=settings.webhook_public_url,
        unsubscribe_secret=os.environ.get(UNSUBSCRIBE_SECRET_ENV),
        unsubscribe_mailto=settings.unsubscribe_mailto,
    )


# -- stages -------------------------------------------------------------------------------------
def require_applied(watermark: ReplicaWatermark, window: Window, grace: timedelta) -> None:
    """Refuse to read ``window`` before the replica has applied its end plus ``grace``."""
    needed = window.end + grace
    applied = watermark.applied_through
    if applied is not None and applied >= needed:
        return
    paused = ", replay paused" if watermark.replay_paused else ""
    if applied is None:
        raise ReplicaBehind(
            f"window {window.partition_key} not read: the replica reports no applied position "
            f"(state {watermark.state}{paused}); it must have applied {needed:%Y-%m-%d %H:%M:%S} "
            "UTC. Retry once it has.",
            None,
        )
    behind = (needed - applied).total_seconds()
    raise ReplicaBehind(
        f"window {window.partition_key} not read: the replica is applied through "
        f"{applied:%Y-%m-%d %H:%M:%S} UTC, {behind:.0f}s short of the window's end plus grace "
        f"({needed:%Y-%m-%d %H:%M:%S} UTC; state {watermark.state}{paused}). Retry once it "
        "has caught up.",
        behind,
    )


def stage_change_window(
    rt: Runtime, window: Window, loaded: LoadedSchedules
) -> tuple[DetectionResult, ReplicaWatermark]:
    """Detect the window's changes, once the replica has applied it (``ReplicaBehind`` if not)."""
    watermark = rt.replica.watermark()
    require_applied(watermark, window, rt.settings.grace)
    result = detect_changes(rt.replica, rt.store, loaded.schedules, window, rt.settings.lookback)
    rt.store.record_window(
        window.partition_key,
        window.start,
        window.end,
        watermark.applied_through,
        watermark.describe(),
        result.total_rows_read,
    )
    if loaded.version:
        rt.store.set_window_version(window.partition_key, loaded.version)
    return result, watermark


@dataclass(frozen=True)
class TotalsResult:
    """What one window's totals stage did."""

    agents_touched: int = 0
    totals_written: int = 0
    # The zone whose year is counted (the model's totals.year_time_zone).
    year_time_zone: str = ""
    # Agents without a valid zone of their own, counted in the default zone's year.
    agents_in_default_zone: int = 0

    def as_metadata(self) -> dict[str, Any]:
        return {
            "agents_touched": self.agents_touched,
            "totals_written": self.totals_written,
            "year_time_zone": self.year_time_zone or "(no totals)",
            "agents_in_default_zone": self.agents_in_default_zone,
        }


def stage_agent_totals(rt: Runtime, window: Window) -> TotalsResult:
    agents = rt.store.window_agents(window.partition_key)
    totals = rt.replica.model.totals
    if totals is None:
        return TotalsResult(len(agents))
    if not agents:
        return TotalsResult(year_time_zone=totals.year_time_zone)
    years, defaulted = agent_years(rt, agents, window.end)
    written = rt.store.recompute_totals(agents, window.end, totals.listings.active_value, years)
    return TotalsResult(len(agents), written, totals.year_time_zone, defaulted)


def agent_years(
    rt: Runtime, agents: Sequence[int], moment: datetime
) -> tuple[dict[int, tuple[int, datetime]], int]:
    """Each agent's year at ``moment`` (naive UTC) and its first instant, in the zone the
    model's ``totals.year_time_zone`` names: one zone for all, or each agent's own (read from
    the replica, one statement per table on the way per batch; an agent without a valid zone
    is counted in ``DARWIN_NOTIFY_DEFAULT_TIME_ZONE``); and how many were so counted."""
    model = rt.replica.model
    assert model.totals is not None
    name = model.totals.year_time_zone
    if name != AGENT_YEAR:
        zone = zones.zone_info(name)
        assert zone is not None, "validated with the model"
        year = zones.year_start(zone, moment)
        return {int(a): year for a in agents}, 0
    fallback = zones.zone_info(rt.settings.default_time_zone) or zones.zone_info("UTC")
    assert fallback is not None
    try:
        found = zones.read_zones(model, "agent", agents, rt.replica.fetch_by_ids)
    except ConfigurationError as exc:
        # check names the table or column; the totals are still computed, in the default zone
        log.warning("agents' time zones not read: %s", exc)
        found = {}
    defaulted = 0
    years = {}
    for agent in agents:
        zone = zones.zone_info(found.get(int(agent)) or "")
        if zone is None:
            defaulted += 1
        years[int(agent)] = zones.year_start(zone or fallback, moment)
    if defaulted:
        log.info(
            "%d of %d agents have no valid time zone; their year is %s's "
            "(DARWIN_NOTIFY_DEFAULT_TIME_ZONE)",
            defaulted,
            len(agents),
            rt.settings.default_time_zone,
        )
    return years, defaulted


def stage_candidates(rt: Runtime, window: Window, loaded: LoadedSchedules) -> CandidateResult:
    """Insert the window's candidates. With standing workers (no inline ones), each batch's
    render jobs go out as soon as the batch is committed, so the workers render while the
    audiences of the rest are still being resolved."""
    publish = None
    if rt.settings.inline_workers == 0:

        def publish(ids: list[int]) -> int:
            return rt.bus.publish(
                make_jobs(JobKind.RENDER, window.partition_key, ids, rt.settings.render_batch)
            )

    return build_candidates(
        rt.replica, rt.store, loaded.schedules, window.partition_key, on_inserted=publish
    )


def _wait_or_work(
    rt: Runtime,
    kind: JobKind,
    handler_factory: Callable[[list[Callable[[], None]]], Callable[[Job], Any]],
    remaining: Callable[[], int],
    log_progress: Callable[[str], None],
    republish: Callable[[], int] | None = None,
) -> None:
    """Run inline consumers until ``remaining()`` is 0, or wait for external workers."""
    started = utcnow()
    closers: list[Callable[[], None]] = []
    try:
        _work(
            rt, kind, lambda: handler_factory(closers), remaining, log_progress, started, republish
        )
    finally:
        for close in closers:
            close()


class _Completion:
    """Says when a stage's jobs are done: the bus tells when to look, the store whether.

    The store is asked as soon as the bus turns idle (every published job acknowledged), and
    otherwise every ``store_every`` seconds (every second when the bus cannot tell): a bus
    shared with other windows' jobs may not look idle while this window is done, and a job
    that was given up is acknowledged without being done.

    With ``republish``, work left while the bus is idle gets its jobs published again (a few
    times at most), and so does work that made no progress for ``stall_after`` seconds (once:
    the bus may be busy with other windows while this one's jobs were never published).
    """

    max_republish = 3

    def __init__(
        self,
        bus: JobBus,
        kind: JobKind,
        remaining: Callable[[], int],
        store_every: float = 5.0,
        republish: Callable[[], int] | None = None,
        log_progress: Callable[[str], None] = log.info,
        stall_after: float = 30.0,
    ):
        self.bus = bus
        self.kind = kind
        self.remaining = remaining
        self.store_every = store_every
        self.republish = republish
        self.log_progress = log_progress
        self.stall_after = stall_after
        self.republished = 0
        self._asked_at = float("-inf")
        self._was_idle = False
        self._left: int | None = None
        self._progress_at = time.monotonic()
        self._stall_republished = False

    def __call__(self) -> bool:
        hint = self.bus.idle(self.kind)
        idle = bool(hint)
        turned_idle, self._was_idle = idle and not self._was_idle, idle
        every = self.store_every if hint is not None else min(1.0, self.store_every)
        now = time.monotonic()
        if not turned_idle and now - self._asked_at < every:
            return False
        self._asked_at = now
        left = self.remaining()
        if left == 0:
            return True
        if left != self._left:
            self._left, self._progress_at = left, now
        if self.republish is None or self.republished >= self.max_republish:
            return False
        stalled = now - self._progress_at >= self.stall_after and not self._stall_republished
        if idle or stalled:
            self._stall_republished |= stalled
            self.republished += 1
            jobs = self.republish()
            why = "the bus is idle" if idle else f"no progress in {self.stall_after:.0f}s"
            self.log_progress(f"{self.kind}: {left} left while {why}; published {jobs} jobs")
            self._was_idle = False
        return False


def _work(
    rt: Runtime,
    kind: JobKind,
    handler_factory: Callable[[], Callable[[Job], Any]],
    remaining: Callable[[], int],
    log_progress: Callable[[str], None],
    started: datetime,
    republish: Callable[[], int] | None = None,
) -> None:
    settings = rt.settings
    done = _Completion(rt.bus, kind, remaining, republish=republish, log_progress=log_progress)

    def progress() -> None:
        elapsed = (utcnow() - started).total_seconds()
        log_progress(f"{kind}: {remaining()} still pending after {elapsed:.0f}s")

    if settings.inline_workers > 0:
        finished = run_consumers(
            rt.bus,
            kind,
            handler_factory,
            settings.inline_workers,
            done=done,
            timeout=settings.stage_timeout_seconds,
            poll=0.1,
            progress=progress,
        )
    else:
        # Workers run as their own processes (``darwin-notify worker``).
        stop = threading.Event()
        deadline = time.monotonic() + settings.stage_timeout_seconds
        last = time.monotonic()
        finished = False
        while time.monotonic() < deadline:
            if done():
                finished = True
                break
            if time.monotonic() - last > 5:
                progress()
                last = time.monotonic()
            stop.wait(0.1)
    if not finished:
        raise StageTimeout(
            f"{kind} jobs not finished after {settings.stage_timeout_seconds}s: "
            f"{remaining()} pending; are the {kind} workers running?"
        )


def stage_render(
    rt: Runtime,
    window: Window,
    loaded: LoadedSchedules,
    log_progress: Callable[[str], None] = log.info,
) -> dict[str, int]:
    """Publish render jobs for the window's unrendered candidates and wait until rendered.

    With standing workers, the candidates step has published the jobs of the candidates it
    created: while the bus still carries jobs, this step waits for them, and publishes jobs
    for whatever is unrendered once the bus is idle (a rerun, or a candidates step that
    stopped between a commit and its jobs).
    """
    store = rt.store

    def unrendered() -> list[int]:
        return [i for batch in store.stream_unrendered(window.partition_key, 10_000) for i in batch]

    pending = unrendered()
    published = 0

    def publish(ids: list[int] | None = None) -> int:
        nonlocal published
        ids = unrendered() if ids is None else ids
        jobs = rt.bus.publish(
            make_jobs(JobKind.RENDER, window.partition_key, ids, rt.settings.render_batch)
        )
        published += jobs
        return jobs

    standing = rt.settings.inline_workers == 0
    if pending and not (standing and rt.bus.idle(JobKind.RENDER) is False):
        publish(pending)

    def handler_factory(closers: list[Callable[[], None]]) -> RenderWorker:
        replica = rt.replica_factory()
        worker_store = rt.store_factory()
        closers += [replica.close, worker_store.close]
        return RenderWorker(
            replica,
            worker_store,
            loaded.schedules,
            loaded.templates,
            rt.settings.window_minutes,
            sms_max_segments=rt.settings.sms_max_segments,
            schedule_version=loaded.version,
        )

    _wait_or_work(
        rt,
        JobKind.RENDER,
        handler_factory,
        lambda: store.unrendered_count(window.partition_key),
        log_progress,
        republish=publish if standing else None,
    )
    counts = _all_statuses(store.status_counts(window.partition_key))
    return {"render_jobs": published, "candidates_unrendered_at_start": len(pending), **counts}


def stage_deliver(
    rt: Runtime, window: Window, log_progress: Callable[[str], None] = log.info
) -> dict[str, int]:
    """Publish send jobs for the window's queued messages and wait until each is final, or
    deferred (quiet hours, a daily cap): the window's deferred messages whose time has come
    are queued again first, so a later run of the window (the deferred-messages sensor
    requests one) sends them."""
    store = rt.store
    sent_before = store.status_counts(window.partition_key).get(MessageStatus.SENT, 0)
    released = store.release_deferred(window.partition_key)
    ids = store.queued_ids(window.partition_key)
    published = rt.bus.publish(
        make_jobs(JobKind.SEND, window.partition_key, ids, rt.settings.send_batch)
    )

    def handler_factory(closers: list[Callable[[], None]]) -> SendWorker:
        worker_store = rt.store_factory()
        senders = rt.senders_factory()
        worker = SendWorker(
            worker_store,
            senders,
            rt.settings.send_concurrency,
            request_group=rt.settings.send_request_group or None,
            budgets=build_budgets(worker_store, senders, rt.settings.send_rates),
            rules=rt.settings.send_rules,
        )
        closers += [worker.close, worker_store.close, *(s.close for s in senders.values())]
        return worker

    expiry = timedelta(seconds=rt.settings.sending_expiry_seconds)
    expired_at = [float("-inf")]

    def remaining() -> int:
        # A claim that never finished (a worker died) becomes unknown, never resent. Claims
        # live minutes, so looking for expired ones a few times a minute is enough.
        if time.monotonic() - expired_at[0] >= min(30.0, expiry.total_seconds() / 4):
            expired = set(store.expire_sending(utcnow() - expiry, window.partition_key))
            # one never handed to the provider is queued again: it needs a job
            again = [mid for mid in store.queued_ids(window.partition_key) if mid in expired]
            if again:
                rt.bus.publish(
                    make_jobs(JobKind.SEND, window.partition_key, again, rt.settings.send_batch)
                )
            expired_at[0] = time.monotonic()
        return store.open_message_count(window.partition_key)

    _wait_or_work(rt, JobKind.SEND, handler_factory, remaining, log_progress)
    counts = _all_statuses(store.status_counts(window.partition_key))
    return {
        "send_jobs": published,
        "messages_queued_at_start": len(ids),
        "deferred_released": len(released),
        "sent_in_this_run": counts[MessageStatus.SENT] - sent_before,
        **counts,
    }


def _all_statuses(counts: Mapping[str, int]) -> dict[str, int]:
    """Every status with its count, zeros included, so each materialization has them all."""
    return {str(s): counts.get(str(s), 0) for s in MessageStatus}
