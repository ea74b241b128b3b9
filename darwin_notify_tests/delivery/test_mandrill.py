"""Mandrill as an email provider: the exact messages/send body, each per-recipient status and
HTTP answer mapped by what Mailchimp documents (docs/guarantees.md), the API key kept out of
everything, and failover from one provider to the other only for what the first provably did
not take."""

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import EnvVar

from darwin_notify_assets.bus.base import Job, JobKind
from darwin_notify_assets.config import Settings
from darwin_notify_assets.defs.resources import resources_from_env
from darwin_notify_assets.delivery.failover import FailoverSender, select_email_sender
from darwin_notify_assets.delivery.mandrill import MandrillSender, judge_mandrill_answer
from darwin_notify_assets.delivery.senders import FileOutboxEmailSender, SendGridSender
from darwin_notify_assets.delivery.transport import HttpAnswer
from darwin_notify_assets.delivery.workers import RetryPolicy, SendWorker
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.errors import (
    ConfigurationError,
    ProviderOutcomeUnknown,
    ProviderRefusedRecipient,
    ProviderRejected,
)
from darwin_notify_assets.storage.store import NotificationStore
from darwin_notify_assets.testing.sinks import start_sink
from darwin_notify_assets.webhooks.signatures import UnsubscribeLinks, UnsubscribeTokens
from darwin_notify_tests.conftest import PARTITION, make_messages
from darwin_notify_tests.delivery.test_senders import FROM_EMAIL, Sink, email_message

KEY = "md-secret-key-0123456789"


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
def mandrill_sink(tmp_path) -> Iterator[Sink]:
    yield from _sink("mandrill", tmp_path)


@pytest.fixture
def sendgrid_sink(tmp_path) -> Iterator[Sink]:
    yield from _sink("sendgrid", tmp_path)


def api(sink: Sink) -> str:
    return sink.url + "/api/1.0"


def test_mandrill_sends_the_exact_messages_send_body(mandrill_sink):
    links = UnsubscribeLinks(
        "https://hooks.example.test", UnsubscribeTokens("unsubscribe-secret-0123456789")
    )
    sender = MandrillSender(KEY, FROM_EMAIL, api(mandrill_sink), unsubscribe=links)
    message = email_message()
    result = sender.send(message)
    [record] = mandrill_sink.records()
    assert record["status"] == 200 and record["recipient_status"] == ["sent"]
    assert result.provider_message_id == f"mandrill:{record['message_id']}"
    body = record["body"]
    assert body["async"] is False
    assert body["message"] == {
        "subject": message.subject,
        "from_email": FROM_EMAIL,
        "to": [{"email": message.to_address, "type": "to"}],
        "html": message.html_body,
        "text": message.text_body,
        "headers": {
            "Message-ID": body["message"]["headers"]["Message-ID"],
            **links.headers(42),
        },
        "metadata": {"darwin_notify_key": message.candidate_key, "darwin_notify_message_id": "42"},
    }
    mid = body["message"]["headers"]["Message-ID"]
    assert mid.startswith("<42.") and mid.endswith("@darwin-notify.example>")
    # The same Message-ID for every attempt at the message; nothing personal in the metadata.
    assert sender.message(message)["headers"]["Message-ID"] == mid
    assert "jose" not in json.dumps(body["message"]["metadata"]).lower()


def test_mandrill_derives_the_text_part_when_the_template_has_none(mandrill_sink):
    sender = MandrillSender(KEY, FROM_EMAIL, api(mandrill_sink))
    sender.send(email_message(text_body=None))
    [record] = mandrill_sink.records()
    assert record["body"]["message"]["auto_text"] is True
    assert "text" not in record["body"]["message"]


def answer(status: int, body: object) -> HttpAnswer:
    return HttpAnswer(status, {}, json.dumps(body).encode())


