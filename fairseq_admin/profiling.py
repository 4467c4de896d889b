"""The profiling pass, and where ω comes from when training starts.

Profiling runs forward passes in training mode (dropout on, as the original) over the first
training batches — the same batches ``fairseq-train`` would train on, with the dropout RNG seeded
as fairseq seeds the first update — until ``--admin-profile-tokens`` target tokens have been read
(at least one batch). No backward pass, no optimizer step: activations are not kept
(``torch.no_grad``), the model runs in fp32 whatever ``--fp16``/``--bf16`` say, and no weight but
ω is touched (ω is restored afterwards; :func:`apply_omegas` sets it).

The statistics are taken by forward hooks on the shortcuts (:func:`recording`), so the model's
own code is the same in profiling and training. In a distributed run only rank 0 profiles or reads
the profile file, and every rank receives ω from it (:func:`omegas_from_rank0`): a node-local
``--save-dir`` works, and ranks can never disagree on ω.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from fairseq import utils

from fairseq_admin.admin import SideProfiler
from fairseq_admin.layers import SIDES, AdminShortcut, admin_shortcuts, branch_names
from fairseq_admin.profile_file import (
    AdminProfile,
    BranchRecord,
    DataFacts,
    ModelFacts,
    ProfileError,
    SettingFacts,
    check_profile_matches,
    default_profile_path,
    load_profile,
    save_profile,
)
from fairseq_admin_tools.errors import AdminError

logger = logging.getLogger(__name__)
# fairseq lowers the root logger to WARNING on ranks > 0; our few lines (ω per rank) should still show.
logger.setLevel(logging.INFO)

PADDING_MODES = ("exclude", "include")


class ProfileStatistics:
    """What one profiling pass measured: a :class:`SideProfiler` per side."""

    def __init__(self, model: nn.Module) -> None:
        self.sides = {side: SideProfiler(len(admin_shortcuts(model, side))) for side in SIDES}

    def omegas(self, side: str) -> list[float]:
        return self.sides[side].omegas()


def _set_omega(profiler: SideProfiler, index: int, shortcut: AdminShortcut, inputs: tuple) -> None:
    shortcut.omega.fill_(profiler.omega(index))


def _record(profiler: SideProfiler, index: int, include_padding: bool,
            shortcut: AdminShortcut, inputs: tuple, output: torch.Tensor) -> None:
    residual, branch, padding_mask = inputs
    profiler.record(index, residual, branch, None if include_padding else padding_mask)


@contextmanager
def recording(model: nn.Module, include_padding: bool) -> Iterator[ProfileStatistics]:
    """While active, every shortcut runs with the ω of the statistics so far and records its branch.

    Each shortcut's ω is put back as it was when the block ends.
    """
    statistics = ProfileStatistics(model)
    handles, saved = [], []
    for side, profiler in statistics.sides.items():
        for index, shortcut in enumerate(admin_shortcuts(model, side)):
            saved.append((shortcut, shortcut.omega.detach().clone()))
            handles.append(shortcut.register_forward_pre_hook(partial(_set_omega, profiler, index)))
            handles.append(shortcut.register_forward_hook(partial(_record, profiler, index, include_padding)))
    try:
        yield statistics
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for shortcut, value in saved:
                shortcut.omega.copy_(value)


def profile_samples(model: nn.Module, samples: Iterable[dict], include_padding: bool) -> ProfileStatistics:
    """Profiling forward passes (training mode, no grad) over fairseq samples; the weights are not changed."""
    was_training = model.training
    model.train()
    try:
        with torch.no_grad(), recording(model, include_padding) as statistics:
            for sample in samples:
                model(**sample["net_input"])
    finally:
        model.train(was_training)
    return statistics


def first_training_batches(model: nn.Module, args: Any, task: Any):
    """The first epoch's batches, built as fairseq's Trainer.get_train_iterator builds them (one shard)."""
    task.load_dataset(args.train_subset, epoch=1, combine=True)
    iterator = task.get_batch_iterator(
        dataset=task.dataset(args.train_subset),
        max_tokens=args.max_tokens,
        max_sentences=args.batch_size,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions(), args.max_tokens),
        ignore_invalid_inputs=True,
        required_batch_size_multiple=args.required_batch_size_multiple,
        seed=args.seed,
        num_shards=1,
        shard_id=0,
        num_workers=0,
        epoch=1,
        data_buffer_size=args.data_buffer_size,
        disable_iterator_cache=False,
    )
    return iterator.next_epoch_itr(shuffle=True)


def profile_model(model: nn.Module, args: Any, task: Any) -> AdminProfile:
    """Profile on the first training batches (``--admin-profile-tokens``) and return the profile."""
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    model.to(device=device, dtype=torch.float32)
    budget = max(1, args.admin_profile_tokens)
    counted = {"tokens": 0, "sentences": 0, "batches": 0}

    def budgeted_samples() -> Iterator[dict]:
        for sample in first_training_batches(model, args, task):
            if not sample:
                continue
            yield utils.move_to_cuda(sample) if device.type == "cuda" else sample
            counted["tokens"] += int(sample["ntokens"])
            counted["sentences"] += int(sample["nsentences"])
            counted["batches"] += 1
            if counted["tokens"] >= budget:
                return

    # The dropout masks of fairseq's first update: Trainer seeds every step with seed + num_updates.
    with utils.set_torch_seed(args.seed):
        statistics = profile_samples(model, budgeted_samples(), args.admin_profile_padding == "include")
    if counted["batches"] == 0:
        raise AdminError(f"profiling found no training batch in {task.cfg.data} ({args.train_subset} split)")

    records = []
    for side, profiler in statistics.sides.items():
        for (layer, name), var_x, var_f, omega in zip(
            branch_names(model, side), profiler.input_variances(), profiler.branch_variances(), profiler.omegas(),
            strict=True,
        ):
            records.append(BranchRecord(side, layer, name, var_x, omega * omega * var_x, var_f, omega))
    return AdminProfile(
        model=ModelFacts.from_args(args),
        settings=SettingFacts.from_args(args),
        data=DataFacts(seed=args.seed, max_tokens=args.max_tokens, **counted),
        branches=tuple(records),
    )


def apply_omegas(model: nn.Module, omegas: dict[str, list[float]], trainable: bool) -> None:
    """Set ω per side (one value per branch, in forward order); ω_2.. become trainable unless fixed.

    ω_1 scales the embeddings, which no LayerNorm precedes; keeping it the constant 1 that profiling
    gives it is what lets a trained model fold ω into a stock Transformer (fairseq-admin-export).
    """
    for side in SIDES:
        shortcuts = admin_shortcuts(model, side)
        values = omegas.get(side)
        if values is not None and len(values) != len(shortcuts):
            raise AdminError(f"the profile has {len(values)} {side} branches, the model has {len(shortcuts)}")
        with torch.no_grad():
            for index, shortcut in enumerate(shortcuts):
                if values is not None:
                    shortcut.omega.fill_(values[index])
                shortcut.omega.requires_grad_(trainable and index > 0)


def profile_and_apply(model: nn.Module, args: Any, task: Any) -> AdminProfile:
    """Profile now and set ω as ``--init-type adaptive`` would, in-process and without a profile file.

    For code that measures an Admin model built in-process (the evidence scripts); ω_2.. are trainable
    unless ``--admin-omega-fixed``, as in training.
    """
    profile = profile_model(model, args, task)
    apply_omegas(model, {side: profile.omegas(side) for side in SIDES}, not args.admin_omega_fixed)
    return profile


def format_table(profile: AdminProfile) -> str:
    """One row per layer: ω of each branch on each side."""
    rows: dict[int, dict[str, str]] = {}
    for b in profile.branches:
        rows.setdefault(b.layer, {})[f"{b.side[:3]}.{b.branch}"] = f"{b.omega:.3f}"
    columns = ["enc.self_attn", "enc.ffn", "dec.self_attn", "dec.cross_attn", "dec.ffn"]
    lines = ["layer " + " ".join(f"{c:>14}" for c in columns)]
    for layer in sorted(rows):
        lines.append(f"{layer:>5} " + " ".join(f"{rows[layer].get(c, '-'):>14}" for c in columns))
    return "\n".join(lines)


def profile_path(args: Any) -> str:
    return args.admin_profile or default_profile_path(args.save_dir)


def write_new_profile(model: nn.Module, args: Any, task: Any) -> AdminProfile:
    """Profile and write the profile file (atomically); refuses to replace an existing one."""
    path = profile_path(args)
    if os.path.exists(path):
        raise AdminError(
            f"an Admin profile already exists at {path}; profiling would replace it. "
            "Delete it to profile again, or pass --admin-profile with a new path"
        )
    start = time.perf_counter()
    profile = profile_model(model, args, task)
    save_profile(profile, path)
    logger.info(
        "admin: profiled %d branches on %d tokens / %d sentences (%d batches) in %.1fs\n%s",
        len(profile.branches), profile.data.tokens, profile.data.sentences, profile.data.batches,
        time.perf_counter() - start, format_table(profile),
    )
    logger.info("admin: wrote %s", path)
    return profile


def read_profile(args: Any) -> AdminProfile:
    path = profile_path(args)
    profile = load_profile(path)
    check_profile_matches(profile, ModelFacts.from_args(args), SettingFacts.from_args(args), path)
    return profile


def omegas_in_checkpoint(args: Any) -> str | None:
    """Where ω will come from if fairseq is about to restore a checkpoint, else None.

    Mirrors fairseq's checkpoint_utils.load_checkpoint: checkpoint_last.pt in --save-dir, or
    --restore-file, or --finetune-from-model on a first launch. Asked on rank 0 only: fairseq
    loads the checkpoint there and broadcasts it.
    """
    if getattr(args, "admin_omegas_from_checkpoint", False):
        return "the checkpoint being loaded"  # model rebuilt from a saved config (generate, export)
    restore_file = getattr(args, "restore_file", None)
    save_dir = getattr(args, "save_dir", None)
    if restore_file is None or save_dir is None:
        return None
    suffix = getattr(args, "checkpoint_suffix", "") or ""
    if restore_file == "checkpoint_last.pt":
        path = os.path.join(save_dir, f"checkpoint_last{suffix}.pt")
        finetune = getattr(args, "finetune_from_model", None)
        if not os.path.exists(path) and finetune:
            path = finetune
    else:
        path = restore_file
    return path if os.path.exists(path) else None


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def on_rank0(decide: Callable[[], dict]) -> dict:
    """Run ``decide`` on rank 0 only and give every rank its result (a small dict).

    An AdminError on rank 0 reaches every rank as the same AdminError, so no rank waits forever.
    """
    if not _is_distributed():
        return decide()
    message: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            message[0] = decide()
        except AdminError as err:
            message[0] = {"error": str(err)}
        except Exception as err:
            message[0] = {"error": f"rank 0 failed: {type(err).__name__}: {err}"}
            dist.broadcast_object_list(message, src=0)
            raise
    dist.broadcast_object_list(message, src=0)
    if "error" in message[0]:
        raise AdminError(message[0]["error"])
    return message[0]


def omegas_from_rank0(model: nn.Module, args: Any, task: Any) -> dict:
    """Where ω comes from, decided on rank 0: a checkpoint, the profile file, or profiling now.

    Returns ``{"source": ..., "encoder": [...], "decoder": [...]}``; ω lists are absent when a
    checkpoint will provide them. Profiling now is one-step Admin: ``--init-type adaptive``
    with no profile at the default path and no checkpoint. A profile named by ``--admin-profile``
    must exist.
    """

    def decide() -> dict:
        checkpoint = omegas_in_checkpoint(args)
        if checkpoint is not None:
            return {"source": checkpoint}
        if os.path.exists(profile_path(args)):
            profile = read_profile(args)
            source = profile_path(args)
        elif args.admin_profile:  # named, but not there: a typo must not silently become a new profile
            raise ProfileError(
                f"no Admin profile at {args.admin_profile} (--admin-profile). Give the path of an existing profile, "
                "or leave --admin-profile out to profile now into <save-dir>/admin_profile.json"
            )
        else:
            profile = write_new_profile(model, args, task)
            source = f"{profile_path(args)} (profiled now)"
        return {"source": source, **{side: profile.omegas(side) for side in SIDES}}

    return on_rank0(decide)
