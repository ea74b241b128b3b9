"""Email through Mailchimp Transactional (Mandrill): ``POST /api/1.0/messages/send``.

Mandrill answers a send with one status per recipient: ``sent``, ``queued`` or ``scheduled``
(accepted), ``rejected`` with a ``reject_reason``, or ``invalid``. Mailchimp writes that
rejected mail is "rejected (not sent)", so a rejection is a refusal; every answer Mandrill does
not document is unknown, and the message is never resent automatically. ``docs/guarantees.md``
quotes Mailchimp's documentation for each answer.
"""

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from darwin_notify_assets.delivery.senders import Sender, SendResult
from darwin_notify_assets.delivery.transport import HttpAnswer, Transport
from darwin_notify_assets.errors import (
    ConfigurationError,
    ProviderOutcomeUnknown,
    ProviderRefusedRecipient,
    ProviderRejected,
)
from darwin_notify_assets.storage.store import OutboundMessage
from darwin_notify_assets.webhooks.signatures import UnsubscribeLinks

MANDRILL_API = "https://mandrillapp.com/api/1.0"
SEND_PATH = "/messages/send"
#: Our provider message ids for Mandrill carry this prefix, so a message's row says which
#: provider took it (its webhook events are matched by the same string).
PROVIDER_ID_PREFIX = "mandrill:"

ACCEPTED_STATUSES = frozenset({"sent", "queued", "scheduled"})
#: Rejections caused by the recipient: Mandrill keeps the address on its rejection denylist
#: (a bounce, a spam complaint, an unsubscribe, an entry added by the account) or finds it
#: invalid. No other provider may carry such a message, so these never fail over.
RECIPIENT_REJECT_REASONS = frozenset(
    {"hard-bounce", "soft-bounce", "spam", "unsub", "custom", "invalid"}
)
#: Rejections caused by the sending account (an unverified or unsigned sending domain, test
#: mode's limit, a rejection rule): another provider may take the message.
ACCOUNT_REJECT_REASONS = frozenset({"invalid-sender", "unsigned", "test-mode-limit", "rule"})
#: Error documents Mandrill answers instead of the per-recipient results, naming a cause that
#: stops the call before anything is sent ("The provided API key is not a valid Mandrill API
#: key", ...). Before 2023 Mandrill sent them with HTTP 500; since then with 400 or 401.
REFUSING_ERRORS = frozenset(
    {"Invalid_Key", "ValidationError", "PaymentRequired", "Unknown_Subaccount"}
)


def message_id_header(message: OutboundMessage, from_address: str) -> str:
    """A ``Message-ID`` that is the same for every attempt at one message and names nothing
    personal: our id and a digest of the candidate key, at the sender's domain."""
    domain = from_address.rpartition("@")[2] or "darwin-notify.invalid"
    digest = hashlib.sha256(message.candidate_key.encode()).hexdigest()[:20]
    return f"<{message.message_id}.{digest}@{domain}>"


@dataclass(frozen=True)
class MandrillRecipientStatus:
    """One element of a ``messages/send`` answer."""

    email: str
    status: str
    reject_reason: str | None
    provider_id: str | None


