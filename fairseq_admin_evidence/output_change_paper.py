"""Output change measured the paper's way: per encoder sub-layer of one deep encoder, random ±δ perturbation.

The paper's figure ("|F(x0,W) − F(x0,W+δ)|²", Post-LN O(N), Admin / Pre-LN O(log N)) comes from the original's
``--plot_stability`` probe (Transformer-Clinic, fairseq/tasks/fairseq_task.py and modules/transformer_layer.py):

* one model per method with a deep encoder (the figure's x axis runs over ~200 sub-layers: one 100-layer
  encoder), the paper's initialization (fairseq 0.8's: ``--ffn-init xavier``), Admin's ω profiled as
  ``adaptive-profiling`` does (first batch, padding counted, the training dropout);
* the first training batch (4096 tokens), the model without dropout;
* W+δ: every parameter except biases, LayerNorms and Admin's ω moved by ``-δ·sign(N(0, 1))``, δ = 1e-4
  (embeddings and all weight matrices; we also leave out DeepNorm's and ReZero's shortcut scales);
* at each encoder sub-layer (attention, FFN) the input of its branch function f, normalized per token by its
  standard deviation (for Pre-LN that is after the sub-layer's LayerNorm); the statistic is the squared
  Frobenius norm of the difference over the whole T×B×C batch, padding included (a padding position's zero
  embedding, whose normalization is 0/0, counts as 0);
* plotted against the sub-layer index k = 1..2N: sub-layer k of a deep encoder is where a k-sub-layer one ends.

The paper fits nothing (its two panels use linear and log-x axes); we fit ``a + b·k`` and ``a + b·ln k`` by
least squares over k per method and give both R². Several perturbation seeds are averaged (the paper drew one).
The one-update protocol of :mod:`fairseq_admin_evidence.output_change` is kept beside it.

    python -m fairseq_admin_evidence.output_change_paper                 # 100L encoder, d 512, δ 1e-4
    python -m fairseq_admin_evidence.output_change_paper --toy         # CI size
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from fairseq_admin_evidence.data import ensure_data
from fairseq_admin_evidence.in_process import batches, build_in_process
from fairseq_admin_evidence.methods import COLOURS, METHODS, model_flags
from fairseq_admin_evidence.output_change import fit
from fairseq_admin_evidence.outputs import RESULTS, markdown_table, write_csv, write_json
from fairseq_admin_tools.figures import linear_and_log_panels, save_figure

FROZEN_NAMES = ("bias", "layer_norm", "layernorm", "omega", "rezero_weight")
"""Parameters the perturbation leaves alone: the original skips names with bias, layer_norm or ratio (its ω)."""


def build(data: Path, method: str, args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The method's model as fairseq-train builds it (deep encoder, one decoder layer), ω profiled for Admin."""
    init_type, extra = METHODS[method].init_type, list(METHODS[method].flags)
    built_as = "default" if init_type == "adaptive" else init_type
    argv = [str(data), *model_flags(args.layers, args.dim, args.ffn, args.heads, dropout=args.dropout), *extra,
            "--decoder-layers", "1", "--ffn-init", "xavier", "--init-type", built_as, "--seed", str(args.seed),
            "--max-tokens", str(args.max_tokens), "--cpu", "--num-workers", "0",
            "--admin-profile-padding", "include", "--admin-profile-tokens", "1"]
    fairseq_args, task, model = build_in_process(argv)
    if init_type == "adaptive":
        from fairseq_admin.profiling import profile_and_apply

        profile_and_apply(model, fairseq_args, task)
    return fairseq_args, task, model


