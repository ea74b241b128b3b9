"""Local stand-ins for the email and SMS providers, for tests and local runs.

Small HTTP servers speak just enough of the providers' APIs for the real client
libraries to work against them unchanged:

* ``sendgrid``: SendGrid v3 ``POST /v3/mail/send`` (Bearer auth, JSON body, ``202`` with an
  ``X-Message-Id`` header, SendGrid-style ``{"errors": [...]}`` on ``400``/``401``).
* ``sms``: Twilio ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (HTTP basic auth,
  form-encoded ``To``/``From``/``Body``, ``201`` with a Message resource, Twilio-style
  ``{"code": ..., "message": ..., "status": ...}`` errors).
* ``mandrill``: Mailchimp Transactional ``POST /api/1.0/messages/send``, in
  ``testing/mandrill_sink.py``.

Every send request, accepted or refused, is appended to a JSONL record file (one JSON object
a line, flushed per request), so tests can count exactly what reached the provider and tell
accepted (``status`` 2xx) from refused.

Test hooks:

* ``POST /_control`` with a JSON object queues faults for the next send requests:
  ``{"fail": 2, "status": 429}`` refuses the next two with that status (``429`` carries
  ``Retry-After``); ``{"accept_then_delay": 1, "seconds": 5}`` accepts and records the next
  one but answers only after the delay; ``{"delay_then_reject": 1, "seconds": 5,
  "status": 503}`` waits, then refuses; ``{"rate_limit": 20, "burst": 20}`` answers ``429``
  (``Retry-After: 1``, recorded with ``"fault": "rate_limit"``) to email sends over 20 a
  second; ``{"reset": true}`` drops pending faults and the rate limit;
  ``{"clear_records": true}`` empties the record file and the counters.
* ``GET /_requests`` answers ``{"count": N, "accepted": M}`` (since start or last clear).
* ``GET /_health`` answers ``200``.
* ``POST /_control`` with ``{"callbacks": {"url": U, "repeat": N, "events": [...]}}`` makes
  the provider call back, as the real ones do, after each accepted request: the SendGrid sink
  POSTs signed Event Webhook batches (``processed``, ``delivered`` by default, each batch
  ``repeat`` times) to ``U``, signed with a key pair of its own whose public key (base64 DER)
  ``GET /_webhook_key`` answers, ``delay`` seconds after the request; the SMS sink POSTs status callbacks (``sent``,
  ``delivered``) to the message's ``StatusCallback`` with its scheme and host replaced by
  ``U``, signed with ``X-Twilio-Signature`` by the auth token of the request's basic auth.
  ``{"callbacks": null}`` stops them.

Run one with ``python -m darwin_notify_assets.testing.sinks {sendgrid,sms} --port P --record FILE``,
or in-process with :func:`start_sink`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import hashlib
import hmac
import json
import logging
import re
import secrets
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit
from urllib.request import Request, urlopen

from darwin_notify_assets.domain.sms import sms_segments

logger = logging.getLogger(__name__)

SINK_KINDS = ("sendgrid", "sms", "mandrill")

SENDGRID_SEND_PATH = "/v3/mail/send"
TWILIO_MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account_sid>[^/]+)/Messages\.json$")

MAX_BODY_BYTES = 30 * 1024 * 1024
MAX_PERSONALIZATIONS = 1000
MAX_SMS_BODY_CHARS = 1600

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_E164_RE = re.compile(r"^\+[1-9]\d{6,14}$")

_TWILIO_ERROR_CODES = {
    400: 21000,
    401: 20003,
    404: 20404,
    405: 20005,
    429: 20429,
    500: 20500,
    502: 20500,
    503: 20503,
}


@dataclass(frozen=True)
class Fault:
    """One queued fault, consumed by the next send request that passes validation.

    Attributes:
        status: Status to answer with, or ``None`` to accept the request normally.
        delay_seconds: How long to wait before answering.
        retry_after: ``Retry-After`` header value sent with a ``429``.
    """

    status: int | None
    delay_seconds: float = 0.0
    retry_after: int = 1


class RateLimit:
    """A token bucket: ``rate`` requests a second, ``burst`` at once; 0 means no limit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rate = 0.0
        self.burst = 0.0
        self._tokens = 0.0
        self._at = time.monotonic()

    def set(self, rate: float, burst: float) -> None:
        with self._lock:
            self.rate, self.burst = rate, max(1.0, burst or rate)
            self._tokens, self._at = self.burst, time.monotonic()

    def allow(self) -> bool:
        with self._lock:
            if not self.rate:
                return True
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


