"""A recording sender: the test double that ships with the library (as django-anymail's
test backend does), for tests of code that sends through darwin-notify's senders."""

import threading
from collections.abc import Sequence

from darwin_notify_assets.delivery.senders import Sender, SendResult
from darwin_notify_assets.storage.store import OutboundMessage


class RecordingSender(Sender):
    """A typed test double: records every call, answers with scripted outcomes, and may hand
    the message on to a real sender (the file outbox) so files appear as in production.

    ``script`` is consumed one entry per call: ``None`` accepts, an exception instance is
    raised. When the script is exhausted every further call accepts. ``calls`` may be shared
    between instances (one list per channel across every worker of a run).
    """

    def __init__(
        self,
        channel: str,
        inner: Sender | None = None,
        script: Sequence[BaseException | None] = (),
        calls: list[OutboundMessage] | None = None,
    ):
        self.channel = channel
        self.inner = inner
        # a list given by the caller is consumed in place (shared between instances)
        self.script = script if isinstance(script, list) else list(script)
        self.calls: list[OutboundMessage] = [] if calls is None else calls
        self._lock = threading.Lock()

    def send(self, message: OutboundMessage) -> SendResult:
        with self._lock:
            self.calls.append(message)
            outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        if self.inner is not None:
            return self.inner.send(message)
        return SendResult(provider_message_id=f"recorded:{message.message_id}")

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
