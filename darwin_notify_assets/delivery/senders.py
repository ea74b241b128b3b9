"""Senders: hand one message to a provider and say what the provider answered.

A 2xx means *accepted*, not delivered. Errors follow the cause (see ``errors``), and only what
the provider documents as not processed is retried: a 429, or a request that never reached the
provider whole. A refusal (another 4xx) is permanent. Anything else (a 5xx, a timeout, a
connection lost after the request was written) may follow a request the provider accepted:
nobody knows, and the message is never resent automatically. ``docs/guarantees.md`` quotes
the providers' documentation for each answer.
"""

import base64
import hashlib
import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from twilio.http import HttpClient
from twilio.http.response import Response

from darwin_notify_assets.delivery.transport import HttpAnswer, Transport, judge_answer
from darwin_notify_assets.errors import ConfigurationError, ProviderRejected
from darwin_notify_assets.storage.store import OutboundMessage
from darwin_notify_assets.webhooks.signatures import UnsubscribeLinks, UnsubscribeTokens

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str


def outbox_name(message: OutboundMessage) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in message.candidate_key)
    return f"{message.message_id:09d}-{safe}"[:200]


class Sender(ABC):
    """Sends one channel's messages."""

    channel: str

    @abstractmethod
    def send(self, message: OutboundMessage) -> SendResult:
        """Send; raise a ProviderError subclass on failure."""

    def close(self) -> None:  # noqa: B027 - optional for implementations
        """Release connections."""


def email_headers(message: OutboundMessage, from_address: str) -> dict[str, str]:
    """``Date`` (now) and ``Message-ID`` of an email. The id is the message's own, the same
    for every attempt; it names no recipient (a hash of the candidate key, and our id)."""
    digest = hashlib.sha256(message.candidate_key.encode()).hexdigest()[:16]
    domain = from_address.rpartition("@")[2] or "darwin-notify.invalid"
    return {
        "Date": format_datetime(datetime.now(UTC)),
        "Message-ID": f"<darwin-notify.{message.message_id}.{digest}@{domain}>",
    }


class FileOutboxEmailSender(Sender):
    """Each email becomes an ``.eml`` file: the embedded default's provider."""

    channel = "email"

    def __init__(
        self, folder: Path, from_address: str, unsubscribe: UnsubscribeLinks | None = None
    ):
        self.folder = Path(folder) / "email"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.from_address = from_address
        self.unsubscribe = unsubscribe

    def send(self, message: OutboundMessage) -> SendResult:
        msg = EmailMessage()
        msg["From"] = self.from_address
        msg["To"] = message.to_address
        msg["Subject"] = message.subject or ""
        msg["X-Darwin-Notify-Key"] = message.candidate_key
        for name, value in email_headers(message, self.from_address).items():
            msg[name] = value
        if self.unsubscribe is not None and message.message_id is not None:
            for name, value in self.unsubscribe.headers(message.message_id).items():
                msg[name] = value
        msg.set_content(message.text_body or "")
        if message.html_body:
            msg.add_alternative(message.html_body, subtype="html")
        name = outbox_name(message) + ".eml"
        path = self.folder / name
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(bytes(msg))
        tmp.replace(path)
        return SendResult(provider_message_id=f"outbox:email/{name}")


class FileOutboxSmsSender(Sender):
    """Each SMS becomes a JSON file."""

    channel = "sms"

    def __init__(self, folder: Path, from_number: str):
        self.folder = Path(folder) / "sms"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.from_number = from_number

    def send(self, message: OutboundMessage) -> SendResult:
        name = outbox_name(message) + ".json"
        path = self.folder / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "key": message.candidate_key,
                    "from": self.from_number,
                    "to": message.to_address,
                    "body": message.sms_body,
                    "encoding": message.sms_encoding,
                    "segments": message.sms_segments,
                },
                ensure_ascii=False,
                indent=2,
            ),
            encoding="utf-8",
        )
        tmp.replace(path)
        return SendResult(provider_message_id=f"outbox:sms/{name}")