def result(status: str, reason: str | None = None) -> list[dict[str, object]]:
    return [{"email": "a@example.com", "status": status, "reject_reason": reason, "_id": "x1"}]


@pytest.mark.parametrize("status", ["sent", "queued", "scheduled"])
def test_sent_queued_and_scheduled_are_accepted(status):
    assert judge_mandrill_answer(answer(200, result(status)), "A@example.com").provider_id == "x1"


@pytest.mark.parametrize(
    ("http", "body", "error", "not_recipient"),
    [
        (200, result("rejected", "hard-bounce"), ProviderRefusedRecipient, False),
        (200, result("rejected", "soft-bounce"), ProviderRefusedRecipient, False),
        (200, result("rejected", "spam"), ProviderRefusedRecipient, False),
        (200, result("rejected", "unsub"), ProviderRefusedRecipient, False),
        (200, result("rejected", "custom"), ProviderRefusedRecipient, False),
        (200, result("rejected", "something-new"), ProviderRefusedRecipient, False),
        (200, result("invalid"), ProviderRefusedRecipient, False),
        (200, result("rejected", "unsigned"), ProviderRejected, True),
        (200, result("rejected", "invalid-sender"), ProviderRejected, True),
        (200, result("rejected", "test-mode-limit"), ProviderRejected, True),
        (200, result("rejected", "rule"), ProviderRejected, True),
        (200, result("bounced-somehow"), ProviderOutcomeUnknown, True),
        (200, {"not": "a list"}, ProviderOutcomeUnknown, True),
        (200, [], ProviderOutcomeUnknown, True),
        (
            401,
            {"status": "error", "code": -1, "name": "Invalid_Key", "message": "Invalid API key"},
            ProviderRejected,
            True,
        ),
        (
            400,
            {"status": "error", "code": -2, "name": "ValidationError", "message": "x"},
            ProviderRejected,
            True,
        ),
        (
            500,
            {"status": "error", "code": -1, "name": "Invalid_Key", "message": "Invalid API key"},
            ProviderRejected,
            True,
        ),
        (
            500,
            {"status": "error", "code": -2, "name": "ValidationError", "message": "x"},
            ProviderRejected,
            True,
        ),
        (
            500,
            {"status": "error", "code": -1, "name": "PaymentRequired", "message": "x"},
            ProviderRejected,
            True,
        ),
        (
            500,
            {"status": "error", "code": -1, "name": "GeneralError", "message": "x"},
            ProviderOutcomeUnknown,
            True,
        ),
        (500, "<html>oops</html>", ProviderOutcomeUnknown, True),
        (
            429,
            {"status": "error", "code": -1, "name": "GeneralError", "message": "x"},
            ProviderOutcomeUnknown,
            True,
        ),
        (502, "", ProviderOutcomeUnknown, True),
        (503, "", ProviderOutcomeUnknown, True),
    ],
)
def test_each_answer_maps_to_the_outcome_mandrill_documents(http, body, error, not_recipient):
    with pytest.raises(error) as caught:
        judge_mandrill_answer(answer(http, body), "a@example.com")
    # Only a refusal of the recipient is kept from failing over.
    assert isinstance(caught.value, ProviderRefusedRecipient) is not not_recipient


def test_the_api_key_is_in_no_error_and_no_repr(mandrill_sink):
    sender = MandrillSender(KEY, FROM_EMAIL, api(mandrill_sink))
    mandrill_sink.control(fail=1, status=401)
    with pytest.raises(ProviderRejected) as caught:
        sender.send(email_message())
    assert KEY not in str(caught.value) and KEY not in repr(sender)
    assert KEY not in mandrill_sink.record.read_text()


_SEQ = itertools.count()


# -- failover ----------------------------------------------------------------------------------
def _worker(store: NotificationStore, sender) -> SendWorker:
    return SendWorker(
        store, {"email": sender}, concurrency=1, retry=RetryPolicy(), sleep=lambda s: None
    )


