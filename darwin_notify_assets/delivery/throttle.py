"""One sending budget per provider, shared by every send worker on every machine.

The budget is a token bucket row in the store (``provider_budget``): a send worker takes the
tokens of a group of requests with one conditional update in the transaction that stamps them
as requested, so the store sees one statement (and no commit of its own) per group, not per
message. A ``429`` with ``Retry-After`` empties the budget and
blocks it for that long, for every worker.
"""

import threading
import time
from collections.abc import Callable, Mapping

from darwin_notify_assets.storage.store import NotificationStore


class ProviderBudget:
    """``rate`` requests a second to ``provider``, at most ``burst`` at once."""

    def __init__(
        self,
        store: NotificationStore,
        provider: str,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError("a provider budget needs a rate above 0")
        self.store = store
        self.provider = provider
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._hold_until = 0.0

    def wait(self, tokens: int) -> float:
        """Seconds to wait before ``tokens`` may be taken; 0 when they were taken now."""
        return self.store.take_budget(self.provider, tokens, self.rate, self.burst, self.clock())

    def hold_off(self, seconds: float) -> None:
        """The provider asked every sender to wait ``seconds``: noted here from any thread,
        written to the shared budget before the worker's next group."""
        with self._lock:
            self._hold_until = max(self._hold_until, self.clock() + seconds)

    def publish_hold(self) -> None:
        """Write a hold noted by ``hold_off`` to the shared budget (one statement, only then)."""
        with self._lock:
            until, self._hold_until = self._hold_until, 0.0
        if until:
            self.store.block_budget(self.provider, until, self.clock())


def build_budgets(
    store: NotificationStore, senders: Mapping[str, object], rates: Mapping[str, int]
) -> dict[str, ProviderBudget]:
    """A budget per channel whose rate (requests a second) is set; none where it is 0."""
    return {
        channel: ProviderBudget(
            store, f"{channel}:{getattr(sender, 'provider', type(sender).__name__)}", rate
        )
        for channel, sender in senders.items()
        if (rate := rates.get(channel, 0)) > 0
    }
