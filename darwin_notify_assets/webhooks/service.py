"""``darwin-notify webhooks``: the webhook service built from the settings, run by uvicorn."""

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette

from darwin_notify_assets.config import (
    MANDRILL_WEBHOOK_KEY_ENV,
    STORE_PASSWORD_ENV,
    TWILIO_AUTH_TOKEN_ENV,
    UNSUBSCRIBE_SECRET_ENV,
    Settings,
)
from darwin_notify_assets.errors import ConfigurationError
from darwin_notify_assets.storage.store import NotificationStore
from darwin_notify_assets.webhooks.app import StorePool, WebhookConfig, create_app
from darwin_notify_assets.webhooks.mandrill import MANDRILL_PATH, MandrillVerifier
from darwin_notify_assets.webhooks.signatures import SendGridVerifier, UnsubscribeTokens

log = logging.getLogger(__name__)


def webhook_config(settings: Settings) -> WebhookConfig:
    """What the service verifies with; each provider's endpoint is on only when configured."""
    secret = os.environ.get(UNSUBSCRIBE_SECRET_ENV)
    token = os.environ.get(TWILIO_AUTH_TOKEN_ENV)
    mandrill_key = os.environ.get(MANDRILL_WEBHOOK_KEY_ENV)
    if (token or secret or mandrill_key) and not settings.webhook_public_url:
        raise ConfigurationError(
            "DARWIN_NOTIFY_WEBHOOK_PUBLIC_URL must be set: Twilio and Mandrill sign the URL "
            "they called, and unsubscribe links start with it"
        )
    return WebhookConfig(
        public_url=settings.webhook_public_url,
        sendgrid=SendGridVerifier(
            settings.sendgrid_webhook_public_key, settings.webhook_tolerance_seconds
        )
        if settings.sendgrid_webhook_public_key
        else None,
        twilio_auth_token=token or None,
        unsubscribe=UnsubscribeTokens(secret) if secret else None,
        sms_help_answer=settings.sms_help_answer,
        mandrill=MandrillVerifier(
            mandrill_key, settings.webhook_public_url.rstrip("/") + MANDRILL_PATH
        )
        if mandrill_key
        else None,
    )


def build_app(
    settings: Settings,
    pool_size: int = 8,
    open_store: Callable[[], NotificationStore] | None = None,
) -> tuple[Starlette, StorePool]:
    """The app and its store connections; ``open_store`` overrides how one is opened."""
    if open_store is None:

        def open_store() -> NotificationStore:
            return NotificationStore.open(settings.store_url, password_env=STORE_PASSWORD_ENV)

    first = open_store()
    first.ensure_schema()
    first.close()
    size = 1 if settings.store_url.startswith("sqlite") else pool_size
    pool = StorePool(open_store, size)
    return create_app(pool, webhook_config(settings)), pool


def serve(settings: Settings, host: str, port: int) -> None:
    app, pool = build_app(settings)
    try:
        # uvicorn's own signal handling drains requests in flight on SIGTERM.
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
    finally:
        pool.close()


@dataclass
class RunningService:
    """The service on a free port in a thread of this process (tests, the demo)."""

    settings: Settings
    host: str = "127.0.0.1"
    port: int = 0
    open_store: Callable[[], NotificationStore] | None = None
    _server: uvicorn.Server | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "RunningService":
        app, self._pool = build_app(self.settings, open_store=self.open_store)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the webhook service did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._pool.close()
