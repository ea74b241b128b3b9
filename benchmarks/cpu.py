"""Where the machine's CPU went during a stage: per service, from /proc.

A snapshot sums user + system time of every process of a group, plus the time of its
already-exited children (``cutime``/``cstime`` of the group's parent), so PostgreSQL backends
that came and went inside a stage still count. Groups: this process (``pipeline``), the three
PostgreSQL clusters, the Kafka broker, the benchmark's sinks, other processes, and the
machine's idle time (from /proc/stat).
"""

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, own cpu seconds, reaped children's cpu seconds)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    ppid = int(fields[1])
    own = (int(fields[11]) + int(fields[12])) / TICK
    children = (int(fields[13]) + int(fields[14])) / TICK
    return ppid, own, children


def _pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class CpuGroups:
    def __init__(self, services_dir: str, sink_pids: dict[str, int], kafka_pid_file: str = ""):
        pg = Path(services_dir) / "pg"
        self.roots: dict[int, str] = {}
        for name in ("primary", "replica", "store"):
            pid = _pid_file(pg / name / "postmaster.pid")
            if pid:
                self.roots[pid] = f"pg_{name}"
        kafka = _pid_file(Path(kafka_pid_file)) if kafka_pid_file else None
        if kafka:
            self.roots[kafka] = "kafka"
        for kind, pid in sink_pids.items():
            self.roots[int(pid)] = f"sink_{kind}"
        self.me = os.getpid()

    def snapshot(self) -> dict[str, float]:
        stats = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                s = _stat(int(entry))
                if s:
                    stats[int(entry)] = s
        out: dict[str, float] = {}

        def group_of(pid: int) -> str | None:
            seen = 0
            while pid > 1 and seen < 50:
                if pid in self.roots:
                    return self.roots[pid]
                if pid == self.me:
                    return "pipeline"
                pid = stats.get(pid, (1, 0, 0))[0]
                seen += 1
            return None

        # A service restarted in between (the fault tests restart Kafka) makes the deltas
        # meaningless for it: the snapshot records which of the services were still alive.
        out["_alive"] = float(
            sum(1 << i for i, pid in enumerate(sorted(self.roots)) if pid in stats)
        )
        for pid, (_, own, children) in stats.items():
            g = group_of(pid)
            if g is None:
                continue
            out[g] = out.get(g, 0.0) + own
            if pid in self.roots or pid == self.me:
                out[g] += children
        try:
            cpu = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
            user, nice, system, idle, iowait, irq, softirq, steal = cpu
            out["_busy"] = (user + nice + system + irq + softirq) / TICK
            out["idle"] = (idle + iowait) / TICK
            out["steal"] = steal / TICK
        except (OSError, IndexError, ValueError):
            pass
        return out

    def restarted(self, before: dict[str, float], after: dict[str, float]) -> list[str]:
        """Services whose process went away between two snapshots."""
        b, a = int(before.get("_alive", 0)), int(after.get("_alive", 0))
        return [
            self.roots[pid]
            for i, pid in enumerate(sorted(self.roots))
            if b & (1 << i) and not a & (1 << i)
        ]

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """CPU seconds per group between two snapshots; ``other`` is the machine's busy time
        that no tracked group accounts for (the suite's tests, the kernel, ...)."""
        d = {
            k: after.get(k, 0.0) - before.get(k, 0.0)
            for k in set(before) | set(after)
            if k != "_alive"
        }
        d = {k: max(0.0, v) for k, v in d.items()}
        busy = d.pop("_busy", 0.0)
        tracked = sum(v for k, v in d.items() if k not in ("idle", "steal"))
        d["other"] = max(0.0, busy - tracked)
        return {k: round(v, 2) for k, v in sorted(d.items()) if abs(v) >= 0.01}