def _send(store: NotificationStore, sender) -> dict:
    [mid] = make_messages(store, 1, prefix=f"m{next(_SEQ)}-")
    worker = _worker(store, sender)
    try:
        worker.handle(Job(JobKind.SEND, PARTITION, (mid,)))
    finally:
        worker.close()
    store.db.rollback()
    return store.db.query_dicts(
        "SELECT status, reason, provider_message_id FROM message WHERE message_id = ?", [mid]
    )[0]


@pytest.fixture
def failover(sendgrid_sink, mandrill_sink) -> Iterator[FailoverSender]:
    sender = FailoverSender(
        SendGridSender("SG.test-key", FROM_EMAIL, sendgrid_sink.url, timeout=0.5),
        MandrillSender(KEY, FROM_EMAIL, api(mandrill_sink), timeout=0.5),
    )
    try:
        yield sender
    finally:
        sender.close()


def _accepted(sink: Sink) -> int:
    return sum(1 for r in sink.records() if r.get("accepted", 200 <= r["status"] < 300))


@pytest.mark.parametrize("status", [400, 401, 403])
def test_a_documented_refusal_fails_over_and_mandrill_gets_it_once(
    store, failover, sendgrid_sink, mandrill_sink, status
):
    sendgrid_sink.control(fail=1, status=status)
    row = _send(store, failover)
    assert row["status"] == str(MessageStatus.SENT)
    assert row["provider_message_id"].startswith("mandrill:")
    assert [r["status"] for r in sendgrid_sink.records()] == [status]
    assert len(mandrill_sink.records()) == 1 and _accepted(mandrill_sink) == 1


def test_a_connection_never_made_fails_over(store, tmp_path, mandrill_sink):
    server, thread = start_sink("sendgrid", "127.0.0.1", 0, tmp_path / "gone.jsonl")
    closed = server.url
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    sender = FailoverSender(
        SendGridSender("SG.test-key", FROM_EMAIL, closed, timeout=0.5),
        MandrillSender(KEY, FROM_EMAIL, api(mandrill_sink)),
    )
    row = _send(store, sender)
    assert row["status"] == str(MessageStatus.SENT)
    assert len(mandrill_sink.records()) == 1


@pytest.mark.parametrize(
    "fault",
    [
        {"accept_then_delay": 1, "seconds": 2},
        {"fail": 1, "status": 500},
        {"fail": 1, "status": 502},
    ],
)
def test_an_ambiguous_answer_never_fails_over(store, failover, sendgrid_sink, mandrill_sink, fault):
    sendgrid_sink.control(**fault)
    row = _send(store, failover)
    assert row["status"] == str(MessageStatus.UNKNOWN)
    assert mandrill_sink.records() == []


def test_a_recipient_mandrill_refuses_is_not_carried_by_sendgrid(
    store, sendgrid_sink, mandrill_sink
):
    sender = FailoverSender(
        MandrillSender(KEY, FROM_EMAIL, api(mandrill_sink)),
        SendGridSender("SG.test-key", FROM_EMAIL, sendgrid_sink.url),
    )
    mandrill_sink.control(recipient_status="rejected", reject_reason="hard-bounce")
    row = _send(store, sender)
    assert row["status"] == str(MessageStatus.FAILED)
    assert "hard-bounce" in row["reason"]
    assert sendgrid_sink.records() == []
    # A rejection of the sending account fails over: SendGrid may take it.
    mandrill_sink.control(recipient_status="rejected", reject_reason="unsigned")
    row = _send(store, sender)
    assert row["status"] == str(MessageStatus.SENT)
    assert [r["status"] for r in sendgrid_sink.records()] == [202]


def test_both_refusing_is_failed_with_both_reasons(store, failover, sendgrid_sink, mandrill_sink):
    sendgrid_sink.control(fail=1, status=401)
    mandrill_sink.control(fail=1, status=401)
    row = _send(store, failover)
    assert row["status"] == str(MessageStatus.FAILED)
    assert "SendGrid" in row["reason"] and "Mandrill" in row["reason"]


