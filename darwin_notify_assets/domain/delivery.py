"""The delivery state: what a provider's events say happened to a message after it was sent.

Events arrive repeated and in any order. Each maps to one ``DeliveryStatus`` with a rank; the
message keeps the highest rank seen, so a late ``processed`` never hides a ``delivered`` and
nothing moves a bounce back. ``docs/guarantees.md`` explains the deduplication key.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class DeliveryStatus(StrEnum):
    """Mirror of the ``message.delivery_status`` column."""

    PROCESSED = "processed"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    SPAM_REPORT = "spam_report"
    BOUNCED = "bounced"
    DROPPED = "dropped"


#: Precedence: a message shows the highest rank of its events. Opened and clicked imply
#: delivered; a spam report or an unsubscribe follows delivery; bounced and dropped are final.
RANK: Mapping[DeliveryStatus, int] = {
    DeliveryStatus.PROCESSED: 10,
    DeliveryStatus.DEFERRED: 20,
    DeliveryStatus.DELIVERED: 30,
    DeliveryStatus.OPENED: 40,
    DeliveryStatus.CLICKED: 50,
    DeliveryStatus.UNSUBSCRIBED: 60,
    DeliveryStatus.SPAM_REPORT: 70,
    DeliveryStatus.BOUNCED: 90,
    DeliveryStatus.DROPPED: 90,
}

#: Delivery statuses that put the address on the suppression list, with the reason kept.
SUPPRESSING: Mapping[DeliveryStatus, str] = {
    DeliveryStatus.BOUNCED: "the provider reported a bounce",
    DeliveryStatus.DROPPED: "the provider dropped a message to this address",
    DeliveryStatus.SPAM_REPORT: "the recipient reported a message as spam",
    DeliveryStatus.UNSUBSCRIBED: "the recipient unsubscribed through the provider",
}

SENDGRID_EVENTS: Mapping[str, DeliveryStatus] = {
    "processed": DeliveryStatus.PROCESSED,
    "deferred": DeliveryStatus.DEFERRED,
    "delivered": DeliveryStatus.DELIVERED,
    "open": DeliveryStatus.OPENED,
    "click": DeliveryStatus.CLICKED,
    "bounce": DeliveryStatus.BOUNCED,
    "dropped": DeliveryStatus.DROPPED,
    "spamreport": DeliveryStatus.SPAM_REPORT,
    "unsubscribe": DeliveryStatus.UNSUBSCRIBED,
    "group_unsubscribe": DeliveryStatus.UNSUBSCRIBED,
}

#: Twilio's MessageStatus values of a status callback. ``failed``: never sent by the gateway;
#: ``undelivered``: the carrier could not deliver it.
SMS_STATUSES: Mapping[str, DeliveryStatus] = {
    "accepted": DeliveryStatus.PROCESSED,
    "queued": DeliveryStatus.PROCESSED,
    "sending": DeliveryStatus.PROCESSED,
    "sent": DeliveryStatus.PROCESSED,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.OPENED,
    "undelivered": DeliveryStatus.BOUNCED,
    "failed": DeliveryStatus.DROPPED,
}

#: Twilio's default opt-out and opt-in keywords (the whole message, any case).
OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
)
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})


@dataclass(frozen=True)
class DeliveryEvent:
    """One provider event, reduced to what the store keeps (no address, no body)."""

    dedup_key: str
    provider: str
    channel: str
    event_type: str
    delivery_status: DeliveryStatus
    message_id: int | None
    provider_message_id: str | None
    occurred_at: int | None
    detail: str | None
    address: str | None = None


def dedup_key(*parts: Any) -> str:
    """SHA-256 of the parts that make an event the same event, whatever its retry."""
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _our_id(value: Any) -> int | None:
    try:
        n = int(str(value))
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def sendgrid_event(raw: Mapping[str, Any]) -> DeliveryEvent | None:
    """One element of a SendGrid Event Webhook POST; None for an event type not tracked.

    The key is (our message id, event, timestamp, and what distinguishes two events of the
    same type and second: the attempt and response of a deferral or bounce, the URL of a
    click), not ``sg_event_id``, which SendGrid may change when it retries a POST.
    """
    event = str(raw.get("event") or "")
    status = SENDGRID_EVENTS.get(event)
    if status is None:
        return None
    message_id = _our_id(raw.get("darwin_notify_message_id"))
    timestamp = _our_id(raw.get("timestamp"))
    sg_message_id = str(raw.get("sg_message_id") or "") or None
    detail_parts = [raw.get("attempt"), raw.get("response"), raw.get("reason"), raw.get("url")]
    detail = " | ".join(str(p) for p in detail_parts if p not in (None, ""))[:500] or None
    key = dedup_key(
        "sendgrid",
        message_id if message_id is not None else sg_message_id,
        event,
        timestamp,
        raw.get("attempt"),
        raw.get("response"),
        raw.get("url"),
    )
    address = str(raw.get("email") or "").strip().lower() or None
    return DeliveryEvent(
        key,
        "sendgrid",
        "email",
        event,
        status,
        message_id,
        sg_message_id,
        timestamp,
        detail,
        address,
    )


def sms_status_event(params: Mapping[str, str], message_id: int | None) -> DeliveryEvent | None:
    """A Twilio status callback; None for a status not tracked. Twilio sends each status of a
    message once and retries the same parameters, so (sid, status, error code) is the key."""
    raw_status = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
    status = SMS_STATUSES.get(raw_status)
    if status is None:
        return None
    sid = params.get("MessageSid") or params.get("SmsSid") or None
    error = params.get("ErrorCode") or None
    key = dedup_key("sms", sid or message_id, raw_status, error)
    address = params.get("To") or None
    return DeliveryEvent(
        key,
        "sms",
        "sms",
        raw_status,
        status,
        message_id,
        sid,
        None,
        f"error code {error}" if error else None,
        address,
    )


def keyword(body: str) -> str:
    """The keyword of an inbound SMS: its whole text, trimmed, upper case."""
    return " ".join(body.split()).upper().rstrip(".!")
