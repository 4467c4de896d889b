"""Where things are: the source checkout the evidence reads, and the folder it writes into.

The evidence runs from a source checkout: it reads ``recipes/`` there and writes ``work/``, ``results/`` and
``docs/results/`` there. Installed as a plain package it never writes beside its own files in site-packages:
``REPO`` is then the working directory, and what needs the recipes says so.
"""

from pathlib import Path

_HERE = Path(__file__).resolve().parent.parent
SOURCE: Path | None = _HERE if (_HERE / "recipes" / "run.sh").is_file() else None
"""The source checkout this package runs from (an editable install), or None when installed."""
REPO = SOURCE or Path.cwd()
"""Where the evidence writes: the checkout, else the working directory."""


def recipes_runner() -> Path:
    """``recipes/run.sh`` of the source checkout."""
    if SOURCE is None:
        raise SystemExit("this measurement runs recipes/run.sh: run it from a source checkout of fairseq-admin")
    return SOURCE / "recipes" / "run.sh"
