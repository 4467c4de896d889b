"""fairseq 0.12 on today's torch: every workaround for a fairseq-version problem, in one place.

* torch 2.6 made ``torch.load`` default to ``weights_only=True``. fairseq 0.12 pickles its legacy
  config as an ``argparse.Namespace`` inside every checkpoint, so ``fairseq-generate`` fails with
  "WeightsUnpickler error ... argparse.Namespace". Allow-listing exactly that class keeps the safe
  loader (no arbitrary code runs) and lets our checkpoints, and stock ones, load.
* fairseq 0.12's option parsing turns ``--bf16`` into ``--tpu`` and training then fails without
  torch_xla. We undo that where no TPU runtime is installed, for every architecture (stock
  baselines included), at the one place every ``fairseq-train``/``fairseq-hydra-train`` run passes
  through after its config is final: ``fairseq.distributed.utils.call_main``.
* Resuming a data-parallel run: rank 0 sends the checkpoint to the other ranks, which read it with
  torch's new safe loader and fail on fairseq's omegaconf config (:func:`load_broadcast_checkpoints`).
* An fp16 gradient overflow on a machine without CUDA: fairseq's handler calls ``.cuda()``
  (:func:`overflow_handler_on_any_device`).
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


def load_broadcast_checkpoints() -> None:
    """Let data-parallel training resume under torch >= 2.6.

    When a run with several ranks resumes, fairseq's Trainer.load_checkpoint loads the checkpoint on
    rank 0 and sends it to the other ranks with ``distributed_utils.broadcast_object``, whose
    ``_broadcast_object_slow`` receives a ``torch.save`` buffer and reads it with a bare
    ``torch.load``. Under torch >= 2.6 that is ``weights_only=True``, which refuses the omegaconf
    config inside every fairseq checkpoint: rank 1 crashes, rank 0 dies on a closed connection. The
    bytes are rank 0's own ``torch.save`` of a checkpoint it has already loaded, so they are read
    as fairseq read them before torch 2.6.
    """
    import io

    from fairseq.distributed import utils as distributed_utils

    original = distributed_utils._broadcast_object_slow
    if getattr(original, "_fairseq_admin", False):
        return

    @functools.wraps(original)
    def broadcast_object_slow(obj: Any, src_rank: int, group: object, dist_device: torch.device) -> Any:
        if distributed_utils.get_rank(group) == src_rank:
            return original(obj, src_rank, group, dist_device)  # the sending side needs no change
        length = torch.LongTensor([0]).to(dist_device)
        distributed_utils.broadcast(length, src=src_rank, group=group)
        buffer = torch.ByteTensor(int(length.item())).to(dist_device)
        distributed_utils.broadcast(buffer, src=src_rank, group=group)
        return torch.load(io.BytesIO(buffer.cpu().numpy()), map_location="cpu", weights_only=False)

    broadcast_object_slow._fairseq_admin = True  # type: ignore[attr-defined]
    distributed_utils._broadcast_object_slow = broadcast_object_slow


_CUDA_ZERO = "torch.tensor(0.0).cuda()"


def overflow_handler_on_any_device() -> None:
    """Let fairseq skip an fp16 update that overflowed on a machine without CUDA.

    fairseq 0.12's ``Trainer.train_step`` handles a gradient overflow (``OverflowError`` from the loss
    scaler) by logging "gradient overflow detected, ignoring gradient" and setting
    ``grad_norm = torch.tensor(0.0).cuda()``: without CUDA that line raises, so an fp16 run on CPU dies at
    its first overflow instead of lowering the loss scale and going on. The rest of the method is right,
    so we recompile fairseq's own source with that one expression on the trainer's device, keeping its file
    name and line numbers for tracebacks. A fairseq whose source no longer has the expression is left as it is.
    """
    import ast
    import inspect
    import textwrap

    from fairseq import trainer as trainer_module

    train_step = trainer_module.Trainer.train_step
    if getattr(train_step, "_fairseq_admin", False):
        return
    try:
        lines, first_line = inspect.getsourcelines(train_step)
    except (OSError, TypeError):  # no source shipped: nothing to fix here
        return
    source = textwrap.dedent("".join(lines))
    if source.count(_CUDA_ZERO) != 1:
        return
    tree = ast.parse(source.replace(_CUDA_ZERO, "torch.tensor(0.0, device=self.device)"))
    ast.increment_lineno(tree, first_line - 1)
    namespace: dict[str, Any] = {}
    exec(compile(tree, inspect.getsourcefile(inspect.unwrap(train_step)) or "<fairseq trainer>", "exec"),
         vars(trainer_module), namespace)
    fixed = namespace["train_step"]
    fixed._fairseq_admin = True
    trainer_module.Trainer.train_step = fixed
