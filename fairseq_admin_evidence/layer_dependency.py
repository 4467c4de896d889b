"""Layer dependency per residual branch, at initialization and after training (the paper's β figure).

The paper explains Post-LN's instability by its heavy dependency on the residual branches: in
``LN(ω ⊙ x + f(x))`` the branch's share of the LayerNorm input, β = Var[f] / (Var[ω x] + Var[f]),
stays large in every layer, so a change in any layer is passed on amplified; Pre-LN's shares shrink
with depth (≈ 1/i), and Admin starts Post-LN with Pre-LN-like small shares and lets them grow in
training. Here β is measured with a forward hook on every :class:`AdminShortcut` (fairseq's
``residual_connection`` goes through it once per branch), over non-padding tokens of the first
validation batches, dropout off:

* at initialization: the model built in-process exactly as ``fairseq-train`` builds it (same argv,
  same seed; Admin's ω from the profile that run wrote);
* after training: ``checkpoint_last.pt`` of :mod:`fairseq_admin_evidence.stability`'s runs.

For Pre-LN the same ratio is the branch's share of the residual stream (no LayerNorm in between).

    python -m fairseq_admin_evidence.layer_dependency          # regimes A and B of fairseq_admin_evidence.stability
    python -m fairseq_admin_evidence.layer_dependency --toy --stability-dir DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fairseq_admin_evidence.data import ensure_data
from fairseq_admin_evidence.in_process import batches, build_in_process
from fairseq_admin_evidence.methods import COLOURS, METHODS, method_flags, model_flags
from fairseq_admin_evidence.outputs import RESULTS, markdown_table, write_csv, write_json
from fairseq_admin_evidence.regimes import REGIMES, TOY_REGIME, Regime, training_flags
from fairseq_admin_tools.figures import pyplot, save_figure

STABILITY = "python -m fairseq_admin_evidence.stability"
STAGES = ("init", "trained")
SIDES = ("encoder", "decoder")
HEADER = ["regime", "method", "stage", "side", "β branch 1", "β first quarter", "β last quarter", "β mean"]


def run_argv(data: Path, regime: Regime, method: str, run_dir: Path, size: list[str], seed: int) -> list[str]:
    """The argv the stability runs train with, so the model here is built (and seeded) the same."""
    return [str(data), *size, *training_flags(regime, run_dir, 5, 10, seed), *method_flags(method),
            # build fresh, ω from the profile (fairseq would otherwise take the run's checkpoint_last.pt)
            "--restore-file", str(run_dir / "no-such-checkpoint.pt")]


def branch_shares(model: Any, samples: list[dict]) -> list[dict[str, Any]]:
    """Var[ω x], Var[f] and β for every branch, pooled over the non-padding tokens of ``samples``."""
    import torch

    from fairseq_admin.admin import RunningVariance, non_padding
    from fairseq_admin.layers import admin_shortcuts, branch_names

    stats: dict[tuple[str, int], tuple[RunningVariance, RunningVariance]] = {}
    handles = []
    for side in SIDES:
        for index, shortcut in enumerate(admin_shortcuts(model, side)):
            stats[(side, index)] = (RunningVariance(), RunningVariance())

            def hook(module, inputs, output, key=(side, index)):
                shortcut_in, branch, padding_mask = inputs
                stats[key][0].add(non_padding(shortcut_in * module.omega, padding_mask))
                stats[key][1].add(non_padding(branch, padding_mask))

            handles.append(shortcut.register_forward_hook(hook))
    model.eval()
    try:
        with torch.no_grad():
            for sample in samples:
                model(**sample["net_input"])
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for side in SIDES:
        for index, (layer, name) in enumerate(branch_names(model, side)):
            var_x, var_f = (acc.variance for acc in stats[(side, index)])
            rows.append({"side": side, "index": index, "layer": layer, "branch": name, "var_shortcut": var_x,
                         "var_branch": var_f, "beta": var_f / (var_x + var_f)})
    return rows


def measure(run_dir: Path, data: Path, regime: Regime, method: str, size: list[str],
            eval_batches: int, seed: int) -> dict[str, Any]:
    """β at init (rebuilt from the run's own argv and seed) and, if the run finished, after training."""
    from fairseq import checkpoint_utils

    args, task, model = build_in_process(run_argv(data, regime, method, run_dir, size, seed))
    samples = batches(task, model, args, "valid", eval_batches, 4096, shuffle=False)
    result: dict[str, Any] = {"init": branch_shares(model, samples)}
    checkpoint = run_dir / "checkpoint_last.pt"
    if checkpoint.exists():
        state = checkpoint_utils.load_checkpoint_to_cpu(str(checkpoint))
        model.load_state_dict(state["model"], strict=True)
        result["trained"] = branch_shares(model, samples)
        result["num_updates"] = state["optimizer_history"][-1]["num_updates"]
    return result


def plot(regime: str, results: dict[str, dict], labels: dict[str, str], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 7), sharey=True)
    updates = max((res.get("num_updates", 0) for res in results.values()), default=0)
    for row, stage in enumerate(STAGES):
        for col, side in enumerate(SIDES):
            ax = axes[row][col]
            for method, res in results.items():
                points = [r for r in res.get(stage, []) if r["side"] == side]
                ax.plot([r["index"] + 1 for r in points], [r["beta"] for r in points], ".-", label=labels[method],
                        color=COLOURS.get(method))
            when = "at initialization" if stage == "init" else f"after {updates} updates (the stability runs)"
            ax.set_title(f"{side}, {when}")
            ax.set_xlabel("residual branch i (forward order: 2 per encoder layer, 3 per decoder layer)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[row][0].set_ylabel("β = Var[f] / (Var[ω x] + Var[f])")
    fig.suptitle(f"branch share of the residual sum, regime {regime} (fairseq_admin_evidence.stability)")
    save_figure(fig, path)


def table_rows(regime: str, results: dict[str, dict], labels: dict[str, str]) -> list[list[Any]]:
    """Per method, stage and side: β of the first branch, mean β of the first and last quarter, mean β."""
    table = []
    for method, res in results.items():
        for stage in STAGES:
            for side in SIDES:
                betas = [r["beta"] for r in res.get(stage, []) if r["side"] == side]
                if not betas:
                    continue
                q = max(1, len(betas) // 4)
                table.append([regime, labels[method], stage, side, betas[0], sum(betas[:q]) / q,
                              sum(betas[-q:]) / q, sum(betas) / len(betas)])
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin_evidence.layer_dependency",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="fairseq data-bin (default: prepare Multi30k)")
    parser.add_argument("--stability-dir", type=Path, default=RESULTS / "stability")
    parser.add_argument("--out", type=Path, default=RESULTS / "layer_dependency")
    parser.add_argument("--regimes", default="A,B")
    parser.add_argument("--methods", default="postln,preln,admin")
    parser.add_argument("--layers", type=int, default=18, help=f"as given to {STABILITY}")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--ffn", type=int, default=512)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--eval-batches", type=int, default=2, help="validation batches of 4096 tokens")
    parser.add_argument("--seed", type=int, default=1, help=f"as given to {STABILITY}")
    parser.add_argument("--toy", action="store_true", help=f"read {STABILITY} --toy's runs")
    args = parser.parse_args(argv)
    if args.toy:
        args.layers, args.dim, args.ffn, args.heads = 2, 32, 64, 2  # the stability runs' --toy size
    return args


def measure_regime(args: argparse.Namespace, regime: Regime, data: Path, methods: list[str],
                   size: list[str]) -> tuple[dict[str, dict], list[dict]]:
    """β of every method's run in one regime that can be measured; (results per method, CSV rows)."""
    results, csv_rows = {}, []
    for method in methods:
        run_dir = args.stability_dir / regime.name / method
        if method_flags(method)[1] == "adaptive" and not (run_dir / "admin_profile.json").exists():
            print(f"  {regime.name}/{method}: no profile in {run_dir}; run {STABILITY} first", flush=True)
            continue
        print(f"  {regime.name}/{method}: measuring", flush=True)
        results[method] = measure(run_dir, data, regime, method, size, args.eval_batches, args.seed)
        if "trained" not in results[method]:
            print(f"  {regime.name}/{method}: no checkpoint_last.pt in {run_dir}: initialization only", flush=True)
        for stage in STAGES:
            csv_rows += [{"regime": regime.name, "method": method, "stage": stage, **r}
                         for r in results[method].get(stage, [])]
    return results, csv_rows


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(1)
    data = args.data or ensure_data()
    regimes = [TOY_REGIME] if args.toy else [REGIMES[r] for r in args.regimes.split(",")]
    methods = args.methods.split(",")
    labels = {m: METHODS[m].label for m in methods}
    size = model_flags(args.layers, args.dim, args.ffn, args.heads)
    csv_rows, summary = [], {}
    for regime in regimes:
        results, rows = measure_regime(args, regime, data, methods, size)
        csv_rows += rows
        if not results:
            continue
        plot(regime.name, results, labels, args.out / f"layer_dependency_{regime.name}.png")
        table = table_rows(regime.name, results, labels)
        print(markdown_table(HEADER, table), flush=True)
        summary[regime.name] = [dict(zip(HEADER, row, strict=True)) for row in table]
    write_csv(args.out / "layer_dependency.csv", csv_rows)
    write_json(args.out / "summary.json", summary)
    print(f"wrote {args.out}/layer_dependency.csv, summary.json, layer_dependency_*.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
