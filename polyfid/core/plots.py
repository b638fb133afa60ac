"""PNG figures without a display: the headless pyplot and the one way figures are written."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed; imported only when a plot is made)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 100) -> Path:
    """Tight layout, write `path` (folders created), close the figure; returns `path`."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def log_sizes_axes(ax: Any, sizes: list[int], xlabel: str, ylabel: str, **extra: Any) -> None:
    """Log-log axes of a learning curve with the measured sizes as the x tick labels, and plain-number y labels at
    1-2-5 steps (a log axis spanning less than a decade otherwise shows one label)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, **extra)
    ax.set_xticks(sizes, [str(n) for n in sizes], minor=False)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_minor_locator(LogLocator(subs=[]))
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
