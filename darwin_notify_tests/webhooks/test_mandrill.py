"""Mandrill's webhooks on the webhook service: X-Mandrill-Signature verified (forged, unsigned
and tampered requests refused, nothing recorded), events deduplicated on their key (a replay,
which Mandrill's signature cannot tell from the original, changes nothing) and folded into the
same delivery state as SendGrid's; and the Mandrill sink calling back the way Mandrill does."""

import json
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from darwin_notify_assets.config import MANDRILL_WEBHOOK_KEY_ENV, Settings
from darwin_notify_assets.delivery.mandrill import MandrillSender
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.storage.store import NotificationStore
from darwin_notify_assets.testing.sinks import start_sink
from darwin_notify_assets.webhooks.mandrill import (
    MANDRILL_SIGNATURE,
    mandrill_event,
    mandrill_signature,
)
from darwin_notify_assets.webhooks.service import RunningService
from darwin_notify_tests.conftest import make_messages
from darwin_notify_tests.webhooks.conftest import PUBLIC_URL, Answer, http, make_settings
from darwin_notify_tests.webhooks.test_service import rows, sent, status_of

WEBHOOK_KEY = "mandrill-webhook-key-0123"
URL = PUBLIC_URL + "/webhooks/mandrill"


def mevent(mid: int, kind: str, ts: int, **extra: Any) -> dict[str, Any]:
    return {
        "event": kind,
        "_id": f"md-{mid}",
        "ts": ts,
        "msg": {
            "_id": f"md-{mid}",
            "ts": ts - 5,
            "email": f"Addr{mid}@Example.com",
            "state": "sent",
            "metadata": {"darwin_notify_message_id": str(mid), "darwin_notify_key": f"k{mid}"},
            "smtp_events": [],
        },
        **extra,
    }


class MandrillHooks:
    def __init__(self, service: RunningService, store: NotificationStore):
        self.service = service
        self.store = store

    def post(
        self,
        events: Sequence[Mapping[str, Any]],
        *,
        key: str = WEBHOOK_KEY,
        signed: bool = True,
        tamper: bool = False,
        url: str = URL,
    ) -> Answer:
        fields = {"mandrill_events": json.dumps(list(events))}
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if signed:
            headers[MANDRILL_SIGNATURE] = mandrill_signature(key, url, fields.items())
        if tamper:
            fields = {"mandrill_events": json.dumps(list(events)[:-1])}
        return http(
            "POST", self.service.url + "/webhooks/mandrill", urlencode(fields).encode(), headers
        )


@pytest.fixture
def mhooks(
    tmp_path: Path, store: NotificationStore, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MandrillHooks]:
    monkeypatch.setenv(MANDRILL_WEBHOOK_KEY_ENV, WEBHOOK_KEY)
    settings = make_settings(
        f"sqlite:///{tmp_path / 'store.db'}", ec.generate_private_key(ec.SECP256R1()), tmp_path
    )
    service = RunningService(settings).start()
    try:
        yield MandrillHooks(service, store)
    finally:
        service.stop()


def test_mandrill_checks_the_url_with_head(mhooks):
    assert http("HEAD", mhooks.service.url + "/webhooks/mandrill").status == 200


def test_signed_events_are_stored_and_fold_into_the_delivery_state(mhooks):
    a, b = sent(mhooks.store, 2, "md")
    ts = int(time.time())
    answer = mhooks.post([mevent(a, "send", ts), mevent(b, "send", ts), mevent(b, "open", ts + 9)])
    assert answer.status == 200 and answer.json()["new"] == 3
    assert mhooks.store.delivery_state(a) == ("delivered", 1)
    assert mhooks.store.delivery_state(b) == ("opened", 2)
    assert rows(mhooks.store, "SELECT DISTINCT provider FROM delivery_event") == [("mandrill",)]


@pytest.mark.parametrize(
    "how",
    [
        {"key": "someone-elses-key"},
        {"signed": False},
        {"tamper": True},
        {"url": "https://attacker.example/webhooks/mandrill"},
    ],
)
def test_forged_unsigned_and_tampered_requests_are_refused(mhooks, how):
    [mid] = sent(mhooks.store, 1, "mf")
    ts = int(time.time())
    events = [mevent(mid, "hard_bounce", ts), mevent(mid, "spam", ts + 1)]
    assert mhooks.post(events, **how).status == 403
    assert rows(mhooks.store, "SELECT COUNT(*) FROM delivery_event") == [(0,)]
    assert mhooks.store.suppressions() == []


def test_a_replayed_request_and_repeated_events_change_nothing(mhooks):
    """Mandrill's signature has no timestamp, so a replay verifies: the dedup key is what
    keeps it from counting twice."""
    [mid] = sent(mhooks.store, 1, "mr")
    ts = int(time.time())
    batch = [mevent(mid, "deferral", ts), mevent(mid, "send", ts + 60)]
    assert mhooks.post(batch).json()["new"] == 2
    for _ in range(5):
        assert mhooks.post(batch).json() == {
            "received": 2,
            "new": 0,
            "duplicate": 2,
            "unmatched": 0,
            "resolved_unknown": 0,
        }
    # Mandrill retries re-batch: the same events in another order, with other events.
    assert mhooks.post([mevent(mid, "open", ts + 90), *reversed(batch)]).json()["new"] == 1
    assert mhooks.store.delivery_state(mid) == ("opened", 3)


