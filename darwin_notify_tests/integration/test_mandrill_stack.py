"""Mandrill on the real stack: whole windows through Dagster with the Mandrill sink as the
email provider and its signed webhooks folded into the PostgreSQL store; failover from a
SendGrid that provably did not take a message (a closed port, a 401) to Mandrill exactly once;
and an ambiguous SendGrid answer that never fails over."""

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from darwin_notify_assets.bus.base import Job, JobKind
from darwin_notify_assets.config import MANDRILL_WEBHOOK_KEY_ENV
from darwin_notify_assets.delivery.failover import FailoverSender
from darwin_notify_assets.delivery.mandrill import MandrillSender
from darwin_notify_assets.delivery.senders import SendGridSender
from darwin_notify_assets.delivery.workers import RetryPolicy, SendWorker
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.domain.pipeline import Runtime
from darwin_notify_assets.sample import seed
from darwin_notify_assets.sample.demo import DEMO_START
from darwin_notify_assets.storage.store import NotificationStore
from darwin_notify_assets.webhooks.service import RunningService
from darwin_notify_tests import services as shared
from darwin_notify_tests.conftest import PARTITION, make_messages
from darwin_notify_tests.integration.conftest import Stack, poll, windows_of
from darwin_notify_tests.oracle import expected_sends

pytestmark = pytest.mark.integration

WINDOWS = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def mandrill(stack: Stack) -> Iterator[str]:
    """The Mandrill sink's base URL, reset before and after."""
    url = shared.sink_url(stack.env, "mandrill")
    try:
        requests.get(url + "/_health", timeout=5).raise_for_status()
    except requests.RequestException as exc:
        pytest.fail(f"the Mandrill sink at {url} does not answer: {exc}; {shared.HINT}")
    stack.sink_control("mandrill", reset=True, callbacks=None)
    stack.sink_control("sendgrid", reset=True)
    yield url
    stack.sink_control("mandrill", reset=True, callbacks=None)
    stack.sink_control("sendgrid", reset=True)


def _emails(stack: Stack, before: int) -> list[dict[str, Any]]:
    return [r for r in shared.mandrill_records(stack.env)[before:] if r.get("accepted")]


def _run_windows(stack: Stack) -> Any:
    primary = stack.admin("PRIMARY")
    dataset = stack.reset_source(primary, seed.SeedSize.small())
    changes = seed.generate_changes(dataset, 11, DEMO_START, WINDOWS, 5)
    stack.wait_replayed(primary)
    stack.baseline(stack.settings())
    instance = stack.dagster_instance()
    for wc, window in zip(changes, windows_of(changes), strict=True):
        seed.apply_window(primary, wc)
        stack.wait_replayed(primary)
        assert stack.run_window(instance, window.partition_key).success
    primary.close()
    return expected_sends(dataset, changes)


def _store_messages(stack: Stack, status: MessageStatus) -> list[dict[str, Any]]:
    rt = Runtime.from_settings(stack.settings())
    try:
        return rt.store.messages(statuses=[status])
    finally:
        rt.close()


