"""Where things are: the repository and its folders."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
