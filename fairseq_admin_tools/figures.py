"""Figures: matplotlib with a file-only backend, and PNGs written the same way everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairseq_admin_tools.files import AtomicFile


def pyplot():
    """matplotlib.pyplot with a file-only backend (no display on the CPU box or in CI)."""
    import logging

    # fairseq's logging setup lets DEBUG through, and matplotlib logs while it is imported
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Write a PNG (creating its directory) and free the figure."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with AtomicFile(str(path), "wb") as out:
        fig.savefig(out, dpi=110, format="png")
    plt.close(fig)


def linear_and_log_panels(curves: list[tuple[str, list[float], list[float], str | None]], xlabel: str, ylabel: str,
                          titles: tuple[str, str], log_y: bool, style: str = "-") -> Any:
    """The same curves (label, xs, ys, colour) on linear axes and on log-x (and, with ``log_y``, log-y) axes.

    Output change against depth is read on both: a straight line on the left is O(N), on the right O(log N)
    (log-x) or a power law (log-log).
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, xs, ys, color in curves:
        for ax in axes:
            ax.plot(xs, ys, style, label=label, color=color, linewidth=1.2)
    axes[1].set_xscale("log")
    if log_y:
        axes[1].set_yscale("log")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig
