"""The profiling pass: ``fairseq-train ... --init-type adaptive-profiling``.

Runs forward passes in training mode (dropout on, as the original) over the first
training batches, the same batches ``fairseq-train`` would train on, until
``--admin-profile-tokens`` target tokens have been read (at least one batch).
No backward pass, no optimizer step, no checkpoint: activations are not kept
(``torch.no_grad``) and the model runs in fp32 whatever ``--fp16``/``--bf16`` say.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import torch
from fairseq import utils

from fairseq_admin.admin import SideProfiler
from fairseq_admin.errors import AdminError
from fairseq_admin.model import TransformerAdminModel, branch_names
from fairseq_admin.profile_file import (
    AdminProfile,
    BranchRecord,
    DataFacts,
    ModelFacts,
    default_profile_path,
    save_profile,
)

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)


def _first_training_batches(model: TransformerAdminModel, args: Any, task: Any):
    """The first epoch's batches, built as fairseq's Trainer.get_train_iterator builds them."""
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


def profile_model(model: TransformerAdminModel, args: Any, task: Any) -> AdminProfile:
    """Measure the branch variances and return the profile; the model's weights are not changed."""
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    model.to(device=device, dtype=torch.float32).train()
    profilers = {}
    for side in ("encoder", "decoder"):
        shortcuts = model.admin_shortcuts(side)
        profilers[side] = SideProfiler(len(shortcuts))
        for index, shortcut in enumerate(shortcuts):
            shortcut.profiler, shortcut.index = profilers[side], index

    budget = max(1, args.admin_profile_tokens)
    tokens = sentences = batches = 0
    try:
        with torch.no_grad():
            for sample in _first_training_batches(model, args, task):
                if not sample:
                    continue
                sample = utils.move_to_cuda(sample) if device.type == "cuda" else sample
                model(**sample["net_input"])
                tokens += int(sample["ntokens"])
                sentences += int(sample["nsentences"])
                batches += 1
                if tokens >= budget:
                    break
    finally:
        for side in ("encoder", "decoder"):
            for shortcut in model.admin_shortcuts(side):
                shortcut.profiler = None
    if batches == 0:
        raise AdminError(f"profiling found no training batch in {args.data} ({args.train_subset} split)")

    records = []
    for side, profiler in profilers.items():
        omegas = profiler.omegas()
        for (layer, name), var_x, var_f, omega in zip(
            branch_names(model, side), profiler.input_variances(), profiler.branch_variances(), omegas, strict=True
        ):
            records.append(BranchRecord(side, layer, name, var_x, omega * omega * var_x, var_f, omega))
    return AdminProfile(
        model=ModelFacts.from_args(args),
        data=DataFacts(tokens=tokens, sentences=sentences, batches=batches, seed=args.seed,
                       max_tokens=args.max_tokens),
        branches=tuple(records),
    )


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


def profile_and_exit(model: TransformerAdminModel, args: Any, task: Any) -> None:
    path = args.admin_profile or default_profile_path(args.save_dir)
    if os.path.exists(path):
        raise AdminError(
            f"an Admin profile already exists at {path}; profiling would replace it. "
            "Delete it to profile again, or pass --admin-profile with a new path"
        )
    start = time.perf_counter()
    profile = profile_model(model, args, task)
    seconds = time.perf_counter() - start
    save_profile(profile, path)
    logger.info(
        "admin: profiled %d branches on %d tokens / %d sentences (%d batches) in %.1fs\n%s",
        len(profile.branches), profile.data.tokens, profile.data.sentences, profile.data.batches,
        seconds, format_table(profile),
    )
    logger.info("admin: wrote %s; now train with --init-type adaptive", path)
    logging.shutdown()
    sys.exit(0)
