"""The ``--init-type`` table: every way ``transformer_admin`` sets its shortcut scales, in one place.

Each entry is applied once to a freshly built model (after ``--ffn-init``), on every rank. The
model code (:mod:`fairseq_admin.model`) only looks the name up here.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from fairseq_admin import comparators, profiling
from fairseq_admin.layers import SIDES, admin_shortcuts
from fairseq_admin_tools.errors import AdminError

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

Initializer = Callable[[nn.Module, Any, Any], None]


@dataclass(frozen=True)
class InitType:
    name: str
    help: str
    initialize: Initializer
    exportable: bool = False  # fairseq-admin-export can fold it into a stock transformer (ω_1 = 1, LayerNorms kept)
    post_ln_only: bool = True


def _stock(model: nn.Module, args: Any, task: Any) -> None:
    """ω = 1, frozen: numerically the stock fairseq ``transformer``."""


def _adaptive(model: nn.Module, args: Any, task: Any) -> None:
    """ω from the checkpoint being resumed, else the profile file, else profiled now (one-step Admin)."""
    plan = profiling.omegas_from_rank0(model, args, task)
    profiling.apply_omegas(model, {side: plan[side] for side in SIDES if side in plan}, not args.admin_omega_fixed)
    # Saved with the config: a model rebuilt from a checkpoint takes ω from its state, not a profile.
    args.admin_omegas_from_checkpoint = True
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    logger.info(f"admin: rank {rank}: ω from {plan['source']}, omega digest {omega_digest(model)}")


def _profile_and_exit(model: nn.Module, args: Any, task: Any) -> None:
    """The paper's first step: profile on rank 0, write the profile, and end the run on every rank (exit 0)."""

    def profile() -> dict:
        profiling.write_new_profile(model, args, task)
        return {"source": "profiled"}

    profiling.on_rank0(profile)
    logger.info("admin: now train with --init-type adaptive")
    logging.shutdown()
    sys.exit(0)


def omega_digest(model: nn.Module) -> str:
    """Short hash of every ω, to compare them across ranks in the logs."""
    digest = hashlib.sha256()
    for side in SIDES:
        for shortcut in admin_shortcuts(model, side):
            digest.update(shortcut.omega.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


INIT_TYPES: dict[str, InitType] = {
    t.name: t
    for t in (
        InitType("default", "ω = 1 (stock Post-LN; with --encoder/decoder-normalize-before, stock Pre-LN)",
                 _stock, exportable=True, post_ln_only=False),
        InitType("adaptive-profiling", "profile the branch variances (rank 0), write the profile and exit",
                 _profile_and_exit),
        InitType("adaptive", "Admin: ω from the profile (profiled first if there is none) and train",
                 _adaptive, exportable=True),
        InitType("admin-closed-form", "admin-torch's profiling-free ω, one value per side",
                 comparators.apply_closed_form),
        InitType("deepnorm", "DeepNet's α shortcut scale and β init gain", comparators.apply_deepnorm),
        InitType("rezero", "ReZero: x + α·f(x), one α per layer (0 at init), no LayerNorms", comparators.apply_rezero),
    )
}
INIT_TYPE_NAMES = tuple(INIT_TYPES)


def lookup(name: Any) -> InitType:
    """The entry for ``--init-type NAME``; an unknown name is an error, also from an untyped config."""
    name = str(getattr(name, "value", name))
    if name not in INIT_TYPES:
        raise AdminError(f"unknown --init-type {name!r}; one of: {', '.join(INIT_TYPE_NAMES)}")
    return INIT_TYPES[name]
