"""The second schema (the CRM fixture, schema ``crm``) on the real stack: PostgreSQL primary ->
streaming standby -> pipeline -> store -> Kafka -> provider sinks. The sends are exactly the
oracle's, the pipeline runs nothing on the primary, and on the standby only the tables with an
active schedule are read by range."""

import pytest

from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.domain.pipeline import Runtime
from darwin_notify_assets.domain.windows import Window
from darwin_notify_tests.crm import world
from darwin_notify_tests.crm.oracle import expected_sends
from darwin_notify_tests.integration.conftest import PIPELINE_ROLE, Stack

pytestmark = pytest.mark.integration


def _range_reads(stack: Stack, table: str) -> int:
    """Statements of the pipeline's role on the standby that read ``table`` by a range of a
    watch column (detection's reads; merge fields are read by key)."""
    schema, name = table.split(".")
    return _statements(stack, f'%FROM "{schema}"."{name}" WHERE (%')


def _statements(stack: Stack, pattern: str) -> int:
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


def test_the_crm_schema_through_the_chain_on_the_replica(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DARWIN_NOTIFY_SOURCE_MODEL", str(world.MODEL))
    monkeypatch.setenv("DARWIN_NOTIFY_INLINE_WORKERS", "2")
    primary = stack.admin("PRIMARY")
    w = world.generate(windows=4)
    world.create(primary)
    world.write_base(primary, w)
    primary.execute("ANALYZE").close()
    primary.commit()
    stack.wait_replayed(primary)
    settings = stack.settings()
    stack.baseline(settings)
    statements_before = stack.primary_statements()
    email_before, sms_before = (len(r) for r in stack.sink_records())
    instance = stack.dagster_instance()

    replica = stack.admin("REPLICA")
    replica.execute("SELECT pg_stat_statements_reset()").close()
    replica.commit()
    replica.close()
    keys = [Window.containing(wo.start, 5).partition_key for wo in w.windows]
    for wo, key in zip(w.windows, keys, strict=True):
        world.apply_window(primary, wo)
        stack.wait_replayed(primary)
        assert stack.run_window(instance, key).success, f"window {key} failed"

    expected = expected_sends(w, w.windows)
    email, sms = stack.sink_records()
    new_email = [r for r in email[email_before:] if r.get("status") == 202]
    new_sms = [r for r in sms[sms_before:] if r.get("status") == 201]
    assert sorted(r["custom_args"]["darwin_notify_key"] for r in new_email) == sorted(
        expected.email
    )
    assert len(new_sms) == len(expected.sms)

    rt = Runtime.from_settings(settings)
    try:
        sent = {m["candidate_key"] for m in rt.store.messages(statuses=[MessageStatus.SENT])}
        bodies = {
            r["candidate_key"]: r["text_body"] or ""
            for r in rt.store.db.query_dicts(
                "SELECT candidate_key, text_body FROM message WHERE candidate_key LIKE ?", ["s28|%"]
            )
        }
        open_ = rt.store.messages(statuses=[MessageStatus.QUEUED, MessageStatus.SENDING])
    finally:
        rt.close()
    assert sent == expected.all
    assert open_ == []

    # Detection reads the tables with an active schedule (and the tombstone), never the
    # others: crm.Broker has only a disabled schedule, crm.Branch none.
    for table in ("crm.Listing", "crm.Sale", "crm.Client", "crm.Showing"):
        assert _range_reads(stack, table) > 0, f"{table} was not read"
    for table in ("crm.Broker", "crm.Branch"):
        assert _range_reads(stack, table) == 0, f"{table} was read by range"

    # The join table is read once per batch of events (one batch a window here), not per row.
    joins = _statements(stack, '%FROM "crm"."ListingInterest" WHERE%')
    assert 0 < joins <= len(keys), joins
    assert any(k.startswith("s27|") for k in expected.all)

    # Showings, keyed by (ListingNo, ShowingSeq), are read by both columns at once: one
    # statement per render batch, and each message shows its own showing's row.
    showings = _statements(stack, '%FROM (VALUES %JOIN "crm"."Showing" AS t ON%')
    assert 0 < showings <= 2 * len(keys), showings
    booked = [k for k in expected.email if k.startswith("s28|")]
    assert booked
    for key in booked:
        listing_no, seq = key.split("|")[1].split(":")[1].strip("[]").split(",")
        assert f"visit {listing_no}-{seq}" in bodies[key], key

    assert stack.primary_statements() == statements_before == 0
    primary.close()
