"""Senders: hand one message to a provider and say what the provider answered.

A 2xx means *accepted*, not delivered. Errors follow the cause (see ``errors``): a refusal is
permanent; a 429 or a 5xx means the provider did not take the message, so a retry is safe; a
timeout or a connection lost mid-request means nobody knows, and the message is never resent
automatically.
"""

import io
import json
import logging
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

from darwin_notify_assets.errors import (
    ConfigurationError,
    ProviderOutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
)
from darwin_notify_assets.storage.store import OutboundMessage

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


class FileOutboxEmailSender(Sender):
    """Each email becomes an ``.eml`` file: the embedded default's provider."""

    channel = "email"

    def __init__(self, folder: Path, from_address: str):
        self.folder = Path(folder) / "email"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.from_address = from_address

    def send(self, message: OutboundMessage) -> SendResult:
        msg = EmailMessage()
        msg["From"] = self.from_address
        msg["To"] = message.to_address
        msg["Subject"] = message.subject or ""
        msg["X-Darwin-Notify-Key"] = message.candidate_key
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
    authorization and user-agent headers, and which exception each error status becomes. Its
    own transport (``python_http_client``) builds a new urllib opener, scanning the proxy
    environment, and opens a new connection for every request: more than half of a sender's
    CPU per email here, and a TLS handshake per email against the real API. Requests go
    instead through a urllib3 pool of keep-alive connections (``pool_size`` of them are kept,
    one per sending thread).
    """

    channel = "email"

    def __init__(
        self,
        api_key: str,
        from_address: str,
        host: str | None = None,
        timeout: float = 10.0,
        pool_size: int = 8,
    ):
        if not api_key:
            raise ConfigurationError("the SendGrid sender needs an API key")
        import urllib3
        from sendgrid import SendGridAPIClient

        kwargs = {"api_key": api_key}
        if host:
            kwargs["host"] = host
        api = SendGridAPIClient(**kwargs).client.mail.send
        self.url = api._build_url(None)
        self._headers = {**api.request_headers, "Content-Type": "application/json"}
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        # The proxy environment (HTTPS_PROXY, NO_PROXY, ...) is honoured as urllib does it.
        target = urlsplit(self.url)
        proxy = urllib.request.getproxies().get(target.scheme)
        if proxy and not urllib.request.proxy_bypass(target.hostname or ""):
            self._pool = urllib3.ProxyManager(proxy, num_pools=2, maxsize=pool_size)
        else:
            self._pool = urllib3.PoolManager(num_pools=2, maxsize=pool_size)
        self.from_address = from_address

    def payload(self, message: OutboundMessage) -> dict:
        content = [{"type": "text/plain", "value": message.text_body or " "}]
        if message.html_body:
            content.append({"type": "text/html", "value": message.html_body})
        return {
            "personalizations": [{"to": [{"email": message.to_address}]}],
            "from": {"email": self.from_address},
            "subject": message.subject or "",
            "content": content,
            # Lets the provider's events (and an auditor) be matched back to the message.
            "custom_args": {
                "darwin_notify_key": message.candidate_key,
                "darwin_notify_message_id": str(message.message_id),
            },
        }

    def send(self, message: OutboundMessage) -> SendResult:
        from python_http_client import exceptions as http
        from urllib3 import exceptions as transport

        body = json.dumps(self.payload(message)).encode()
        try:
            response = self._pool.request(
                "POST",
                self.url,
                body=body,
                headers=self._headers,
                timeout=self._timeout,
                retries=False,
                redirect=False,
            )
        except transport.ConnectTimeoutError as exc:
            # Includes a refused connection: no request was sent.
            raise ProviderUnavailable(
                f"SendGrid did not accept a connection: {_reason(exc)}"
            ) from None
        except transport.ReadTimeoutError:
            raise ProviderOutcomeUnknown("SendGrid did not answer in time") from None
        except (transport.HTTPError, OSError) as exc:
            raise ProviderOutcomeUnknown(
                f"SendGrid request failed mid-way: {_reason(exc)}"
            ) from None
        if response.status >= 300:
            error = http.handle_error(
                urllib.error.HTTPError(
                    self.url,
                    response.status,
                    response.reason or "",
                    response.headers,
                    io.BytesIO(response.data),
                )
            )
            if isinstance(
                error,
                (
                    http.TooManyRequestsError,
                    http.InternalServerError,
                    http.ServiceUnavailableError,
                    http.GatewayTimeoutError,
                ),
            ):
                raise ProviderUnavailable(f"SendGrid answered {error.status_code}")
            body = (
                error.body.decode(errors="replace") if isinstance(error.body, bytes) else error.body
            )
            raise ProviderRejected(f"SendGrid refused the message ({error.status_code}): {body}")
        return SendResult(provider_message_id=response.headers.get("X-Message-Id") or "")

    def close(self) -> None:
        self._pool.clear()


def _reason(exc: BaseException) -> str:
    """The transport's reason for a failure, naming the host and port, never the headers."""
    reason = getattr(exc, "reason", None) or exc
    return str(reason).replace("HTTPConnectionPool", "pool").replace("HTTPSConnectionPool", "pool")


class TwilioSmsSender(Sender):
    """SMS through a Twilio-compatible REST API, with the official client."""

    channel = "sms"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str,
        base_url: str | None = None,
        timeout: float = 10.0,
    ):
        if not account_sid or not auth_token:
            raise ConfigurationError("the SMS sender needs an account SID and an auth token")
        from twilio.http.http_client import TwilioHttpClient
        from twilio.rest import Client

        self.client = Client(
            account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout, max_retries=0)
        )
        if base_url:
            self.client.api.base_url = base_url.rstrip("/")
        self.from_number = from_number

    def send(self, message: OutboundMessage) -> SendResult:
        import requests
        from twilio.base.exceptions import TwilioRestException

        try:
            sms = self.client.messages.create(
                to=message.to_address, from_=self.from_number, body=message.sms_body or ""
            )
        except TwilioRestException as exc:
            if exc.status == 429 or exc.status >= 500:
                raise ProviderUnavailable(f"SMS gateway answered {exc.status}") from None
            raise ProviderRejected(
                f"SMS gateway refused the message ({exc.status}): {exc.msg}"
            ) from None
        except requests.exceptions.ConnectTimeout as exc:
            raise ProviderUnavailable(f"SMS gateway did not accept a connection: {exc}") from None
        except requests.exceptions.ConnectionError as exc:
            if "Connection refused" in str(exc):
                raise ProviderUnavailable(f"SMS gateway refused the connection: {exc}") from None
            raise ProviderOutcomeUnknown(f"SMS gateway request failed mid-way: {exc}") from None
        except requests.exceptions.Timeout as exc:
            raise ProviderOutcomeUnknown(f"SMS gateway did not answer in time: {exc}") from None
        return SendResult(provider_message_id=sms.sid)


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
) -> dict[str, Sender]:
    """SendGrid and the SMS gateway when their credentials are given, else the file outbox."""
    outbox = Path(outbox_dir)
    email: Sender
    sms: Sender
    if sendgrid_api_key:
        email = SendGridSender(
            sendgrid_api_key,
            email_from,
            sendgrid_host or None,
            timeout=timeout,
            pool_size=pool_size,
        )
    else:
        email = FileOutboxEmailSender(outbox, email_from)
    if twilio_account_sid and twilio_auth_token:
        sms = TwilioSmsSender(
            twilio_account_sid, twilio_auth_token, sms_from, sms_base_url or None, timeout=timeout
        )
    else:
        sms = FileOutboxSmsSender(outbox, sms_from)
    return {"email": email, "sms": sms}
