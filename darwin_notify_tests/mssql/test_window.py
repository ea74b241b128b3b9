"""Whole windows through the Dagster chain with the notification store on the SQL Server
named by DARWIN_NOTIFY_TEST_MSSQL_URL (the replica is the embedded SQLite darwin.Cloud):
exactly the notifications the oracle expects reach a provider, once, and a rerun sends
nothing new."""

import json
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from darwin_notify_assets.config import STORE_PASSWORD_ENV
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_tests.conftest import EmbeddedEnv, build_env
from darwin_notify_tests.mssql.server import (
    connect_server,
    mssql_store,
    require_server,
    server_password,
)
from darwin_notify_tests.oracle import Expected, expected_sends

pytestmark = pytest.mark.mssql

WINDOWS = 2


def outbox_key(path: Path) -> str:
    if path.suffix == ".eml":
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        return str(message["X-Darwin-Notify-Key"])
    return str(json.loads(path.read_text(encoding="utf-8"))["key"])


def windows_send_what_the_oracle_expects(env: EmbeddedEnv, windows: int) -> Expected:
    """Run the first ``windows`` windows through the Dagster chain: exactly the oracle's
    notifications reach a provider, and a rerun of the first sends nothing new."""
    for i in range(windows):
        result = env.run_window(i)
        assert result.success, f"window {env.key(i)} failed"
    expected = expected_sends(env.dataset, env.changes[:windows])
    assert expected.email and expected.sms
    sent = sorted(outbox_key(p) for p in env.outbox_files())
    assert sent == sorted(expected.email | expected.sms)
    assert env.run_window(0, apply=False).success
    assert sorted(outbox_key(p) for p in env.outbox_files()) == sent
    return expected


def test_windows_run_through_the_chain_with_the_store_on_sql_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = require_server()
    with mssql_store():
        pass  # the store's schema present and its tables empty
    extra = {"DARWIN_NOTIFY_STORE_URL": url, STORE_PASSWORD_ENV: server_password() or ""}
    env = build_env(tmp_path / "home", monkeypatch, windows=WINDOWS, extra_env=extra)
    try:
        assert env.settings.store_url == url
        expected = windows_send_what_the_oracle_expects(env, WINDOWS)
    finally:
        env.close()

    db = connect_server()
    try:
        sent = db.query(
            "SELECT candidate_key FROM dbo.message WHERE status = ?", [str(MessageStatus.SENT)]
        )
        assert {k for (k,) in sent} == expected.email | expected.sms
        open_ = db.scalar(
            "SELECT COUNT(*) FROM dbo.message WHERE status IN (?, ?)",
            [str(MessageStatus.QUEUED), str(MessageStatus.SENDING)],
        )
        assert open_ == 0
    finally:
        db.close()
