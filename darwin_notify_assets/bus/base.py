"""The job bus: render and send jobs, carried to workers.

A job carries ids, never data: the store is the truth and the job only wakes a worker. The
contract is Kafka's: jobs are independent, so one window's jobs are spread evenly over the
partitions and their workers; they are delivered at least once, and acknowledged (offset
committed) only after the handler's database write returned. A handler must therefore be idempotent; ours are, because every
write is insert-if-absent or a conditional transition.
"""

import json
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from darwin_notify_assets.errors import DarwinNotifyError

log = logging.getLogger(__name__)

ENVELOPE_VERSION = 1


class JobKind(StrEnum):
    RENDER = "render"
    SEND = "send"


class BadJob(DarwinNotifyError):
    """A bus message that is not a job this version understands."""


@dataclass(frozen=True)
class Job:
    kind: JobKind
    partition_key: str
    ids: tuple[int, ...]

    @property
    def key(self) -> bytes:
        # Names the job in the broker's records and tools (window and first id).
        first = self.ids[0] if self.ids else 0
        return f"{self.partition_key}/{first}".encode()

    def encode(self) -> bytes:
        return json.dumps(
            {
                "v": ENVELOPE_VERSION,
                "kind": str(self.kind),
                "partition": self.partition_key,
                "ids": list(self.ids),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, payload: bytes) -> "Job":
        try:
            data = json.loads(payload)
            if not isinstance(data, dict):
                raise BadJob(f"undecodable job: expected an object, got {type(data).__name__}")
            if data.get("v") != ENVELOPE_VERSION:
                raise BadJob(f"unsupported job envelope version {data.get('v')!r}")
            return cls(
                JobKind(data["kind"]), str(data["partition"]), tuple(int(i) for i in data["ids"])
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BadJob(f"undecodable job: {exc}") from None


def make_jobs(kind: JobKind, partition_key: str, ids: Iterable[int], size: int) -> Iterable[Job]:
    batch: list[int] = []
    for i in ids:
        batch.append(i)
        if len(batch) >= size:
            yield Job(kind, partition_key, tuple(batch))
            batch = []
    if batch:
        yield Job(kind, partition_key, tuple(batch))


Handler = Callable[[Job], None]


class JobBus(ABC):
    """Publish jobs; consume them with a handler, acknowledging after it returns."""

    @abstractmethod
    def publish(self, jobs: Iterable[Job]) -> int:
        """Send jobs; returns how many. Returns only once the bus holds them durably."""

    @abstractmethod
    def consume(self, kind: JobKind, handler: Handler, stop: threading.Event) -> int:
        """Run ``handler`` on jobs of ``kind`` until ``stop`` is set; returns jobs handled.

        A handler that raises leaves its job unacknowledged: it is delivered again.
        """

    def idle(self, kind: JobKind) -> bool | None:
        """Whether every published job of ``kind`` has been acknowledged; None if unknown.

        A cheap hint for whoever waits on workers: the store, not the bus, says whether a
        window is done, and is asked when the bus turns idle.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional for implementations
        """Release connections."""


class InProcessBus(JobBus):
    """A bus inside one process, for the embedded default and tests.

    It keeps the at-least-once contract: a job whose handler raised is put back and retried
    after a pause, up to ``max_attempts``; after that it is logged and dropped, and the
    store (which never saw the write) still lists its ids as pending.
    """

    def __init__(self, max_attempts: int = 5, retry_delay: float = 0.2):
        self._queues: dict[JobKind, queue.Queue[tuple[Job, int]]] = {
            kind: queue.Queue() for kind in JobKind
        }
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.published = {kind: 0 for kind in JobKind}
        self.delivered = {kind: 0 for kind in JobKind}

    def publish(self, jobs: Iterable[Job]) -> int:
        n = 0
        for job in jobs:
            self._queues[job.kind].put((job, 1))
            self.published[job.kind] += 1
            n += 1
        return n

    def redeliver(self, job: Job) -> None:
        """Deliver a job again, as a consumer replaying from an earlier offset would."""
        self._queues[job.kind].put((job, 1))

    def pending(self, kind: JobKind) -> int:
        return self._queues[kind].qsize()

    def idle(self, kind: JobKind) -> bool:
        # Counts jobs taken but not yet done as well as queued ones.
        return self._queues[kind].unfinished_tasks == 0

    def consume(self, kind: JobKind, handler: Handler, stop: threading.Event) -> int:
        q = self._queues[kind]
        handled = 0
        while not stop.is_set():
            try:
                job, attempt = q.get(timeout=0.05)
            except queue.Empty:
                continue
            self.delivered[kind] += 1
            try:
                handler(job)
                handled += 1
            except Exception:  # noqa: BLE001 - the job is retried, the error kept in the log
                if attempt >= self.max_attempts:
                    log.exception(
                        "%s job for %s failed %d times; left pending in the store",
                        kind,
                        job.partition_key,
                        attempt,
                    )
                else:
                    log.warning(
                        "%s job for %s failed (attempt %d); retrying",
                        kind,
                        job.partition_key,
                        attempt,
                        exc_info=True,
                    )
                    time.sleep(self.retry_delay * attempt)
                    q.put((job, attempt + 1))
            finally:
                q.task_done()
        return handled


def run_consumers(
    bus: JobBus,
    kind: JobKind,
    handler_factory: Callable[[], Handler],
    concurrency: int,
    done: Callable[[], bool],
    timeout: float,
    poll: float = 1.0,
    progress: Callable[[], None] | None = None,
) -> bool:
    """Run ``concurrency`` consumer threads until ``done()`` or ``timeout``; True if done."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            bus.consume(kind, handler_factory(), stop)
        except BaseException as exc:  # noqa: BLE001 - surfaced to the caller below
            errors.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=worker, name=f"{kind}-worker-{i}", daemon=True)
        for i in range(concurrency)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    last_progress = time.monotonic()
    finished = False
    wait = min(poll, 0.05)
    try:
        while time.monotonic() < deadline and not stop.is_set():
            if done():
                finished = True
                break
            if progress and time.monotonic() - last_progress > 5:
                progress()
                last_progress = time.monotonic()
            # Asking the store is not free: start quick, then ask at most every ``poll``.
            time.sleep(wait)
            wait = min(poll, wait * 2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    if errors:
        raise errors[0]
    return finished