class MandrillSender(Sender):
    """Email through Mandrill's ``messages/send``, over :class:`Transport` (kept-alive
    connections, and whether a failed request was written whole).

    The API key travels in the JSON body, as Mandrill requires; it is never logged and never
    part of an error (errors quote only Mandrill's own error name and message).
    """

    channel = "email"
    provider = "Mandrill"

    def __init__(
        self,
        api_key: str,
        from_address: str,
        host: str | None = None,
        timeout: float = 10.0,
        pool_size: int = 8,
        unsubscribe: UnsubscribeLinks | None = None,
    ):
        if not api_key:
            raise ConfigurationError("the Mandrill sender needs an API key")
        self._key = api_key
        base = (host or MANDRILL_API).rstrip("/")
        self.url = base + SEND_PATH
        self._headers = {"Content-Type": "application/json", "User-Agent": "darwin-notify"}
        self._transport = Transport(self.provider, base, timeout, pool_size)
        self.from_address = from_address
        self.unsubscribe = unsubscribe

    def __repr__(self) -> str:
        return f"MandrillSender(url={self.url!r})"

    def message(self, message: OutboundMessage) -> dict[str, Any]:
        """The ``message`` struct of the request (everything but the key)."""
        headers = {"Message-ID": message_id_header(message, self.from_address)}
        if self.unsubscribe is not None and message.message_id is not None:
            headers.update(self.unsubscribe.headers(message.message_id))
        body: dict[str, Any] = {
            "subject": message.subject or "",
            "from_email": self.from_address,
            "to": [{"email": message.to_address, "type": "to"}],
            "headers": headers,
            # Our ids only (never an address or a name): Mandrill copies metadata into every
            # webhook event of the message, which ties the event to it.
            "metadata": {
                "darwin_notify_key": message.candidate_key,
                "darwin_notify_message_id": str(message.message_id),
            },
        }
        if message.html_body:
            body["html"] = message.html_body
        if message.text_body:
            body["text"] = message.text_body
        elif message.html_body:
            # Mandrill derives the text part from the HTML rather than sending a blank one.
            body["auto_text"] = True
        else:
            body["text"] = " "
        return body

    def payload(self, message: OutboundMessage) -> dict[str, Any]:
        # async false: the answer carries the recipient's real status (Mandrill's default for
        # one recipient, said explicitly because the at-most-once mapping rests on it).
        return {"key": self._key, "message": self.message(message), "async": False}

    def send(self, message: OutboundMessage) -> SendResult:
        body = json.dumps(self.payload(message)).encode()
        answer = self._transport.request("POST", self.url, body, self._headers)
        status = judge_mandrill_answer(answer, message.to_address or "")
        return SendResult(provider_message_id=PROVIDER_ID_PREFIX + (status.provider_id or ""))

    def close(self) -> None:
        self._transport.close()


def judge_mandrill_answer(answer: HttpAnswer, to_address: str) -> MandrillRecipientStatus:
    """The recipient's status in an accepting answer; raise the error any other answer stands
    for (the table in ``docs/guarantees.md``).

    Raises:
        ProviderRefusedRecipient: ``invalid``, or ``rejected`` for a reason of the recipient.
        ProviderRejected: ``rejected`` for a reason of the sending account; a 4xx other than
            429; an error document naming a cause that stops the call.
        ProviderOutcomeUnknown: Anything else: 429 and 5xx without such a cause (Mandrill
            documents neither as not sent), a 200 without this recipient's status, or a
            status Mandrill does not document.
    """
    if answer.status == 200:
        status = _recipient_status(answer.body, to_address)
        if status is None:
            raise ProviderOutcomeUnknown(
                "Mandrill answered 200 without a status for the recipient; it may have it"
            )
        if status.status in ACCEPTED_STATUSES:
            return status
        if status.status == "invalid":
            raise ProviderRefusedRecipient("Mandrill refused the message: the address is invalid")
        if status.status == "rejected":
            reason = status.reject_reason or "no reason given"
            said = f"Mandrill rejected the message (not sent): {reason}"
            if reason in ACCOUNT_REJECT_REASONS:
                raise ProviderRejected(said)
            raise ProviderRefusedRecipient(said)
        raise ProviderOutcomeUnknown(
            f"Mandrill answered the status {status.status[:40]!r}, which it does not document"
        )
    name, detail = _mandrill_error(answer)
    said = f": {name}: {detail}" if name else (f": {detail}" if detail else "")
    if (400 <= answer.status < 500 and answer.status != 429) or name in REFUSING_ERRORS:
        raise ProviderRejected(f"Mandrill refused the message ({answer.status}){said}")
    raise ProviderOutcomeUnknown(
        f"Mandrill answered {answer.status}, which does not say whether it took the message{said}"
    )


def _recipient_status(body: bytes, to_address: str) -> MandrillRecipientStatus | None:
    try:
        results = json.loads(body)
    except ValueError:
        return None
    if not isinstance(results, list):
        return None
    wanted = to_address.strip().lower()
    entries = [r for r in results if isinstance(r, dict)]
    for r in entries:
        if str(r.get("email") or "").strip().lower() == wanted or len(entries) == 1:
            return MandrillRecipientStatus(
                email=str(r.get("email") or ""),
                status=str(r.get("status") or ""),
                reject_reason=str(r["reject_reason"]) if r.get("reject_reason") else None,
                provider_id=str(r["_id"]) if r.get("_id") else None,
            )
    return None


def _mandrill_error(answer: HttpAnswer) -> tuple[str, str]:
    """``(name, message)`` of Mandrill's ``{"status": "error", "name": ..., "message": ...}``,
    else ``("", the start of the body)``."""
    text = answer.body.decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and doc.get("status") == "error":
            return str(doc.get("name") or ""), str(doc.get("message") or "")[:300]
    except ValueError:
        pass
    return "", text[:300]
