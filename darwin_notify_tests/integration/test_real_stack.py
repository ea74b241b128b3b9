"""The demo scenario on the real stack: PostgreSQL primary -> streaming standby -> pipeline
(pyodbc + psqlODBC) -> PostgreSQL store -> Kafka -> worker processes -> provider sinks, with
Dagster's runs in PostgreSQL."""

import pytest

from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.domain.pipeline import Runtime
from darwin_notify_assets.errors import ConfigurationError
from darwin_notify_assets.sample import seed
from darwin_notify_assets.sample.demo import DEMO_START
from darwin_notify_assets.storage.db import connect
from darwin_notify_tests.integration.conftest import (
    PIPELINE_ROLE,
    Stack,
    stop_processes,
    windows_of,
)
from darwin_notify_tests.oracle import expected_sends

pytestmark = pytest.mark.integration

WINDOWS = 3


def _sink_keys(stack: Stack, email_before: int, sms_before: int):
    email, sms = stack.sink_records()
    new_email = [r for r in email[email_before:] if r.get("status") == 202]
    new_sms = [r for r in sms[sms_before:] if r.get("status") == 201]
    return new_email, new_sms


def _sms_identity(record: dict) -> tuple[str, str]:
    to = record.get("to")
    return (to[0] if isinstance(to, list) else to, record.get("body", ""))


def test_demo_scenario_on_the_real_stack(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DARWIN_NOTIFY_INLINE_WORKERS", "0")
    primary = stack.admin("PRIMARY")
    dataset = stack.reset_source(primary, seed.SeedSize.small())
    changes = seed.generate_changes(dataset, 7, DEMO_START, WINDOWS, 5)
    stack.wait_replayed(primary)
    settings = stack.settings()
    stack.baseline(settings)
    statements_before = stack.primary_statements()
    email_before, sms_before = (len(r) for r in stack.sink_records())
    instance = stack.dagster_instance()

    workers = stack.start_workers(render=2, send=2)
    try:
        for wc, window in zip(changes, windows_of(changes), strict=True):
            seed.apply_window(primary, wc)
            stack.wait_replayed(primary)
            result = stack.run_window(instance, window.partition_key)
            assert result.success, f"window {window.partition_key} failed"
        # Every worker process is still alive: they ran the jobs, not the Dagster run.
        assert all(p.poll() is None for p in workers)
    finally:
        stop_processes(workers)

    expected = expected_sends(dataset, changes)
    assert expected.email and expected.sms
    new_email, new_sms = _sink_keys(stack, email_before, sms_before)
    email_keys = [r["custom_args"]["darwin_notify_key"] for r in new_email]
    # Exactly one provider request per expected email, none extra.
    assert sorted(email_keys) == sorted(expected.email)
    assert len(new_sms) == len(expected.sms)
    assert len({_sms_identity(r) for r in new_sms}) == len(new_sms)

    rt = Runtime.from_settings(settings)
    try:
        sent = {m["candidate_key"] for m in rt.store.messages(statuses=[MessageStatus.SENT])}
        open_ = rt.store.messages(statuses=[MessageStatus.QUEUED, MessageStatus.SENDING])
    finally:
        rt.close()
    assert sent == expected.email | expected.sms
    assert open_ == []

    # The runs are in Dagster's PostgreSQL storage, with their materializations.
    from dagster import AssetKey

    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    event = instance.get_latest_materialization_event(AssetKey("delivery_log"))
    assert event is not None and "sent" in event.asset_materialization.metadata

    # A partition rerun sends nothing new.
    monkeypatch.setenv("DARWIN_NOTIFY_INLINE_WORKERS", "2")
    rerun = stack.run_window(instance, windows_of(changes)[0].partition_key)
    assert rerun.success
    again_email, again_sms = _sink_keys(stack, email_before, sms_before)
    assert len(again_email) == len(new_email) and len(again_sms) == len(new_sms)

    # Zero statements on the primary by the pipeline's role, from the primary's own statistics.
    assert stack.primary_statements() == statements_before == 0
    primary.close()


def test_pipeline_role_is_refused_on_the_primary(stack: Stack) -> None:
    primary_url = stack.env["DARWIN_NOTIFY_PRIMARY_ADMIN_URL"].replace(
        "postgres@", f"{PIPELINE_ROLE}@"
    )
    with pytest.raises(ConfigurationError, match="cannot connect"):
        connect(primary_url, read_only=True)
    assert stack.primary_statements() == 0


def test_read_only_is_enforced_by_the_server(stack: Stack) -> None:
    """The replica flag is not a promise of the driver: the server refuses writes, even on a
    database that would accept them from the same role."""
    from darwin_notify_assets.storage.replica import ReplicaReader

    for url in (stack.env["DARWIN_NOTIFY_REPLICA_URL"], stack.env["DARWIN_NOTIFY_STORE_URL"]):
        reader = ReplicaReader.open(url)
        try:
            with pytest.raises(Exception, match="25006|read-only"):
                reader.db.execute("CREATE TABLE should_not_exist (id int)")
        finally:
            reader.db.rollback()
            reader.close()


def _replica_table_stats(stack: Stack) -> dict[str, tuple[int, int]]:
    replica = stack.admin("REPLICA")
    try:
        rows = replica.query(
            "SELECT relname, coalesce(seq_scan, 0), coalesce(idx_scan, 0) FROM pg_stat_user_tables"
        )
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}
    finally:
        replica.close()