class FaultQueue:
    """Thread-safe FIFO of faults, fed by ``POST /_control``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: collections.deque[Fault] = collections.deque()
        self.rate_limit = RateLimit()

    def configure(self, command: Mapping[str, Any]) -> None:
        """Applies one control command.

        Args:
            command: The decoded ``/_control`` JSON object.

        Raises:
            ValueError: When the command is not understood or its values are out of range.
        """
        known = {
            "reset",
            "clear_records",
            "fail",
            "status",
            "seconds",
            "retry_after",
            "accept_then_delay",
            "delay_then_reject",
            "rate_limit",
            "burst",
        }
        unknown = set(command) - known
        if unknown:
            raise ValueError(f"unknown control keys: {sorted(unknown)}")
        modes = [k for k in ("fail", "accept_then_delay", "delay_then_reject") if k in command]
        if len(modes) > 1:
            raise ValueError("give one of fail, accept_then_delay, delay_then_reject per command")
        new_faults: list[Fault] = []
        if modes:
            mode = modes[0]
            count = _non_negative_int(command[mode], mode)
            seconds = float(command.get("seconds", 0 if mode == "fail" else 5))
            if seconds < 0:
                raise ValueError("seconds must be >= 0")
            retry_after = _non_negative_int(command.get("retry_after", 1), "retry_after")
            if mode == "accept_then_delay":
                status: int | None = None
            else:
                status = _non_negative_int(command.get("status", 500), "status")
                if not 400 <= status <= 599:
                    raise ValueError("status must be a 4xx or 5xx code")
            new_faults = [Fault(status, seconds, retry_after) for _ in range(count)]
        if "rate_limit" in command or command.get("reset"):
            rate = float(command.get("rate_limit", 0))
            burst = float(command.get("burst", rate))
            if rate < 0 or burst < 0:
                raise ValueError("rate_limit and burst must be >= 0")
            self.rate_limit.set(rate, burst)
        with self._lock:
            if command.get("reset"):
                self._faults.clear()
            self._faults.extend(new_faults)

    def take(self) -> Fault | None:
        """Removes and returns the next fault, or ``None`` when none is pending."""
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def pending(self) -> list[dict[str, Any]]:
        """Returns the pending faults, oldest first, as JSON-ready dicts."""
        with self._lock:
            return [
                {"status": f.status, "seconds": f.delay_seconds, "retry_after": f.retry_after}
                for f in self._faults
            ]


class Recorder:
    """Appends one JSON line per send request to a file and keeps running counts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = path.open("a", encoding="utf-8")
        self.count = 0
        self.accepted = 0

    def record(self, entry: Mapping[str, Any]) -> None:
        """Writes one entry and flushes it, so readers in other processes see it at once.

        Args:
            entry: The JSON-serialisable record; its ``accepted`` (when given, for a provider
                that can refuse inside a 200) or else its ``status`` decides whether it counts
                as accepted.
        """
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str)
        accepted = entry.get("accepted", 200 <= int(entry.get("status", 0)) < 300)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            self.count += 1
            if accepted:
                self.accepted += 1

    def counts(self) -> dict[str, int]:
        """Returns ``{"count": ..., "accepted": ...}``."""
        with self._lock:
            return {"count": self.count, "accepted": self.accepted}

    def clear(self) -> None:
        """Empties the record file and resets the counters."""
        with self._lock:
            self._file.truncate(0)
            self._file.seek(0)
            self.count = 0
            self.accepted = 0

    def close(self) -> None:
        """Closes the record file."""
        with self._lock:
            self._file.close()


CALLBACK_EVENTS = {
    "sendgrid": ["processed", "delivered"],
    "sms": ["sent", "delivered"],
    "mandrill": ["send"],
}


