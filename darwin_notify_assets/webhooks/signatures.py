"""Who sent a webhook: the providers' signatures, and our own unsubscribe tokens.

SendGrid signs ``timestamp + raw body`` with ECDSA P-256 / SHA-256 and publishes the public key
(base64 DER) in its settings. Twilio signs the URL it called followed by the POST parameters
sorted by name (name then value, no separators) with HMAC-SHA1 keyed by the auth token. An
unsubscribe token names one of our messages (its recipient and schedule are the message's)
and is signed with HMAC-SHA256; it carries no address or name.
"""

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable

from darwin_notify_assets.errors import ConfigurationError

SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
TWILIO_SIGNATURE = "X-Twilio-Signature"


class SignatureRefused(Exception):
    """The request is not provably from the provider (forged, stale or unsigned)."""


class SendGridVerifier:
    """Checks SendGrid Event Webhook signatures against the configured public key."""

    def __init__(
        self,
        public_key_b64: str,
        tolerance_seconds: int = 300,
        clock: Callable[[], float] = time.time,
    ):
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_der_public_key

        try:
            key = load_der_public_key(base64.b64decode(public_key_b64, validate=True))
        except (ValueError, binascii.Error) as exc:
            raise ConfigurationError(
                "DARWIN_NOTIFY_SENDGRID_WEBHOOK_PUBLIC_KEY is not a base64 DER public key"
            ) from exc
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise ConfigurationError(
                "DARWIN_NOTIFY_SENDGRID_WEBHOOK_PUBLIC_KEY is not an ECDSA P-256 public key"
            )
        self._key = key
        self.tolerance = tolerance_seconds
        self.clock = clock

    def verify(self, signature: str | None, timestamp: str | None, body: bytes) -> None:
        """Raise SignatureRefused unless ``signature`` signs ``timestamp + body`` with our
        key and ``timestamp`` is within the tolerance of now."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        if not signature or not timestamp:
            raise SignatureRefused("unsigned: signature or timestamp header missing")
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise SignatureRefused("the timestamp header is not a number") from None
        if abs(self.clock() - sent_at) > self.tolerance:
            raise SignatureRefused(f"stale: signed {int(self.clock() - sent_at)} s ago")
        try:
            der = base64.b64decode(signature, validate=True)
            self._key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, binascii.Error):
            raise SignatureRefused("the signature does not match") from None


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """Twilio's ``X-Twilio-Signature`` of a POST to ``url`` with these form parameters."""
    data = url + "".join(k + v for k, v in sorted(params, key=lambda kv: kv[0]))
    digest = hmac.new(auth_token.encode(), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify_twilio(
    auth_token: str, url: str, params: Iterable[tuple[str, str]], signature: str | None
) -> None:
    if not signature:
        raise SignatureRefused(f"unsigned: no {TWILIO_SIGNATURE} header")
    expected = twilio_signature(auth_token, url, params)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise SignatureRefused("the signature does not match")


class UnsubscribeTokens:
    """Opaque, signed tokens naming a message: ``<id>.<mac>`` in URL-safe base64."""

    _CONTEXT = b"darwin-notify unsubscribe v1\x00"

    def __init__(self, secret: str):
        if len(secret) < 16:
            raise ConfigurationError(
                "DARWIN_NOTIFY_UNSUBSCRIBE_SECRET must be set, at least 16 characters"
            )
        self._secret = secret.encode()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, self._CONTEXT + payload, hashlib.sha256).digest()[:16]

    def token(self, message_id: int) -> str:
        payload = message_id.to_bytes(8, "big")
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def message_id(self, token: str) -> int:
        """The message a token names; raises SignatureRefused if it was not signed by us."""
        try:
            head, mac = token.split(".")
            payload, given = _unb64(head), _unb64(mac)
        except (ValueError, binascii.Error):
            raise SignatureRefused("not an unsubscribe token") from None
        if len(payload) != 8 or not hmac.compare_digest(self._mac(payload), given):
            raise SignatureRefused("the unsubscribe token's signature does not match")
        return int.from_bytes(payload, "big")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UnsubscribeLinks:
    """RFC 8058 one-click unsubscribe headers for a message, served by the webhook service."""

    def __init__(self, public_url: str, tokens: UnsubscribeTokens, mailto: str = ""):
        if not public_url.startswith(("https://", "http://")):
            raise ConfigurationError(
                "DARWIN_NOTIFY_WEBHOOK_PUBLIC_URL must be an http(s) URL for unsubscribe links"
            )
        self.base = public_url.rstrip("/")
        self.tokens = tokens
        self.mailto = mailto

    def url(self, message_id: int) -> str:
        return f"{self.base}/u/{self.tokens.token(message_id)}"

    def headers(self, message_id: int) -> dict[str, str]:
        links = f"<{self.url(message_id)}>"
        if self.mailto:
            links += f", <mailto:{self.mailto}?subject=unsubscribe>"
        return {
            "List-Unsubscribe": links,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
