"""Recipients the model marks soft-deleted are addressed by no candidate: the CRM removes a
client by its ``Removed`` flag (``tables.crm.Client.deletions``), and a removed client gets
nothing from any audience (the broker's clients, the clients interested in a listing), while
the same windows read under a model without that soft delete address them."""

import dataclasses
from pathlib import Path

import pytest

from darwin_notify_assets.bus.base import Job, JobKind
from darwin_notify_assets.config import Settings
from darwin_notify_assets.delivery.workers import RenderWorker
from darwin_notify_assets.domain import detect
from darwin_notify_assets.domain.candidates import build_candidates
from darwin_notify_assets.domain.pipeline import load_schedules
from darwin_notify_assets.domain.windows import Window
from darwin_notify_tests.crm import world
from darwin_notify_tests.crm.oracle import expected_sends
from darwin_notify_tests.crm.test_crm_chain import CrmEnv, build_crm_env

SOFT_DELETE_LINE = "    deletions: {soft_delete: Removed, at: ChangedAt}\n"


def _without_client_soft_delete(env: CrmEnv, tmp_path: Path, mp: pytest.MonkeyPatch) -> CrmEnv:
    text = world.MODEL.read_text(encoding="utf-8")
    assert SOFT_DELETE_LINE in text
    control = tmp_path / "control.model.yaml"
    control.write_text(text.replace(SOFT_DELETE_LINE, ""), encoding="utf-8")
    mp.setenv("DARWIN_NOTIFY_SOURCE_MODEL", str(control))
    return dataclasses.replace(env, settings=Settings.from_env(overrides={"home": str(env.home)}))


def _contact(key: str) -> int:
    return int(key.rsplit("|contact:", 1)[1])


@pytest.mark.parametrize("soft_delete", [True, False], ids=["model-soft-deletes", "control"])
def test_a_removed_client_is_addressed_by_no_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, soft_delete: bool
) -> None:
    env = build_crm_env(tmp_path / "home", monkeypatch, (21, 27))
    if not soft_delete:
        env = _without_client_soft_delete(env, tmp_path, monkeypatch)
    try:
        removed: set[int] = set()
        addressed_removed: set[int] = set()
        skipped = 0
        for index, ops in enumerate(env.world.windows):
            world.apply_window(env.source, ops)
            removed |= {o.key for o in ops.ops if o.kind == "delete" and o.table == "crm.Client"}
            window = Window.containing(ops.start, 5)
            rt = env.runtime()
            try:
                schedules = load_schedules(rt.replica).schedules
                detect.detect_changes(
                    rt.replica, rt.store, schedules, window, env.settings.lookback
                )
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
            skipped += result.skipped_deleted_recipients
            addressed_removed |= {_contact(k) for k in keys} & removed
            # The oracle's sends of this window all have their candidate, and address no
            # removed client.
            sent = expected_sends(env.world, env.world.windows[: index + 1]).email
            before = expected_sends(env.world, env.world.windows[:index]).email
            mine = {k for k in sent - before if k.startswith(("s21|", "s27|"))}
            assert mine and mine <= keys
            assert not {_contact(k) for k in mine} & removed
            flags = [s for s in statements if 'FROM "crm.Client" WHERE "ClientNo" IN' in s]
            if soft_delete:
                # The removal flag is read once per batch of candidates, by key.
                assert len(flags) == 1 and '"Removed"' in flags[0], statements
                assert result.skipped_deleted_recipients >= 1, f"window {index}"
            else:
                assert flags == []
        if soft_delete:
            assert addressed_removed == set()
            assert skipped >= len(env.world.windows)
        else:
            assert skipped == 0
            assert addressed_removed, "without the soft delete, removed clients are addressed"
    finally:
        env.source.close()
        env.instance.dispose()


def _render_window_0(env: CrmEnv, before_render=None) -> dict[int, tuple[str, str | None]]:
    """Candidates of the first window for alerts 21 and 27, rendered: status and reason per
    client."""
    first = env.world.windows[0]
    world.apply_window(env.source, first)
    window = Window.containing(first.start, 5)
    rt = env.runtime()
    try:
        loaded = load_schedules(rt.replica)
        detect.detect_changes(rt.replica, rt.store, loaded.schedules, window, env.settings.lookback)
        build_candidates(rt.replica, rt.store, loaded.schedules, window.partition_key)
        rows = rt.store.db.query(
            "SELECT candidate_id, recipient_id FROM candidate WHERE partition_key = ? "
            "AND recipient_kind = ? ORDER BY candidate_id",
            [window.partition_key, "contact"],
        )
        if before_render is not None:
            before_render(sorted({int(r[1]) for r in rows}))
        worker = RenderWorker(rt.replica, rt.store, loaded.schedules, loaded.templates, 5)
        worker.handle(Job(JobKind.RENDER, window.partition_key, tuple(r[0] for r in rows)))
        return {
            int(r[0]): (r[1], r[2])
            for r in rt.store.db.query(
                "SELECT c.recipient_id, m.status, m.reason FROM message m JOIN candidate c "
                "ON c.candidate_id = m.candidate_id WHERE c.partition_key = ?",
                [window.partition_key],
            )
        }
    finally:
        rt.close()


def test_a_client_removed_after_its_candidate_is_suppressed_at_render(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = build_crm_env(tmp_path / "home", monkeypatch, (21, 27))
    removed: list[int] = []

    def remove_one(clients: list[int]) -> None:
        # Removed between the candidate stage and the render.
        removed.append(clients[0])
        with env.source.transaction():
            env.source.execute(
                f'UPDATE {env.source.quote_table("crm.Client")} SET "Removed" = 1 '
                'WHERE "ClientNo" = ?',
                [clients[0]],
            ).close()

    try:
        outcomes = _render_window_0(env, remove_one)
    finally:
        env.source.close()
        env.instance.dispose()
    [gone] = removed
    assert outcomes[gone] == ("suppressed", f"contact {gone} is deleted (Removed is set)")
    others = [v for k, v in outcomes.items() if k != gone]
    assert others and all("is deleted" not in (reason or "") for _, reason in others)


def test_a_contact_kind_with_an_active_column_suppresses_inactive_contacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = build_crm_env(tmp_path / "home", monkeypatch, (21, 27))
    # The same schema, with the contact's MailOK read as its active column.
    text = world.MODEL.read_text(encoding="utf-8")
    anchor = "    opt_in:\n      email: MailOK\n"
    assert anchor in text
    variant = tmp_path / "active.model.yaml"
    variant.write_text(text.replace(anchor, "    active: MailOK\n" + anchor), encoding="utf-8")
    monkeypatch.setenv("DARWIN_NOTIFY_SOURCE_MODEL", str(variant))
    env = dataclasses.replace(env, settings=Settings.from_env(overrides={"home": str(env.home)}))
    try:
        outcomes = _render_window_0(env)
        mail_ok = {
            int(r[0]): int(r[1])
            for r in env.source.query(
                f'SELECT "ClientNo", "MailOK" FROM {env.source.quote_table("crm.Client")}'
            )
        }
    finally:
        env.source.close()
        env.instance.dispose()
    inactive = [k for k in outcomes if not mail_ok[k]]
    assert inactive and [k for k in outcomes if mail_ok[k]]
    for k, (status, reason) in outcomes.items():
        if not mail_ok[k]:
            assert (status, reason) == ("suppressed", f"contact {k} is inactive")
        else:
            assert reason != f"contact {k} is inactive"