class Callbacks:
    """What a sink calls back after accepting a request (see ``POST /_control``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.url: str | None = None
        self.repeat = 1
        self.events: list[str] = []
        self.delay = 0.0
        # Mandrill's webhook key (HMAC); a sink makes its own unless a test gives one.
        self.key = secrets.token_urlsafe(16)
        self._signer: Any = None
        self.sent = 0
        self.failed = 0

    def configure(self, kind: str, value: Any) -> None:
        with self._lock:
            if value is None:
                self.url = None
                return
            if not isinstance(value, dict) or not str(value.get("url", "")).startswith("http"):
                raise ValueError("callbacks must be {'url': 'http...', ...} or null")
            default = CALLBACK_EVENTS[kind]
            self.url = str(value["url"])
            if value.get("key"):
                self.key = str(value["key"])
            self.repeat = max(1, _non_negative_int(value.get("repeat", 1), "repeat"))
            self.events = [str(e) for e in value.get("events", default)]
            self.delay = float(value.get("delay", 0))

    def signer(self) -> Any:
        """The Event Webhook key pair, made on first use (needs ``cryptography``)."""
        with self._lock:
            if self._signer is None:
                from darwin_notify_assets.testing.webhook_signing import EventWebhookSigner

                self._signer = EventWebhookSigner()
            return self._signer

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        try:
            with urlopen(Request(url, data=body, headers=dict(headers), method="POST"), timeout=10):
                pass
            with self._lock:
                self.sent += 1
        except OSError as exc:  # the receiver's answer (a 403, a 503) is its business
            logger.info("callback to %s: %s", url, exc)
            with self._lock:
                self.failed += 1

    def later(self, work: Any) -> None:
        delay = self.delay

        def run() -> None:
            time.sleep(delay)
            work()

        threading.Thread(target=run, daemon=True, name="sink-callback").start()


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Twilio's request signature: HMAC-SHA1 of the URL and the sorted parameters."""
    data = url + "".join(k + params[k] for k in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class SinkServer(ThreadingHTTPServer):
    """A threading HTTP server that carries the sink's kind, recorder and fault queue."""

    daemon_threads = True
    # Bursts of concurrent client connections overflow the default backlog of 5.
    request_queue_size = 256

    def __init__(self, kind: str, address: tuple[str, int], record_path: Path) -> None:
        if kind not in SINK_KINDS:
            raise ValueError(f"unknown sink kind {kind!r}; expected one of {SINK_KINDS}")
        self.kind = kind
        self.recorder = Recorder(record_path)
        self.faults = FaultQueue()
        self.callbacks = Callbacks()
        handler: type[BaseHTTPRequestHandler]
        if kind == "mandrill":
            from darwin_notify_assets.testing.mandrill_sink import MandrillHandler

            handler = MandrillHandler
        else:
            handler = SendGridHandler if kind == "sendgrid" else SmsHandler
        super().__init__(address, handler)

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. ``http://127.0.0.1:58025``."""
        host, port = self.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}"

    def server_close(self) -> None:
        """Closes the listening socket and the record file."""
        super().server_close()
        self.recorder.close()


