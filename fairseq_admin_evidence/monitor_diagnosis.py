"""What the training monitor shows about the CPU-sized Table 1's failure: 18L Admin against 18L Pre-LN, the first
600 updates at the table's schedule (lr 2e-3, warmup 50: Admin ends ignoring its source) and at the gentle one
(lr 1e-3, warmup 300: Admin trains), the monitor every 10 updates.

    python -m fairseq_admin_evidence.convergence --schedule monitor --jobs 1 --threads 1
    python -m fairseq_admin_evidence.convergence --schedule monitor_gentle --jobs 1 --threads 1
    python -m fairseq_admin_evidence.monitor_diagnosis --decode --out docs/results/monitor

Writes, per run, ``fairseq-admin-monitor``'s plots, CSVs and account (``<schedule>-<method>/``), and across the
runs ``mean_ratio.csv``/``.png`` (each branch kind's ratio, averaged over layers, against updates),
``cross_attn_by_layer.csv``/``.png`` (the decoder's cross-attention ratio per layer at the first and last
measurement), ``valid_nll.csv``/``.png``, ``summary.json`` and ``table.md``; with ``--decode``, also
``distinct_outputs.csv``: how many different sentences each Admin run's checkpoints at the ends of epochs 1 and 2
and at its last update output for the 1000 test sentences (greedy).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from fairseq_admin_evidence.convergence import MONITOR, MONITOR_GENTLE, Schedule
from fairseq_admin_evidence.convergence_summary import Source, summarize_run
from fairseq_admin_evidence.outputs import RESULTS, markdown_table, write_csv, write_json
from fairseq_admin_evidence.runs import USER_DIR, run_logged
from fairseq_admin_tools.evaluate import hypotheses_in_order
from fairseq_admin_tools.figures import pyplot, save_figure
from fairseq_admin_tools.methods import COLOURS
from fairseq_admin_tools.monitor import BRANCH_LABELS, account, branch_rows, write_outputs
from fairseq_admin_tools.monitor_records import MONITOR_FILE, read_records

SCHEDULES = (MONITOR, MONITOR_GENTLE)
KINDS = [("encoder", "self_attn"), ("encoder", "ffn"), ("decoder", "self_attn"), ("decoder", "cross_attn"),
         ("decoder", "ffn")]
STYLES = {MONITOR.name: "-", MONITOR_GENTLE.name: "--"}


def schedule_label(schedule: Schedule) -> str:
    return f"lr {schedule.env['LR']}, warmup {schedule.env['WARMUP']}"


def mean_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ratio averaged over layers, per update and branch kind."""
    groups: dict[tuple[int, str, str], list[float]] = defaultdict(list)
    for row in rows:
        if row["ratio"] is not None:
            groups[(row["update"], row["side"], row["branch"])].append(row["ratio"])
    return [{"update": u, "side": s, "branch": b, "mean_ratio": statistics.mean(v)}
            for (u, s, b), v in sorted(groups.items())]


def collect(out: Path, collapse_below: float) -> list[dict[str, Any]]:
    """Each run's monitor outputs written under ``out``, and what the comparison needs."""
    runs = []
    for schedule in SCHEDULES:
        for run in schedule.plan:
            path = schedule.work / "checkpoints" / run.name / MONITOR_FILE
            if not path.exists():
                print(f"monitor_diagnosis: {schedule.name} {run.name}: no monitor file yet, skipped", flush=True)
                continue
            records = read_records(str(path))
            write_outputs(records, out / f"{schedule.name}-{run.method}", collapse_below)
            trained = summarize_run(run, Source("cpu", schedule.logs, schedule.results))
            rows = branch_rows(records)
            runs.append({"schedule": schedule.name, "lr": schedule.env["LR"], "warmup": schedule.env["WARMUP"],
                         "method": run.method, "name": run.name, "label": f"{run.method}, {schedule_label(schedule)}",
                         "updates": trained.updates, "valid_curve": trained.valid_curve,
                         "sacrebleu": trained.sacrebleu, "distinct_hypotheses": trained.distinct_hypotheses,
                         "mean_ratio": mean_ratios(rows), "rows": rows, "account": account(records, collapse_below)})
    return runs


def distinct_outputs(data: Path, checkpoint: Path, log: Path) -> int:
    """How many different sentences a checkpoint outputs for the 1000 test sentences (greedy): 1 means it reads
    nothing of its source."""
    command = [Path(sys.executable).parent / "fairseq-generate", data, "--user-dir", USER_DIR, "--path", checkpoint,
               "--gen-subset", "test",
               "--beam", "1", "--max-tokens", "8000", "--required-batch-size-multiple", "1", "--remove-bpe",
               "sentencepiece", "--cpu", "--max-len-b", "60"]
    finished = run_logged(command, log, progress=False)
    if finished.code != 0:
        raise RuntimeError(f"fairseq-generate failed, see {log}")
    return len(set(hypotheses_in_order(log.read_text(encoding="utf-8"))))


