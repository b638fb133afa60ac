"""Learning curves: test energy error vs number of training structures for the nonlinear fine-tune and the linear
baseline fitted beside it, the crossover, and their plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polyfid.core.plots import log_sizes_axes, pyplot, save_figure


def crossover(points: list[dict[str, Any]], metric: str = "energy_rmse") -> int | None:
    """The smallest N from which the nonlinear fine-tune beats the linear baseline at every larger N measured
    (None: the linear baseline is as good or better at the largest N)."""
    found = None
    for p in sorted(points, key=lambda p: p["n_train"], reverse=True):
        if p["nonlinear"][metric] < p["linear"][metric]:
            found = p["n_train"]
        else:
            break
    return found


def curve_plot(points: list[dict[str, Any]], level: str, path: Path, metric: str = "energy_rmse") -> Path:
    """Log-log test error vs N for both models."""
    plt = pyplot()
    points = sorted(points, key=lambda p: p["n_train"])
    n = [p["n_train"] for p in points]
    fig, ax = plt.subplots(figsize=(5, 4))
    for model, style, label in (("nonlinear", "o-", "nonlinear fine-tune"), ("linear", "s--", "linear baseline")):
        ax.plot(n, [p[model][metric] * 1000 for p in points], style, label=label)
    ylabel = f"test {metric.replace('_', ' ')} (meV)"
    log_sizes_axes(ax, n, "training structures N", ylabel, title=f"learning curve at {level}")
    ax.legend()
    return save_figure(fig, path, dpi=120)