class _SinkHandler(BaseHTTPRequestHandler):
    """Shared plumbing: body reading, JSON/empty responses, control endpoints."""

    server: SinkServer
    protocol_version = "HTTP/1.1"
    # Without this, small responses wait for delayed ACKs (~40 ms per request).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self._read_body()
        if path == "/_health":
            self._send_json(200, {"status": "ok", "kind": self.server.kind})
        elif path == "/_requests":
            self._send_json(200, self.server.recorder.counts())
        elif path == "/_webhook_key" and self.server.kind == "sendgrid":
            self._send_json(200, {"public_key": self.server.callbacks.signer().public_key_b64})
        elif path == "/_callbacks":
            cb = self.server.callbacks
            self._send_json(200, {"url": cb.url, "sent": cb.sent, "failed": cb.failed})
        else:
            self._not_found()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self._read_body()
        if body is None:
            return
        if path == "/_control":
            self._control(body)
        else:
            self.handle_send(path, body)

    def handle_send(self, path: str, body: bytes) -> None:
        """Serves a provider request; implemented per provider."""
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """Builds the provider's error document for ``status``."""
        raise NotImplementedError

    def _control(self, body: bytes) -> None:
        try:
            command = json.loads(body or b"{}")
            if not isinstance(command, dict):
                raise ValueError("control body must be a JSON object")
            if "callbacks" in command:
                self.server.callbacks.configure(self.server.kind, command.pop("callbacks"))
            self.server.faults.configure(command)
        except (ValueError, TypeError) as exc:
            self._send_json(400, {"error": str(exc)})
            return
        if command.get("clear_records"):
            self.server.recorder.clear()
        logger.info("%s sink control: %s", self.server.kind, command)
        self._send_json(200, {"pending": self.server.faults.pending()})

    def _read_body(self) -> bytes | None:
        """Reads the whole request body so the connection stays usable for the next request.

        Returns:
            The body, or ``None`` when an error response was already sent.
        """
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            try:
                return self._read_chunked()
            except ValueError:
                self.close_connection = True
                self._send_json(400, {"error": "invalid chunked body"})
                return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            self._send_json(400, {"error": "invalid Content-Length"})
            return None
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send_json(413, {"error": "payload too large"})
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size_line = self.rfile.readline(65537)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(65537)

    def _not_found(self) -> None:
        self._send_json(
            404, self.error_body(404, f"The requested resource {self.path} was not found")
        )

    def _send_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self._send(status, data, "application/json", headers)

    def _send(
        self,
        status: int,
        data: bytes,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        try:
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if data:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. timed out during an injected delay).
            self.close_connection = True

    def _respond_with_fault(
        self, fault: Fault, entry: dict[str, Any], accepted: tuple[int, bytes, dict[str, str]]
    ) -> None:
        """Records and answers a request that a queued fault applies to.

        Args:
            fault: The fault taken from the queue.
            entry: The record for the request, without ``status``.
            accepted: Status, body and headers of the normal (accepted) answer.
        """
        if fault.status is None:
            self.server.recorder.record(
                {**entry, "status": accepted[0], "fault": "accept_then_delay"}
            )
            time.sleep(fault.delay_seconds)
            self._send(
                accepted[0], accepted[1], "application/json" if accepted[1] else None, accepted[2]
            )
            return
        time.sleep(fault.delay_seconds)
        status = fault.status
        self.server.recorder.record(
            {**entry, "status": status, "message_id": None, "fault": "reject"}
        )
        headers = {"Retry-After": str(fault.retry_after)} if status == 429 else {}
        self._send_json(status, self.error_body(status, _reason(status)), headers)

    def _base_entry(self) -> dict[str, Any]:
        return {
            "provider": self.server.kind,
            "received_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            # Tells requests that shared a kept-alive connection from new connections.
            "client_port": self.client_address[1],
        }


