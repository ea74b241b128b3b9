"""Senders: the file outbox, and the SendGrid and Twilio clients against the local sinks,
with the provider's answers mapped to the error classes by cause: only what the provider
documents as not processed (429), or a request that never reached it whole, is retried; every
other failure is ``failed`` (a refusal) or ``unknown`` (it may have been accepted). The
providers' words for each answer are in docs/guarantees.md."""

import json
import re
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from darwin_notify_assets.bus.base import Job, JobKind
from darwin_notify_assets.delivery.senders import (
    FileOutboxEmailSender,
    FileOutboxSmsSender,
    Sender,
    SendGridSender,
    TwilioSmsSender,
)
from darwin_notify_assets.delivery.transport import retry_after_seconds
from darwin_notify_assets.delivery.workers import RetryPolicy, SendWorker
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.errors import (
    ProviderOutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
)
from darwin_notify_assets.storage.store import NotificationStore, OutboundMessage
from darwin_notify_assets.testing.sinks import SinkServer, start_sink
from darwin_notify_tests.conftest import PARTITION, make_messages

FROM_EMAIL = "notifications@darwin-notify.example"
FROM_PHONE = "+13125550100"
ACCOUNT_SID = "AC" + "0" * 32


def email_message(**overrides) -> OutboundMessage:
    values = dict(
        message_id=42,
        candidate_id=7,
        candidate_key="s1|Property:61|contact:10",
        partition_key="2026-03-02-14:00",
        channel="email",
        status=MessageStatus.SENDING,
        to_address="jose.munoz70@example.com",
        subject="New listing at 12 Maple St, Springfield — 伟",
        html_body="<p>Hi &lt;script&gt;alert(1)&lt;/script&gt;, José</p>",
        text_body="Hi <script>alert(1)</script>, José",
    )
    values.update(overrides)
    return OutboundMessage(**values)


def sms_message(**overrides) -> OutboundMessage:
    values = dict(
        message_id=43,
        candidate_id=8,
        candidate_key="s2|Property:5:update@2026-03-02 14:01:02.123456|agent:3",
        partition_key="2026-03-02-14:00",
        channel="sms",
        status=MessageStatus.SENDING,
        to_address="+13127365000",
        sms_body="Zoë: price drop on 12 Maple St: now $340,000 (was $350,000).",
        sms_encoding="UCS-2",
        sms_segments=1,
    )
    values.update(overrides)
    return OutboundMessage(**values)


# -- file outbox -----------------------------------------------------------------------------
def test_the_email_outbox_writes_one_eml_with_text_and_html_parts(tmp_path):
    sender = FileOutboxEmailSender(tmp_path, FROM_EMAIL)
    message = email_message()
    result = sender.send(message)
    files = list((tmp_path / "email").iterdir())
    assert len(files) == 1
    path = files[0]
    assert path.suffix == ".eml"
    assert result.provider_message_id.endswith(path.name)
    parsed = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert parsed["From"] == FROM_EMAIL
    assert parsed["To"] == message.to_address
    assert parsed["Subject"] == message.subject
    assert parsed["X-Darwin-Notify-Key"] == message.candidate_key
    assert parsed.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): p.get_content() for p in parsed.iter_parts()}
    assert set(parts) == {"text/plain", "text/html"}
    assert parts["text/plain"].rstrip("\n") == message.text_body
    assert parts["text/html"].rstrip("\n") == message.html_body
    _assert_date_and_message_id({k: parsed[k] for k in ("Date", "Message-ID")}, message)


def test_sending_the_same_email_again_rewrites_the_same_file(tmp_path):
    sender = FileOutboxEmailSender(tmp_path, FROM_EMAIL)
    first = sender.send(email_message())
    second = sender.send(email_message())
    assert first == second
    assert len(list((tmp_path / "email").iterdir())) == 1
    sender.send(email_message(message_id=44, candidate_key="s1|Property:61|contact:11"))
    assert len(list((tmp_path / "email").iterdir())) == 2
    assert not list((tmp_path / "email").glob("*.tmp"))


def test_the_sms_outbox_writes_one_json_per_message(tmp_path):
    sender = FileOutboxSmsSender(tmp_path, FROM_PHONE)
    message = sms_message()
    sender.send(message)
    sender.send(message)
    files = list((tmp_path / "sms").iterdir())
    assert len(files) == 1 and files[0].suffix == ".json"
    assert json.loads(files[0].read_text(encoding="utf-8")) == {
        "key": message.candidate_key,
        "from": FROM_PHONE,
        "to": message.to_address,
        "body": message.sms_body,
        "encoding": "UCS-2",
        "segments": 1,
    }