def branch_inputs(model: Any, sample: dict[str, Any], reference: list[Any] | None = None) -> list[Any]:
    """The input of every encoder branch function (self-attention, then FFN, per layer), per token normalized.

    With ``reference`` (the unperturbed inputs) each sub-layer's squared difference from it is returned instead,
    computed as the forward goes: a 100-layer encoder's inputs, kept twice, would not fit in memory.
    """
    import torch

    captured: list[Any] = []

    def keep(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = args[0] if args else kwargs["query"]  # fairseq calls self-attention with query=...
        std = x.std(dim=-1, keepdim=True)
        # padding positions enter the first sub-layer as zero vectors (std 0, 0/0 in the original): they count as 0
        normalized = torch.where(std > 0, x / std, torch.zeros_like(x))
        if reference is None:
            captured.append(normalized)
        else:
            captured.append(float(((normalized.double() - reference[len(captured)].double()) ** 2).sum()))

    handles = []
    for layer in model.encoder.layers:
        handles += [module.register_forward_pre_hook(keep, with_kwargs=True) for module in (layer.self_attn, layer.fc1)]
    try:
        with torch.no_grad():
            model.encoder(sample["net_input"]["src_tokens"], src_lengths=sample["net_input"]["src_lengths"])
    finally:
        for handle in handles:
            handle.remove()
    return captured


def perturb(model: Any, delta: float, seed: int) -> dict[str, Any]:
    """Move every non-frozen parameter by ``-δ·sign(N(0,1))``; returns the originals to restore."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    saved = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(part in name for part in FROZEN_NAMES):
                continue
            saved[name] = p.detach().clone()
            p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype).sign(), alpha=-delta)
    return saved


def restore(model: Any, saved: dict[str, Any]) -> None:
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in saved:
                p.copy_(saved[name])


def measure(data: Path, method: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rows (method, sub_layer, perturbation seed, change) for one method."""
    start = time.perf_counter()
    fairseq_args, task, model = build(data, method, args)
    sample = batches(task, model, fairseq_args, "train", 1, args.max_tokens, seed=args.seed)[0]
    model.eval()  # no dropout: the change is δ's alone
    before = branch_inputs(model, sample)
    rows = []
    for perturbation in range(1, args.perturbations + 1):
        saved = perturb(model, args.delta, perturbation)
        changes = branch_inputs(model, sample, reference=before)
        restore(model, saved)
        rows += [{"method": method, "sub_layer": k, "perturbation": perturbation, "output_change": change}
                 for k, change in enumerate(changes, start=1)]
    print(f"output_change_paper: {method}: {len(before)} sub-layers, {int(sample['ntokens'])} target tokens, "
          f"{time.perf_counter() - start:.0f}s", flush=True)
    return rows


def mean_by_sub_layer(rows: list[dict[str, Any]], method: str) -> tuple[list[int], list[float]]:
    by_k: dict[int, list[float]] = {}
    for row in rows:
        if row["method"] == method:
            by_k.setdefault(row["sub_layer"], []).append(row["output_change"])
    ks = sorted(by_k)
    return ks, [sum(by_k[k]) / len(by_k[k]) for k in ks]


def fits(rows: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """Per method: linear and logarithmic least-squares fits over the sub-layer index."""
    out = []
    for method in methods:
        ks, ys = mean_by_sub_layer(rows, method)
        a_lin, b_lin, r2_lin = fit([float(k) for k in ks], ys)
        a_log, b_log, r2_log = fit([math.log(k) for k in ks], ys)
        out.append({"method": method, "first": ys[0], "last": ys[-1], "sub_layers": len(ks),
                    "linear_slope": b_lin, "linear_r2": r2_lin, "log_slope": b_log, "log_r2": r2_log,
                    "better": "N" if r2_lin > r2_log else "log N"})
    return out


def plot(rows: list[dict[str, Any]], methods: list[str], out: Path, title: str) -> None:
    curves = [(METHODS[m].label, *mean_by_sub_layer(rows, m), COLOURS.get(m)) for m in methods]
    fig = linear_and_log_panels(curves, "encoder sub-layer k (attention or FFN)", "|F(x, W) − F(x, W+δ)|²",
                                ("linear axes (Post-LN: O(N) in the paper)",
                                 "log-x axis (Admin / Pre-LN: O(log N) in the paper)"), log_y=False)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, out / "output_change_paper.png")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin_evidence.output_change_paper",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="fairseq data-bin (default: prepare Multi30k)")
    parser.add_argument("--out", type=Path, default=RESULTS / "output_change_paper")
    parser.add_argument("--methods", default="postln,preln,admin,admin-closed-form,deepnorm")
    parser.add_argument("--layers", type=int, default=100, help="encoder layers (the figure's ~200 sub-layers)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--ffn", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dropout", type=float, default=0.1, help="the training dropout Admin profiles with")
    parser.add_argument("--max-tokens", type=int, default=4096, help="the first training batch's size")
    parser.add_argument("--delta", type=float, default=1e-4, help="perturbation size per element")
    parser.add_argument("--perturbations", type=int, default=3, help="perturbation seeds averaged")
    parser.add_argument("--seed", type=int, default=1, help="model initialization and batch seed")
    parser.add_argument("--toy", action="store_true", help="2 layers, d 32, 2 perturbations, 1024 tokens (CI)")
    args = parser.parse_args(argv)
    if args.toy:
        args.layers, args.dim, args.ffn, args.heads, args.perturbations, args.max_tokens = 2, 32, 64, 4, 2, 1024
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; available: {', '.join(METHODS)}")
    data = args.data or ensure_data()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [row for method in methods for row in measure(data, method, args)]
    summary = fits(rows, methods)
    setup = {k: v for k, v in vars(args).items() if k not in ("out", "data")}
    write_csv(args.out / "output_change_paper.csv", rows)
    write_json(args.out / "output_change_paper.json", {"setup": setup, "fits": summary})
    title = (f"{args.layers}L encoder, d {args.dim}, δ {args.delta}, {args.perturbations} perturbations, "
             f"Multi30k first batch ({args.max_tokens} tokens)")
    plot(rows, methods, args.out, title)
    print(markdown_table(list(summary[0]), [list(row.values()) for row in summary]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
