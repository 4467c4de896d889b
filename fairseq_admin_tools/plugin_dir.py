"""``fairseq-admin-dir``: where the plugin is, for ``--user-dir``; ``--hydra``: where the hydra configs are."""

from __future__ import annotations

import argparse
import importlib.util
import os

HYDRA_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hydra")
"""The recipes' fairseq-hydra-train configs, installed with this package (``--config-dir``)."""


def plugin_dir() -> str:
    """The ``fairseq_admin`` package's directory, found without importing it (which would load fairseq)."""
    spec = importlib.util.find_spec("fairseq_admin")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("fairseq_admin is not installed: run scripts/setup.sh")
    return os.path.dirname(spec.origin)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fairseq-admin-dir", description=__doc__.splitlines()[0])
    parser.add_argument("--hydra", action="store_true", help="print the hydra config directory instead")
    args = parser.parse_args(argv)
    print(HYDRA_CONFIGS if args.hydra else plugin_dir())
