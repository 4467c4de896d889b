"""Stability of deep Post-LN, Pre-LN and Admin on Multi30k: same seed, data and budget, real fairseq-train.

The paper's claim: deep Post-LN fails to train well (it is unstable), Pre-LN trains but to a worse
optimum, and Admin trains Post-LN stably. Each method here is a real ``fairseq-train`` subprocess
(Admin: the profiling subprocess, then the adaptive training run), with the optimizer of
/work/shared/notes/measured-stability.md so the stock numbers can be compared with those notes.

    python scripts/stability.py                      # both regimes, 18L-18L d128 (~40+ min on 2 cores)
    python scripts/stability.py --toy                # 2L, a few updates: what CI runs
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _evidence_common import (
    BASE_METHODS,
    COLORS,
    RESULTS,
    available_methods,
    ensure_data,
    fairseq_train,
    markdown_table,
    method_flags,
    model_flags,
    needs_profile,
    parse_fairseq_log,
    pyplot,
    save_figure,
    value_at,
    write_csv,
    write_json,
)


@dataclass(frozen=True)
class Regime:
    name: str
    lr: float
    warmup: int
    max_tokens: int
    max_update: int
    validate_every: int
    report_at: tuple[int, ...]  # updates at which the table reports the losses


REGIMES = {
    "A": Regime("A", 2e-3, 50, 2048, 150, 25, (40, 80, 150)),
    "B": Regime("B", 1e-3, 300, 1024, 300, 50, (100, 200, 250, 300)),
}
# Stock runs of /work/shared/notes/measured-stability.md: the same data, model, optimizer, seed and regimes
# (no validation there, which does not change the training run), training nll_loss at these updates.
NOTES_STOCK_NLL = {
    "A": {"postln": {40: 8.69, 80: 8.24, 150: 8.37}, "preln": {40: 8.13, 80: 7.15, 150: 6.70}},
    "B": {"postln": {100: 9.54, 200: 8.26, 250: 7.91, 300: 7.65},
          "preln": {100: 8.80, 200: 6.99, 250: 6.49, 300: 6.11}},
}
TOY_REGIME = Regime("toy", 2e-3, 4, 1024, 6, 3, (3, 6))


def training_flags(regime: Regime, save_dir: Path, max_valid_steps: int, log_interval: int,
                   seed: int = 1) -> list[str]:
    """The notes' optimizer (adam, inverse_sqrt, label smoothing, seed 1) plus validation and one checkpoint."""
    return [
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", str(regime.lr),
        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(regime.warmup), "--warmup-init-lr", "1e-7",
        "--max-tokens", str(regime.max_tokens), "--max-update", str(regime.max_update),
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
        "--seed", str(seed), "--cpu", "--num-workers", "0",
        "--log-format", "json", "--log-interval", str(log_interval), "--no-progress-bar",
        "--validate-interval-updates", str(regime.validate_every), "--max-tokens-valid", "4096",
        "--max-valid-steps", str(max_valid_steps),
        "--save-dir", str(save_dir), "--no-epoch-checkpoints", "--no-save-optimizer-state",
    ]


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
        seconds = fairseq_train([*common, "--init-type", "adaptive-profiling"], save_dir / "profile.log")
        print(f"  {regime.name}/{method}: profiled in {seconds:.0f}s", flush=True)
    print(f"  {regime.name}/{method}: training {regime.max_update} updates", flush=True)
    seconds = fairseq_train([*common, *method_flags(method)], log)
    print(f"  {regime.name}/{method}: done in {seconds:.0f}s", flush=True)
    return log


def plot_regime(regime: Regime, curves: dict[str, tuple[list, list]], labels: dict[str, str], path: Path,
                notes: bool, seed: int) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for method, points in NOTES_STOCK_NLL.get(regime.name, {}).items() if notes else []:
        if method not in curves:  # only where this run has no curve of its own
            axes[0].plot(list(points), list(points.values()), "x--", color=COLORS.get(method), ms=9,
                         label=f"{BASE_METHODS[method][0]} (stock, from the notes)")
    for method, (train, valid) in curves.items():
        color = COLORS.get(method)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="fairseq data-bin (default: prepare Multi30k)")
    parser.add_argument("--out", type=Path, default=RESULTS / "stability")
    parser.add_argument("--regimes", default="A,B")
    parser.add_argument("--methods", default="postln,preln,admin",
                        help=f"comma-separated, from {','.join(available_methods())}")
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
        regimes = [TOY_REGIME]
    else:
        regimes = [REGIMES[name] for name in args.regimes.split(",")]
    if args.max_update:
        regimes = [dataclasses.replace(r, max_update=args.max_update,
                                       report_at=tuple(u for u in r.report_at if u <= args.max_update))
                   for r in regimes]
    data = args.data or ensure_data()
    methods = args.methods.split(",")
    labels = {m: available_methods()[m][0] for m in methods}
    size = model_flags(args.layers, args.dim, args.ffn, args.heads)
    notes = not args.no_notes and args.seed == 1 and not args.toy  # the notes are seed 1 at 18L-18L d128

    rows, table_rows, summary = [], [], {}
    for regime in regimes:
        print(f"regime {regime}", flush=True)
        curves = {}
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
            at = {u: value_at(train, u, "nll_loss") for u in regime.report_at}
            last_valid = valid[-1] if valid else {"update": 0, "nll_loss": math.nan, "loss": math.nan}
            summary.setdefault(regime.name, {})[method] = {
                "train_nll_at": at, "final_valid_nll": last_valid["nll_loss"],
                "final_valid_loss": last_valid["loss"], "final_valid_update": last_valid["update"],
                "min_train_nll": min((r["nll_loss"] for r in train), default=math.nan),
            }
            table_rows.append([regime.name, labels[method], *at.values(), last_valid["nll_loss"]])
        if not curves:
            continue
        plot_regime(regime, curves, labels, args.out / f"stability_{regime.name}.png", notes, args.seed)
        for method, points in NOTES_STOCK_NLL.get(regime.name, {}).items() if notes else []:
            if method not in curves:
                table_rows.append([regime.name, f"{BASE_METHODS[method][0]} (notes)",
                                   *[points.get(u, math.nan) for u in regime.report_at], math.nan])
        header = ["regime", "method", *[f"train nll u{u}" for u in regime.report_at], "valid nll (last)"]
        print(markdown_table(header, [r for r in table_rows if r[0] == regime.name]), flush=True)
    write_csv(args.out / "curves.csv", rows)
    write_json(args.out / "summary.json", {
        "model": {"layers": args.layers, "dim": args.dim, "ffn": args.ffn, "heads": args.heads},
        "regimes": {r.name: r.__dict__ for r in regimes}, "results": summary})
    print(f"wrote {args.out}/curves.csv, summary.json, stability_*.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
