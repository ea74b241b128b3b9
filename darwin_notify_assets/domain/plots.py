"""Pictures of outcomes per window, as PNG images for the UI's Markdown metadata."""

import base64
import io
from collections.abc import Mapping, Sequence

import matplotlib

# No display on a Dagster run worker; Agg draws to memory only.
matplotlib.use("Agg")

from matplotlib import pyplot as plt  # noqa: E402

from darwin_notify_assets.domain.messages import MessageStatus  # noqa: E402

#: The outcomes plotted, in this order (``deferred``: held by quiet hours or a daily cap,
#: waiting for its time).
PLOTTED = (
    MessageStatus.SENT,
    MessageStatus.SUPPRESSED,
    MessageStatus.FAILED,
    MessageStatus.UNKNOWN,
    MessageStatus.RENDER_FAILED,
    MessageStatus.DEFERRED,
)


def outcomes_png(
    counts: Mapping[str, Mapping[str, int]], windows: Sequence[str], title: str
) -> bytes:
    """A line per outcome over ``windows`` (partition keys, in order; a window without
    messages counts zero)."""
    fig, ax = plt.subplots(figsize=(8, 2.8), dpi=80)
    try:
        x = range(len(windows))
        for status in PLOTTED:
            ax.plot(x, [counts.get(w, {}).get(status, 0) for w in windows], label=str(status))
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("messages")
        if windows:
            step = max(1, len(windows) // 6)
            ticks = list(range(0, len(windows), step))
            ax.set_xticks(ticks, [windows[i] for i in ticks], fontsize=7, rotation=15)
        ax.legend(fontsize=7, loc="upper left", ncols=len(PLOTTED))
        ax.margins(x=0.01)
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png")
        return out.getvalue()
    finally:
        plt.close(fig)


def markdown_image(png: bytes, alt: str) -> str:
    """The image as Markdown with a ``data:`` URI, as Dagster's UI renders it."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
