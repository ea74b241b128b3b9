"""What-if variants of the pipeline, to measure a proposed change before anyone makes it.

``bench.py --experiment NAME[,NAME...]`` applies these to the staged run (and to its worker
processes); nothing here changes the product's files, only the benchmark's own processes.
Each variant is the smallest version of a change proposed in BENCHMARKS.md.
"""

DESCRIPTIONS = {
}


def apply(names: list[str]) -> None:
    for name in names:
        if name not in DESCRIPTIONS:
            raise SystemExit(f"unknown experiment {name!r}; known: {', '.join(DESCRIPTIONS)}")
        patch = _PATCHES.get(name)
        if patch:
            patch()


_PATCHES = {
}