class SendGridHandler(_SinkHandler):
    """Serves SendGrid v3 ``POST /v3/mail/send``."""

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """Builds SendGrid's ``{"errors": [...]}`` document."""
        return {"errors": [{"message": message, "field": None, "help": None}]}

    def handle_send(self, path: str, body: bytes) -> None:
        """Validates, records and answers one mail send."""
        if path != SENDGRID_SEND_PATH:
            self._not_found()
            return
        entry = self._base_entry()
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            message = (
                "The provided authorization grant is invalid, expired, or revoked"
                if auth
                else "authorization required"
            )
            self.server.recorder.record(
                {**entry, "status": 401, "message_id": None, "error": message}
            )
            self._send_json(401, self.error_body(401, message))
            return
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            errors = [{"message": "Bad Request", "field": None, "help": None}]
            self.server.recorder.record(
                {**entry, "status": 400, "message_id": None, "errors": errors}
            )
            self._send_json(400, {"errors": errors})
            return
        entry.update(_sendgrid_summary(document))
        entry["body"] = document
        errors = validate_sendgrid_body(document)
        if errors:
            self.server.recorder.record(
                {**entry, "status": 400, "message_id": None, "errors": errors}
            )
            self._send_json(400, {"errors": errors})
            return
        if not self.server.faults.rate_limit.allow():
            self.server.recorder.record(
                {**entry, "status": 429, "message_id": None, "fault": "rate_limit"}
            )
            self._send_json(429, self.error_body(429, _reason(429)), {"Retry-After": "1"})
            return
        message_id = secrets.token_urlsafe(16)[:22]
        entry["message_id"] = message_id
        accepted = (202, b"", {"X-Message-Id": message_id})
        fault = self.server.faults.take()
        if fault is not None:
            self._respond_with_fault(fault, entry, accepted)
            return
        self.server.recorder.record({**entry, "status": 202})
        self._send(*accepted[:2], None, accepted[2])
        self._event_webhook(document, message_id)

    def _event_webhook(self, document: Any, message_id: str) -> None:
        """SendGrid's Event Webhook for an accepted send: one event per recipient and event
        type, with the message's ``custom_args``, signed, POSTed ``repeat`` times."""
        cb = self.server.callbacks
        url, events, repeat = cb.url, list(cb.events), cb.repeat
        if url is None:
            return
        signer = cb.signer()
        batch = []
        now = int(time.time())
        for p in document.get("personalizations", []):
            args = {**(document.get("custom_args") or {}), **(p.get("custom_args") or {})}
            for to in p.get("to", []):
                for kind in events:
                    batch.append(
                        {
                            **args,
                            "email": to.get("email"),
                            "event": kind,
                            "timestamp": now,
                            "sg_message_id": f"{message_id}.filter0001",
                            "sg_event_id": secrets.token_urlsafe(16),
                        }
                    )

        def deliver() -> None:
            for _ in range(repeat):
                # SendGrid may give a retried event a new sg_event_id.
                for e in batch:
                    e["sg_event_id"] = secrets.token_urlsafe(16)
                body = json.dumps(batch).encode()
                ts = str(int(time.time()))
                cb.post(
                    url,
                    body,
                    {
                        "Content-Type": "application/json",
                        "X-Twilio-Email-Event-Webhook-Signature": signer.sign(ts, body),
                        "X-Twilio-Email-Event-Webhook-Timestamp": ts,
                    },
                )

        cb.later(deliver)


class SmsHandler(_SinkHandler):
    """Serves Twilio's ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``."""

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """Builds Twilio's error document for ``status``."""
        return _twilio_error(_TWILIO_ERROR_CODES.get(status, 20500), message, status)

    def handle_send(self, path: str, body: bytes) -> None:
        """Validates, records and answers one message create."""
        match = TWILIO_MESSAGES_PATH.match(path)
        if match is None:
            self._not_found()
            return
        account_sid = match.group("account_sid")
        entry = self._base_entry()
        entry["account_sid"] = account_sid
        user = _basic_auth_user(self.headers.get("Authorization", ""))
        if user is None:
            self.server.recorder.record({**entry, "status": 401, "message_id": None})
            self._send_json(
                401,
                _twilio_error(20003, "Authenticate", 401),
                {"WWW-Authenticate": 'Basic realm="Twilio API"'},
            )
            return
        try:
            form = {
                k: v[-1] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()
            }
        except UnicodeDecodeError:
            form = {}
        to = form.get("To", "").strip()
        sender = form.get("From", "").strip()
        service_sid = form.get("MessagingServiceSid", "").strip()
        text = form.get("Body", "")
        entry.update({"to": to, "from": sender or None, "body": text, "form": form})
        error = _validate_sms(to, sender, service_sid, text)
        if error is not None:
            code, message = error
            self.server.recorder.record(
                {**entry, "status": 400, "message_id": None, "error_code": code}
            )
            self._send_json(400, _twilio_error(code, message, 400))
            return
        sid = "SM" + secrets.token_hex(16)
        entry["message_id"] = sid
        resource = _twilio_message(account_sid, sid, to, sender, service_sid, text)
        accepted: tuple[int, bytes, dict[str, str]] = (201, json.dumps(resource).encode(), {})
        fault = self.server.faults.take()
        if fault is not None:
            self._respond_with_fault(fault, entry, accepted)
            return
        self.server.recorder.record({**entry, "status": 201})
        self._send(201, accepted[1], "application/json")
        self._status_callbacks(form, sid, account_sid)

    def _status_callbacks(self, form: Mapping[str, str], sid: str, account_sid: str) -> None:
        """Twilio's status callbacks for an accepted message, to its ``StatusCallback`` (its
        scheme and host replaced by the configured URL), signed with the auth token."""
        cb = self.server.callbacks
        target, events, repeat = cb.url, list(cb.events), cb.repeat
        callback = form.get("StatusCallback", "")
        token = _basic_auth_password(self.headers.get("Authorization", ""))
        if target is None or not callback or token is None:
            return
        parts = urlsplit(callback)
        deliver_to = target.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")

        def deliver() -> None:
            for status in events:
                params = {
                    "AccountSid": account_sid,
                    "MessageSid": sid,
                    "SmsSid": sid,
                    "MessageStatus": status,
                    "SmsStatus": status,
                    "To": form.get("To", ""),
                    "From": form.get("From", ""),
                }
                headers = {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": twilio_signature(token, callback, params),
                }
                for _ in range(repeat):
                    cb.post(deliver_to, urlencode(params).encode(), headers)

        cb.later(deliver)