# -- sinks -----------------------------------------------------------------------------------
class Sink:
    def __init__(self, server: SinkServer, record: Path):
        self.server = server
        self.record = record
        self.url = server.url

    def control(self, **command) -> None:
        request = urllib.request.Request(
            self.url + "/_control",
            data=json.dumps(command).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

    def records(self) -> list[dict]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text("utf-8").splitlines() if line]


def _sink(kind: str, tmp_path: Path) -> Iterator[Sink]:
    record = tmp_path / f"{kind}.jsonl"
    server, thread = start_sink(kind, "127.0.0.1", 0, record)
    try:
        yield Sink(server, record)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def sendgrid_sink(tmp_path) -> Iterator[Sink]:
    yield from _sink("sendgrid", tmp_path)


@pytest.fixture
def sms_sink(tmp_path) -> Iterator[Sink]:
    yield from _sink("sms", tmp_path)


def _wait_for_records(sink: Sink, n: int, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = sink.records()
        if len(records) >= n:
            return records
        time.sleep(0.02)
    return sink.records()


# -- SendGrid ---------------------------------------------------------------------------------
def test_sendgrid_sends_the_exact_v3_payload(sendgrid_sink):
    sender = SendGridSender("SG.test-key", FROM_EMAIL, sendgrid_sink.url)
    message = email_message()
    result = sender.send(message)
    [record] = sendgrid_sink.records()
    assert record["status"] == 202
    assert record["body"] == {
        "personalizations": [{"to": [{"email": message.to_address}]}],
        "from": {"email": FROM_EMAIL},
        "subject": message.subject,
        "content": [
            {"type": "text/plain", "value": message.text_body},
            {"type": "text/html", "value": message.html_body},
        ],
        "custom_args": {
            "darwin_notify_key": message.candidate_key,
            "darwin_notify_message_id": "42",
        },
        "headers": record["body"]["headers"],
    }
    _assert_date_and_message_id(record["body"]["headers"], message)
    assert result.provider_message_id == record["message_id"]


def _assert_date_and_message_id(headers, message) -> None:
    from email.utils import parsedate_to_datetime

    assert set(headers) == {"Date", "Message-ID"}
    sent_at = parsedate_to_datetime(headers["Date"])
    assert abs((datetime.now(UTC) - sent_at).total_seconds()) < 60
    assert re.fullmatch(rf"<darwin-notify\.{message.message_id}\.[0-9a-f]{{16}}@[^>]+>",
                        headers["Message-ID"])  # fmt: skip
    # no personal data in it: neither the address nor the candidate key
    assert message.to_address not in headers["Message-ID"]
    assert message.candidate_key not in headers["Message-ID"]


def test_sendgrid_sends_text_only_mail_without_an_html_part(sendgrid_sink):
    sender = SendGridSender("SG.test-key", FROM_EMAIL, sendgrid_sink.url)
    sender.send(email_message(html_body=None))
    [record] = sendgrid_sink.records()
    assert record["body"]["content"] == [{"type": "text/plain", "value": email_message().text_body}]


def test_sendgrid_400_is_provider_rejected(sendgrid_sink):
    sender = SendGridSender("SG.test-key", FROM_EMAIL, sendgrid_sink.url)
    with pytest.raises(ProviderRejected, match="400"):
        sender.send(email_message(to_address="not-an-address"))
    sendgrid_sink.control(fail=1, status=400)
    with pytest.raises(ProviderRejected, match="400"):
        sender.send(email_message())
    assert [r["status"] for r in sendgrid_sink.records()] == [400, 400]


def test_sendgrid_accepting_then_not_answering_in_time_is_outcome_unknown(sendgrid_sink):
    sendgrid_sink.control(accept_then_delay=1, seconds=1.5)
    sender = SendGridSender("SG.test-key", FROM_EMAIL, sendgrid_sink.url, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ProviderOutcomeUnknown):
        sender.send(email_message())
    assert time.monotonic() - started < 1.4
    [record] = _wait_for_records(sendgrid_sink, 1)
    assert record["status"] == 202  # the provider took it: a retry would send it twice


def test_sendgrid_refused_connection_is_provider_unavailable(tmp_path):
    server, thread = start_sink("sendgrid", "127.0.0.1", 0, tmp_path / "gone.jsonl")
    url = server.url
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    sender = SendGridSender("SG.test-key", FROM_EMAIL, url, timeout=2)
    with pytest.raises(ProviderUnavailable):
        sender.send(email_message())


def test_sendgrid_keeps_its_connection_alive_between_emails(sendgrid_sink):
    sender = SendGridSender("SG.test-key", FROM_EMAIL, sendgrid_sink.url)
    for i in range(5):
        sender.send(email_message(message_id=100 + i))
    records = sendgrid_sink.records()
    assert [r["status"] for r in records] == [202] * 5
    assert len({r["client_port"] for r in records}) == 1
    sender.close()


RESET_EARLY = "reset early"  # read the start of the request, then reset the connection
RESET_AFTER = "reset after"  # read the whole request, then reset the connection
HANG_UP = "hang up"  # read the whole request, then close without an answer


class _ScriptedServer:
    """A socket server that takes one connection per step, in order.

    A step is :data:`RESET_EARLY`, :data:`RESET_AFTER`, :data:`HANG_UP`, or the bytes to
    answer after reading the whole request. ``received`` holds each request read whole.
    """

    def __init__(self, *steps: str | bytes):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small receive buffer (inherited by accepted sockets) keeps a large request from
        # fitting in the kernel's buffers: the client is still writing when it is reset.
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.received: list[bytes] = []
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, args=(steps,), daemon=True)
        self._thread.start()

    def _serve(self, steps) -> None:
        for step in steps:
            conn, _ = self.listener.accept()
            self.connections += 1
            with conn:
                if step == RESET_EARLY:
                    conn.recv(1024)
                    _reset(conn)
                    continue
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                self.received.append(_read_request(conn))
                if step == RESET_AFTER:
                    _reset(conn)
                elif step != HANG_UP:
                    conn.sendall(step)

    def close(self) -> None:
        self._thread.join(timeout=10)
        self.listener.close()


def _reset(conn: socket.socket) -> None:
    """Close with a TCP reset rather than an orderly shutdown."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_sendgrid_connection_lost_after_the_request_is_outcome_unknown():
    """A provider that read the request and hung up may have taken the email: never resend."""
    server = _ScriptedServer(HANG_UP)
    sender = SendGridSender("SG.secret-key", FROM_EMAIL, server.url, timeout=5)
    with pytest.raises(ProviderOutcomeUnknown) as caught:
        sender.send(email_message())
    server.close()
    assert server.received and server.received[0].startswith(b"POST /v3/mail/send")
    assert "secret" not in str(caught.value)


def test_sendgrid_goes_through_the_proxy_the_environment_names(monkeypatch):
    server = _ScriptedServer(
        b"HTTP/1.1 202 Accepted\r\nX-Message-Id: via-proxy\r\nContent-Length: 0\r\n\r\n"
    )
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", server.url)
    sender = SendGridSender("SG.test-key", FROM_EMAIL, "http://sendgrid.example.invalid", timeout=5)
    result = sender.send(email_message())
    server.close()
    assert result.provider_message_id == "via-proxy"
    assert server.received[0].startswith(b"POST http://sendgrid.example.invalid/v3/mail/send ")


# -- Twilio-compatible SMS --------------------------------------------------------------------
def _twilio(sink: Sink, timeout: float = 10.0) -> TwilioSmsSender:
    return TwilioSmsSender(ACCOUNT_SID, "auth-token", FROM_PHONE, sink.url, timeout=timeout)


def test_twilio_sends_the_exact_form(sms_sink):
    message = sms_message()
    result = _twilio(sms_sink).send(message)
    [record] = sms_sink.records()
    assert record["status"] == 201
    assert record["account_sid"] == ACCOUNT_SID
    assert record["form"] == {
        "To": message.to_address,
        "From": FROM_PHONE,
        "Body": message.sms_body,
    }
    assert result.provider_message_id == record["message_id"]
    assert result.provider_message_id.startswith("SM")


def test_twilio_keeps_its_connection_alive_between_messages(sms_sink):
    sender = _twilio(sms_sink)
    for i in range(5):
        sender.send(sms_message(message_id=100 + i))
    records = sms_sink.records()
    assert [r["status"] for r in records] == [201] * 5
    assert len({r["client_port"] for r in records}) == 1
    sender.close()


def test_twilio_400_is_provider_rejected(sms_sink):
    sender = _twilio(sms_sink)
    with pytest.raises(ProviderRejected, match="400"):
        sender.send(sms_message(to_address="555-0100"))
    sms_sink.control(fail=1, status=400)
    with pytest.raises(ProviderRejected, match="400"):
        sender.send(sms_message())
    assert [r["status"] for r in sms_sink.records()] == [400, 400]


def test_twilio_accepting_then_not_answering_in_time_is_outcome_unknown(sms_sink):
    sms_sink.control(accept_then_delay=1, seconds=1.5)
    started = time.monotonic()
    with pytest.raises(ProviderOutcomeUnknown):
        _twilio(sms_sink, timeout=0.3).send(sms_message())
    assert time.monotonic() - started < 1.4
    [record] = _wait_for_records(sms_sink, 1)
    assert record["status"] == 201


def test_twilio_refused_connection_is_provider_unavailable(tmp_path):
    server, thread = start_sink("sms", "127.0.0.1", 0, tmp_path / "gone.jsonl")
    url = server.url
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    sender = TwilioSmsSender(ACCOUNT_SID, "auth-token", FROM_PHONE, url, timeout=2)
    with pytest.raises(ProviderUnavailable):
        sender.send(sms_message())


# -- each answer, end to end: sender, send worker and store -----------------------------------
@dataclass
class Provider:
    kind: str
    channel: str
    accepted: int
    sink: Sink
    sender: Sender


def _sender_for(kind: str, url: str, timeout: float = 5.0) -> Sender:
    if kind == "sendgrid":
        return SendGridSender("SG.test-key", FROM_EMAIL, url, timeout=timeout)
    return TwilioSmsSender(ACCOUNT_SID, "auth-token", FROM_PHONE, url, timeout=timeout)


@pytest.fixture(params=["sendgrid", "sms"])
def provider(request, tmp_path) -> Iterator[Provider]:
    kind = request.param
    for sink in _sink(kind, tmp_path):
        sender = _sender_for(kind, sink.url)
        try:
            yield Provider(
                kind,
                "email" if kind == "sendgrid" else "sms",
                202 if kind == "sendgrid" else 201,
                sink,
                sender,
            )
        finally:
            sender.close()


def _send_once(store: NotificationStore, channel: str, sender: Sender, sleeps: list[float]) -> dict:
    """One message through a send worker (three attempts at most); its row afterwards."""
    [mid] = make_messages(store, 1, channel=channel)
    worker = SendWorker(
        store,
        {channel: sender},
        concurrency=1,
        retry=RetryPolicy(attempts=3, base_delay=0.5, max_delay=5.0, max_retry_after=30.0),
        sleep=sleeps.append,
    )
    try:
        worker.handle(Job(JobKind.SEND, PARTITION, (mid,)))
    finally:
        worker.close()
    row = store.db.query_dicts("SELECT status, reason FROM message WHERE message_id = ?", [mid])
    store.db.commit()
    return row[0]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (400, "failed"),
        (401, "failed"),
        (403, "failed"),
        (413, "failed"),
        # Neither provider documents these as "not accepted": a retry could send twice.
        (500, "unknown"),
        (502, "unknown"),
        (503, "unknown"),
        (504, "unknown"),
    ],
)
def test_an_answer_not_documented_as_not_accepted_is_never_retried(
    store, provider, status, outcome
):
    provider.sink.control(fail=1, status=status)
    sleeps: list[float] = []
    row = _send_once(store, provider.channel, provider.sender, sleeps)
    assert row["status"] == outcome
    assert str(status) in row["reason"]
    assert [r["status"] for r in provider.sink.records()] == [status]
    assert sleeps == []


def test_429_is_retried_after_the_wait_the_provider_asks_for(store, provider):
    provider.sink.control(fail=1, status=429, retry_after=2)
    sleeps: list[float] = []
    row = _send_once(store, provider.channel, provider.sender, sleeps)
    assert row["status"] == "sent"
    assert [r["status"] for r in provider.sink.records()] == [429, provider.accepted]
    assert sleeps == [2.0]  # Retry-After, not the policy's 0.5 s backoff


def test_429_asking_for_longer_than_a_worker_waits_fails_without_a_retry(store, provider):
    provider.sink.control(fail=1, status=429, retry_after=3600)
    sleeps: list[float] = []
    row = _send_once(store, provider.channel, provider.sender, sleeps)
    assert row["status"] == "failed"
    assert "3600" in row["reason"] and "never accepted" in row["reason"]
    assert [r["status"] for r in provider.sink.records()] == [429]
    assert sleeps == []


def _big(kind: str) -> OutboundMessage:
    # Far more than the socket buffers hold, so the reset comes while the client still writes.
    filler = "a" * (12 << 20)
    if kind == "sendgrid":
        return email_message(html_body=None, text_body=filler)
    return sms_message(sms_body=filler)


_SID_BODY = b'{"sid": "SMsecond"}'
_ACCEPTED = {
    "sendgrid": b"HTTP/1.1 202 Accepted\r\nX-Message-Id: second\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n",
    "sms": b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(_SID_BODY)}\r\n".encode()
    + b"Connection: close\r\n\r\n"
    + _SID_BODY,
}


@pytest.mark.parametrize("kind", ["sendgrid", "sms"])
def test_a_reset_before_the_request_was_written_whole_is_retried(kind):
    server = _ScriptedServer(RESET_EARLY, _ACCEPTED[kind])
    sender = _sender_for(kind, server.url)
    message = _big(kind)
    try:
        with pytest.raises(ProviderUnavailable, match="before the request was sent whole"):
            sender.send(message)
        # What the worker does next: the provider never had it, so a retry sends it once.
        assert sender.send(message).provider_message_id in ("second", "SMsecond")
    finally:
        sender.close()
        server.close()
    assert server.connections == 2
    assert len(server.received) == 1  # only the retry reached the provider whole


@pytest.mark.parametrize("kind", ["sendgrid", "sms"])
def test_a_reset_after_the_request_was_written_is_unknown_and_not_retried(store, kind):
    server = _ScriptedServer(RESET_AFTER)
    sender = _sender_for(kind, server.url)
    sleeps: list[float] = []
    try:
        row = _send_once(store, "email" if kind == "sendgrid" else "sms", sender, sleeps)
    finally:
        sender.close()
        server.close()
    assert row["status"] == "unknown"
    assert "after it was sent" in row["reason"]
    assert server.connections == 1 and len(server.received) == 1
    assert sleeps == []


def test_a_late_refusal_after_the_timeout_is_unknown(store, provider):
    """The provider would have refused, but nobody can know that in time: not retried."""
    provider.sink.control(delay_then_reject=1, seconds=0.8, status=503)
    sender = _sender_for(provider.kind, provider.sink.url, timeout=0.2)
    sleeps: list[float] = []
    try:
        row = _send_once(store, provider.channel, sender, sleeps)
    finally:
        sender.close()
    assert row["status"] == "unknown"
    assert "in time" in row["reason"]
    assert sleeps == []
    records = _wait_for_records(provider.sink, 1)
    assert [r["status"] for r in records] == [503]


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "Wed, 04 Mar 2026 12:00:30 GMT"}, 30.0),
        ({"Retry-After": "Wed, 04 Mar 2026 11:59:00 GMT"}, 0.0),  # a moment already past
        (
            {
                "X-RateLimit-Reset": str(
                    int(datetime(2026, 3, 4, 12, 0, 45, tzinfo=UTC).timestamp())
                )
            },
            45.0,
        ),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-5"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_a_moment(headers, seconds):
    now = datetime(2026, 3, 4, 12, 0, 0, tzinfo=UTC).timestamp()
    assert retry_after_seconds(headers, now=lambda: now) == seconds


def test_retry_after_headers_are_case_insensitive_in_an_answer(provider):
    provider.sink.control(fail=1, status=429, retry_after=4)
    message = email_message() if provider.kind == "sendgrid" else sms_message()
    with pytest.raises(ProviderUnavailable) as caught:
        provider.sender.send(message)
    assert caught.value.retry_after == 4.0


def test_sendgrid_200_is_valid_but_not_queued_so_failed():
    """SendGrid answers 200 only in sandbox mode: "valid, but it is not queued to be
    delivered"."""
    server = _ScriptedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    sender = _sender_for("sendgrid", server.url)
    try:
        with pytest.raises(ProviderRejected, match="not queued"):
            sender.send(email_message())
    finally:
        sender.close()
        server.close()


@pytest.mark.parametrize("kind", ["sendgrid", "sms"])
def test_a_connect_timeout_sent_nothing_so_it_is_retried(store, kind):
    # A listener whose backlog is full: the kernel drops further connection attempts, so
    # connecting times out without a byte of the request sent.
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    sender = _sender_for(kind, f"http://127.0.0.1:{port}", timeout=0.3)
    sleeps: list[float] = []
    try:
        row = _send_once(store, "email" if kind == "sendgrid" else "sms", sender, sleeps)
    finally:
        sender.close()
        for filler in fillers:
            filler.close()
        listener.close()
    assert row["status"] == "failed"
    assert "timed out" in row["reason"] and "3 attempts; never accepted" in row["reason"]
    assert sleeps == [0.5, 1.0]
