"""fairseq 0.12 on today's torch: every workaround for a fairseq-version problem, in one place.

* torch 2.6 made ``torch.load`` default to ``weights_only=True``. fairseq 0.12 pickles its legacy
  config as an ``argparse.Namespace`` inside every checkpoint, so ``fairseq-generate`` fails with
  "WeightsUnpickler error ... argparse.Namespace". Allow-listing exactly that class keeps the safe
  loader (no arbitrary code runs) and lets our checkpoints, and stock ones, load.
* fairseq 0.12's option parsing turns ``--bf16`` into ``--tpu`` and training then fails without
  torch_xla. We undo that where no TPU runtime is installed, for every architecture (stock
  baselines included), at the one place every ``fairseq-train``/``fairseq-hydra-train`` run passes
  through after its config is final: ``fairseq.distributed.utils.call_main``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
from typing import Any

import torch


def allow_fairseq_checkpoints() -> None:
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:  # torch < 2.4 loads everything anyway
        add_safe_globals([argparse.Namespace])


def bf16_without_tpu(cfg: Any) -> None:
    """Clear the ``tpu`` flag that fairseq derives from ``--bf16`` when torch_xla is not installed."""
    common = getattr(cfg, "common", cfg)
    if not (getattr(common, "bf16", False) and getattr(common, "tpu", False)):
        return
    if importlib.util.find_spec("torch_xla") is None:
        common.tpu = False


def allow_bf16_without_tpu() -> None:
    from fairseq.distributed import utils as distributed_utils

    call_main = distributed_utils.call_main
    if getattr(call_main, "_fairseq_admin", False):
        return

    @functools.wraps(call_main)
    def patched(cfg: Any, main: Any, **kwargs: Any) -> Any:
        bf16_without_tpu(cfg)
        return call_main(cfg, main, **kwargs)

    patched._fairseq_admin = True  # type: ignore[attr-defined]
    distributed_utils.call_main = patched