def _replica_statements(stack: Stack, pattern: str) -> int:
    replica = stack.admin("REPLICA")
    try:
        return int(
            replica.scalar(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                "WHERE userid = ?::regrole AND query LIKE ?",
                [PIPELINE_ROLE, pattern],
            )
        )
    finally:
        replica.close()


def test_replica_reads_are_minimal(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unwatched tables are not read, watched tables are read by index, merge fields in
    batches: counted by the standby's own statistics."""
    primary = stack.admin("PRIMARY")
    dataset = stack.reset_source(primary, seed.SeedSize.scaled(20_000))
    # Only schedules that address agents: nothing should read People.
    primary.execute(
        'UPDATE "NotificationSchedule" SET "IsActive" = FALSE WHERE "ScheduleID" IN (1, 4)'
    )
    primary.commit()
    changes = seed.generate_changes(dataset, 7, DEMO_START, 2, 5, intensity=3.0)
    stack.wait_replayed(primary)
    settings = stack.settings(inline_workers=2, render_batch=50)
    stack.baseline(settings)
    for wc in changes:
        seed.apply_window(primary, wc)
    primary.execute("ANALYZE").close()
    primary.commit()
    stack.wait_replayed(primary)
    replica = stack.admin("REPLICA")
    replica.execute("SELECT pg_stat_reset()").close()
    replica.execute("SELECT pg_stat_statements_reset()").close()
    replica.commit()
    replica.close()
    monkeypatch.setenv("DARWIN_NOTIFY_RENDER_BATCH", "50")

    instance = stack.dagster_instance()
    for window in windows_of(changes):
        assert stack.run_window(instance, window.partition_key).success

    import time

    time.sleep(1.5)  # backends flush their statistics at most once a second
    stats = _replica_table_stats(stack)
    assert stats.get("People", (0, 0)) == (0, 0), "People has no active schedule: never read"
    for table in ("Property", "Deal"):
        seq, idx = stats[table]
        assert seq == 0, f"{table} was read by a sequential scan"
        assert idx > 0, f"{table} was not read at all"

    rt = Runtime.from_settings(settings)
    try:
        messages = sum(len(rt.store.messages(w.partition_key)) for w in windows_of(changes))
    finally:
        rt.close()
    calls = _replica_statements(stack, '%FROM "Agent" WHERE "AgentID" IN%')
    jobs = -(-messages // 50)
    assert messages > 100, "the scenario must span several render jobs"
    # One statement per render job (a job of 50 candidates), not one per message.
    assert 0 < calls <= jobs + len(changes), (calls, jobs, messages)
    assert calls * 5 < messages
    primary.close()
