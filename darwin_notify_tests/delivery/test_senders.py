"""Senders: the file outbox, and the SendGrid and Twilio clients against the local sinks,
with the provider's answers mapped to the error classes by cause."""

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from darwin_notify_assets.delivery.senders import (
    FileOutboxEmailSender,
    FileOutboxSmsSender,
    SendGridSender,
    TwilioSmsSender,
)
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.errors import (
    ProviderOutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
)
from darwin_notify_assets.storage.store import OutboundMessage
from darwin_notify_assets.testing.sinks import SinkServer, start_sink

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
    }
    assert result.provider_message_id == record["message_id"]


def test_sendgrid_sends_text_only_mail_without_an_html_part(sendgrid_sink):
    sender = SendGridSender("SG.test-key", FROM_EMAIL, sendgrid_sink.url)
    sender.send(email_message(html_body=None))
    [record] = sendgrid_sink.records()
    assert record["body"]["content"] == [{"type": "text/plain", "value": email_message().text_body}]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_sendgrid_refusing_for_now_is_provider_unavailable(sendgrid_sink, status):
    sendgrid_sink.control(fail=1, status=status)
    sender = SendGridSender("SG.test-key", FROM_EMAIL, sendgrid_sink.url)
    with pytest.raises(ProviderUnavailable, match=str(status)):
        sender.send(email_message())
    # the fault is used up: the retry is accepted
    assert sender.send(email_message()).provider_message_id
    assert [r["status"] for r in sendgrid_sink.records()] == [status, 202]


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


class _OneRequestServer:
    """A socket server that reads one request, answers ``reply`` (or hangs up), and closes."""

    def __init__(self, reply: bytes = b""):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.received: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, args=(reply,), daemon=True)
        self._thread.start()

    def _serve(self, reply: bytes) -> None:
        conn, _ = self.listener.accept()
        with conn:
            self.received.append(conn.recv(65536))
            if reply:
                conn.sendall(reply)

    def close(self) -> None:
        self._thread.join(timeout=5)
        self.listener.close()


def test_sendgrid_connection_lost_after_the_request_is_outcome_unknown():
    """A provider that read the request and hung up may have taken the email: never resend."""
    server = _OneRequestServer()
    sender = SendGridSender("SG.secret-key", FROM_EMAIL, server.url, timeout=5)
    with pytest.raises(ProviderOutcomeUnknown) as caught:
        sender.send(email_message())
    server.close()
    assert server.received and server.received[0].startswith(b"POST /v3/mail/send")
    assert "secret" not in str(caught.value)


def test_sendgrid_goes_through_the_proxy_the_environment_names(monkeypatch):
    server = _OneRequestServer(
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


@pytest.mark.parametrize("status", [429, 500, 503])
def test_twilio_refusing_for_now_is_provider_unavailable(sms_sink, status):
    sms_sink.control(fail=1, status=status)
    sender = _twilio(sms_sink)
    with pytest.raises(ProviderUnavailable, match=str(status)):
        sender.send(sms_message())
    assert sender.send(sms_message()).provider_message_id
    assert [r["status"] for r in sms_sink.records()] == [status, 201]


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
