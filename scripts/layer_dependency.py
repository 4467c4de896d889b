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
* after training: ``checkpoint_last.pt`` of ``scripts/stability.py``'s runs.

For Pre-LN the same ratio is the branch's share of the residual stream (no LayerNorm in between).

    python scripts/layer_dependency.py                     # regimes A and B of scripts/stability.py
    python scripts/layer_dependency.py --toy --stability-dir DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

from _evidence_common import (
    COLORS,
    RESULTS,
    available_methods,
    batches,
    build_in_process,
    ensure_data,
    markdown_table,
    method_flags,
    pyplot,
    save_figure,
    write_csv,
    write_json,
)
from stability import REGIMES, TOY_REGIME


def train_argv(log: Path) -> list[str]:
    """The fairseq-train argv recorded on the first line of a stability log (minus the program and user dir)."""
    first = log.read_text().splitlines()[0].lstrip("# ").split(" ")
    argv = first[first.index(next(a for a in first if a.endswith("fairseq-train"))) + 1:]
    # "(0.9, 0.98)" was split on its space when the line was written; rejoin it.
    joined, i = [], 0
    while i < len(argv):
        if argv[i].startswith("(") and not argv[i].endswith(")"):
            joined.append(argv[i] + " " + argv[i + 1])
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    cut = joined.index("--user-dir")
    return joined[:cut] + joined[cut + 2:]


def branch_shares(model: Any, samples: list[dict]) -> list[dict[str, Any]]:
    """Var[ω x], Var[f] and β for every branch, pooled over the non-padding tokens of ``samples``."""
    from fairseq_admin.admin import RunningVariance, _non_padding
    from fairseq_admin.model import branch_names

    stats: dict[tuple[str, int], tuple[RunningVariance, RunningVariance]] = {}
    handles = []
    for side in ("encoder", "decoder"):
        for index, shortcut in enumerate(model.admin_shortcuts(side)):
            stats[(side, index)] = (RunningVariance(), RunningVariance())

            def hook(module, inputs, output, key=(side, index)):
                shortcut_in, branch, padding_mask = inputs
                branch = branch * module.alpha if hasattr(module, "alpha") else branch  # ReZero scales f
                stats[key][0].add(_non_padding(shortcut_in * module.omega, padding_mask))
                stats[key][1].add(_non_padding(branch, padding_mask))

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
    for side in ("encoder", "decoder"):
        for index, (layer, name) in enumerate(branch_names(model, side)):
            var_x, var_f = (acc.variance for acc in stats[(side, index)])
            rows.append({"side": side, "index": index, "layer": layer, "branch": name, "var_shortcut": var_x,
                         "var_branch": var_f, "beta": var_f / (var_x + var_f)})
    return rows


def measure(run_dir: Path, data: Path, method: str, eval_batches: int) -> dict[str, list[dict[str, Any]]]:
    """β at init (rebuilt from the run's own argv and seed) and after training (its last checkpoint)."""
    from fairseq import checkpoint_utils

    argv = train_argv(run_dir / "train.log")
    argv[0] = str(data)
    if method_flags(method)[1] == "adaptive":
        argv += ["--admin-profile", str(run_dir / "admin_profile.json")]
    argv += ["--restore-file", str(run_dir / "no-such-checkpoint.pt")]  # build fresh, do not restore
    args, task, model = build_in_process(argv)
    samples = batches(task, model, args, "valid", eval_batches, 4096, shuffle=False)
    result = {"init": branch_shares(model, samples)}
    state = checkpoint_utils.load_checkpoint_to_cpu(str(run_dir / "checkpoint_last.pt"))
    model.load_state_dict(state["model"], strict=True)
    result["trained"] = branch_shares(model, samples)
    result["updates"] = [{"num_updates": state["optimizer_history"][-1]["num_updates"]}]
    return result


def plot(regime: str, results: dict[str, dict], labels: dict[str, str], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 7), sharey=True)
    for row, stage in enumerate(("init", "trained")):
        for col, side in enumerate(("encoder", "decoder")):
            ax = axes[row][col]
            for method, res in results.items():
                points = [r for r in res[stage] if r["side"] == side]
                ax.plot([r["index"] + 1 for r in points], [r["beta"] for r in points], ".-", label=labels[method],
                        color=COLORS.get(method))
            updates = next(iter(results.values()))["updates"][0]["num_updates"]
            when = "at initialization" if stage == "init" else f"after {updates} updates"
            ax.set_title(f"{side}, {when}")
            ax.set_xlabel("residual branch i (forward order: 2 per encoder layer, 3 per decoder layer)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[row][0].set_ylabel("β = Var[f] / (Var[ω x] + Var[f])")
    fig.suptitle(f"branch share of the residual sum, regime {regime} (scripts/stability.py)")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="fairseq data-bin (default: prepare Multi30k)")
    parser.add_argument("--stability-dir", type=Path, default=RESULTS / "stability")
    parser.add_argument("--out", type=Path, default=RESULTS / "layer_dependency")
    parser.add_argument("--regimes", default="A,B")
    parser.add_argument("--methods", default="postln,preln,admin")
    parser.add_argument("--eval-batches", type=int, default=2, help="validation batches of 4096 tokens")
    parser.add_argument("--toy", action="store_true", help="read scripts/stability.py --toy's runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = args.data or ensure_data()
    regimes = [TOY_REGIME.name] if args.toy else [REGIMES[r].name for r in args.regimes.split(",")]
    methods = args.methods.split(",")
    labels = {m: available_methods()[m][0] for m in methods}

    csv_rows, summary = [], {}
    for regime in regimes:
        results = {}
        for method in methods:
            run_dir = args.stability_dir / regime / method
            if not (run_dir / "checkpoint_last.pt").exists():
                print(f"  {regime}/{method}: no checkpoint in {run_dir}; run scripts/stability.py first", flush=True)
                continue
            print(f"  {regime}/{method}: measuring", flush=True)
            results[method] = measure(run_dir, data, method, args.eval_batches)
            for stage in ("init", "trained"):
                csv_rows += [{"regime": regime, "method": method, "stage": stage, **r} for r in results[method][stage]]
        if not results:
            continue
        plot(regime, results, labels, args.out / f"layer_dependency_{regime}.png")
        table = []
        for method, res in results.items():
            for stage in ("init", "trained"):
                for side in ("encoder", "decoder"):
                    betas = [r["beta"] for r in res[stage] if r["side"] == side]
                    q = len(betas) // 4
                    table.append([regime, labels[method], stage, side, betas[0], sum(betas[1:q + 1]) / max(q, 1),
                                  sum(betas[-q:]) / max(q, 1) if q else betas[-1], sum(betas) / len(betas)])
        header = ["regime", "method", "stage", "side", "β first branch", "β next quarter", "β last quarter",
                  "β mean"]
        print(markdown_table(header, table), flush=True)
        summary[regime] = [dict(zip(header, row, strict=True)) for row in table]
    write_csv(args.out / "layer_dependency.csv", csv_rows)
    write_json(args.out / "summary.json", summary)
    print(f"wrote {args.out}/layer_dependency.csv, summary.json, layer_dependency_*.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
