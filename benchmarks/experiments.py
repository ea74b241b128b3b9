"""What-if variants of the pipeline, to measure a proposed change before anyone makes it.

``bench.py --experiment NAME[,NAME...]`` applies these to the staged run (and to its worker
processes); nothing here changes the product's files, only the benchmark's own processes.
Each variant is the smallest version of a change proposed in BENCHMARKS.md.
"""

import threading
from typing import Any

DESCRIPTIONS = {
    "spread-keys": "jobs keyed by their first id instead of the window, so one window's jobs "
                   "spread over every partition (and every worker of the group)",
    "poll-1s": "the stage wait loops ask the store whether the window is done once a second "
               "instead of ten times a second",
    "batched-finish": "send outcomes recorded with one UPDATE ... FROM (VALUES ...) per job "
                      "instead of one UPDATE per message",
    "keepalive": "SendGrid requests over a per-thread keep-alive HTTP session instead of a new "
                 "connection per email",
    "worker-processes": "render and send workers as separate processes (2 + 2, the product's "
                        "`darwin-notify worker`), the pipeline waits (inline_workers = 0)",
}


def apply(names: list[str]) -> None:
    for name in names:
        if name not in DESCRIPTIONS:
            raise SystemExit(f"unknown experiment {name!r}; known: {', '.join(DESCRIPTIONS)}")
        patch = _PATCHES.get(name)
        if patch:
            patch()


def _spread_keys() -> None:
    from darwin_notify_assets.bus import Job

    Job.key = property(lambda self: str(self.ids[0] if self.ids else 0).encode())


def _poll_1s() -> None:
    from darwin_notify_assets import bus, pipeline

    original = bus.run_consumers

    def run_consumers(*args: Any, **kwargs: Any) -> bool:
        kwargs["poll"] = 1.0
        return original(*args, **kwargs)

    pipeline.run_consumers = run_consumers


def _batched_finish() -> None:
    from darwin_notify_assets.store import MessageStatus, NotificationStore, log, utcnow

    def finish(self, outcomes):
        db = self.db
        now = db.ts(utcnow())
        outcomes = list(outcomes)
        changed: set[int] = set()
        try:
            for start in range(0, len(outcomes), 1000):
                chunk = outcomes[start:start + 1000]
                values = ", ".join(["(?::bigint, ?::text, ?::text, ?::text)"] * len(chunk))
                params: list[Any] = [now]
                for mid, status, reason, provider_id in chunk:
                    params += [mid, str(status), reason, provider_id]
                params.append(str(MessageStatus.SENDING))
                rows = db.query(
                    "UPDATE message AS m SET status = v.status, reason = v.reason, "
                    "provider_message_id = v.pid, updated_at = ? "
                    f"FROM (VALUES {values}) AS v (id, status, reason, pid) "
                    "WHERE m.message_id = v.id AND m.status = ? RETURNING m.message_id",
                    params,
                )
                changed.update(int(r[0]) for r in rows)
            db.insert_rows(
                "message_event",
                ("message_id", "from_status", "to_status", "reason", "at"),
                [(mid, str(MessageStatus.SENDING), str(st), reason, now)
                 for mid, st, reason, _ in outcomes if mid in changed],
            )
            db.commit()
        except Exception:
            db.rollback()
            raise
        not_changed = [mid for mid, *_ in outcomes if mid not in changed]
        if not_changed:
            log.error("messages %s were not in 'sending' when their outcome arrived", not_changed)
        return not_changed

    NotificationStore.finish = finish


def _keepalive() -> None:
    import requests

    from darwin_notify_assets.errors import (
        ProviderOutcomeUnknown,
        ProviderRejected,
        ProviderUnavailable,
    )
    from darwin_notify_assets.senders import SendGridSender, SendResult

    local = threading.local()

    def send(self, message):
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        client = self.client.client
        try:
            r = session.post(f"{client.host}/v3/mail/send", json=self.payload(message),
                             headers=client.request_headers, timeout=client.timeout or 10)
        except requests.exceptions.ConnectTimeout as exc:
            raise ProviderUnavailable(f"SendGrid did not accept a connection: {exc}") from None
        except requests.exceptions.ConnectionError as exc:
            if "Connection refused" in str(exc):
                raise ProviderUnavailable(f"SendGrid refused the connection: {exc}") from None
            raise ProviderOutcomeUnknown(f"SendGrid request failed mid-way: {exc}") from None
        except requests.exceptions.Timeout as exc:
            raise ProviderOutcomeUnknown(f"SendGrid did not answer in time: {exc}") from None
        if r.status_code in (429, 500, 502, 503, 504):
            raise ProviderUnavailable(f"SendGrid answered {r.status_code}")
        if r.status_code >= 400:
            raise ProviderRejected(f"SendGrid refused the message ({r.status_code}): {r.text}")
        return SendResult(provider_message_id=r.headers.get("X-Message-Id") or "")

    SendGridSender.send = send


_PATCHES = {
    "spread-keys": _spread_keys,
    "poll-1s": _poll_1s,
    "batched-finish": _batched_finish,
    "keepalive": _keepalive,
}
