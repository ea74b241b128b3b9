"""Merge-field queries on the PostgreSQL standby through psqlODBC: one call per render batch,
counted by the standby's own statistics; a failing query fails its schedule's messages with
the database's message, masked, and the rest proceed."""

import shutil
from pathlib import Path

import pytest

from darwin_notify_assets.bus.base import InProcessBus
from darwin_notify_assets.domain.pipeline import (
    Runtime,
    load_schedules,
    stage_agent_totals,
    stage_candidates,
    stage_change_window,
    stage_render,
)
from darwin_notify_assets.sample import seed
from darwin_notify_assets.sample.demo import DEMO_START
from darwin_notify_assets.storage.sqlfiles import sample_merge_fields
from darwin_notify_tests.delivery.test_merge_fields import (
    QUERY,
    model_with_merge_fields,
    name_queries,
)
from darwin_notify_tests.integration.conftest import Stack, windows_of
from darwin_notify_tests.integration.test_real_stack import _replica_statements

pytestmark = pytest.mark.integration

WINDOWS = 2
CALL = "%json_array_elements_text%"

# A conversion that fails on a row's value: the contacts' email addresses as numbers.
BROKEN = """-- the value in the database's message is a person's address
SELECT CAST(c."Email" AS bigint) AS record_id
FROM json_array_elements_text(CAST(? AS json)) AS ids (id)
JOIN "Property" AS p ON p."PropertyID" = CAST(ids.id AS bigint)
JOIN "People" AS c ON c."AgentID" = p."AgentID"
"""


def _messages(rt: Runtime, schedule_id: int) -> list[dict]:
    rows = rt.store.db.query_dicts(
        "SELECT c.record_id, m.status, m.reason, m.text_body, m.sms_body FROM message m "
        "JOIN candidate c ON c.candidate_id = m.candidate_id WHERE c.schedule_id = ?",
        [schedule_id],
    )
    rt.store.db.commit()
    return rows


def test_merge_field_queries_on_the_standby(stack: Stack, tmp_path: Path) -> None:
    primary = stack.admin("PRIMARY")
    dataset = stack.reset_source(primary, seed.SeedSize.small())
    changes = seed.generate_changes(dataset, 7, DEMO_START, WINDOWS, 5)
    queries = tmp_path / "queries"
    queries.mkdir()
    shutil.copy(sample_merge_fields("postgresql") / f"{QUERY}.sql", queries)
    (queries / "broken.sql").write_text(BROKEN, encoding="utf-8")
    name_queries(primary, templates={1: "broken", 2: QUERY})
    stack.wait_replayed(primary)
    settings = stack.settings(
        source_model=str(model_with_merge_fields(tmp_path)),
        merge_fields_dir=str(queries),
        render_batch=100_000,
        inline_workers=1,
    )
    stack.baseline(settings)
    rt = Runtime.from_settings(settings, InProcessBus())
    calls_before = _replica_statements(stack, CALL)
    jobs = 0
    try:
        for wc, window in zip(changes, windows_of(changes), strict=True):
            seed.apply_window(primary, wc)
            stack.wait_replayed(primary)
            loaded = load_schedules(rt.replica)
            assert not loaded.rejected, loaded.rejected
            stage_change_window(rt, window, loaded)
            stage_agent_totals(rt, window)
            stage_candidates(rt, window, loaded)
            jobs += stage_render(rt, window, loaded)["render_jobs"]
        listings, drops = _messages(rt, 1), _messages(rt, 2)
    finally:
        rt.close()
    # Two queries, one call each per render job (one job per window here), never per row.
    assert jobs == WINDOWS
    assert len(listings) + len(drops) > 2 * WINDOWS
    assert _replica_statements(stack, CALL) - calls_before == 2 * WINDOWS

    active = {
        int(pid): int(n)
        for pid, n in primary.query(
            'SELECT p."PropertyID", (SELECT count(*) FROM "Property" o '
            'WHERE o."AgentID" = p."AgentID" AND o."Status" = ?) FROM "Property" p',
            ["Active"],
        )
    }
    primary.commit()
    primary.close()
    queued = [m for m in drops if m["status"] == "queued"]
    assert queued and {m["status"] for m in drops} <= {"queued", "suppressed"}
    for m in queued:
        assert m["sms_body"].endswith(f"; {active[int(m['record_id'])]} active")

    assert listings and {m["status"] for m in listings} == {"render_failed"}
    [reason] = {m["reason"] for m in listings}
    assert reason.startswith("schedule 'New listing': merge-field query 'broken' failed: ")
    assert 'invalid input syntax for type bigint: "…"' in reason, reason
    assert "@" not in reason
