"""Failpoints: named places where a fault test can stop a worker at the worst moment.

``DARWIN_NOTIFY_FAILPOINTS="send.after_claim=kill"`` makes a worker kill itself with SIGKILL
right after its claim is committed; ``=sleep:5`` pauses there; ``=kill_after:3`` lets the
place be passed 3 times and kills the worker the 4th time. Unset (production), a failpoint
is one dictionary lookup. Only the fault tests and the soak set it.
"""

import os
import signal
import threading
import time

ENV = "DARWIN_NOTIFY_FAILPOINTS"

SEND_AFTER_CLAIM = "send.after_claim"
SEND_AFTER_PROVIDER = "send.after_provider"
#: In a send thread, after the message was stamped as requested, before its request.
SEND_BEFORE_REQUEST = "send.before_request"
RENDER_BEFORE_WRITE = "render.before_write"


def _parse(raw: str) -> dict[str, str]:
    out = {}
    for item in raw.split(","):
        name, _, action = item.strip().partition("=")
        if name:
            out[name] = action or "kill"
    return out


_ACTIVE = _parse(os.environ.get(ENV, ""))
_PASSED: dict[str, int] = {}
_LOCK = threading.Lock()


def failpoint(name: str) -> None:
    action = _ACTIVE.get(name)
    if action is None:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("kill_after:"):
        with _LOCK:
            _PASSED[name] = _PASSED.get(name, 0) + 1
            if _PASSED[name] > int(action.split(":", 1)[1]):
                os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("sleep:"):
        time.sleep(float(action.split(":", 1)[1]))
