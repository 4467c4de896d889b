"""fairseq's console scripts, run as programs (the tools never import fairseq)."""

from __future__ import annotations

import os
import sys


def fairseq_command(name: str) -> list[str]:
    """A fairseq console script from the same environment as this Python, else from PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return [beside] if os.path.exists(beside) else [name]
