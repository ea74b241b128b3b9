"""The ``darwin-notify`` command, called in process with the environment set."""

import json
import sqlite3

import pytest

from darwin_notify_assets import cli
from darwin_notify_assets.storage.store import CandidateRow


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def processed_env(embedded_env):
    assert embedded_env.run_window(0).success
    return embedded_env


def test_audit_exits_0_when_clean(processed_env, capsys):
    capsys.readouterr()
    assert cli.main(["audit", "--partition", processed_env.key(0)]) == 0
    out = capsys.readouterr().out
    summary = last_json(out)
    assert summary["clean"] is True
    assert [w["partition_key"] for w in summary["windows"]] == [processed_env.key(0)]
    assert "0 missed, 0 duplicates" in out


def test_audit_exits_1_when_a_notification_was_missed(processed_env, capsys):
    env = processed_env
    missed = "s1|Property:999999|contact:1"
    env.store().insert_candidates(
        [
            CandidateRow(
                candidate_key=missed,
                partition_key=env.key(0),
                schedule_id=1,
                channel="email",
                event_id=999_999,
                source_table="Property",
                record_id=999_999,
                agent_id=1,
                recipient_kind="contact",
                recipient_id=1,
                uses_totals=False,
            )
        ]
    )
    capsys.readouterr()
    assert cli.main(["audit"]) == 1
    out = capsys.readouterr().out
    assert f"MISSED  {env.key(0)}  {missed}" in out
    summary = last_json(out)
    assert summary["clean"] is False
    [window] = summary["windows"]
    assert window["missed"] == [missed]


def test_baseline_prints_what_it_recorded(embedded_env, capsys):
    capsys.readouterr()
    assert cli.main(["baseline"]) == 0
    counts = last_json(capsys.readouterr().out)["baseline"]
    env = embedded_env
    assert counts == {
        "Deal": len(env.source_rows('SELECT 1 FROM "Deal"')),
        "Property": len(env.source_rows('SELECT 1 FROM "Property"')),
    }


def test_run_processes_partitions_through_dagster(embedded_env, monkeypatch, tmp_path, capsys):
    env = embedded_env
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    env.apply(0)
    capsys.readouterr()
    assert cli.main(["run", env.key(0)]) == 0
    assert f"{env.key(0)}: ok" in capsys.readouterr().out
    sent = env.store_rows("SELECT COUNT(*) AS n FROM message WHERE status = 'sent'")[0]["n"]
    assert sent == len(env.outbox_files()) > 0


def test_a_worker_without_kafka_is_refused_with_exit_2(embedded_env, capsys):
    assert cli.main(["worker", "send"]) == 2
    assert "KAFKA_BOOTSTRAP" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("2026-03-02-14:03", "not the start of a 5-minute window"),
        ("2026-03-02 14:00", "not a window's partition key"),
        ("yesterday", "not a window's partition key"),
        ("2025-12-31-23:55", "before the first window"),
        ("2099-01-01-00:00", "has not ended yet"),
    ],
)
def test_run_answers_a_bad_partition_key_in_one_line(embedded_env, capsys, key, says):
    capsys.readouterr()
    assert cli.main(["run", key]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.strip().splitlines()
    assert says in line and key in line
    assert "Traceback" not in captured.err


def test_audit_exports_csv_and_parquet_with_masked_reasons(processed_env, tmp_path, capsys):
    import pandas as pd

    from darwin_notify_assets.domain.audit import FRAME_COLUMNS

    env = processed_env
    store_rows = env.store_rows("SELECT message_id, to_address FROM message ORDER BY message_id")
    address = store_rows[0]["to_address"]
    with sqlite3.connect(env.settings.store_url.removeprefix("sqlite:///")) as db:
        db.execute(
            "UPDATE message SET status = 'suppressed', reason = ? WHERE message_id = ?",
            [f"recipient {address} opted out", store_rows[0]["message_id"]],
        )
    csv, parquet = tmp_path / "a.csv", tmp_path / "a.parquet"
    capsys.readouterr()
    assert (
        cli.main(["audit", "--since", env.key(0), "--csv", str(csv), "--parquet", str(parquet)])
        == 0
    )
    frame = pd.read_csv(csv)
    assert list(frame.columns) == FRAME_COLUMNS
    assert list(pd.read_parquet(parquet).columns) == FRAME_COLUMNS
    assert len(pd.read_parquet(parquet)) == len(frame)
    [window] = frame[frame.kind == "window"].to_dict("records")
    messages = env.store_rows("SELECT status FROM message WHERE partition_key = ?", [env.key(0)])
    assert window["window"] == env.key(0)
    assert window["messages"] == len(messages)
    assert window["sent"] == sum(m["status"] == "sent" for m in messages)
    not_sent = frame[frame.kind.isin(["suppressed", "render_failed", "failed"])]
    expected = [m for m in messages if m["status"] in ("suppressed", "render_failed", "failed")]
    assert len(not_sent) == len(expected) > 0
    text = csv.read_text()
    assert address not in text and "opted out" in text
    assert "***" in text


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["audit", "--since", "yesterday"], "not a window's partition key"),
        (["audit", "--csv"], "expected one argument"),
        (["audit", "--since", "2026-03-02-15:00", "--until", "2026-03-02-14:00"], "is after"),
        (["audit", "--csv", "/nonexistent/dir/a.csv"], "cannot write /nonexistent/dir/a.csv"),
        (["audit", "--bogus"], "unrecognized arguments"),
    ],
)
def test_audit_answers_bad_arguments_in_one_line(processed_env, capsys, argv, says):
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert says in line
    assert "Traceback" not in captured.err


