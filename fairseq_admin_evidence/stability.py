"""Stability of deep Post-LN, Pre-LN and Admin on Multi30k: same seed, data and budget, real fairseq-train.

The paper's claim: deep Post-LN fails to train well (it is unstable), Pre-LN trains but to a worse
optimum, and Admin trains Post-LN stably. Each method here is a real ``fairseq-train`` subprocess
(Admin: the profiling subprocess, then the adaptive training run), with the optimizer of the stock runs
in :mod:`fairseq_admin_evidence.regimes` (measured-stability notes) so the stock numbers can be compared.

    python -m fairseq_admin_evidence.stability          # both regimes, 18L-18L d128 (~40+ min on 2 cores)
    python -m fairseq_admin_evidence.stability --toy    # 2L, a few updates: what CI runs
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

from fairseq_admin_evidence.data import ensure_data
from fairseq_admin_evidence.fairseq_logs import parse_fairseq_log, value_at
from fairseq_admin_evidence.methods import (
    COLOURS,
    METHODS,
    method_flags,
    model_flags,
    needs_profile,
)
from fairseq_admin_evidence.outputs import RESULTS, markdown_table, write_csv, write_json
from fairseq_admin_evidence.regimes import NOTES_STOCK_NLL, REGIMES, TOY_REGIME, Regime, training_flags
from fairseq_admin_evidence.runs import fairseq_train
from fairseq_admin_tools.figures import pyplot, save_figure


def finished(log: Path) -> bool:
    return log.exists() and "done training" in log.read_text()


def run_method(data: Path, out: Path, regime: Regime, method: str, size: list[str], max_valid_steps: int,
               log_interval: int, force: bool, seed: int) -> Path:
    """Train one method (profiling first for Admin); skip when a finished log is already there."""
    save_dir = out / regime.name / method
    log = save_dir / "train.log"
    if not force and finished(log):
        print(f"  {regime.name}/{method}: reusing {log}", flush=True)
        return log
    save_dir.mkdir(parents=True, exist_ok=True)
    for stale in save_dir.glob("checkpoint*.pt"):
        stale.unlink()
    common = [str(data), *size, *training_flags(regime, save_dir, max_valid_steps, log_interval, seed)]
    if needs_profile(method):
        profile = save_dir / "admin_profile.json"
        if profile.exists():
            profile.unlink()
        seconds = fairseq_train([*common, "--init-type", "adaptive-profiling"], save_dir / "profile.log").seconds
        print(f"  {regime.name}/{method}: profiled in {seconds:.0f}s", flush=True)
    print(f"  {regime.name}/{method}: training {regime.max_update} updates", flush=True)
    seconds = fairseq_train([*common, *method_flags(method)], log).seconds
    print(f"  {regime.name}/{method}: done in {seconds:.0f}s", flush=True)
    return log


def plot_regime(regime: Regime, curves: dict[str, tuple[list, list]], labels: dict[str, str], path: Path,
                notes: bool, seed: int) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for method, points in NOTES_STOCK_NLL.get(regime.name, {}).items() if notes else []:
        if method not in curves:  # only where this run has no curve of its own
            axes[0].plot(list(points), list(points.values()), "x--", color=COLOURS.get(method), ms=9,
                         label=f"{METHODS[method].label} (stock, from the notes)")
    for method, (train, valid) in curves.items():
        color = COLOURS.get(method)
        axes[0].plot([r["update"] for r in train], [r["nll_loss"] for r in train], label=labels[method], color=color)
        axes[1].plot([r["update"] for r in valid], [r["nll_loss"] for r in valid], "o-", label=labels[method],
                     color=color)
    axes[0].set_title(f"regime {regime.name}: training nll_loss (train_inner)")
    axes[1].set_title(f"regime {regime.name}: validation nll_loss")
    for ax in axes:
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("nll (nats/token)")
    fig.suptitle(f"lr {regime.lr:g}, warmup {regime.warmup}, max-tokens {regime.max_tokens}, seed {seed}")
    save_figure(fig, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin_evidence.stability",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="fairseq data-bin (default: prepare Multi30k)")
    parser.add_argument("--out", type=Path, default=RESULTS / "stability")
    parser.add_argument("--regimes", default="A,B")
    parser.add_argument("--methods", default="postln,preln,admin",
                        help=f"comma-separated, from {','.join(METHODS)}")
    parser.add_argument("--layers", type=int, default=18)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--ffn", type=int, default=512)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--max-valid-steps", type=int, default=5,
                        help="validation batches of 4096 tokens (5 cover all 1014 Multi30k valid pairs)")
    parser.add_argument("--log-interval", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1,
                        help="fairseq --seed of every run (the notes' stock numbers are seed 1; give another --out)")
    parser.add_argument("--toy", action="store_true", help="2 layers, d32, 6 updates (CI)")
    parser.add_argument("--force", action="store_true", help="retrain even where a finished log exists")
    parser.add_argument("--max-update", type=int, default=None,
                        help="stop every regime here instead (inverse_sqrt ignores --max-update, so the run is the "
                             "same run cut short)")
    parser.add_argument("--no-notes", action="store_true",
                        help="do not add the notes' stock numbers where a method was not run here")
    parser.add_argument("--no-train", action="store_true",
                        help="only tabulate and plot the finished runs already in --out (skip the others)")
    args = parser.parse_args(argv)
    if args.toy:
        args.layers, args.dim, args.ffn, args.heads, args.log_interval = 2, 32, 64, 2, 1
    return args


def chosen_regimes(args: argparse.Namespace) -> list[Regime]:
    """--regimes (or the toy regime), each cut at --max-update if given."""
    regimes = [TOY_REGIME] if args.toy else [REGIMES[name] for name in args.regimes.split(",")]
    if args.max_update:
        regimes = [dataclasses.replace(r, max_update=args.max_update,
                                       report_at=tuple(u for u in r.report_at if u <= args.max_update))
                   for r in regimes]
    return regimes


def method_summary(regime: Regime, train: list[dict], valid: list[dict]) -> dict[str, Any]:
    """What the table and summary.json report of one run."""
    last_valid = valid[-1] if valid else {"update": 0, "nll_loss": math.nan, "loss": math.nan}
    return {"train_nll_at": {u: value_at(train, u, "nll_loss") for u in regime.report_at},
            "final_valid_nll": last_valid["nll_loss"], "final_valid_loss": last_valid["loss"],
            "final_valid_update": last_valid["update"],
            "min_train_nll": min((r["nll_loss"] for r in train), default=math.nan)}


def notes_rows(regime: Regime, curves: dict[str, Any]) -> list[list[Any]]:
    """Table rows of the notes' stock numbers for the methods not run here."""
    return [[regime.name, f"{METHODS[method].label} (notes)", *[points.get(u, math.nan) for u in regime.report_at],
             math.nan]
            for method, points in NOTES_STOCK_NLL.get(regime.name, {}).items() if method not in curves]