def test_whole_windows_with_mandrill_as_the_provider_and_its_webhooks(
    stack: Stack, mandrill: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DARWIN_NOTIFY_EMAIL_PROVIDER", "mandrill")
    key = requests.get(mandrill + "/_webhook_key", timeout=5).json()["key"]
    monkeypatch.setenv(MANDRILL_WEBHOOK_KEY_ENV, key)
    port = _free_port()
    public = f"http://127.0.0.1:{port}"
    service = RunningService(stack.settings(webhook_public_url=public), port=port).start()
    sendgrid_before = len(stack.sink_records()[0])
    mandrill_before = len(shared.mandrill_records(stack.env))
    try:
        stack.sink_control(
            "mandrill", callbacks={"url": public + "/webhooks/mandrill", "repeat": 3}
        )
        expected = _run_windows(stack)
        assert expected.email
        emails = _emails(stack, mandrill_before)
        keys = [r["metadata"]["darwin_notify_key"] for r in emails]
        # Exactly one Mandrill request per expected email; SendGrid saw none.
        assert sorted(keys) == sorted(expected.email)
        assert len(stack.sink_records()[0]) == sendgrid_before
        sent = [m for m in _store_messages(stack, MessageStatus.SENT) if m["channel"] == "email"]
        assert {m["candidate_key"] for m in sent} == expected.email
        assert all(m["provider_message_id"].startswith("mandrill:") for m in sent)
        # Every email's signed send event (three times each) folded into its state once.
        store = NotificationStore.open(stack.env["DARWIN_NOTIFY_STORE_URL"])
        try:

            def delivered() -> bool:
                store.db.rollback()
                return store.db.scalar(
                    "SELECT COUNT(*) FROM delivery_event WHERE provider = 'mandrill'"
                ) == len(expected.email) and all(
                    store.delivery_state(int(m["message_id"])) == ("delivered", 1) for m in sent
                )

            assert poll(delivered, 60, 0.2), "the Mandrill events did not all arrive"
            calls = requests.get(mandrill + "/_callbacks", timeout=5).json()
            assert poll(
                lambda: requests.get(mandrill + "/_callbacks", timeout=5).json()["sent"]
                >= 3 * len(expected.email),
                60,
                0.2,
            ), calls
            store.db.rollback()
            assert store.db.scalar("SELECT COUNT(*) FROM delivery_event") == len(expected.email)
        finally:
            store.close()
    finally:
        service.stop()


def test_a_sendgrid_that_never_answers_fails_over_to_mandrill_once(
    stack: Stack, mandrill: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DARWIN_NOTIFY_EMAIL_FAILOVER", "mandrill")
    # A port nothing listens on: the connection is never made, SendGrid cannot have it.
    monkeypatch.setenv("DARWIN_NOTIFY_SENDGRID_HOST", f"http://127.0.0.1:{_free_port()}")
    sendgrid_before = len(stack.sink_records()[0])
    mandrill_before = len(shared.mandrill_records(stack.env))
    expected = _run_windows(stack)
    keys = [r["metadata"]["darwin_notify_key"] for r in _emails(stack, mandrill_before)]
    assert sorted(keys) == sorted(expected.email)
    assert len(stack.sink_records()[0]) == sendgrid_before
    sent = [m for m in _store_messages(stack, MessageStatus.SENT) if m["channel"] == "email"]
    assert {m["candidate_key"] for m in sent} == expected.email
    assert all(m["provider_message_id"].startswith("mandrill:") for m in sent)


def _send_one(stack: Stack, sender: FailoverSender, prefix: str) -> tuple[int, dict[str, Any]]:
    store = NotificationStore.open(stack.env["DARWIN_NOTIFY_STORE_URL"])
    try:
        [mid] = make_messages(store, 1, prefix=prefix)
        worker = SendWorker(
            store, {"email": sender}, concurrency=1, retry=RetryPolicy(), sleep=time.sleep
        )
        try:
            worker.handle(Job(JobKind.SEND, PARTITION, (mid,)))
        finally:
            worker.close()
        store.db.rollback()
        row = store.db.query_dicts(
            "SELECT candidate_key, status, reason, provider_message_id FROM message "
            "WHERE message_id = ?",
            [mid],
        )[0]
        return mid, row
    finally:
        store.close()


def test_a_401_fails_over_once_and_a_timeout_never_does(stack: Stack, mandrill: str) -> None:
    env = stack.env
    sender = FailoverSender(
        SendGridSender(
            env["DARWIN_NOTIFY_SENDGRID_API_KEY"],
            "n@darwin-notify.example",
            env["DARWIN_NOTIFY_SENDGRID_HOST"],
            timeout=1,
        ),
        MandrillSender(
            env["DARWIN_NOTIFY_MANDRILL_API_KEY"],
            "n@darwin-notify.example",
            env["DARWIN_NOTIFY_MANDRILL_HOST"],
            timeout=1,
        ),
    )
    try:
        before = len(shared.mandrill_records(env))
        stack.sink_control("sendgrid", fail=1, status=401)
        _, refused = _send_one(stack, sender, "fo401-")
        assert refused["status"] == str(MessageStatus.SENT)
        assert refused["provider_message_id"].startswith("mandrill:")
        got = [
            r["metadata"].get("darwin_notify_key") for r in shared.mandrill_records(env)[before:]
        ]
        assert got == [refused["candidate_key"]]

        before = len(shared.mandrill_records(env))
        stack.sink_control("sendgrid", accept_then_delay=1, seconds=3)
        _, timed_out = _send_one(stack, sender, "fotimeout-")
        assert timed_out["status"] == str(MessageStatus.UNKNOWN)
        time.sleep(0.5)
        assert shared.mandrill_records(env)[before:] == []
    finally:
        sender.close()
