"""Output change after one update vs depth, for Post-LN, Pre-LN and Admin (the paper's Section 4 claim).

The paper argues that Post-LN's heavy dependency on its residual branches amplifies parameter updates:
the output change ``E‖F(x, W) − F(x, W*)‖²`` grows like O(N) with the number of layers N, and that Admin
brings it down to O(log N). Here, per method and depth:

* the model is built in-process by fairseq itself (options parser with ``--user-dir fairseq_admin``,
  ``tasks.setup_task``, ``task.build_model``), seeded as ``fairseq-train`` seeds it; Admin's ω come from
  ``fairseq_admin.profiling.profile_and_apply``: profiled on the first training batches, then set with
  ω_2.. trainable, exactly what ``--init-type adaptive`` does;
* W* = W after ONE Adam step (betas 0.9/0.98, eps 1e-8, fixed lr, no warmup) on the first Multi30k
  training batch of the run's seed (``--batch-seed`` fixes one batch for all seeds),
  loss = fairseq's label_smoothed_cross_entropy (0.1); dropout is off for the update
  and for the measurements, so the difference is the update alone;
* F(x, W) = the decoder's output features (after the last LayerNorm, before the output projection),
  on the first validation batches; the reported value is the mean over non-padding target tokens of
  ‖F(x, W) − F(x, W*)‖² (summed over channels), averaged over seeds.

Then both ``a + b·N`` and ``a + b·ln N`` are fitted by least squares (``numpy.polyfit``) per method; the better R² says
which growth the measurements follow. A log-log slope (Δ ∝ N^p) is reported too.

    python -m fairseq_admin_evidence.output_change    # depths 6..48, d_model 64, seeds 1-3, lr 1e-5
    python -m fairseq_admin_evidence.output_change --toy    # CI size (depths 1, 2)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

from fairseq_admin_evidence.data import ensure_data
from fairseq_admin_evidence.in_process import batches, build_in_process
from fairseq_admin_evidence.methods import COLOURS, METHODS, model_flags
from fairseq_admin_evidence.outputs import RESULTS, markdown_table, read_csv, write_csv, write_json
from fairseq_admin_tools.figures import linear_and_log_panels, save_figure


def features(model: Any, samples: list[dict]) -> list[Any]:
    """Decoder output features per batch (float64 tensors), padding positions zeroed."""
    import torch

    out = []
    with torch.no_grad():
        for sample in samples:
            x, _ = model(**sample["net_input"], features_only=True)
            mask = sample["target"].ne(1).unsqueeze(-1)  # fairseq's pad index is 1
            out.append((x * mask).double())
    return out


def output_change(data: Path, method: str, layers: int, dim: int, ffn: int, heads: int, seed: int, lr: float,
                  max_tokens: int, eval_batches: int, batch_seed: int | None) -> dict[str, float]:
    """One measurement: build, (profile,) update once, compare outputs."""
    import torch

    init_type, extra = METHODS[method].init_type, list(METHODS[method].flags)
    built_as = "default" if init_type == "adaptive" else init_type  # comparators: fairseq's build_model sets them
    argv = [str(data), *model_flags(layers, dim, ffn, heads), *extra, "--init-type", built_as,
            "--seed", str(seed), "--max-tokens", str(max_tokens), "--cpu", "--num-workers", "0",
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--admin-profile-tokens", str(max_tokens * 4)]
    args, task, model = build_in_process(argv)
    start = time.perf_counter()
    if init_type == "adaptive":
        from fairseq_admin.profiling import profile_and_apply

        profile_and_apply(model, args, task)
    criterion = task.build_criterion(args)
    update = batches(task, model, args, "train", 1, max_tokens, seed=batch_seed or seed)[0]
    evals = batches(task, model, args, "valid", eval_batches, max_tokens, shuffle=False)
    model.eval()  # dropout off: the change is the update's alone
    before = features(model, evals)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.98),
                                 eps=1e-8)
    loss, _, _ = criterion(model, update)
    loss.backward()
    optimizer.step()
    after = features(model, evals)
    tokens = sum(int(s["target"].ne(1).sum()) for s in evals)
    change = sum(float(((a - b) ** 2).sum()) for a, b in zip(after, before, strict=True)) / tokens
    scale = sum(float((b ** 2).sum()) for b in before) / tokens
    return {"method": method, "layers": layers, "seed": seed, "output_change": change,
            "relative_change": change / scale, "loss": float(loss.detach()) / int(update["ntokens"]),
            "eval_tokens": tokens, "seconds": time.perf_counter() - start}


def fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b x (numpy.polyfit); returns (a, b, R²)."""
    import numpy as np

    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if np.ptp(x) == 0:  # one depth: no slope to fit
        a, b = float(y.mean()), 0.0
    else:
        b, a = (float(c) for c in np.polyfit(x, y, 1))
    ss_res = float(np.sum((y - a - b * x) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return a, b, 1 - ss_res / ss_tot if ss_tot else float("nan")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of an earlier output_change.csv, numbers parsed."""
    return read_csv(path, text=("method",), ints=("layers", "seed", "eval_tokens"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin_evidence.output_change",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="fairseq data-bin (default: prepare Multi30k)")
    parser.add_argument("--out", type=Path, default=RESULTS / "output_change")
    parser.add_argument("--methods", default=None,
                        help="comma-separated (default: every available method, comparators included)")
    parser.add_argument("--depths", default="6,12,18,24,36,48")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--ffn", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seeds", default="1,2,3", help="seeds: initialization (and update batch, see --batch-seed)")
    parser.add_argument("--batch-seed", type=int, default=1,
                        help="shuffle seed of the update batch, the same for every seed (0: each run's own seed)")
    parser.add_argument("--lr", type=float, default=1e-5,
                        help="the one Adam step's learning rate (small: every parameter moves by about lr)")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--eval-batches", type=int, default=4)
    parser.add_argument("--toy", action="store_true", help="depths 1,2, d32, one seed (CI)")
    parser.add_argument("--from-csv", type=Path, default=None,
                        help="re-fit and re-plot an earlier run's output_change.csv instead of measuring")
    args = parser.parse_args(argv)
    if args.toy:
        args.depths, args.dim, args.ffn, args.heads, args.seeds, args.eval_batches = "1,2", 32, 64, 2, "1", 1
    return args


def measure_all(args: argparse.Namespace, methods: list[str], depths: list[int],
                seeds: list[int]) -> list[dict[str, Any]]:
    """One row per depth, method and seed, depth by depth."""
    data = args.data or ensure_data()
    rows = []
    for layers in depths:
        for method in methods:
            for seed in seeds:
                row = output_change(data, method, layers, args.dim, args.ffn, args.heads, seed, args.lr,
                                    args.max_tokens, args.eval_batches, args.batch_seed)
                rows.append(row)
                print(f"  N={layers:>3} {method:>7} seed {seed}: ‖ΔF‖² {row['output_change']:.4g} "
                      f"(relative {row['relative_change']:.3g}, {row['seconds']:.1f}s)", flush=True)
    return rows


def fit_growth(mean: dict[str, list[float]], depths: list[int], labels: dict[str, str]
               ) -> tuple[dict[str, Any], list[list[Any]]]:
    """Per method: fits against N, ln N and log-log; (fits for fits.json, table rows)."""
    fits, table = {}, []
    for m, values in mean.items():
        lin = fit([float(n) for n in depths], values)
        log = fit([math.log(n) for n in depths], values)
        power = fit([math.log(n) for n in depths], [math.log(max(v, 1e-30)) for v in values])
        better = "N" if lin[2] > log[2] else "log N"
        fits[m] = {"linear": {"a": lin[0], "b": lin[1], "r2": lin[2]}, "log": {"a": log[0], "b": log[1], "r2": log[2]},
                   "power_exponent": power[1], "better_fit": better}
        table.append([labels[m], *values, lin[2], log[2], power[1], better])
    return fits, table


def plot(mean: dict[str, list[float]], depths: list[int], labels: dict[str, str], seeds: list[int],
         args: argparse.Namespace) -> None:
    curves = [(labels[m], depths, values, COLOURS.get(m)) for m, values in mean.items()]
    fig = linear_and_log_panels(curves, "layers per side N (N-N encoder-decoder)", "E‖F(x,W) − F(x,W*)‖² per token",
                                ("output change after one Adam step", "same, log-log axes"), log_y=True, style="o-")
    seed_list = ",".join(map(str, seeds))
    fig.suptitle(f"Multi30k, d_model {args.dim}, ffn {args.ffn}, Adam lr {args.lr:g}, seeds {seed_list}")
    save_figure(fig, args.out / "output_change.png")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    methods = args.methods.split(",") if args.methods else list(METHODS)
    depths = [int(d) for d in args.depths.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [] if args.from_csv is None else read_rows(args.from_csv)
    if rows:
        depths = sorted({r["layers"] for r in rows})
        seeds = sorted({r["seed"] for r in rows})
        methods = list(dict.fromkeys(r["method"] for r in rows))
    elif args.from_csv is None:
        rows = measure_all(args, methods, depths, seeds)
    write_csv(args.out / "output_change.csv", rows)

    labels = {m: METHODS[m].label for m in methods}
    mean = {m: [sum(r["output_change"] for r in rows if r["method"] == m and r["layers"] == n) / len(seeds)
                for n in depths] for m in methods}
    fits, table = fit_growth(mean, depths, labels)
    header = ["method", *[f"N={n}" for n in depths], "R² vs N", "R² vs ln N", "slope log-log", "better fit"]
    print(markdown_table(header, table), flush=True)
    ratio = {m: [v / a if a else math.nan for v, a in zip(mean[m], mean["admin"], strict=True)] for m in methods} \
        if "admin" in mean else {}
    write_json(args.out / "fits.json", {"depths": depths, "seeds": seeds, "dim": args.dim, "ffn": args.ffn,
                                        "lr": args.lr, "batch_seed": args.batch_seed, "mean_output_change": mean,
                                        "ratio_to_admin": ratio, "fits": fits})
    plot(mean, depths, labels, seeds, args)
    print(f"wrote {args.out}/output_change.csv, fits.json, output_change.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
