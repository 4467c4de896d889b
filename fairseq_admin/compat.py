"""fairseq 0.12 on today's torch: every workaround for a fairseq-version problem, in one place.

* torch 2.6 made ``torch.load`` default to ``weights_only=True``. fairseq 0.12 pickles its legacy
  config as an ``argparse.Namespace`` inside every checkpoint, so ``fairseq-generate`` fails with
  "WeightsUnpickler error ... argparse.Namespace". Allow-listing exactly that class keeps the safe
  loader (no arbitrary code runs) and lets our checkpoints, and stock ones, load.
* Two fixes at the one place every ``fairseq-train``/``fairseq-hydra-train`` run passes through after
  its config is final, ``fairseq.distributed.utils.call_main`` (:func:`fix_call_main`), for every
  architecture (stock baselines included):
  * fairseq 0.12's option parsing turns ``--bf16`` into ``--tpu`` and training then fails without
    torch_xla. We undo that where no TPU runtime is installed.
  * Processes started by torchrun train as N separate rank-0 runs on CPU (:func:`join_torchrun_world`).
* Resuming a data-parallel run: rank 0 sends the checkpoint to the other ranks, which read it with
  torch's new safe loader and fail on fairseq's omegaconf config (:func:`load_broadcast_checkpoints`).
* An fp16 gradient overflow on a machine without CUDA: fairseq's handler calls ``.cuda()``
  (:func:`overflow_handler_on_any_device`).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import logging
import os
from typing import Any

import torch

from fairseq_admin_tools.errors import AdminError

logger = logging.getLogger(__name__)

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


MIN_FAIRSEQ = (0, 12)
INSTALL_FAIRSEQ = (
    "install one: bash scripts/setup.sh (a fresh environment), or `pip install --no-build-isolation "
    "fairseq-fixed==0.12.3.1` after torch (Python 3.11), or `pip install -e YOUR_FAIRSEQ_CHECKOUT`"
)


def require_fairseq() -> None:
    """fairseq is not a declared requirement (a user's own fairseq must not be replaced): check it here."""
    if importlib.util.find_spec("fairseq") is None:
        raise AdminError(f"fairseq-admin needs fairseq >= 0.12, and this Python has none: {INSTALL_FAIRSEQ}")
    import fairseq

    version = str(getattr(fairseq, "__version__", "0"))
    parts = tuple(int(p) for p in version.split("+")[0].split(".")[:2] if p.isdigit())
    if parts < MIN_FAIRSEQ:
        raise AdminError(f"fairseq-admin needs fairseq >= 0.12, this Python has fairseq {version}: {INSTALL_FAIRSEQ}")


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


def join_torchrun_world(cfg: Any) -> None:
    """Make the processes torchrun started the ranks of one world, as torchrun's environment says.

    fairseq 0.12 reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``)
    only when ``--distributed-world-size`` is above 1, and that option defaults to the number of CUDA
    devices. On CPU (or one GPU per node) every process therefore trains alone as rank 0 of a world of 1,
    all into the same save dir; given the option, fairseq sets the device to ``rank % cuda.device_count()``,
    a ZeroDivisionError without CUDA. Here the world comes from the environment, the device from
    ``LOCAL_RANK``, and a CPU run whose flags cannot work on CPU stops at start with the flags to use.
    """
    dist = cfg.distributed_training
    if dist.distributed_init_method is not None or cfg.common.tpu:
        return
    if not all(key in os.environ for key in TORCHRUN_ENV) or int(os.environ["WORLD_SIZE"]) <= 1:
        return
    on_cpu = cfg.common.cpu or not torch.cuda.is_available()
    if on_cpu:
        wrong = []
        if dist.distributed_backend != "gloo":
            wrong.append(f"--distributed-backend {dist.distributed_backend} (CPU ranks need gloo)")
        if dist.ddp_backend not in ("legacy_ddp", "no_c10d"):
            wrong.append(f"--ddp-backend {dist.ddp_backend} (PyTorch's DDP asks for a GPU device id)")
        if wrong:
            raise AdminError(
                f"torchrun started {os.environ['WORLD_SIZE']} CPU ranks, but {' and '.join(wrong)} cannot run on "
                "CPU: add --distributed-backend gloo --ddp-backend legacy_ddp"
            )
    dist.distributed_init_method = "env://"
    dist.distributed_world_size = int(os.environ["WORLD_SIZE"])
    dist.distributed_rank = int(os.environ["RANK"])
    dist.device_id = 0 if on_cpu else int(os.environ.get("LOCAL_RANK", 0))
    dist.distributed_no_spawn = True  # torchrun made the processes
    logger.info(f"torchrun: rank {dist.distributed_rank} of a world of {dist.distributed_world_size} "
                f"({dist.distributed_backend}, env://)")


def fix_call_main() -> None:
    """Route fairseq's ``call_main`` through :func:`bf16_without_tpu` and :func:`join_torchrun_world`."""
    from fairseq.distributed import utils as distributed_utils

    call_main = distributed_utils.call_main
    if getattr(call_main, "_fairseq_admin", False):
        return

    @functools.wraps(call_main)
    def patched(cfg: Any, main: Any, **kwargs: Any) -> Any:
        bf16_without_tpu(cfg)
        join_torchrun_world(cfg)
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