def test_the_dedup_key_keeps_what_tells_two_events_apart():
    ts = 1_700_000_000
    key = mandrill_event(mevent(1, "send", ts))
    assert key is not None
    # the same event, however the batch around it was built
    again = mevent(1, "send", ts)
    again["msg"] = {**again["msg"], "tags": ["x"], "opens": []}
    assert mandrill_event(again).dedup_key == key.dedup_key  # type: ignore[union-attr]
    clicks = {
        mandrill_event(mevent(1, "click", ts, url=u)).dedup_key  # type: ignore[union-attr]
        for u in ("https://a.example", "https://b.example")
    }
    assert len(clicks) == 2
    first, second = mevent(1, "deferral", ts), mevent(1, "deferral", ts)
    second["msg"] = {**second["msg"], "smtp_events": [{"type": "deferred"}]}
    assert mandrill_event(first).dedup_key != mandrill_event(second).dedup_key  # type: ignore[union-attr]
    assert mandrill_event(mevent(1, "send", ts + 1)).dedup_key != key.dedup_key  # type: ignore[union-attr]
    # sync and inbound events are not message events
    assert mandrill_event({"type": "blacklist", "action": "add", "reject": {}}) is None
    assert mandrill_event({"event": "inbound", "msg": {}}) is None


def test_bounces_spam_and_unsubscribes_suppress_the_address_and_an_event_resolves_unknown(
    mhooks,
):
    [bounced] = sent(mhooks.store, 1, "mb")
    [unknown] = make_messages(mhooks.store, 1, prefix="mu")
    mhooks.store.claim([unknown])
    mhooks.store.finish([(unknown, MessageStatus.UNKNOWN, "timed out", None)])
    ts = int(time.time())
    # events in reverse order of happening: the state is the same
    answer = mhooks.post(
        [
            mevent(bounced, "hard_bounce", ts + 5),
            mevent(bounced, "send", ts),
            mevent(unknown, "send", ts),
        ]
    )
    assert answer.json()["resolved_unknown"] == 1
    assert status_of(mhooks.store, unknown) == str(MessageStatus.SENT)
    assert mhooks.store.delivery_state(bounced) == ("bounced", 2)
    [row] = mhooks.store.suppressions()
    assert row["address"] == f"addr{bounced}@example.com" and row["channel"] == "email"


def test_an_event_without_our_metadata_is_matched_by_mandrills_id(mhooks):
    [mid] = make_messages(mhooks.store, 1, prefix="mi")
    mhooks.store.claim([mid])
    mhooks.store.finish([(mid, MessageStatus.SENT, None, "mandrill:abc123")])
    raw = mevent(mid, "send", int(time.time()))
    raw["msg"] = {**raw["msg"], "_id": "abc123", "metadata": {}}
    assert mhooks.post([raw]).json()["unmatched"] == 0
    assert mhooks.store.delivery_state(mid) == ("delivered", 1)


def test_a_store_that_cannot_take_the_events_answers_503(mhooks):
    [mid] = sent(mhooks.store, 1, "m5")
    mhooks.service._pool._open = lambda: (_ for _ in ()).throw(RuntimeError("store down"))
    while True:  # drop the idle connection so the next request must open one
        try:
            mhooks.service._pool._idle.get_nowait().close()
        except Exception:  # noqa: BLE001
            break
    assert mhooks.post([mevent(mid, "send", int(time.time()))]).status == 503


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_mandrill_sink_calls_back_signed_events_repeated(
    tmp_path: Path, store: NotificationStore, monkeypatch: pytest.MonkeyPatch
):
    server, thread = start_sink("mandrill", record_path=tmp_path / "mandrill.jsonl")
    key = http("GET", server.url + "/_webhook_key").json()["key"]
    monkeypatch.setenv(MANDRILL_WEBHOOK_KEY_ENV, key)
    port = _free_port()
    # Mandrill signs the URL its webhook was given: here the service's own address.
    public = f"http://127.0.0.1:{port}"
    service = RunningService(
        Settings(
            home=str(tmp_path),
            store_url=f"sqlite:///{tmp_path / 'store.db'}",
            webhook_public_url=public,
        ),
        port=port,
    ).start()
    sender = MandrillSender("md-key", "from@example.com", server.url + "/api/1.0")
    try:
        command = {"callbacks": {"url": public + "/webhooks/mandrill", "repeat": 4}}
        http("POST", server.url + "/_control", json.dumps(command).encode())
        ids = make_messages(store, 3, prefix="mc")
        store.finish(
            [
                (m.message_id, MessageStatus.SENT, None, sender.send(m).provider_message_id)
                for m in store.claim(ids)
                if m.message_id is not None
            ]
        )
        deadline = time.monotonic() + 30
        while http("GET", server.url + "/_callbacks").json()["sent"] < 12:
            assert time.monotonic() < deadline, "the callbacks did not arrive"
            time.sleep(0.05)
    finally:
        sender.close()
        service.stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert rows(store, "SELECT COUNT(*) FROM delivery_event") == [(3,)]
    assert [store.delivery_state(m) for m in ids] == [("delivered", 1)] * 3