class SendGridSender(Sender):
    """Email through SendGrid's v3 mail send API.

    The official client (``sendgrid``) defines the API: the host, the versioned URL, the
    authorization and user-agent headers. Its own transport (``python_http_client``) builds a
    new urllib opener, scanning the proxy environment, and opens a new connection for every
    request: more than half of a sender's CPU per email here, and a TLS handshake per email
    against the real API. Requests go instead through :class:`Transport`, a pool of kept-alive
    connections (``pool_size`` of them, one per sending thread) that tells a request never
    written whole from one that was.
    """

    channel = "email"
    provider = "SendGrid"

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
            raise ConfigurationError("the SendGrid sender needs an API key")
        from sendgrid import SendGridAPIClient

        kwargs = {"api_key": api_key}
        if host:
            kwargs["host"] = host
        api = SendGridAPIClient(**kwargs).client.mail.send
        self.url = api._build_url(None)
        self._headers = {**api.request_headers, "Content-Type": "application/json"}
        self._transport = Transport(self.provider, self.url, timeout, pool_size)
        self.from_address = from_address
        self.unsubscribe = unsubscribe

    def payload(self, message: OutboundMessage) -> dict[str, Any]:
        content = [{"type": "text/plain", "value": message.text_body or " "}]
        if message.html_body:
            content.append({"type": "text/html", "value": message.html_body})
        payload: dict[str, Any] = {
            "personalizations": [{"to": [{"email": message.to_address}]}],
            "from": {"email": self.from_address},
            "subject": message.subject or "",
            "content": content,
            # SendGrid may put its own Message-ID in place of ours; Date stands.
            "headers": email_headers(message, self.from_address),
            # Our ids only (never an address or a name): SendGrid copies custom_args into
            # every Event Webhook event, which ties the event to the message.
            "custom_args": {
                "darwin_notify_key": message.candidate_key,
                "darwin_notify_message_id": str(message.message_id),
            },
        }
        if self.unsubscribe is not None and message.message_id is not None:
            payload["headers"].update(self.unsubscribe.headers(message.message_id))
        return payload

    def send(self, message: OutboundMessage) -> SendResult:
        body = json.dumps(self.payload(message)).encode()
        answer = self._transport.request("POST", self.url, body, self._headers)
        if answer.status == 200:
            # SendGrid: "Your message is valid, but it is not queued to be delivered"
            # (sandbox mode only).
            raise ProviderRejected("SendGrid answered 200: valid, but not queued to be delivered")
        judge_answer(self.provider, answer, _sendgrid_errors(answer))
        return SendResult(provider_message_id=answer.headers.get("X-Message-Id") or "")

    def close(self) -> None:
        self._transport.close()


def _sendgrid_errors(answer: HttpAnswer) -> str:
    """The messages of SendGrid's ``{"errors": [{"message": ..., "field": ...}]}``, else the
    start of the body."""
    text = answer.body.decode("utf-8", errors="replace")
    try:
        errors = json.loads(text).get("errors")
        return "; ".join(
            f"{e['field']}: {e['message']}" if e.get("field") else str(e["message"]) for e in errors
        )
    except (ValueError, AttributeError, TypeError, KeyError):
        return text[:300]


# The Twilio client's default API host; only the proxy environment is decided by it here.
TWILIO_API = "https://api.twilio.com"