def run_regime(args: argparse.Namespace, regime: Regime, data: Path, methods: list[str], labels: dict[str, str],
               notes: bool) -> tuple[list[dict], dict[str, Any]]:
    """Train (or reuse) every method in one regime, plot it and print its table; (CSV rows, summary)."""
    print(f"regime {regime}", flush=True)
    size = model_flags(args.layers, args.dim, args.ffn, args.heads)
    rows, table, summary, curves = [], [], {}, {}
    for method in methods:
        if args.no_train and not finished(args.out / regime.name / method / "train.log"):
            print(f"  {regime.name}/{method}: no finished run, skipped (--no-train)", flush=True)
            continue
        log = run_method(data, args.out, regime, method, size, args.max_valid_steps, args.log_interval,
                         args.force, args.seed)
        train, valid = parse_fairseq_log(log)
        curves[method] = (train, valid)
        rows += [{"regime": regime.name, "method": method, "split": "train", **r} for r in train]
        rows += [{"regime": regime.name, "method": method, "split": "valid", **r} for r in valid]
        summary[method] = method_summary(regime, train, valid)
        table.append([regime.name, labels[method], *summary[method]["train_nll_at"].values(),
                      summary[method]["final_valid_nll"]])
    if curves:
        plot_regime(regime, curves, labels, args.out / f"stability_{regime.name}.png", notes, args.seed)
        table += notes_rows(regime, curves) if notes else []
        header = ["regime", "method", *[f"train nll u{u}" for u in regime.report_at], "valid nll (last)"]
        print(markdown_table(header, table), flush=True)
    return rows, summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    regimes = chosen_regimes(args)
    data = args.data or ensure_data()
    methods = args.methods.split(",")
    labels = {m: METHODS[m].label for m in methods}
    notes = not args.no_notes and args.seed == 1 and not args.toy  # the notes are seed 1 at 18L-18L d128
    rows, summary = [], {}
    for regime in regimes:
        regime_rows, regime_summary = run_regime(args, regime, data, methods, labels, notes)
        rows += regime_rows
        if regime_summary:
            summary[regime.name] = regime_summary
    write_csv(args.out / "curves.csv", rows)
    write_json(args.out / "summary.json", {
        "model": {"layers": args.layers, "dim": args.dim, "ffn": args.ffn, "heads": args.heads},
        "regimes": {r.name: r.__dict__ for r in regimes}, "results": summary})
    print(f"wrote {args.out}/curves.csv, summary.json, stability_*.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
