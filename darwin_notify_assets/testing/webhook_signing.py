"""The SendGrid sink's Event Webhook signing key, the way SendGrid signs: ECDSA P-256 over
``timestamp + body``, the public key published as base64 DER.

Kept out of ``sinks.py``, which imports only the standard library: the sink imports this
module only once event callbacks are configured.
"""

import base64

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


class EventWebhookSigner:
    """A key pair of its own, made when the sink first needs it."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    @property
    def public_key_b64(self) -> str:
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def sign(self, timestamp: str, body: bytes) -> str:
        signature = self._key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode()
