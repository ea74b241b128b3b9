"""Quiet hours on the real stack: PostgreSQL store, Kafka, send worker processes, the SMS sink.

While quiet hours hold, the send workers defer every SMS (with the UTC time they end in the
recipient's office zone) and send every email; once they are over, the deferred-messages
sensor requests the delivery step, which queues the SMS again, and the workers send each once.
An earlier PostgreSQL store gets the CHECK constraint that admits ``deferred``."""

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from dagster import AssetKey, build_sensor_context

from darwin_notify_assets.defs.notifications.sensors import DEFERRED_TAG, deferred_messages_sensor
from darwin_notify_assets.defs.resources import resources_from_env
from darwin_notify_assets.delivery.rules import SendRules
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.domain.pipeline import Runtime
from darwin_notify_assets.sample import seed
from darwin_notify_assets.sample.demo import DEMO_START
from darwin_notify_assets.storage.db import connect
from darwin_notify_assets.storage.store import NotificationStore, utcnow
from darwin_notify_tests.conftest import make_messages
from darwin_notify_tests.integration.conftest import Stack, schema_store, stop_processes, windows_of
from darwin_notify_tests.oracle import expected_sends

pytestmark = pytest.mark.integration


def _quiet_now() -> str:
    """Quiet hours that hold now for every offset from UTC-12 to UTC+6 (the sample's offices
    are in the Americas) and end hours from now."""
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=12), now + timedelta(hours=6)
    return f"{start:%H}:00-{end:%H}:00"


