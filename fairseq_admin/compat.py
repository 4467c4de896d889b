"""Make fairseq 0.12 checkpoints load under torch >= 2.6, with nothing for the user to set.

torch 2.6 made ``torch.load`` default to ``weights_only=True``. fairseq 0.12 pickles its legacy
config as an ``argparse.Namespace`` inside every checkpoint, so ``fairseq-generate`` fails with
"WeightsUnpickler error ... argparse.Namespace". Allow-listing exactly that class keeps the safe
loader (no arbitrary code runs) and lets our checkpoints, and stock ones, load.
"""

from __future__ import annotations

import argparse

import torch


def allow_fairseq_checkpoints() -> None:
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:  # torch < 2.4 loads everything anyway
        add_safe_globals([argparse.Namespace])
