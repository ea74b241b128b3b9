"""A render or send worker process for the benchmark: the product's ``darwin-notify worker``,
with its own consumer groups, its method timings and, with ``--profile``, the
samples of all its threads written when it stops."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    kind = sys.argv[1]
    from darwin_notify_assets.bus.kafka import KafkaBus
    from darwin_notify_assets.config import Settings

    def from_settings(cls, settings: Settings) -> KafkaBus:
        return cls(
            settings.kafka_bootstrap,
            topic_prefix=settings.kafka_topic_prefix,
            partitions=settings.kafka_partitions,
            group_prefix=settings.kafka_topic_prefix,
        )

    KafkaBus.from_settings = classmethod(from_settings)
    from darwin_notify_assets.cli import main as cli_main

    timers_dir = os.environ.get("DARWIN_NOTIFY_BENCH_TIMERS_DIR")
    if timers_dir:
        import atexit
        import json

        from benchmarks.instrument import Timers
        from benchmarks.staged import instrument

        timers = Timers()
        instrument(timers)
        path = Path(timers_dir) / f"worker-timers-{kind}-{os.getpid()}.json"
        atexit.register(
            lambda: path.write_text(
                json.dumps({"kind": kind, "pid": os.getpid(), "timers": timers.snapshot()})
            )
        )
    profile_dir = os.environ.get("DARWIN_NOTIFY_BENCH_PROFILE_DIR")
    if not profile_dir:
        return cli_main(["worker", kind])
    from benchmarks.sampler import Sampler

    sampler = Sampler()
    sampler.start()
    try:
        return cli_main(["worker", kind])
    finally:
        sampler.stop()
        sampler.write(f"{profile_dir}/profile-worker-{kind}-{os.getpid()}.txt")


if __name__ == "__main__":
    sys.exit(main())
