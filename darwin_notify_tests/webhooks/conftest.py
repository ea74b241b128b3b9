"""The webhook service on a free port, on a SQLite store, with the providers' test keys."""

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from darwin_notify_assets.config import (
    TWILIO_AUTH_TOKEN_ENV,
    UNSUBSCRIBE_SECRET_ENV,
    Settings,
)
from darwin_notify_assets.storage.store import NotificationStore
from darwin_notify_assets.webhooks.service import RunningService
from darwin_notify_assets.webhooks.signatures import (
    SENDGRID_SIGNATURE,
    SENDGRID_TIMESTAMP,
    TWILIO_SIGNATURE,
    twilio_signature,
)

PUBLIC_URL = "https://hooks.example.test"
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
UNSUBSCRIBE_SECRET = "test-unsubscribe-secret-0123456789"


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@dataclass
class Answer:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> Answer:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return Answer(r.status, r.read(), dict(r.headers))
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.read(), dict(e.headers))


@dataclass
class Hooks:
    service: RunningService
    key: ec.EllipticCurvePrivateKey
    store: NotificationStore

    def sendgrid(
        self,
        events: Sequence[Mapping[str, Any]],
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        timestamp: int | None = None,
        signed: bool = True,
        body: bytes | None = None,
    ) -> Answer:
        raw = body if body is not None else json.dumps(list(events)).encode()
        ts = str(int(time.time()) if timestamp is None else timestamp)
        signature = (key or self.key).sign(ts.encode() + raw, ec.ECDSA(hashes.SHA256()))
        headers = {"Content-Type": "application/json"}
        if signed:
            headers[SENDGRID_SIGNATURE] = base64.b64encode(signature).decode()
            headers[SENDGRID_TIMESTAMP] = ts
        if body is not None:
            # a body other than the one signed
            signature = (key or self.key).sign(
                ts.encode() + json.dumps(list(events)).encode(), ec.ECDSA(hashes.SHA256())
            )
            headers[SENDGRID_SIGNATURE] = base64.b64encode(signature).decode()
        return http("POST", self.service.url + "/webhooks/sendgrid", raw, headers)

    def twilio(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        token: str = AUTH_TOKEN,
        signed: bool = True,
    ) -> Answer:
        pairs = list(params.items())
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if signed:
            headers[TWILIO_SIGNATURE] = twilio_signature(token, PUBLIC_URL + path, pairs)
        return http("POST", self.service.url + path, urlencode(pairs).encode(), headers)


def make_settings(store_url: str, key: ec.EllipticCurvePrivateKey, home: Path) -> Settings:
    return Settings(
        home=str(home),
        store_url=store_url,
        webhook_public_url=PUBLIC_URL,
        sendgrid_webhook_public_key=public_key_b64(key),
    )


@pytest.fixture
def hook_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TWILIO_AUTH_TOKEN_ENV, AUTH_TOKEN)
    monkeypatch.setenv(UNSUBSCRIBE_SECRET_ENV, UNSUBSCRIBE_SECRET)


@pytest.fixture
def hooks(tmp_path: Path, store: NotificationStore, hook_env: None) -> Iterator[Hooks]:
    key = ec.generate_private_key(ec.SECP256R1())
    service = RunningService(
        make_settings(f"sqlite:///{tmp_path / 'store.db'}", key, tmp_path)
    ).start()
    try:
        yield Hooks(service, key, store)
    finally:
        service.stop()