def validate_sendgrid_body(document: Any) -> list[dict[str, Any]]:
    """Checks a v3 mail send body the way SendGrid does, collecting every error.

    Args:
        document: The decoded JSON body.

    Returns:
        SendGrid-style error objects (``message``, ``field``, ``help``); empty when valid.
    """

    def err(field: str | None, message: str) -> dict[str, Any]:
        return {"message": message, "field": field, "help": None}

    if not isinstance(document, dict):
        return [err(None, "Bad Request")]
    errors: list[dict[str, Any]] = []
    has_template = bool(document.get("template_id"))
    personalizations = document.get("personalizations")
    all_have_subject = False
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(
            err(
                "personalizations",
                "The personalizations field is required and must have at least one "
                "personalization.",
            )
        )
    elif len(personalizations) > MAX_PERSONALIZATIONS:
        errors.append(
            err("personalizations", "The personalizations field cannot have more than 1000 items.")
        )
    else:
        all_have_subject = True
        for i, p in enumerate(personalizations):
            if not isinstance(p, dict):
                errors.append(err(f"personalizations.{i}", "Personalization must be an object."))
                all_have_subject = False
                continue
            if not (isinstance(p.get("subject"), str) and p["subject"]):
                all_have_subject = False
            to = p.get("to")
            if not isinstance(to, list) or not to:
                errors.append(
                    err(
                        f"personalizations.{i}.to",
                        "The to array is required for all personalization objects, and must "
                        "have at least one email object with a valid email address.",
                    )
                )
                continue
            for j, address in enumerate(to):
                email = address.get("email") if isinstance(address, dict) else None
                if not isinstance(email, str) or not _EMAIL_RE.match(email):
                    errors.append(
                        err(
                            f"personalizations.{i}.to.{j}.email",
                            "Does not contain a valid address.",
                        )
                    )
    sender = document.get("from")
    sender_email = sender.get("email") if isinstance(sender, dict) else None
    if not isinstance(sender_email, str) or not sender_email:
        errors.append(
            err(
                "from.email",
                "The from object must be provided for every email send. It is an object that "
                "requires the email parameter, but may also contain a name parameter.",
            )
        )
    elif not _EMAIL_RE.match(sender_email):
        errors.append(err("from.email", "The from email does not contain a valid address."))
    subject = document.get("subject")
    if not has_template and not all_have_subject and not (isinstance(subject, str) and subject):
        errors.append(
            err(
                "subject",
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
            )
        )
    content = document.get("content")
    if content is None and has_template:
        pass
    elif not isinstance(content, list) or not content:
        errors.append(
            err(
                "content",
                "Unless a valid template_id is provided, the content parameter is required. "
                "There must be at least one defined content block.",
            )
        )
    else:
        for k, block in enumerate(content):
            if (
                not isinstance(block, dict)
                or not isinstance(block.get("type"), str)
                or not block["type"]
            ):
                errors.append(
                    err(
                        f"content.{k}.type",
                        "The content type must be a string at least one character in length.",
                    )
                )
            elif not isinstance(block.get("value"), str) or not block["value"]:
                errors.append(
                    err(
                        f"content.{k}.value",
                        "The content value must be a string at least one character in length.",
                    )
                )
    return errors


