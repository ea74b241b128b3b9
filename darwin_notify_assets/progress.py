"""Progress bars for long work run by a person (seed, backfill, benchmark, soak).

Bars go to stderr, so stdout keeps the command's results; they are off when stderr is not a
terminal, under CI (``CI`` set), or when asked to be quiet.
"""

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def bars_enabled(quiet: bool = False) -> bool:
    """Whether a bar would be drawn: a terminal on stderr, not CI, not quiet."""
    return not quiet and not os.environ.get("CI") and sys.stderr.isatty()


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    quiet: bool = False,
) -> "tqdm[T]":
    """A tqdm bar on stderr, disabled as ``bars_enabled`` says."""
    kwargs: dict[str, Any] = {
        "total": total,
        "desc": desc,
        "unit": unit,
        "file": sys.stderr,
        "disable": not bars_enabled(quiet),
        "dynamic_ncols": True,
        "leave": True,
    }
    return tqdm(iterable, **kwargs)
