"""``fairseq-admin-dir``: where the plugin is, for fairseq's ``--user-dir`` when the package is installed."""

from __future__ import annotations

import importlib.util
import os


def plugin_dir() -> str:
    """The ``fairseq_admin`` package's directory, found without importing it (which would load fairseq)."""
    spec = importlib.util.find_spec("fairseq_admin")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("fairseq_admin is not installed: run scripts/setup.sh")
    return os.path.dirname(spec.origin)


def main() -> None:
    print(plugin_dir())