class TwilioSmsSender(Sender):
    """SMS through a Twilio-compatible REST API.

    The official client (``twilio``) builds the request (URL, parameters, authorization,
    user agent) and reads the created Message; it sends through its documented pluggable HTTP
    client, here one on :class:`Transport`, so that a failure says whether the request was
    written whole and an error answer keeps its headers (``Retry-After``).
    """

    channel = "sms"
    provider = "SMS gateway"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str,
        base_url: str | None = None,
        timeout: float = 10.0,
        pool_size: int = 8,
        status_callback: str = "",
    ):
        if not account_sid or not auth_token:
            raise ConfigurationError("the SMS sender needs an account SID and an auth token")
        from twilio.rest import Client

        base = base_url.rstrip("/") if base_url else TWILIO_API
        self._http = _TwilioHttp(self.provider, Transport(self.provider, base, timeout, pool_size))
        self.client = Client(account_sid, auth_token, http_client=self._http)
        if base_url:
            self.client.api.base_url = base
        self.from_number = from_number
        self.status_callback = status_callback

    def send(self, message: OutboundMessage) -> SendResult:
        extra: dict[str, Any] = {}
        if self.status_callback and message.message_id is not None:
            # Our id in the callback URL ties each status to the message even when the
            # create call's answer (the SID) never reached us.
            extra["status_callback"] = f"{self.status_callback}?m={message.message_id}"
        sms = self.client.messages.create(
            to=message.to_address, from_=self.from_number, body=message.sms_body or "", **extra
        )
        return SendResult(provider_message_id=sms.sid)

    def close(self) -> None:
        self._http.close()


class _TwilioHttp(HttpClient):  # type: ignore[misc]  # twilio ships no type hints
    """The Twilio client's HTTP layer on :class:`Transport`: answers other than a 2xx become
    the package's errors here, where the status and headers are still known."""

    def __init__(self, provider: str, transport: Transport):
        super().__init__(logging.getLogger("twilio.http_client"), False)
        self.provider = provider
        self._transport = transport

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if params:
            url = f"{url}?{urlencode(params, doseq=True)}"
        headers = dict(headers or {})
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        body = urlencode(data or {}, doseq=True).encode()
        answer = self._transport.request(method.upper(), url, body, headers)
        judge_answer(self.provider, answer, _twilio_error(answer))
        return Response(
            answer.status, answer.body.decode("utf-8", errors="replace"), answer.headers
        )

    def close(self) -> None:
        self._transport.close()


def _twilio_error(answer: HttpAnswer) -> str:
    """``code N: message`` from Twilio's error document, else the start of the body."""
    text = answer.body.decode("utf-8", errors="replace")
    try:
        error = json.loads(text)
        return f"code {error['code']}: {error['message']}"
    except (ValueError, TypeError, KeyError):
        return text[:300]


def build_senders(
    *,
    outbox_dir: str,
    email_from: str,
    sms_from: str,
    sendgrid_api_key: str | None = None,
    sendgrid_host: str = "",
    twilio_account_sid: str = "",
    twilio_auth_token: str | None = None,
    sms_base_url: str = "",
    timeout: float = 10.0,
    pool_size: int = 8,
    webhook_public_url: str = "",
    unsubscribe_secret: str | None = None,
    unsubscribe_mailto: str = "",
) -> dict[str, Sender]:
    """SendGrid and the SMS gateway when their credentials are given, else the file outbox.

    With an unsubscribe secret, every email carries one-click unsubscribe headers pointing at
    the webhook service; with its public URL, every SMS asks for status callbacks there."""
    outbox = Path(outbox_dir)
    links = (
        UnsubscribeLinks(
            webhook_public_url, UnsubscribeTokens(unsubscribe_secret), unsubscribe_mailto
        )
        if unsubscribe_secret
        else None
    )
    email: Sender
    sms: Sender
    if sendgrid_api_key:
        email = SendGridSender(
            sendgrid_api_key,
            email_from,
            sendgrid_host or None,
            timeout=timeout,
            pool_size=pool_size,
            unsubscribe=links,
        )
    else:
        email = FileOutboxEmailSender(outbox, email_from, links)
    if twilio_account_sid and twilio_auth_token:
        callback = f"{webhook_public_url.rstrip('/')}/webhooks/sms/status"
        sms = TwilioSmsSender(
            twilio_account_sid,
            twilio_auth_token,
            sms_from,
            sms_base_url or None,
            timeout=timeout,
            status_callback=callback if webhook_public_url else "",
        )
    else:
        sms = FileOutboxSmsSender(outbox, sms_from)
    return {"email": email, "sms": sms}
