"""A local stand-in for Mailchimp Transactional (Mandrill), served by the sinks' server.

``POST /api/1.0/messages/send`` (also ``messages/send.json``, as older clients call it): the
API key in the JSON body (missing: ``401 Invalid_Key``), ``message`` with ``from_email`` and
``to`` (missing or malformed: ``400 ValidationError``), answered ``200`` with one status per
recipient: ``sent`` with an ``_id``, or ``invalid`` for an address that is not one. Errors are
Mandrill's ``{"status": "error", "code": ..., "name": ..., "message": ...}``.

Besides the faults every sink takes (``testing/sinks.py``: ``fail``, ``accept_then_delay``,
``delay_then_reject``), ``POST /_control`` takes ``{"recipient_status": "rejected",
"reject_reason": "unsigned", "times": N}``: the next N valid sends answer 200 with that status.

With ``{"callbacks": {"url": U, "repeat": N, "events": [...], "key": K}}`` the sink POSTs, after
each accepted send, Mandrill's webhook (a form with ``mandrill_events``, events ``send`` by
default, with the message's ``metadata``) to ``U``, signed in ``X-Mandrill-Signature`` with the
webhook key over ``U`` and the form's fields; ``GET /_webhook_key`` answers ``{"key": K}``
(the sink's own unless one was given). A rejected send calls back a ``reject`` event when the
events list it.

Run with ``python -m darwin_notify_assets.testing.sinks mandrill --port P --record FILE``.
"""

import collections
import json
import secrets
import threading
import time
import weakref
from typing import Any
from urllib.parse import urlencode, urlsplit

# Standard library only, like every sink: the services start them without the project's venv.
from darwin_notify_assets.testing.sinks import (
    _EMAIL_RE,
    SinkServer,
    _SinkHandler,
    twilio_signature,
)

#: Mandrill signs like Twilio: HMAC-SHA1 over the URL and the sorted fields, base64.
MANDRILL_SIGNATURE = "X-Mandrill-Signature"

SEND_PATHS = ("/api/1.0/messages/send", "/api/1.0/messages/send.json")
RECIPIENT_STATUSES = ("sent", "queued", "scheduled", "rejected", "invalid")
ACCEPTED = ("sent", "queued", "scheduled")

_ERROR_NAMES = {400: "ValidationError", 401: "Invalid_Key", 404: "Unknown_Message"}


