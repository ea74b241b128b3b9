"""Audiences through a join table (``relations.record_contacts``): a listing's price cut goes to
every client interested in it, read with one statement per batch of events, not per row."""

from pathlib import Path

import pytest

from darwin_notify_assets import cli
from darwin_notify_assets.domain import detect
from darwin_notify_assets.domain.candidates import build_candidates
from darwin_notify_assets.domain.model import check_model, load_model
from darwin_notify_assets.domain.pipeline import load_schedules
from darwin_notify_assets.domain.schedules import build_schedule_set
from darwin_notify_assets.domain.windows import Window
from darwin_notify_tests.crm import world
from darwin_notify_tests.crm.oracle import expected_sends
from darwin_notify_tests.crm.test_crm_chain import build_crm_env


def test_the_join_table_is_read_once_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = build_crm_env(tmp_path / "home", monkeypatch, (27,))
    try:
        first = env.world.windows[0]
        world.apply_window(env.source, first)
        window = Window.containing(first.start, 5)
        rt = env.runtime()
        try:
            schedules = load_schedules(rt.replica).schedules
            detected = detect.detect_changes(
                rt.replica, rt.store, schedules, window, env.settings.lookback
            )
            assert detected.events[27] >= 2, "the scenario needs several price cuts"
            statements: list[str] = []
            rt.replica.db.conn.set_trace_callback(statements.append)
            result = build_candidates(rt.replica, rt.store, schedules, window.partition_key)
            rt.replica.db.conn.set_trace_callback(None)
            keys = {
                r[0]
                for r in rt.store.db.query(
                    "SELECT candidate_key FROM candidate WHERE partition_key = ?",
                    [window.partition_key],
                )
            }
        finally:
            rt.close()
        joins = [s for s in statements if 'FROM "crm.ListingInterest"' in s]
        assert len(joins) == 1, joins
        assert " IN (" in joins[0]
        # Every interested client is a candidate; the oracle's are those who take email.
        expected = {k for k in expected_sends(env.world, [first]).email if k.startswith("s27|")}
        assert expected and expected <= keys
        assert result.by_schedule[27] == len(keys)
    finally:
        env.source.close()
        env.instance.dispose()


def test_check_names_a_join_table_or_column_the_replica_lacks() -> None:
    model = load_model(world.MODEL)
    lines = [str(p) for p in check_model(model, lambda t: [] if t == world.INTEREST else ["x"])]
    assert (
        "relations.record_contacts.crm.Listing: table crm.ListingInterest does not exist on "
        "the replica" in lines
    )
    cols = {world.INTEREST: ["ListingNo", "Client"]}
    lines = [str(p) for p in check_model(model, lambda t: cols.get(t, ["x"]))]
    assert (
        "relations.record_contacts.crm.Listing: column crm.ListingInterest.ClientNo does not "
        "exist on the replica" in lines
    )


def test_a_schedule_for_record_contacts_needs_the_relation_and_no_window_digest() -> None:
    model = load_model(world.MODEL)
    base = world.generate(windows=1).base
    alert = dict(base["crm.Alert"][27])
    catalog = {
        "crm.Listing": ["ListingNo", "BrokerNo", "AskingPrice", "ChangedAt", "CreatedAt"],
        "crm.Client": ["ClientNo", "BrokerNo", "ChangedAt"],
    }
    layouts = list(base["crm.AlertLayout"].values())
    on_client = {
        **alert,
        "AlertNo": 90,
        "OnTable": "crm.Client",
        "ColsChanged": None,
        "Filter": None,
    }
    digest = {**alert, "AlertNo": 91, "Once": "window"}
    built = build_schedule_set([alert, on_client, digest], layouts, catalog, model)
    assert [s.schedule_id for s in built.schedules] == [27]
    reasons = {r.schedule_id: r.reason for r in built.rejected}
    assert "needs relations.record_contacts.crm.Client" in reasons[90]
    assert "window digest cannot go to record_contacts" in reasons[91]


def test_darwin_notify_check_on_the_crm_names_a_missing_join_table_and_soft_delete_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = build_crm_env(tmp_path / "home", monkeypatch)
    try:
        capsys.readouterr()
        assert cli.main(["check"]) == 0
        assert capsys.readouterr().out.strip() == "ok: 9 schedule(s) would run"
        broken = tmp_path / "broken.model.yaml"
        broken.write_text(
            world.MODEL.read_text(encoding="utf-8")
            .replace("through: crm.ListingInterest", "through: crm.ListingInterests")
            .replace("soft_delete: DeletedAt", "soft_delete: DeletedOn"),
            encoding="utf-8",
        )
        monkeypatch.setenv("DARWIN_NOTIFY_SOURCE_MODEL", str(broken))
        assert cli.main(["check"]) == 1
        lines = capsys.readouterr().out.strip().splitlines()
        assert (
            "model relations.record_contacts.crm.Listing: table crm.ListingInterests does not "
            "exist on the replica" in lines
        )
        assert (
            "model tables.crm.Listing.deletions: column crm.Listing.DeletedOn does not exist "
            "on the replica" in lines
        )
        # Schedules on crm.Listing are skipped, and the sale's (its totals count listings);
        # the welcome and the showings still run.
        assert lines[-1] == f"{len(lines) - 1} problem(s); 4 schedule(s) would run"
    finally:
        env.source.close()
        env.instance.dispose()