def _sendgrid_summary(document: Any) -> dict[str, Any]:
    """Extracts recipients, subject and custom args from a (possibly invalid) body."""
    if not isinstance(document, dict):
        return {"to": [], "subject": None, "custom_args": {}}
    personalizations = document.get("personalizations")
    if not isinstance(personalizations, list):
        personalizations = []
    to: list[str] = []
    for p in personalizations:
        if isinstance(p, dict) and isinstance(p.get("to"), list):
            to.extend(a["email"] for a in p["to"] if isinstance(a, dict) and "email" in a)
    first = (
        personalizations[0] if personalizations and isinstance(personalizations[0], dict) else {}
    )
    subject = first.get("subject") or document.get("subject")
    custom_args: dict[str, Any] = {}
    for source in (document.get("custom_args"), first.get("custom_args")):
        if isinstance(source, dict):
            custom_args.update(source)
    return {"to": to, "subject": subject, "custom_args": custom_args}


def _validate_sms(to: str, sender: str, service_sid: str, text: str) -> tuple[int, str] | None:
    """Returns Twilio's ``(code, message)`` for an invalid message create, else ``None``."""
    if not to:
        return 21604, "A 'To' phone number is required."
    if not _E164_RE.match(to):
        return 21211, f"The 'To' number {to} is not a valid phone number."
    if not sender and not service_sid:
        return 21603, "A 'From' phone number is required."
    if not text:
        return 21602, "Message body is required."
    if len(text) > MAX_SMS_BODY_CHARS:
        return 21617, "The concatenated message body exceeds the 1600 character limit."
    return None


def _basic_auth_user(header: str) -> str | None:
    """Returns the user name of a Basic ``Authorization`` header with a non-empty password."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = (
            base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user if sep and user and password else None


def _basic_auth_password(header: str) -> str | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        _, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return password if sep and password else None


def _twilio_message(
    account_sid: str, sid: str, to: str, sender: str, service_sid: str, text: str
) -> dict[str, Any]:
    now = format_datetime(datetime.now(UTC).replace(microsecond=0))
    uri = f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json"
    return {
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": text,
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": sender or None,
        "messaging_service_sid": service_sid or None,
        "num_media": "0",
        "num_segments": str(sms_segments(text)[1]),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued" if sender else "accepted",
        "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
        "to": to,
        "uri": uri,
    }


def _twilio_error(code: int, message: str, status: int) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


def start_sink(
    kind: str, host: str = "127.0.0.1", port: int = 0, record_path: str | Path = "sink.jsonl"
) -> tuple[SinkServer, threading.Thread]:
    """Starts a sink in a background thread of the calling process.

    Args:
        kind: ``"sendgrid"``, ``"sms"`` or ``"mandrill"`` (``testing/mandrill_sink.py``).
        host: Address to listen on.
        port: Port to listen on; ``0`` picks a free one (see ``server.url``).
        record_path: JSONL file the requests are appended to.

    Returns:
        The server and the thread serving it; stop with ``server.shutdown()`` then
        ``server.server_close()``.
    """
    server = SinkServer(kind, (host, port), Path(record_path))
    thread = threading.Thread(
        target=server.serve_forever, name=f"{kind}-sink", kwargs={"poll_interval": 0.2}, daemon=True
    )
    thread.start()
    logger.info("%s sink listening on %s, recording to %s", kind, server.url, record_path)
    return server, thread


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: serves one sink until SIGTERM or SIGINT.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The process exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m darwin_notify_assets.testing.sinks",
        description="Local SendGrid, Twilio and Mandrill-compatible HTTP sinks that record every request.",
    )
    parser.add_argument("kind", choices=SINK_KINDS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", type=Path, required=True, help="JSONL file to append to")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server, thread = start_sink(args.kind, args.host, args.port, args.record)
    while not stop.wait(1.0):
        if not thread.is_alive():
            logger.error("%s sink thread died", args.kind)
            return 1
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
