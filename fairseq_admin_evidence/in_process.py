"""Models and batches built in this process by fairseq itself, as ``fairseq-train`` builds them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fairseq_admin_evidence.runs import USER_DIR


def build_in_process(argv: Sequence[Any]):
    """(args, task, model) built by fairseq's own parser, task and build_model, with our --user-dir.

    This is exactly what fairseq-train does before training (seeded the same way), so the model,
    Admin's profiling code and the batches are the real ones.
    """
    import numpy as np
    from fairseq import options, tasks, utils

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, input_args=[*map(str, argv), "--user-dir", str(USER_DIR)])
    utils.import_user_module(args)
    np.random.seed(args.seed)
    utils.set_torch_seed(args.seed)
    task = tasks.setup_task(args)
    model = task.build_model(args)
    return args, task, model


def batches(task: Any, model: Any, args: Any, split: str, count: int, max_tokens: int, seed: int = 1,
            shuffle: bool = True) -> list[dict[str, Any]]:
    """The first ``count`` batches of a split, built the way fairseq's trainer builds them."""
    from fairseq import utils

    task.load_dataset(split, epoch=1, combine=True)
    iterator = task.get_batch_iterator(
        dataset=task.dataset(split), max_tokens=max_tokens, max_sentences=None,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
        ignore_invalid_inputs=True, required_batch_size_multiple=8, seed=seed, num_shards=1, shard_id=0,
        num_workers=0, epoch=1,
    ).next_epoch_itr(shuffle=shuffle)
    out = []
    for sample in iterator:
        if sample:
            out.append(sample)
        if len(out) >= count:
            break
    return out
