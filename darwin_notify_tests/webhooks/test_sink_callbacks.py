"""The provider sinks call the webhook service back the way the providers do: real senders,
real sinks, the real service on a free port; events repeated and signed with the sinks' keys."""

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from darwin_notify_assets.config import Settings
from darwin_notify_assets.delivery.senders import SendGridSender, TwilioSmsSender
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.storage.store import NotificationStore
from darwin_notify_assets.testing.sinks import SinkServer, start_sink
from darwin_notify_assets.webhooks.service import RunningService
from darwin_notify_assets.webhooks.signatures import UnsubscribeLinks, UnsubscribeTokens
from darwin_notify_tests.conftest import make_messages
from darwin_notify_tests.webhooks.conftest import (
    AUTH_TOKEN,
    PUBLIC_URL,
    UNSUBSCRIBE_SECRET,
    http,
)


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[dict[str, SinkServer]]:
    servers = {
        k: start_sink(k, record_path=tmp_path / f"{k}.jsonl")[0] for k in ("sendgrid", "sms")
    }
    try:
        yield servers
    finally:
        for s in servers.values():
            s.shutdown()
            s.server_close()


def control(sink: SinkServer, command: dict[str, object]) -> None:
    req = urllib.request.Request(
        sink.url + "/_control", data=json.dumps(command).encode(), method="POST"
    )
    urllib.request.urlopen(req, timeout=10).close()


def wait_for(check: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the callbacks did not arrive"
        time.sleep(0.05)


def test_sink_callbacks_repeated_46_times_fold_into_one_state_per_message(
    tmp_path: Path, store: NotificationStore, sinks: dict[str, SinkServer], hook_env: None
):
    key = http("GET", sinks["sendgrid"].url + "/_webhook_key").json()["public_key"]
    service = RunningService(
        Settings(
            home=str(tmp_path),
            store_url=f"sqlite:///{tmp_path / 'store.db'}",
            webhook_public_url=PUBLIC_URL,
            sendgrid_webhook_public_key=key,
        )
    ).start()
    try:
        control(
            sinks["sendgrid"],
            {"callbacks": {"url": service.url + "/webhooks/sendgrid", "repeat": 46, "delay": 2}},
        )
        control(sinks["sms"], {"callbacks": {"url": service.url, "repeat": 3, "delay": 2}})
        emails = make_messages(store, 3, prefix="e")
        texts = make_messages(store, 2, prefix="t", channel="sms")
        links = UnsubscribeLinks(PUBLIC_URL, UnsubscribeTokens(UNSUBSCRIBE_SECRET))
        email = SendGridSender(
            "SG.test", "from@example.com", sinks["sendgrid"].url, unsubscribe=links
        )
        sms = TwilioSmsSender(
            "AC" + "0" * 32,
            AUTH_TOKEN,
            "+13125550100",
            sinks["sms"].url,
            status_callback=PUBLIC_URL + "/webhooks/sms/status",
        )
        claimed = store.claim(emails + texts)
        outcomes = []
        for m in claimed:
            result = (email if m.channel == "email" else sms).send(m)
            outcomes.append((m.message_id, MessageStatus.SENT, None, result.provider_message_id))
        # One email's answer was lost: unknown until its events arrive.
        outcomes[0] = (outcomes[0][0], MessageStatus.UNKNOWN, "timed out", None)
        store.finish(outcomes)
        email.close()
        sms.close()

        def sink_done(name: str, expected: int) -> bool:
            got = http("GET", sinks[name].url + "/_callbacks").json()
            return got["sent"] + got["failed"] >= expected

        wait_for(lambda: sink_done("sendgrid", 3 * 46) and sink_done("sms", 2 * 2 * 3))
        assert http("GET", sinks["sendgrid"].url + "/_callbacks").json()["failed"] == 0
        assert http("GET", sinks["sms"].url + "/_callbacks").json()["failed"] == 0
        store.db.rollback()
        # 3 emails x (processed, delivered) and 2 SMS x (sent, delivered), each stored once
        assert store.db.scalar("SELECT COUNT(*) FROM delivery_event") == 3 * 2 + 2 * 2
        for mid in emails + texts:
            assert store.delivery_state(mid) == ("delivered", 2)
        assert (
            store.db.scalar("SELECT status FROM message WHERE message_id = ?", [emails[0]])
            == "sent"
        )
        # every email carried our id and a one-click unsubscribe link, never an address
        records = [
            json.loads(line) for line in (tmp_path / "sendgrid.jsonl").read_text().splitlines()
        ]
        for r in records:
            body = r["body"]
            assert set(body["custom_args"]) == {"darwin_notify_key", "darwin_notify_message_id"}
            assert body["headers"]["List-Unsubscribe"].startswith(f"<{PUBLIC_URL}/u/")
            assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            assert "@" not in json.dumps(body["custom_args"])
    finally:
        service.stop()