def test_sms_in_quiet_hours_are_deferred_then_sent_once_by_the_sensor_s_run(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet = _quiet_now()
    monkeypatch.setenv("DARWIN_NOTIFY_INLINE_WORKERS", "0")
    monkeypatch.setenv("DARWIN_NOTIFY_QUIET_HOURS_SMS", quiet)
    primary = stack.admin("PRIMARY")
    dataset = stack.reset_source(primary, seed.SeedSize.small())
    changes = seed.generate_changes(dataset, 7, DEMO_START, 2, 5)
    stack.wait_replayed(primary)
    settings = stack.settings()
    stack.baseline(settings)
    email_before, sms_before = (len(r) for r in stack.sink_records())
    instance = stack.dagster_instance()
    windows = windows_of(changes)
    workers = stack.start_workers(render=1, send=2)
    try:
        for wc, window in zip(changes, windows, strict=True):
            seed.apply_window(primary, wc)
            stack.wait_replayed(primary)
            assert stack.run_window(instance, window.partition_key).success
    finally:
        stop_processes(workers)
    expected = expected_sends(dataset, changes)
    assert expected.email and expected.sms
    email, sms = stack.sink_records()
    assert len([r for r in email[email_before:] if r.get("status") == 202]) == len(expected.email)
    assert sms[sms_before:] == []

    offices = {r[0]: r[1] for r in primary.query('SELECT "OfficeID", "TimeZone" FROM "Office"')}
    agents = {r[0]: r[1] for r in primary.query('SELECT "AgentID", "OfficeID" FROM "Agent"')}
    people = {r[0]: r[1] for r in primary.query('SELECT "PeopleID", "AgentID" FROM "People"')}
    primary.commit()
    store = NotificationStore.open(settings.store_url)
    try:
        rows = store.db.query_dicts(
            "SELECT m.message_id, m.candidate_key, m.status, m.deferred_until, m.recipient_tz, "
            "c.recipient_kind, c.recipient_id FROM message m "
            "JOIN candidate c ON c.candidate_id = m.candidate_id WHERE m.channel = 'sms'"
        )
        store.db.commit()
        deferred = [r for r in rows if r["status"] == MessageStatus.DEFERRED]
        assert {r["candidate_key"] for r in deferred} == expected.sms
        end = time(int(quiet[6:8]))
        for r in deferred:
            agent = (
                r["recipient_id"] if r["recipient_kind"] == "agent" else people[r["recipient_id"]]
            )
            zone = ZoneInfo(offices[agents[agent]])
            assert r["recipient_tz"] == zone.key
            local = datetime.now(UTC).astimezone(zone)
            day = local.date() + timedelta(days=1 if local.time() >= end else 0)
            until = datetime.combine(day, end, tzinfo=zone).astimezone(UTC).replace(tzinfo=None)
            assert r["deferred_until"] == until, r
        # the quiet hours are over: new workers without them, and the deferred time is past
        store.db.execute(
            "UPDATE message SET deferred_until = ? WHERE status = 'deferred'",
            [utcnow() - timedelta(minutes=1)],
        ).close()
        store.db.commit()
    finally:
        store.close()
    monkeypatch.delenv("DARWIN_NOTIFY_QUIET_HOURS_SMS")
    with build_sensor_context(instance=instance, resources=resources_from_env()) as context:
        result = deferred_messages_sensor(context)
    [request] = result.run_requests
    assert request.tags[DEFERRED_TAG] == "true"
    from darwin_notify_assets.definitions import build_defs

    workers = stack.start_workers(render=0, send=2)
    try:
        run = (
            build_defs()
            .resolve_job_def("notify_window")
            .execute_in_process(
                partition_key=request.partition_key,
                instance=instance,
                tags=dict(request.tags),
                asset_selection=[AssetKey("delivery_log")],
                raise_on_error=False,
            )
        )
        assert run.success
    finally:
        stop_processes(workers)
    email, sms = stack.sink_records()
    new_sms = [r for r in sms[sms_before:] if r.get("status") == 201]
    assert len(new_sms) == len(expected.sms)
    rt = Runtime.from_settings(settings)
    try:
        sent = {m["candidate_key"] for m in rt.store.messages(statuses=[MessageStatus.SENT])}
        assert sent == expected.email | expected.sms
        assert rt.store.messages(statuses=[MessageStatus.DEFERRED]) == []
        assert [d for w in windows for d in rt.store.duplicate_sends(w.partition_key)] == []
    finally:
        rt.close()
    primary.close()


@pytest.fixture
def pg_store(services: dict[str, str]) -> Iterator[NotificationStore]:
    with schema_store(services["DARWIN_NOTIFY_STORE_URL"], "store_quiet") as s:
        s.ensure_schema()
        yield s


def test_an_earlier_postgresql_store_gets_the_constraint_that_admits_deferred(
    pg_store: NotificationStore, services: dict[str, str]
) -> None:
    db = pg_store.db
    # the store as the earlier schema left it
    db.execute("ALTER TABLE message DROP CONSTRAINT message_status_known").close()
    db.execute(
        "ALTER TABLE message ADD CONSTRAINT message_status_known CHECK (status IN ('queued', "
        "'sending', 'sent', 'failed', 'unknown', 'suppressed', 'render_failed'))"
    ).close()
    db.execute("ALTER TABLE message DROP COLUMN recipient_tz").close()
    db.execute("ALTER TABLE message DROP COLUMN deferred_until").close()
    db.commit()
    pg_store.ensure_schema()
    pg_store.ensure_schema()
    ids = make_messages(pg_store, 3, channel="sms", partition="2026-03-02-14:00")
    db.execute("UPDATE message SET recipient_tz = 'America/Chicago'").close()
    db.commit()
    rules = SendRules.from_values({"sms": "21:00-08:00"}, {})
    # 04:30 UTC = 22:30 in Chicago: until 08:00 CST = 14:00 UTC
    assert pg_store.claim(ids, rules, now_utc=datetime(2026, 3, 2, 4, 30)) == []
    rows = db.query("SELECT status, deferred_until FROM message ORDER BY message_id")
    db.commit()
    assert rows == [("deferred", datetime(2026, 3, 2, 14, 0))] * 3
    checks = db.scalar(
        "SELECT COUNT(*) FROM pg_constraint WHERE conname = 'message_status_known' "
        "AND conrelid = CAST('message' AS regclass)"
    )
    db.commit()
    assert checks == 1
    # a second store releases after the first: nothing is left for it
    other = NotificationStore(connect(services["DARWIN_NOTIFY_STORE_URL"]))
    try:
        schema = db.scalar("SELECT current_schema()")
        db.commit()
        other.db.execute(f"SET search_path TO {schema}").close()
        other.db.commit()
        first = pg_store.release_deferred("2026-03-02-14:00", datetime(2026, 3, 2, 14, 0))
        second = other.release_deferred("2026-03-02-14:00", datetime(2026, 3, 2, 14, 0))
    finally:
        other.close()
    assert sorted(first + second) == ids and not set(first) & set(second)


def test_two_workers_claiming_one_recipient_at_once_keep_to_the_cap_on_postgresql(
    pg_store: NotificationStore, services: dict[str, str]
) -> None:
    from darwin_notify_tests.delivery.test_quiet_hours import cap_race

    schema = pg_store.db.scalar("SELECT current_schema()")
    pg_store.db.commit()
    other = NotificationStore(connect(services["DARWIN_NOTIFY_STORE_URL"]))
    try:
        other.db.execute(f"SET search_path TO {schema}").close()
        other.db.commit()
        sender = cap_race([pg_store, other], "2026-03-02-14:00")
    finally:
        other.close()
    assert len(sender.calls) == 3
    statuses = pg_store.db.query("SELECT status, COUNT(*) FROM message GROUP BY status")
    pg_store.db.commit()
    assert dict(statuses) == {"sent": 3, "deferred": 7}
