"""A small wall-clock sampling profiler that sees every thread (cProfile sees only the thread
that enabled it, and the pipeline's workers are threads).

Every ``interval`` seconds it takes ``sys._current_frames()`` and counts, per thread group
(the thread's name without its number), the innermost frame ("self") and every distinct
frame on the stack ("cumulative"). Waiting in a driver or a socket shows up as the Python
frame that called it, which is what a wall-clock view of a stage needs.
"""

import re
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path


def _where(frame) -> str:
    code = frame.f_code
    path = code.co_filename
    for marker in ("site-packages/", "darwin_notify_assets/", "benchmarks/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{code.co_firstlineno}({code.co_name})"


class Sampler:
    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.samples: dict[str, int] = Counter()
        self.self_counts: dict[str, Counter] = defaultdict(Counter)
        self.cum_counts: dict[str, Counter] = defaultdict(Counter)
        self.folded: Counter = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self.interval):
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                group = re.sub(r"[-_]?\d+$", "", names.get(ident, "?"))
                group = re.sub(r"\(.*\)$", "", group)
                stack = []
                f = frame
                while f is not None:
                    stack.append(_where(f))
                    f = f.f_back
                self.samples[group] += 1
                self.self_counts[group][stack[0]] += 1
                for w in set(stack):
                    self.cum_counts[group][w] += 1
                self.folded[group + ";" + ";".join(reversed(stack))] += 1

    def report(self, top: int = 25, min_samples: int = 20) -> str:
        lines = [f"sampling every {self.interval * 1000:.0f} ms (wall clock, all threads)"]
        for group, n in sorted(self.samples.items(), key=lambda kv: -kv[1]):
            if n < min_samples:
                continue
            lines.append(
                f"\n== thread group {group!r}: {n} samples ({n * self.interval:.1f} thread-seconds)"
            )
            lines.append("-- self (innermost Python frame)")
            for where, c in self.self_counts[group].most_common(top):
                lines.append(f"{100 * c / n:6.1f}%  {where}")
            lines.append("-- cumulative (anywhere on the stack)")
            for where, c in self.cum_counts[group].most_common(top * 2):
                lines.append(f"{100 * c / n:6.1f}%  {where}")
        return "\n".join(lines)

    def write(self, path: str) -> None:
        Path(path).write_text(self.report())
        Path(path + ".folded").write_text(
            "\n".join(f"{stack} {n}" for stack, n in self.folded.most_common())
        )


def timed_sampler(seconds: float) -> Sampler:  # pragma: no cover - convenience
    s = Sampler()
    s.start()
    time.sleep(seconds)
    s.stop()
    return s