# -- resolve: a person decides an unknown ------------------------------------------------------
def _unknown_message(env) -> tuple[str, int]:
    from datetime import timedelta

    from darwin_notify_assets.storage.store import utcnow
    from darwin_notify_tests.conftest import make_messages

    store = env.store()
    [mid] = make_messages(store, 1, prefix="resolve-me-")
    [claimed] = store.claim([mid])
    store.mark_requested(claimed.claim_token, [mid])
    store.expire_sending(utcnow() + timedelta(seconds=1))
    return claimed.candidate_key, mid


def _history(env, mid: int) -> list[tuple]:
    return [
        (r["from_status"], r["to_status"], r["reason"])
        for r in env.store_rows(
            "SELECT from_status, to_status, reason FROM message_event WHERE message_id = ? "
            "ORDER BY message_event_id",
            [mid],
        )
    ]


@pytest.mark.parametrize("flag", ["--sent", "--failed"])
def test_resolve_records_a_persons_decision_with_who_and_why(embedded_env, capsys, flag):
    key, mid = _unknown_message(embedded_env)
    why = "the provider's activity feed shows it delivered"
    assert cli.main(["resolve", key, flag, "--reason", why, "--by", "ops-anna"]) == 0
    status = flag.removeprefix("--")
    assert capsys.readouterr().out.strip() == (
        f"{key}: unknown -> {status} (resolved by ops-anna: {why})"
    )
    [row] = embedded_env.store_rows("SELECT status FROM message WHERE message_id = ?", [mid])
    assert row["status"] == status
    assert _history(embedded_env, mid)[-1] == ("unknown", status, f"resolved by ops-anna: {why}")


def test_resolve_refuses_a_wrong_key_and_a_message_not_unknown(embedded_env, capsys):
    key, mid = _unknown_message(embedded_env)
    assert cli.main(["resolve", "no-such-key", "--sent", "--reason", "checked"]) == 2
    err = capsys.readouterr().err
    assert err == "darwin-notify resolve: no message has the key 'no-such-key'\n"
    assert cli.main(["resolve", key, "--failed", "--reason", "never arrived", "--by", "a"]) == 0
    before = _history(embedded_env, mid)
    capsys.readouterr()
    assert cli.main(["resolve", key, "--sent", "--reason", "changed my mind"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"darwin-notify resolve: message {key!r} is failed, not unknown: only an unknown "
        "message is resolved by a person\n"
    )
    assert _history(embedded_env, mid) == before  # nothing changed
    assert cli.main(["resolve", key, "--sent", "--reason", "   "]) == 2
    assert capsys.readouterr().err == (
        "darwin-notify resolve: --reason must say why (what the provider showed)\n"
    )
