"""Inference speed of an exported (ω folded, stock ``transformer``) model vs the plugin model it came from.

Runs real ``fairseq-generate`` on both, interleaved (the order alternates every repeat, so drift on a
shared machine hits both alike), and reads fairseq's own "Translated ... tokens/s" line (generation
time only, model loading excluded). Writes ``runs.csv`` and ``summary.json`` into --results-dir;
the summary has the exported/plugin tokens/s ratio per repeat with its min/median/max.

    python -m fairseq_admin_evidence.bench_export --checkpoint CKPT.pt --data DATA_BIN \\
        --results-dir results/bench_export
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

from fairseq_admin_evidence.common import REPO
from fairseq_admin_evidence.outputs import RESULTS, spread, write_csv, write_json
from fairseq_admin_evidence.runs import BIN, USER_DIR

TRANSLATED = re.compile(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s .* ([\d.]+) tokens/s\)")


def generate(checkpoint: Path, data: Path, plugin: bool, options: argparse.Namespace) -> dict:
    command = [str(BIN / "fairseq-generate"), str(data), "--path", str(checkpoint), "--gen-subset", options.subset,
               "--beam", str(options.beam), "--batch-size", str(options.batch_size), "--max-len-b", "50"]
    if plugin:
        command += ["--user-dir", str(USER_DIR)]
    if options.cpu:
        command.append("--cpu")
    env = {**os.environ, "OMP_NUM_THREADS": str(options.threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the whole process (startup included): less sensitive than wall time to a shared machine.
    cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        raise SystemExit(f"fairseq-generate failed:\n{result.stderr[-3000:]}")
    match = TRANSLATED.search(result.stderr)
    if match is None:
        raise SystemExit(f"no 'Translated ...' line in fairseq-generate's log:\n{result.stderr[-2000:]}")
    hyps = {}  # sentence id -> (score, tokens)
    for line in result.stdout.splitlines():
        if line.startswith("H-"):
            key, score, tokens = line.split("\t")
            hyps[key] = (float(score), tokens)
    return {"sentences": int(match[1].replace(",", "")), "tokens": int(match[2].replace(",", "")),
            "seconds": float(match[3]), "tokens_per_s": float(match[4]), "process_cpu_seconds": cpu_seconds,
            "hypotheses": hyps}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin_evidence.bench_export",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="trained transformer_admin checkpoint")
    parser.add_argument("--data", type=Path, required=True, help="binarized data dir (fairseq-generate's DATA)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS / "bench_export")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--subset", default="test")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for fairseq-generate")
    parser.add_argument("--cpu", action="store_true", help="pass --cpu to fairseq-generate")
    return parser.parse_args(argv)


def interleaved(options: argparse.Namespace, exported: Path) -> tuple[list[dict], list[float], list[float]]:
    """Plugin and exported model, the order alternating per repeat; (rows, tokens/s ratios, CPU-seconds ratios)."""
    rows, ratios, cpu_ratios = [], [], []
    for repeat in range(options.repeats):
        order = [("plugin", True), ("exported", False)]
        if repeat % 2:
            order.reverse()
        speed, hyps = {}, {}
        for variant, plugin in order:
            run = generate(options.checkpoint if plugin else exported, options.data, plugin, options)
            speed[variant], hyps[variant] = run["tokens_per_s"], run.pop("hypotheses")
            rows.append({"repeat": repeat, "variant": variant, **run})
            print(f"repeat {repeat} {variant:8s} {run['tokens_per_s']:9.1f} tokens/s ({run['seconds']:.1f}s)",
                  flush=True)
        ours, theirs = hyps["plugin"], hyps["exported"]
        same = ours.keys() == theirs.keys() and all(ours[k][1] == theirs[k][1] for k in ours)
        worst = max((abs(ours[k][0] - theirs[k][0]) for k in ours if k in theirs), default=float("nan"))
        print(f"repeat {repeat}: hypotheses identical: {same}, max |score difference| {worst:.2e}", flush=True)
        ratios.append(speed["exported"] / speed["plugin"])
        cpu = {r["variant"]: r["process_cpu_seconds"] for r in rows[-2:]}
        cpu_ratios.append(cpu["plugin"] / cpu["exported"])
    return rows, ratios, cpu_ratios


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    from fairseq_admin.export import export

    exported = options.results_dir / "exported_stock_transformer.pt"
    options.results_dir.mkdir(parents=True, exist_ok=True)
    export(str(options.checkpoint), str(exported))
    rows, ratios, cpu_ratios = interleaved(options, exported)
    write_csv(options.results_dir / "runs.csv", rows)
    summary: dict[str, Any] = {
        "checkpoint": str(options.checkpoint),
        "data": str(options.data),
        "subset": options.subset,
        "beam": options.beam,
        "batch_size": options.batch_size,
        "threads": options.threads,
        "device": "cpu" if options.cpu else "default",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "tokens_per_s": {v: [r["tokens_per_s"] for r in rows if r["variant"] == v] for v in ("plugin", "exported")},
        "ratio_exported_over_plugin": spread(ratios),
        "cpu_ratio_plugin_over_exported": spread(cpu_ratios),
    }
    write_json(options.results_dir / "summary.json", summary, indent=1)
    r = summary["ratio_exported_over_plugin"]
    print(f"exported/plugin tokens/s: median {r['median']:.3f} (min {r['min']:.3f}, max {r['max']:.3f}) "
          f"over {options.repeats} repeats -> {options.results_dir}")


if __name__ == "__main__":
    main()