def decode_epochs() -> list[dict[str, Any]]:
    """Distinct greedy outputs of each Admin run's epoch checkpoints (ends of epochs 1 and 2) and its last one."""
    rows = []
    for schedule in SCHEDULES:
        run = next(run for run in schedule.plan if run.method == "admin")
        save_dir = schedule.work / "checkpoints" / run.name
        data = schedule.work / "data" / "multi30k_de_en" / "bin"
        for name in ("checkpoint1.pt", "checkpoint2.pt", "checkpoint_last.pt"):
            if not (save_dir / name).exists():
                continue
            update = int(checkpoint_update(save_dir / name))
            count = distinct_outputs(data, save_dir / name, schedule.work / "decode" / f"{run.name}-{name}.log")
            rows.append({"run": f"admin, {schedule_label(schedule)}", "checkpoint": name, "update": update,
                         "distinct_outputs": count})
            print(f"monitor_diagnosis: {schedule.name} {name} (update {update}): {count} distinct outputs", flush=True)
    return rows


def checkpoint_update(checkpoint: Path) -> int:
    """The update a fairseq checkpoint was saved at (torch imported here, so that importing this module stays light)."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return int(state["optimizer_history"][-1]["num_updates"])


def plot_mean_ratios(runs: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(KINDS), figsize=(4.2 * len(KINDS), 3.6), sharey=True)
    for ax, (side, branch) in zip(axes, KINDS, strict=True):
        for run in runs:
            points = [(r["update"], r["mean_ratio"]) for r in run["mean_ratio"]
                      if (r["side"], r["branch"]) == (side, branch)]
            if points:
                ax.plot(*zip(*points, strict=True), STYLES[run["schedule"]], color=COLOURS[run["method"]],
                        label=run["label"], lw=1.3)
        ax.set_title(f"{side} {BRANCH_LABELS[branch]}")
        ax.set_xlabel("update")
        ax.set_yscale("log")
    axes[0].set_ylabel("‖f(x)‖ / ‖ω ⊙ x‖, mean over the 18 layers")
    axes[-1].legend(fontsize=8)
    save_figure(fig, path)


def cross_attention_by_layer(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        cross = [r for r in run["rows"] if r["side"] == "decoder" and r["branch"] == "cross_attn"]
        if not cross:
            continue
        for stage, update in (("first", min(r["update"] for r in cross)), ("last", max(r["update"] for r in cross))):
            rows += [{"run": run["label"], "stage": stage, "update": update, "layer": r["layer"], "ratio": r["ratio"]}
                     for r in cross if r["update"] == update]
    return rows


def plot_cross_attention(rows: list[dict[str, Any]], runs: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        for stage, marker in (("first", "o"), ("last", "s")):
            mine = [r for r in rows if r["run"] == run["label"] and r["stage"] == stage]
            if mine:
                ax.plot([r["layer"] for r in mine], [r["ratio"] for r in mine], STYLES[run["schedule"]], marker=marker,
                        color=COLOURS[run["method"]], ms=3, alpha=0.45 if stage == "first" else 1.0,
                        label=f"{run['label']}, update {mine[0]['update']}")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("cross-attention ‖f(x)‖ / ‖ω ⊙ x‖")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_valid(runs: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        if run["valid_curve"]:
            ax.plot(*zip(*run["valid_curve"], strict=True), STYLES[run["schedule"]], marker="o", ms=3,
                    color=COLOURS[run["method"]], label=run["label"])
    ax.set_xlabel("update")
    ax.set_ylabel("validation nll (base 2)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def table(runs: list[dict[str, Any]]) -> str:
    header = ["run", "updates", "valid nll (last)", "sacreBLEU", "distinct outputs",
              *[f"{s[:3]} {BRANCH_LABELS[b]} ratio first → last" for s, b in KINDS]]
    rows = []
    for run in runs:
        cells = []
        for side, branch in KINDS:
            mine = [r["mean_ratio"] for r in run["mean_ratio"] if (r["side"], r["branch"]) == (side, branch)]
            cells.append(f"{mine[0]:.3f} → {mine[-1]:.3f}" if mine else "—")
        last_nll = run["valid_curve"][-1][1] if run["valid_curve"] else None
        rows.append([run["label"], run["updates"], last_nll if last_nll is not None else "—",
                     run["sacrebleu"] if run["sacrebleu"] is not None else "—",
                     run["distinct_hypotheses"] if run["distinct_hypotheses"] is not None else "—", *cells])
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin_evidence.monitor_diagnosis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS / "monitor")
    parser.add_argument("--collapse-below", type=float, default=0.05)
    parser.add_argument("--decode", action="store_true",
                        help="also decode each Admin run's epoch checkpoints greedily and count distinct outputs")
    args = parser.parse_args(argv)
    runs = collect(args.out, args.collapse_below)
    if not runs:
        print("monitor_diagnosis: no monitored run yet; run the convergence schedules named in --help", flush=True)
        return 1
    write_csv(args.out / "mean_ratio.csv", [{"run": run["label"], **row} for run in runs for row in run["mean_ratio"]])
    plot_mean_ratios(runs, args.out / "mean_ratio.png")
    cross = cross_attention_by_layer(runs)
    write_csv(args.out / "cross_attn_by_layer.csv", cross)
    plot_cross_attention(cross, runs, args.out / "cross_attn_by_layer.png")
    write_csv(args.out / "valid_nll.csv", [{"run": run["label"], "update": u, "valid_nll": v}
                                           for run in runs for u, v in run["valid_curve"]])
    plot_valid(runs, args.out / "valid_nll.png")
    if args.decode:
        write_csv(args.out / "distinct_outputs.csv", decode_epochs())
    write_json(args.out / "summary.json", [{k: v for k, v in run.items() if k != "rows"} for run in runs])
    text = table(runs)
    (args.out / "table.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    for run in runs:
        print(f"\n{run['label']}:\n  " + "\n  ".join(run["account"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
