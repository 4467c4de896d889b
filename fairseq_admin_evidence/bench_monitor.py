"""What the training monitor costs: Admin with ``--admin-monitor-interval`` against the same run without it.

Real ``fairseq-train`` subprocesses, identical but for the flag, interleaved in pairs (plain, monitored, monitored,
plain, ...) so that other load hits both alike, after one warm-up run that is not counted. Per pair: the
monitored/plain ratio of fairseq's ``wps`` (training tokens per second, the intervals after the first, so start-up
is excluded), of the whole process's wall time and of its CPU seconds. Writes ``runs.csv``, ``summary.json`` and
``ratios.png`` (each pair's ratios, the median marked). Whole processes on a shared 2-core machine drift by several
per cent between runs; ``--steps`` resolves the cost better: one trainer in one process trains the same batches in
blocks of ``--interval`` updates, the monitor attached and detached in turn.

    python -m fairseq_admin_evidence.bench_monitor                     # 6L-6L d128, 300 updates, 5 pairs, 1 thread
    python -m fairseq_admin_evidence.bench_monitor --steps --pairs 8   # in one process, blocks of 100 updates
    python -m fairseq_admin_evidence.bench_monitor --toy [--steps]     # CI size
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from fairseq_admin_evidence.bench_cost import COMMON, interleaved, timed_run
from fairseq_admin_evidence.data import ensure_data
from fairseq_admin_evidence.methods import model_flags
from fairseq_admin_evidence.outputs import RESULTS, markdown_table, spread, write_csv, write_json
from fairseq_admin_evidence.runs import fairseq_train
from fairseq_admin_tools.figures import pyplot, save_figure

RATIO_KEYS = ("wps", "seconds", "cpu_s")


def pairs(args: argparse.Namespace, data: Path) -> list[dict[str, Any]]:
    out = args.out / "runs"
    size = model_flags(args.layers, args.dim, 4 * args.dim, max(1, args.dim // 32))
    profile = out / "admin_profile.json"
    train = [str(data), *COMMON, *size, "--max-tokens", str(args.max_tokens), "--max-update", str(args.updates),
             "--log-interval", str(args.log_interval), "--save-dir", str(out)]
    if not profile.exists():
        fairseq_train([*train, "--init-type", "adaptive-profiling", "--admin-profile", str(profile)],
                      out / "profile.log", progress=False)
    variants = {"plain": [], "monitored": ["--admin-monitor-interval", str(args.interval)]}
    admin = [*train, "--init-type", "adaptive", "--admin-profile", str(profile)]
    timed_run([*admin, *variants["monitored"]], out / "warmup.log")
    return interleaved(variants, admin, out, args.pairs)


def step_pairs(args: argparse.Namespace, data: Path) -> list[dict[str, Any]]:
    """One process, one trainer, the same batches: blocks of ``--interval`` updates with the monitor attached and
    detached in turn, so each monitored block holds exactly one measurement and machine drift between blocks is
    small. The per-update time of each block (``seconds``) is what :func:`ratios` pairs."""
    import time

    import torch
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    from fairseq_admin.monitor import BranchMonitor
    from fairseq_admin_evidence.in_process import batches, build_in_process

    out = args.out / "steps"
    size = model_flags(args.layers, args.dim, 4 * args.dim, max(1, args.dim // 32))
    profile = out / "admin_profile.json"
    common = [str(data), *COMMON, *size, "--max-tokens", str(args.max_tokens), "--save-dir", str(out)]
    if not profile.exists():
        fairseq_train([*common, "--init-type", "adaptive-profiling", "--admin-profile", str(profile)],
                      out / "profile.log", progress=False)
    torch.set_num_threads(1)
    train_args, task, model = build_in_process([*common, "--init-type", "adaptive", "--admin-profile", str(profile)])
    cfg = convert_namespace_to_omegaconf(train_args)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    samples = batches(task, model, train_args, "train", args.interval, args.max_tokens)
    monitor = BranchMonitor(model, args.interval, max_skipped=10, save_dir=str(out))

    def block(monitored: bool) -> float:
        if monitored:
            model.admin_monitor = monitor
        else:
            model.__dict__.pop("admin_monitor", None)
        start = time.perf_counter()
        for sample in samples:
            trainer.train_step([sample])
        return (time.perf_counter() - start) / len(samples)

    block(True)  # warm-up, not counted
    rows = []
    for rep in range(args.pairs):
        for name in ("plain", "monitored") if rep % 2 == 0 else ("monitored", "plain"):
            rows.append({"rep": rep, "model": name, "seconds": block(name == "monitored")})
            print(f"  rep {rep} {name:>9}: {1000 * rows[-1]['seconds']:.1f} ms/update", flush=True)
    return rows


def ratios(rows: list[dict[str, Any]], key: str) -> list[float]:
    """Per pair, monitored over plain; for wps, plain over monitored, so that every ratio is a cost (> 1: slower)."""
    by_pair = {(r["rep"], r["model"]): r[key] for r in rows}
    count = 1 + max(r["rep"] for r in rows)
    if key == "wps":
        return [by_pair[(p, "plain")] / by_pair[(p, "monitored")] for p in range(count)]
    return [by_pair[(p, "monitored")] / by_pair[(p, "plain")] for p in range(count)]


def plot(costs: dict[str, list[float]], title: str, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for index, values in enumerate(costs.values()):
        ax.plot([index] * len(values), values, "o", alpha=0.6)
        ax.plot([index - 0.2, index + 0.2], [statistics.median(values)] * 2, "k-")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(costs)), [f"{k} (median {statistics.median(v):.3f})" for k, v in costs.items()])
    ax.set_ylabel("monitored / plain cost, per pair")
    ax.set_title(title)
    save_figure(fig, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin_evidence.bench_monitor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="binarized data (default: Multi30k de-en, prepared once)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_monitor")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--log-interval", type=int, default=50)
    parser.add_argument("--interval", type=int, default=100, help="--admin-monitor-interval of the monitored runs")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--steps", action="store_true",
                        help="in one process: blocks of --interval updates on the same batches, monitor on and off "
                             "in turn (resolves ~1 %%, where whole processes drift by several)")
    parser.add_argument("--toy", action="store_true", help="CI size: 2L d32, 12 updates, 2 pairs, interval 4")
    args = parser.parse_args(argv)
    if args.toy:
        args.layers, args.dim, args.updates, args.log_interval, args.interval, args.pairs = 2, 32, 12, 4, 4, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = args.data or ensure_data()
    rows = step_pairs(args, data) if args.steps else pairs(args, data)
    write_csv(args.out / "runs.csv", rows)
    costs = {key: ratios(rows, key) for key in (("seconds",) if args.steps else RATIO_KEYS)}
    size = f"{args.layers}L-{args.layers}L d{args.dim}"
    summary = {"size": size, "max_tokens": args.max_tokens, "mode": "steps" if args.steps else "processes",
               "updates": args.interval if args.steps else args.updates, "interval": args.interval,
               "pairs": args.pairs, "threads": 1, "cost_ratio": {key: spread(values) for key, values in costs.items()}}
    write_json(args.out / "summary.json", summary)
    plot(costs, f"monitor every {args.interval} updates, {size}, {args.updates} updates, {args.pairs} pairs",
         args.out / "ratios.png")
    print(markdown_table(["cost ratio (monitored/plain)", "min", "median", "max"],
                         [[key, min(v), statistics.median(v), max(v)] for key, v in costs.items()]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
