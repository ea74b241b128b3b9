"""Mandrill's message event webhooks: verified, reduced to our delivery vocabulary, stored.

Mandrill POSTs a form with one field, ``mandrill_events``: a JSON array of up to 1000 events.
It signs each request in ``X-Mandrill-Signature``: base64 of the HMAC-SHA1, keyed by the
webhook's key, of the webhook's URL exactly as configured followed by each POST field's name
and value, sorted by name. The signature covers no timestamp, so a replayed request verifies:
deduplication makes a replay change nothing. Before it saves a webhook Mandrill checks the
URL with a HEAD request, answered 200 here.
"""

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from darwin_notify_assets.delivery.mandrill import PROVIDER_ID_PREFIX
from darwin_notify_assets.domain.delivery import DeliveryEvent, DeliveryStatus, dedup_key
from darwin_notify_assets.storage.store import NotificationStore
from darwin_notify_assets.webhooks.signatures import SignatureRefused, twilio_signature

log = logging.getLogger(__name__)

MANDRILL_PATH = "/webhooks/mandrill"
MANDRILL_SIGNATURE = "X-Mandrill-Signature"

#: Mandrill's message events. ``send``: "message has been sent successfully" (Mandrill has no
#: later delivery event); a soft bounce ends the message like a hard one (Mandrill puts the
#: address on its rejection denylist for a while); ``reject``: Mandrill did not send it.
MANDRILL_EVENTS: Mapping[str, DeliveryStatus] = {
    "send": DeliveryStatus.DELIVERED,
    "deferral": DeliveryStatus.DEFERRED,
    "hard_bounce": DeliveryStatus.BOUNCED,
    "soft_bounce": DeliveryStatus.BOUNCED,
    "open": DeliveryStatus.OPENED,
    "click": DeliveryStatus.CLICKED,
    "spam": DeliveryStatus.SPAM_REPORT,
    "unsub": DeliveryStatus.UNSUBSCRIBED,
    "reject": DeliveryStatus.DROPPED,
}


def mandrill_signature(key: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """``X-Mandrill-Signature`` of a POST to ``url`` with these form fields (the same
    construction as Twilio's: the URL, then name + value of each field sorted by name)."""
    return twilio_signature(key, url, params)


class MandrillVerifier:
    """Checks ``X-Mandrill-Signature`` with the webhook's key against the URL Mandrill was
    given (``DARWIN_NOTIFY_WEBHOOK_PUBLIC_URL`` + ``/webhooks/mandrill``)."""

    def __init__(self, key: str, url: str):
        self._key = key
        self.url = url

    def verify(self, params: list[tuple[str, str]], signature: str | None) -> None:
        if not signature:
            raise SignatureRefused(f"unsigned: no {MANDRILL_SIGNATURE} header")
        expected = mandrill_signature(self._key, self.url, params)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise SignatureRefused("the signature does not match")


def _our_id(value: Any) -> int | None:
    try:
        n = int(str(value))
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def mandrill_event(raw: Mapping[str, Any]) -> DeliveryEvent | None:
    """One element of ``mandrill_events``; None for what is not a tracked message event (sync
    and inbound events, unknown types).

    Mandrill gives an event no id of its own, and a retried POST carries the same events. The
    key is our message id (Mandrill's ``_id`` of the message if the metadata lacks it), the
    event, its ``ts`` (when it happened, the same in every retry), and what tells two events of
    one type and second apart: the URL of a click, the number of SMTP attempts of a deferral.
    Two opens of one message in the same second become one, which the delivery state (the
    highest rank seen) cannot tell from two.
    """
    kind = str(raw.get("event") or "")
    status = MANDRILL_EVENTS.get(kind)
    if status is None:
        return None
    found = raw.get("msg")
    msg: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    found = msg.get("metadata")
    metadata: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    message_id = _our_id(metadata.get("darwin_notify_message_id"))
    mandrill_id = str(msg.get("_id") or raw.get("_id") or "") or None
    provider_id = PROVIDER_ID_PREFIX + mandrill_id if mandrill_id else None
    ts = _our_id(raw.get("ts"))
    smtp_events = msg.get("smtp_events")
    attempts = len(smtp_events) if kind == "deferral" and isinstance(smtp_events, list) else None
    url = raw.get("url") if kind == "click" else None
    key = dedup_key(
        "mandrill",
        message_id if message_id is not None else provider_id,
        kind,
        ts,
        url,
        attempts,
    )
    # A category, never the SMTP diagnostic (which may quote the address).
    detail_parts = [msg.get("bounce_description"), msg.get("state")]
    detail = " | ".join(str(p) for p in detail_parts if p not in (None, ""))[:500] or None
    address = str(msg.get("email") or "").strip().lower() or None
    return DeliveryEvent(
        key,
        "mandrill",
        "email",
        kind,
        status,
        message_id,
        provider_id,
        ts,
        detail,
        address,
    )


def parse_mandrill_events(params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The events of a verified request; raises ValueError if ``mandrill_events`` is missing
    or is not a JSON array of objects."""
    values = dict(params)
    if "mandrill_events" not in values:
        raise ValueError("no mandrill_events field")
    raw = json.loads(values["mandrill_events"])
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise ValueError("mandrill_events is not a JSON array of events")
    return raw


Stored = Callable[[Callable[[NotificationStore], Any]], Awaitable[Any]]


def mandrill_endpoint(
    verifier: MandrillVerifier | None,
    stored: Stored,
    refused: Callable[[SignatureRefused], Response],
    unavailable: Callable[[str, Exception], Response],
) -> Callable[[Request], Awaitable[Response]]:
    """The ``/webhooks/mandrill`` handler: HEAD answers 200 (Mandrill's check of the URL); a
    POST is verified, then its events are committed to the store before the 200."""

    async def endpoint(request: Request) -> Response:
        if verifier is None:
            return JSONResponse({"error": "the Mandrill webhook is not configured"}, 404)
        if request.method == "HEAD":
            return Response(status_code=200)
        body = (await request.body()).decode("utf-8", errors="replace")
        params = parse_qsl(body, keep_blank_values=True)
        try:
            verifier.verify(params, request.headers.get(MANDRILL_SIGNATURE))
        except SignatureRefused as exc:
            return refused(exc)
        try:
            raw = parse_mandrill_events(params)
        except ValueError as exc:
            return JSONResponse({"error": f"bad event batch: {exc}"}, status_code=400)
        events = [e for e in (mandrill_event(r) for r in raw) if e is not None]
        try:
            counts = await stored(lambda store: store.record_delivery_events(events))
        except Exception as exc:  # noqa: BLE001 - Mandrill must retry
            return unavailable("the events", exc)
        return JSONResponse({"received": len(raw), **counts})

    return endpoint
