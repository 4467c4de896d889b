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
