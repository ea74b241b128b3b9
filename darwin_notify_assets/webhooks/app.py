"""The webhook service: provider events, SMS replies and one-click unsubscribe.

Built on Starlette and served by uvicorn (see ``service.py``). Every request it answers with a
2xx has been committed to the store first; when the store cannot take it the answer is a 503,
so the provider retries. It keeps no state of its own, so any number of instances can stand
behind a load balancer: deduplication is the store's unique key on ``delivery_event``.
"""

import html
import json
import logging
import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from darwin_notify_assets.domain.delivery import (
    HELP_KEYWORDS,
    OPT_IN_KEYWORDS,
    OPT_OUT_KEYWORDS,
    keyword,
    sendgrid_event,
    sms_status_event,
)
from darwin_notify_assets.domain.privacy import mask_email, mask_phone
from darwin_notify_assets.storage.store import NotificationStore
from darwin_notify_assets.webhooks.mandrill import (
    MANDRILL_PATH,
    MandrillVerifier,
    mandrill_endpoint,
)
from darwin_notify_assets.webhooks.signatures import (
    SENDGRID_SIGNATURE,
    SENDGRID_TIMESTAMP,
    TWILIO_SIGNATURE,
    SendGridVerifier,
    SignatureRefused,
    UnsubscribeTokens,
    verify_twilio,
)

log = logging.getLogger(__name__)

SENDGRID_PATH = "/webhooks/sendgrid"
SMS_STATUS_PATH = "/webhooks/sms/status"
SMS_INBOUND_PATH = "/webhooks/sms/inbound"
UNSUBSCRIBE_PATH = "/u/{token}"
TWIML = "application/xml"


class StorePool:
    """Store connections for the request threads: a connection serves one request at a time.
    SQLite gets one connection (its writers take turns anyway)."""

    def __init__(self, open_store: Callable[[], NotificationStore], size: int):
        self._open = open_store
        self._idle: queue.LifoQueue[NotificationStore] = queue.LifoQueue()
        self._slots = queue.Queue[None]()
        for _ in range(max(1, size)):
            self._slots.put(None)

    @contextmanager
    def store(self) -> Iterator[NotificationStore]:
        self._slots.get()
        try:
            try:
                store = self._idle.get_nowait()
            except queue.Empty:
                store = self._open()
            try:
                yield store
            except Exception:
                # A connection that failed mid-request may be broken: open a new one next time.
                store.close()
                raise
            self._idle.put(store)
        finally:
            self._slots.put(None)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


@dataclass(frozen=True)
class WebhookConfig:
    public_url: str
    sendgrid: SendGridVerifier | None
    twilio_auth_token: str | None
    unsubscribe: UnsubscribeTokens | None
    sms_help_answer: str
    mandrill: MandrillVerifier | None = None


def create_app(pool: StorePool, config: WebhookConfig) -> Starlette:
    public = config.public_url.rstrip("/")

    async def stored(work: Callable[[NotificationStore], Any]) -> Any:
        def run() -> Any:
            with pool.store() as store:
                return work(store)

        return await run_in_threadpool(run)

    def unavailable(what: str, exc: Exception) -> Response:
        log.exception("could not store %s", what)
        return JSONResponse(
            {"error": f"could not store {what} ({type(exc).__name__}); retry"}, status_code=503
        )

    def refused(exc: SignatureRefused) -> Response:
        log.warning("refused a webhook request: %s", exc)
        return JSONResponse({"error": f"refused: {exc}"}, status_code=403)

    async def healthz(request: Request) -> Response:
        try:
            await stored(lambda store: store.ping())
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return JSONResponse({"status": "store unreachable", "error": type(exc).__name__}, 503)
        return JSONResponse({"status": "ok"})

    async def sendgrid(request: Request) -> Response:
        if config.sendgrid is None:
            return JSONResponse({"error": "the SendGrid Event Webhook is not configured"}, 404)
        body = await request.body()
        try:
            config.sendgrid.verify(
                request.headers.get(SENDGRID_SIGNATURE),
                request.headers.get(SENDGRID_TIMESTAMP),
                body,
            )
        except SignatureRefused as exc:
            return refused(exc)
        try:
            raw = json.loads(body)
            if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
                raise ValueError("not a JSON array of events")
        except ValueError as exc:
            return JSONResponse({"error": f"bad event batch: {exc}"}, status_code=400)
        events = [e for e in (sendgrid_event(r) for r in raw) if e is not None]
        try:
            counts = await stored(lambda store: store.record_delivery_events(events))
        except Exception as exc:  # noqa: BLE001 - the provider must retry
            return unavailable("the events", exc)
        return JSONResponse({"received": len(raw), **counts})

    async def twilio_params(request: Request) -> list[tuple[str, str]] | Response:
        if not config.twilio_auth_token:
            return JSONResponse({"error": "SMS callbacks are not configured"}, 404)
        body = (await request.body()).decode("utf-8", errors="replace")
        params = parse_qsl(body, keep_blank_values=True)
        url = public + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            verify_twilio(
                config.twilio_auth_token, url, params, request.headers.get(TWILIO_SIGNATURE)
            )
        except SignatureRefused as exc:
            return refused(exc)
        return params

    async def sms_status(request: Request) -> Response:
        params = await twilio_params(request)
        if isinstance(params, Response):
            return params
        ours = request.query_params.get("m")
        message_id = int(ours) if ours and ours.isdigit() else None
        event = sms_status_event(dict(params), message_id)
        if event is None:
            return Response(status_code=204)
        try:
            counts = await stored(lambda store: store.record_delivery_events([event]))
        except Exception as exc:  # noqa: BLE001 - the provider must retry
            return unavailable("the status callback", exc)
        return JSONResponse(counts)

    async def sms_inbound(request: Request) -> Response:
        params = await twilio_params(request)
        if isinstance(params, Response):
            return params
        values = dict(params)
        number, word = values.get("From", ""), keyword(values.get("Body", ""))
        reply = ""
        if word in OPT_OUT_KEYWORDS or word in OPT_IN_KEYWORDS:
            out = word in OPT_OUT_KEYWORDS
            reason = f"replied {word} by SMS"
            try:
                await stored(
                    lambda store: store.set_preference(
                        "address", out, reason, channel="sms", address=number
                    )
                )
            except Exception as exc:  # noqa: BLE001 - the provider must retry
                return unavailable("the opt-out", exc)
            log.info("%s opted %s of SMS", mask_phone(number), "out" if out else "back in")
        elif word in HELP_KEYWORDS:
            reply = f"<Message>{html.escape(config.sms_help_answer)}</Message>"
        body = f'<?xml version="1.0" encoding="UTF-8"?><Response>{reply}</Response>'
        return Response(body, media_type=TWIML)

    def page(title: str, content: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<meta name='robots' content='noindex'><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1>{content}</body></html>",
            status_code=status,
        )

    async def unsubscribe(request: Request) -> Response:
        if config.unsubscribe is None:
            return page("Not available", "<p>Unsubscribe links are not configured.</p>", 404)
        try:
            message_id = config.unsubscribe.message_id(request.path_params["token"])
        except SignatureRefused:
            return page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
        try:
            target = await stored(lambda store: store.message_recipient(message_id))
        except Exception as exc:  # noqa: BLE001
            return unavailable("the unsubscribe", exc)
        if target is None:
            return page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
        channel = target["channel"]
        shown = (mask_email if channel == "email" else mask_phone)(target["to_address"] or "")
        if request.method == "GET":
            return page(
                "Unsubscribe",
                f"<p>Stop these notifications to {html.escape(shown)}?</p>"
                "<form method='post'><button type='submit' name='scope' value='schedule'>"
                "Unsubscribe from these notifications</button> "
                "<button type='submit' name='scope' value='all'>Unsubscribe from all</button>"
                "</form>",
            )
        form = dict(parse_qsl((await request.body()).decode("utf-8", errors="replace")))
        # RFC 8058's one-click POST carries List-Unsubscribe=One-Click: these notifications.
        scope = "all" if form.get("scope") == "all" else "schedule"
        reason = (
            "unsubscribed from every notification (link)"
            if scope == "all"
            else f"unsubscribed from schedule {target['schedule_id']} (link)"
        )

        def record(store: NotificationStore) -> None:
            store.set_preference(
                scope,
                True,
                reason,
                recipient_kind=target["recipient_kind"],
                recipient_id=int(target["recipient_id"]),
                schedule_id=int(target["schedule_id"]),
            )

        try:
            await stored(record)
        except Exception as exc:  # noqa: BLE001 - nothing was recorded: say so
            return unavailable("the unsubscribe", exc)
        return page("Unsubscribed", f"<p>{html.escape(shown)} will not receive these again.</p>")

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route(SENDGRID_PATH, sendgrid, methods=["POST"]),
            Route(
                MANDRILL_PATH,
                mandrill_endpoint(config.mandrill, stored, refused, unavailable),
                methods=["POST", "HEAD"],
            ),
            Route(SMS_STATUS_PATH, sms_status, methods=["POST"]),
            Route(SMS_INBOUND_PATH, sms_inbound, methods=["POST"]),
            Route(UNSUBSCRIBE_PATH, unsubscribe, methods=["GET", "POST"]),
        ]
    )
