"""What-if variants of the pipeline, to measure a proposed change before anyone makes it.

``bench.py --experiment NAME[,NAME...]`` applies these to the staged run (and to its worker
processes); nothing here changes the product's files, only the benchmark's own processes.
Each variant is the smallest version of a change proposed in BENCHMARKS.md.
"""

import threading

DESCRIPTIONS = {
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
    "keepalive": _keepalive,
}
