"""How much each deliberate difference from the original's profiling moves ω, measured on one model.

The original (Transformer-Clinic) profiles the FIRST training batch, counts padding positions, and runs
under --fp16. We pool batches up to --admin-profile-tokens, skip padding by default and profile in fp32.
This module profiles the same freshly built model (same seed, same batches) each way and writes the
largest relative ω difference per side against our default, as JSON + CSV + PNG:

    python -m fairseq_admin_evidence.profile_differences --out docs/results/profile_differences   # quickstart's model
    python -m fairseq_admin_evidence.profile_differences --layers 18 --dim 512 --ffn 1024 --max-tokens 4096 --out ...
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from fairseq_admin_evidence.data import ensure_data
from fairseq_admin_evidence.in_process import build_in_process
from fairseq_admin_evidence.methods import model_flags
from fairseq_admin_evidence.outputs import write_csv, write_json
from fairseq_admin_tools.figures import pyplot, save_figure

# variant name: (admin_profile_padding, first batch only, torch dtype)
VARIANTS: dict[str, tuple[str, bool, str]] = {
    "ours (exclude padding, pooled, fp32)": ("exclude", False, "float32"),
    "include padding, pooled": ("include", False, "float32"),
    "exclude padding, first batch": ("exclude", True, "float32"),
    "original: include padding, first batch": ("include", True, "float32"),
    "original in fp16: include padding, first batch, half model": ("include", True, "float16"),
}


def profile_variant(model: Any, args: Any, task: Any, padding: str, first_batch: bool, dtype: str):
    import torch
    from fairseq import utils

    from fairseq_admin.profiling import first_training_batches, profile_model, profile_samples

    args = copy.copy(args)
    args.admin_profile_padding = padding
    model = copy.deepcopy(model)
    if dtype == "float32":
        if first_batch:
            args.admin_profile_tokens = 1  # at least one batch: exactly the first
        return profile_model(model, args, task).omegas
    model.to(getattr(torch, dtype))  # the original under --fp16: statistics of a half-precision forward pass
    first = next(s for s in first_training_batches(model, args, task) if s)
    with utils.set_torch_seed(args.seed):
        return profile_samples(model, [first], padding == "include").omegas


def compare(omegas: dict[str, dict[str, list[float]]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(CSV rows of every ω, per variant and side: largest and last relative difference to the reference)."""
    reference = next(iter(VARIANTS))
    rows, summary = [], {}
    for name, sides in omegas.items():
        summary[name] = {}
        for side, values in sides.items():
            base = omegas[reference][side]
            rel = [abs(v / b - 1) for v, b in zip(values, base, strict=True)]
            summary[name][side] = {"max_rel_diff": max(rel), "last_omega": values[-1],
                                   "last_rel_diff": values[-1] / base[-1] - 1}
            rows += [{"variant": name, "side": side, "branch": i + 1, "omega": v} for i, v in enumerate(values)]
    return rows, summary


def plot(omegas: dict[str, dict[str, list[float]]], options: argparse.Namespace) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, side in zip(axes, ("encoder", "decoder"), strict=True):
        for name, sides in omegas.items():
            ax.plot(range(1, len(sides[side]) + 1), sides[side], label=name, marker=".")
        ax.set(title=f"{side}: ω per branch ({options.layers}L, d{options.dim})", xlabel="branch", ylabel="ω")
    axes[0].legend(fontsize=7)
    save_figure(fig, options.out / "omegas.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin_evidence.profile_differences",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="binarized Multi30k (default: as the scripts make it)")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--ffn", type=int, default=512)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=2048, help="training batch size (the quickstart's: 2048)")
    parser.add_argument("--seed", type=int, default=1111, help="the quickstart's seed")
    parser.add_argument("--out", type=Path, default=Path("results/profile_differences"))
    options = parser.parse_args(argv)
    data = options.data or ensure_data()
    argv = [data, *model_flags(options.layers, options.dim, options.ffn, options.heads), "--init-type", "default",
            "--max-tokens", options.max_tokens, "--seed", options.seed, "--cpu"]
    args, task, model = build_in_process(argv)
    omegas = {}
    for name, (padding, first_batch, dtype) in VARIANTS.items():
        print(f"profiling: {name}", flush=True)
        get = profile_variant(model, args, task, padding, first_batch, dtype)
        omegas[name] = {side: get(side) for side in ("encoder", "decoder")}
    rows, summary = compare(omegas)
    setup = {"layers": options.layers, "dim": options.dim, "ffn": options.ffn, "heads": options.heads,
             "max_tokens": options.max_tokens, "seed": options.seed, "profile_tokens": args.admin_profile_tokens,
             "data": str(data), "reference": next(iter(VARIANTS))}
    write_csv(options.out / "omegas.csv", rows)
    write_json(options.out / "summary.json", {"setup": setup, "vs_reference": summary})
    plot(omegas, options)
    for name, sides in summary.items():
        print(f"{name}: " + "; ".join(f"{side} max |Δω/ω| {v['max_rel_diff']:.2%}, last {v['last_rel_diff']:+.2%}"
                                      for side, v in sides.items()))


if __name__ == "__main__":
    main()
