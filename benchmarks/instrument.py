"""Timing wrappers around the product's methods, for the benchmark's breakdowns.

``Timers.wrap(cls, "method", "label")`` replaces a method *in the benchmark's own process*
with one that adds its duration (summed over every thread that calls it) to ``label``. The
product's code is not changed; the overhead is one ``perf_counter`` pair per call.
"""

import functools
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any


class Timers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._originals: list[tuple[type, str, Any]] = []

    def add(self, label: str, seconds: float, calls: int = 1) -> None:
        with self._lock:
            self.seconds[label] += seconds
            self.calls[label] += calls

    def wrap(self, cls: type, name: str, label: str, generator: bool = False) -> None:
        original = cls.__dict__[name]
        timers = self

        if generator:

            @functools.wraps(original)
            def timed_gen(*args: Any, **kwargs: Any) -> Iterator[Any]:
                it = original(*args, **kwargs)
                while True:
                    t = time.perf_counter()
                    try:
                        item = next(it)
                    except StopIteration:
                        timers.add(label, time.perf_counter() - t)
                        return
                    timers.add(label, time.perf_counter() - t, 0)
                    yield item

            setattr(cls, name, timed_gen)
        else:

            @functools.wraps(original)
            def timed(*args: Any, **kwargs: Any) -> Any:
                t = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    timers.add(label, time.perf_counter() - t)

            setattr(cls, name, timed)
        self._originals.append((cls, name, original))

    def restore(self) -> None:
        for cls, name, original in reversed(self._originals):
            setattr(cls, name, original)
        self._originals.clear()

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {
                k: {"seconds": round(v, 3), "calls": self.calls[k]}
                for k, v in sorted(self.seconds.items())
            }

    def reset(self) -> None:
        with self._lock:
            self.seconds.clear()
            self.calls.clear()


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """Peak resident set size (VmHWM) of a process, in MB, from /proc."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def current_rss_mb(pid: int | str = "self") -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_seconds(pid: int | str = "self") -> float | None:
    """User + system CPU seconds of a process, from /proc/<pid>/stat."""
    import os

    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, IndexError, ValueError):
        return None