def test_mandrill_unknown_after_failover_stays_unknown(
    store, failover, sendgrid_sink, mandrill_sink
):
    sendgrid_sink.control(fail=1, status=401)
    mandrill_sink.control(accept_then_delay=1, seconds=2)
    row = _send(store, failover)
    assert row["status"] == str(MessageStatus.UNKNOWN)
    assert len(sendgrid_sink.records()) == 1 and len(mandrill_sink.records()) == 1


# -- choosing the provider ---------------------------------------------------------------------
def _outbox(tmp_path: Path) -> dict:
    return {"email": FileOutboxEmailSender(tmp_path, FROM_EMAIL)}


def test_the_provider_is_chosen_by_configuration(tmp_path):
    chosen = select_email_sender(
        _outbox(tmp_path), provider="mandrill", mandrill_api_key=KEY, email_from=FROM_EMAIL
    )
    assert isinstance(chosen["email"], MandrillSender)
    sendgrid = SendGridSender("SG.k", FROM_EMAIL, "http://127.0.0.1:9")
    chosen = select_email_sender(
        {"email": sendgrid}, failover="mandrill", mandrill_api_key=KEY, email_from=FROM_EMAIL
    )
    assert isinstance(chosen["email"], FailoverSender)
    assert chosen["email"].first is sendgrid and isinstance(chosen["email"].second, MandrillSender)
    assert select_email_sender(_outbox(tmp_path), email_from=FROM_EMAIL)["email"].channel == "email"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"provider": "mandrill"}, "DARWIN_NOTIFY_MANDRILL_API_KEY must be set"),
        ({"failover": "mandrill", "mandrill_api_key": KEY}, "DARWIN_NOTIFY_SENDGRID_API_KEY"),
        (
            {"provider": "mandrill", "failover": "sendgrid", "mandrill_api_key": KEY},
            "SENDGRID_API_KEY",
        ),
        ({"provider": "mandrill", "failover": "mandrill"}, "names the first provider"),
        ({"provider": "mailgun"}, "must be one of sendgrid, mandrill"),
    ],
)
def test_a_provider_without_its_key_is_a_configuration_error(tmp_path, kwargs, problem):
    with pytest.raises(ConfigurationError, match=problem):
        select_email_sender(_outbox(tmp_path), email_from=FROM_EMAIL, **kwargs)


def test_unknown_provider_words_are_refused_when_settings_load():
    with pytest.raises(ConfigurationError, match="DARWIN_NOTIFY_EMAIL_FAILOVER"):
        Settings.from_env({"DARWIN_NOTIFY_EMAIL_FAILOVER": "smtp"})


def test_the_mandrill_key_is_bound_as_an_env_var():
    env = {
        "DARWIN_NOTIFY_MANDRILL_API_KEY": KEY,
        "DARWIN_NOTIFY_EMAIL_PROVIDER": "mandrill",
        "DARWIN_NOTIFY_MANDRILL_HOST": "http://127.0.0.1:1/api/1.0",
    }
    senders = resources_from_env(env)["senders"]
    assert senders.mandrill_api_key == EnvVar("DARWIN_NOTIFY_MANDRILL_API_KEY")
    assert senders.email_provider == "mandrill"
    assert KEY not in repr(senders) and KEY not in str(senders.model_dump())


def test_the_sink_answers_invalid_for_an_address_that_is_not_one(mandrill_sink):
    sender = MandrillSender(KEY, FROM_EMAIL, api(mandrill_sink))
    with pytest.raises(ProviderRefusedRecipient, match="invalid"):
        sender.send(email_message(to_address="not-an-address"))
    [record] = mandrill_sink.records()
    assert record["recipient_status"] == ["invalid"] and record["accepted"] is False