class _StatusQueue:
    """Recipient statuses queued by ``/_control`` for the next sends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: collections.deque[tuple[str, str | None]] = collections.deque()

    def add(self, status: str, reason: str | None, times: int) -> None:
        with self._lock:
            self._queue.extend([(status, reason)] * times)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def take(self) -> tuple[str, str | None] | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None


_QUEUES: "weakref.WeakKeyDictionary[SinkServer, _StatusQueue]" = weakref.WeakKeyDictionary()
_QUEUES_LOCK = threading.Lock()


class MandrillHandler(_SinkHandler):
    """Serves Mandrill's ``messages/send``."""

    def _statuses(self) -> _StatusQueue:
        with _QUEUES_LOCK:
            return _QUEUES.setdefault(self.server, _StatusQueue())

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """Mandrill's error document."""
        name = _ERROR_NAMES.get(status, "GeneralError" if status >= 500 else "ValidationError")
        return {
            "status": "error",
            "code": -1 if status == 401 else -2,
            "name": name,
            "message": message,
        }

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/_webhook_key":
            self._read_body()
            self._send_json(200, {"key": self.server.callbacks.key})
            return
        super().do_GET()

    def _control(self, body: bytes) -> None:
        try:
            command = json.loads(body or b"{}")
            if not isinstance(command, dict):
                raise ValueError("control body must be a JSON object")
            status = command.pop("recipient_status", None)
            reason = command.pop("reject_reason", None)
            times = command.pop("times", 1)
            if status is not None:
                if status not in RECIPIENT_STATUSES:
                    raise ValueError(f"recipient_status must be one of {RECIPIENT_STATUSES}")
                if not isinstance(times, int) or times < 0:
                    raise ValueError("times must be a non-negative integer")
                self._statuses().add(str(status), str(reason) if reason else None, times)
            if command.get("reset"):
                self._statuses().clear()
        except (ValueError, TypeError) as exc:
            self._send_json(400, {"error": str(exc)})
            return
        super()._control(json.dumps(command).encode())

    def _error(self, entry: dict[str, Any], status: int, message: str) -> None:
        self.server.recorder.record(
            {**entry, "status": status, "message_id": None, "error": message}
        )
        self._send_json(status, self.error_body(status, message))

    def handle_send(self, path: str, body: bytes) -> None:
        """Validates, records and answers one ``messages/send``."""
        if path not in SEND_PATHS:
            self._not_found()
            return
        entry = self._base_entry()
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            self._error(entry, 400, "You must specify a key value")
            return
        if not isinstance(document, dict):
            self._error(entry, 400, "Validation error: the body must be a JSON object")
            return
        if not isinstance(document.get("key"), str) or not document["key"].strip():
            self._error(entry, 401, "Invalid API key")
            return
        message = document.get("message")
        if not isinstance(message, dict):
            self._error(entry, 400, 'Validation error: {"message":"Please enter an array"}')
            return
        to = message.get("to")
        entry.update(
            {
                "to": [t.get("email") for t in to if isinstance(t, dict)]
                if isinstance(to, list)
                else [],
                "subject": message.get("subject"),
                "metadata": message.get("metadata") or {},
                "headers": message.get("headers") or {},
                # The request without its key: the record file is no place for a secret.
                "body": {k: v for k, v in document.items() if k != "key"},
            }
        )
        sender = message.get("from_email")
        if not isinstance(sender, str) or not _EMAIL_RE.match(sender):
            self._error(
                entry,
                400,
                'Validation error: {"message":{"from_email":"An email address must contain a single @"}}',
            )
            return
        if not isinstance(to, list) or not to or not all(isinstance(t, dict) for t in to):
            self._error(entry, 400, 'Validation error: {"message":{"to":"Please enter an array"}}')
            return
        queued = self._statuses().take()
        results = []
        for t in to:
            email = str(t.get("email") or "")
            result: dict[str, Any] = {"email": email, "_id": secrets.token_hex(16)}
            if not _EMAIL_RE.match(email):
                result.update(status="invalid", reject_reason=None)
            elif queued is not None:
                result.update(status=queued[0], reject_reason=queued[1])
            else:
                result.update(status="sent", reject_reason=None)
            results.append(result)
        accepted = any(r["status"] in ACCEPTED for r in results)
        entry.update(
            {
                "message_id": results[0]["_id"] if accepted else None,
                "recipient_status": [r["status"] for r in results],
                "accepted": accepted,
            }
        )
        answer: tuple[int, bytes, dict[str, str]] = (200, json.dumps(results).encode(), {})
        fault = self.server.faults.take()
        if fault is not None:
            self._respond_with_fault(fault, entry, answer)
            return
        self.server.recorder.record({**entry, "status": 200})
        self._send(200, answer[1], "application/json")
        self._webhooks(message, results)

    def _webhooks(self, message: dict[str, Any], results: list[dict[str, Any]]) -> None:
        """Mandrill's message webhook for the answered recipients, signed, POSTed ``repeat``
        times: the configured events for an accepted one, ``reject`` for a rejected one."""
        cb = self.server.callbacks
        url, kinds, repeat, key = cb.url, list(cb.events), cb.repeat, cb.key
        if url is None:
            return
        now = int(time.time())
        events = []
        for r in results:
            if r["status"] in ACCEPTED:
                wanted = [k for k in kinds if k != "reject"]
            elif r["status"] == "rejected" and "reject" in kinds:
                wanted = ["reject"]
            else:
                wanted = []
            for kind in wanted:
                event: dict[str, Any] = {
                    "event": kind,
                    "_id": r["_id"],
                    "ts": now,
                    "msg": {
                        "_id": r["_id"],
                        "ts": now,
                        "email": r["email"],
                        "sender": message.get("from_email"),
                        "subject": message.get("subject"),
                        "state": "rejected" if kind == "reject" else "sent",
                        "metadata": message.get("metadata") or {},
                        "tags": message.get("tags") or [],
                    },
                }
                if kind == "click":
                    event["url"] = "https://example.com/listing"
                events.append(event)
        if not events:
            return
        params = {"mandrill_events": json.dumps(events)}
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            MANDRILL_SIGNATURE: twilio_signature(key, url, params),
        }

        def deliver() -> None:
            for _ in range(repeat):
                cb.post(url, urlencode(params).encode(), headers)

        cb.later(deliver)
