"""``fairseq-admin-average``: average the last N epoch (or update) checkpoints into one model.

The paper evaluates the average of the last 10 epoch checkpoints. fairseq's own
``scripts/average_checkpoints.py`` is not part of its wheel, so this is the same
operation as a console script. Checkpoints are read with fairseq's ``checkpoint_utils``
(after importing ``fairseq_admin``, so they load under torch >= 2.6), and the result is
written to a temporary file and renamed: an interrupted run never leaves a partial model.
"""

from __future__ import annotations

import argparse
import os
import re

from fairseq_admin_tools.errors import AdminError, command_line_tool
from fairseq_admin_tools.files import torch_save_atomically

EPOCH_CHECKPOINT = re.compile(r"^checkpoint(\d+)\.pt$")
UPDATE_CHECKPOINT = re.compile(r"^checkpoint_\d+_(\d+)\.pt$")


def last_checkpoints(directory: str, count: int, upper_bound: int | None = None,
                     allow_fewer: bool = False, by_update: bool = False) -> list[str]:
    """The ``count`` last ``checkpointN.pt`` (or ``checkpoint_E_N.pt``) paths with N ≤ upper_bound, oldest first."""
    if not os.path.isdir(directory):
        raise AdminError(f"checkpoint directory {directory} does not exist")
    pattern, kind = (UPDATE_CHECKPOINT, "update") if by_update else (EPOCH_CHECKPOINT, "epoch")
    found = sorted(
        (int(m.group(1)), name) for name, m in ((n, pattern.match(n)) for n in os.listdir(directory))
        if m and (upper_bound is None or int(m.group(1)) <= upper_bound)
    )
    if len(found) < count and not allow_fewer:
        raise AdminError(
            f"asked to average the last {count} {kind} checkpoints, but {directory} has {len(found)}"
            f"{'' if upper_bound is None else f' up to {upper_bound}'}; train longer or average fewer"
        )
    return [os.path.join(directory, name) for _, name in found[-count:]]


def with_final_state(paths: list[str], directory: str, count: int) -> list[str]:
    """Swap the oldest of ``paths`` for checkpoint_last.pt when that holds later updates than all of them.

    A run stopped by a time limit, or whose last epoch ended between two ``--save-interval-updates``
    saves, keeps its final weights only in checkpoint_last.pt.
    """
    from fairseq import checkpoint_utils

    import fairseq_admin  # noqa: F401  (lets fairseq checkpoints load under torch >= 2.6)

    last = os.path.join(directory, "checkpoint_last.pt")
    if not os.path.exists(last):
        return paths
    newest = max((int(m.group(1)) for m in (UPDATE_CHECKPOINT.match(os.path.basename(p)) for p in paths) if m),
                 default=-1)
    updates = checkpoint_utils.load_checkpoint_to_cpu(last)["optimizer_history"][-1]["num_updates"]
    if updates <= newest:
        return paths
    return (paths[1:] if len(paths) >= count else paths) + [last]


def average_checkpoints(paths: list[str]) -> dict:
    """The last checkpoint's state with every floating-point model tensor replaced by the mean over ``paths``."""
    import torch
    from fairseq import checkpoint_utils

    import fairseq_admin  # noqa: F401  (lets fairseq checkpoints load under torch >= 2.6)
    from fairseq_admin_tools.progress import progress

    sums: dict[str, torch.Tensor] = {}
    state: dict = {}
    for path in progress(paths, "average", len(paths), "checkpoints"):
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
        model = state["model"]
        if sums and model.keys() != sums.keys():
            raise AdminError(f"{path} has different parameters from {paths[0]}: not checkpoints of one model")
        for name, tensor in model.items():
            if tensor.is_floating_point():
                sums[name] = sums.get(name, 0) + tensor.double()
            else:
                sums[name] = tensor
    averaged = {}
    for name, tensor in state["model"].items():
        averaged[name] = (sums[name] / len(paths)).to(tensor.dtype) if tensor.is_floating_point() else tensor
    state["model"] = averaged
    # load_checkpoint_to_cpu turned the saved config into an OmegaConf object; save it as fairseq does
    # (a plain container), which the safe loader accepts.
    from omegaconf import DictConfig, OmegaConf

    if isinstance(state.get("cfg"), DictConfig):
        state["cfg"] = OmegaConf.to_container(state["cfg"], resolve=True, enum_to_str=True)
    # A fresh optimizer state would not match the averaged weights; generation does not need one.
    state.pop("last_optimizer_state", None)
    return state


@command_line_tool("fairseq-admin-average")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fairseq-admin-average", description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", required=True, help="directory with checkpointN.pt files (fairseq --save-dir)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--num-epoch-checkpoints", type=int, default=10, help="average the last N checkpointE.pt")
    which.add_argument("--num-update-checkpoints", type=int, default=None,
                       help="average the last N checkpoint_E_U.pt (from --save-interval-updates) instead")
    parser.add_argument("--checkpoint-upper-bound", type=int, default=None, help="ignore epochs (updates) above this")
    parser.add_argument("--allow-fewer", action="store_true",
                        help="average what there is when fewer exist (runs cut short by a time limit)")
    parser.add_argument("--with-last", action="store_true",
                        help="(with --num-update-checkpoints) checkpoint_last.pt replaces the oldest if newer")
    parser.add_argument("--output", required=True, help="averaged checkpoint to write")
    args = parser.parse_args(argv)
    by_update = args.num_update_checkpoints is not None
    count = args.num_update_checkpoints if by_update else args.num_epoch_checkpoints
    if count < 1:
        parser.error("the number of checkpoints to average must be at least 1")
    if args.with_last and not by_update:
        parser.error("--with-last goes with --num-update-checkpoints")
    paths = last_checkpoints(args.inputs, count, args.checkpoint_upper_bound, args.allow_fewer or args.with_last,
                             by_update)
    if args.with_last:
        paths = with_final_state(paths, args.inputs, count)
    if not paths:
        raise AdminError(f"no checkpoints to average in {args.inputs}")
    torch_save_atomically(average_checkpoints(paths), args.output)
    print(f"fairseq-admin-average: averaged {', '.join(os.path.basename(p) for p in paths)} -> {args.output}")


if __name__ == "__main__":
    main()
