"""Deletions by a soft-delete column: a row the model marks deleted is a deletion event, once,
never an insert or an update; in detection and in reconciliation; checked against the catalog."""

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from darwin_notify_assets.domain import detect
from darwin_notify_assets.domain.model import SoftDelete, check_model, load_model, parse_model
from darwin_notify_assets.domain.pipeline import load_schedules
from darwin_notify_assets.domain.schedules import (
    Audience,
    Channel,
    DedupeScope,
    EventType,
    Schedule,
)
from darwin_notify_assets.domain.windows import Window
from darwin_notify_tests.crm import world
from darwin_notify_tests.crm.test_crm_chain import build_crm_env

W = Window.containing(datetime(2026, 5, 4, 9, 0), 5)


def _schedule(sid: int, event: EventType, watch: str) -> Schedule:
    return Schedule(
        schedule_id=sid,
        name=f"s{sid}",
        source_table="crm.Listing",
        event_type=event,
        watch_column=watch,
        changed_columns=(),
        criteria=(),
        channel=Channel.EMAIL,
        audience=Audience.AGENT,
        template_id=1,
        dedupe_scope=DedupeScope.CHANGE,
        uses_agent_totals=False,
    )


def _plan(soft: SoftDelete) -> detect.TablePlan:
    return detect.TablePlan(
        table="crm.Listing",
        key="ListingNo",
        watch_columns=("ChangedAt", soft.time_column),
        schedules=(_schedule(1, EventType.UPDATE, "ChangedAt"),),
        keep_snapshot=True,
        ledger=False,
        agent_column="BrokerNo",
        soft_delete=soft,
        delete_schedules=(_schedule(2, EventType.DELETE, soft.time_column),),
    )


AT = "2026-05-04 09:02:00.000000"
BEFORE = "2026-05-04 08:00:00.000000"


@pytest.mark.parametrize(
    ("soft", "deleted", "alive"),
    [
        (
            SoftDelete(soft_delete="DeletedAt"),
            {"DeletedAt": AT, "ChangedAt": AT},
            {"DeletedAt": None, "ChangedAt": AT},
        ),
        (
            SoftDelete(soft_delete="IsDeleted", at="ChangedAt"),
            {"IsDeleted": 1, "ChangedAt": AT},
            {"IsDeleted": 0, "ChangedAt": AT},
        ),
    ],
    ids=["timestamp", "flag"],
)
def test_a_soft_deleted_row_fires_deletion_schedules_once_and_no_update(soft, deleted, alive):
    plan = _plan(soft)
    base = {"ListingNo": 7, "BrokerNo": 3}
    last_seen = {**base, **alive, "ChangedAt": BEFORE}
    out = detect.decide_rows(plan, [{**base, **deleted}], {7: last_seen}, W, W.start)
    assert [(e.schedule_id, e.event_type, e.version) for e in out.fired] == [(2, "delete", AT)]
    assert out.fired[0].agent_id == 3 and out.fired[0].row_values is not None
    assert out.skipped == []
    # Read again (the lookback, a rerun) once its last-seen values say deleted: nothing new.
    again = detect.decide_rows(plan, [{**base, **deleted}], {7: {**base, **deleted}}, W, W.start)
    assert again.fired == [] and again.skipped == []
    # A live row is an update, as before.
    live = detect.decide_rows(plan, [{**base, **alive}], {7: last_seen}, W, W.start)
    assert [(e.schedule_id, e.event_type) for e in live.fired] == [(1, "update")]


def test_reconciliation_finds_a_missed_soft_deletion_and_detection_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = build_crm_env(tmp_path / "home", monkeypatch, (25,))
    try:
        first = env.world.windows[0]
        world.apply_window(env.source, first)
        deleted = [op.key for op in first.ops if op.kind == "delete" and op.table == "crm.Listing"]
        assert deleted
        window = Window.containing(first.start, 5)
        rt = env.runtime()
        try:
            schedules = load_schedules(rt.replica).schedules
            missed = detect.reconcile(rt.replica, rt.store, schedules, window.start, window.end, 5)
            assert sorted(int(k.split(":")[1]) for k in missed.events_missing) == sorted(deleted)
            assert all(":s25:delete:" in k for k in missed.events_missing)
            result = detect.detect_changes(
                rt.replica, rt.store, schedules, window, env.settings.lookback
            )
            assert result.events_new == len(deleted) and result.deletions_read == 0
            # The next window's lookback reads the same rows: nothing new, nothing missed.
            nxt = Window.containing(window.end, 5)
            world.apply_window(env.source, env.world.windows[1])
            again = detect.detect_changes(
                rt.replica, rt.store, schedules, nxt, env.settings.lookback
            )
            assert again.events_new == len(
                [
                    o
                    for o in env.world.windows[1].ops
                    if o.kind == "delete" and o.table == "crm.Listing"
                ]
            )
            clean = detect.reconcile(rt.replica, rt.store, schedules, window.start, nxt.end, 5)
            assert clean.events_missing == []
        finally:
            rt.close()
    finally:
        env.source.close()
        env.instance.dispose()


def test_check_names_a_soft_delete_or_ledger_condition_column_the_replica_lacks() -> None:
    model = load_model(world.MODEL)
    real = {
        "crm.Listing": ["ListingNo", "BrokerNo", "State", "CreatedAt", "ChangedAt"],
        "crm.Sale": ["SaleNo", "BrokerNo", "CloseDate", "Price", "Fee", "ChangedAt", "CreatedAt"],
    }
    problems = check_model(model, lambda t: real.get(t, ["x"]))
    lines = [str(p) for p in problems]
    assert (
        "tables.crm.Listing.deletions: column crm.Listing.DeletedAt does not exist on the replica"
        in lines
    )
    assert "totals.deals.counts_when: column crm.Sale.Stage does not exist on the replica" in lines


def test_a_soft_delete_needs_its_column() -> None:
    text = world.MODEL.read_text(encoding="utf-8").replace(
        "deletions: {soft_delete: DeletedAt}", "deletions: {at: ChangedAt}"
    )
    with pytest.raises(Exception, match=r"crm.model.yaml:\d+: tables.crm.Listing.deletions"):
        parse_model(text, "crm.model.yaml")


def test_the_oracle_window_has_deletions() -> None:
    w = world.generate(windows=2)
    assert all(any(op.kind == "delete" for op in wo.ops) for wo in w.windows)
    assert w.windows[0].start + timedelta(minutes=5) == w.windows[1].start
