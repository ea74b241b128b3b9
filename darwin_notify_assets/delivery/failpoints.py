"""Failpoints: named places where a fault test can stop a worker at the worst moment.

``DARWIN_NOTIFY_FAILPOINTS="send.after_claim=kill"`` makes a worker kill itself with SIGKILL
right after its claim is committed; ``=sleep:5`` pauses there. Unset (production), a failpoint
is one dictionary lookup. Only the fault tests and the soak set it.
"""

import os
import signal
import time

ENV = "DARWIN_NOTIFY_FAILPOINTS"

SEND_AFTER_CLAIM = "send.after_claim"
SEND_AFTER_PROVIDER = "send.after_provider"
RENDER_BEFORE_WRITE = "render.before_write"


def _parse(raw: str) -> dict[str, str]:
    out = {}
    for item in raw.split(","):
        name, _, action = item.strip().partition("=")
        if name:
            out[name] = action or "kill"
    return out


_ACTIVE = _parse(os.environ.get(ENV, ""))


def failpoint(name: str) -> None:
    action = _ACTIVE.get(name)
    if action is None:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("sleep:"):
        time.sleep(float(action.split(":", 1)[1]))
