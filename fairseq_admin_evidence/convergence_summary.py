"""The Table 1 runs, read back: summary.json, validation curves per depth (CSV + PNG) and the table.

Reads what the runs left (``python -m fairseq_admin_evidence.convergence``), per device: each run's recipe log
(fairseq-train's simple-format lines, appended across resumptions) and its result JSON and hypotheses
(``fairseq-admin-evaluate``). A run that has not finished is listed with what it reached and
``"finished": false``; no figure is made up for it.

Runs made on two devices (a CPU, and a GPU machine running ``scripts/convergence_on_gpu.sh``)
are read from their own folders. A cell takes the first device, in the order given, that finished it, else the one
that got furthest; the same run on another device is kept under ``other_devices`` and in the cross-device table, so
the difference between devices can be set against the difference between seeds.

    python -m fairseq_admin_evidence.convergence_summary [--schedule gentle] [--source DEVICE LOGS RESULTS ...]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fairseq_admin_evidence.common import REPO
from fairseq_admin_evidence.convergence import SCHEDULES, TABLE, Run, Schedule
from fairseq_admin_evidence.outputs import markdown_table, write_csv, write_json
from fairseq_admin_tools.fairseq_log import records
from fairseq_admin_tools.figures import pyplot, save_figure
from fairseq_admin_tools.files import write_atomically
from fairseq_admin_tools.methods import COLOURS

STALLED_NLL = 6.0
"""A run whose best validation nll stays above this many nats learned little beyond word frequencies: every
run that trains passes it within its first epoch (its first validations are at ~8 nats)."""



@dataclass(frozen=True)
class Source:
    """Where one device's runs left their logs and results."""

    device: str
    logs: Path
    results: Path


def default_sources(schedule: Schedule) -> list[Source]:
    """This CPU's runs first, then those made on a GPU (``scripts/convergence_on_gpu.sh``, fp32)."""
    return [Source("cpu", schedule.logs, schedule.results),
            Source("h200", schedule.work / "logs_h200", schedule.results.with_name(schedule.results.name + "_h200"))]


@dataclass
class RunSummary:
    """One entry of summary.json."""

    name: str
    method: str
    encoder_layers: int
    decoder_layers: int
    seed: int
    finished: bool
    device: str | None = None
    updates: int | None = None
    epochs: int | None = None
    best_valid_nll: float | None = None
    last_valid_nll: float | None = None
    sacrebleu: float | None = None
    sacrebleu_signature: str | None = None
    tokenized_bleu: float | None = None
    diverged: bool | None = None
    distinct_hypotheses: int | None = None
    """How many different sentences the model output for the test set's 1000: a model that ignores its
    source (a target-side language model) outputs the same few sentences whatever the input."""
    test_sentences: int | None = None
    stopped_by: str | None = None
    """Why training ended, from fairseq's log: ``patience``, ``time budget`` (cut: not trained to its end),
    ``update cap``, or ``epoch cap`` (none of those lines)."""
    valid_curve: list[tuple[int, float]] = field(default_factory=list)


def read_log(path: Path) -> tuple[dict[int, float], int | None, int | None, bool]:
    """Validation nll by update, the last update and epoch, and whether any loss was not finite.

    A resumed run repeats no update, but a restarted one may: the last line for an update wins.
    """
    valid: dict[int, float] = {}
    updates = epochs = None
    not_finite = False
    for record in records(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        if "num_updates" not in record.values:
            continue
        update = int(record.values["num_updates"])
        not_finite |= any(not math.isfinite(record.values.get(key, 0.0)) for key in ("loss", "nll_loss"))
        if record.kind == "valid":
            valid[update] = record.values["nll_loss"]
        updates = max(updates or 0, update)
        if record.kind == "train" and "epoch" in record.values:  # the end-of-epoch line
            epochs = max(epochs or 0, int(record.values["epoch"]))
    return valid, updates, epochs, not_finite


STOP_REASONS = {"early stop since valid performance hasn't improved": "patience",
                "Stopping training due to cumulative_training_time": "time budget",
                "Stopping training due to num_updates": "update cap"}


def stop_reason(path: Path) -> str | None:
    """Why the last training of a log ended (None while no training ended); see :attr:`RunSummary.stopped_by`."""
    reason = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if "done training in" in line:
            reason = reason or "epoch cap"
        for text, name in STOP_REASONS.items():
            if text in line:
                reason = name
        if "| INFO | fairseq_cli.train | task:" in line:  # a (re)start: what ended an earlier one does not count
            reason = None
    return reason


def summarize_run(run: Run, source: Source) -> RunSummary:
    """What one device's log and result say about one run (``device`` is set once it has a log)."""
    result_path = source.results / f"{run.name}.json"
    log_path = source.logs / f"{run.name}.log"
    summary = RunSummary(run.name, run.method, run.layers, run.layers, run.seed, finished=result_path.exists())
    if log_path.exists():
        summary.device = source.device
        valid, summary.updates, summary.epochs, not_finite = read_log(log_path)
        summary.stopped_by = stop_reason(log_path)
        summary.valid_curve = sorted(valid.items())
        if valid:
            summary.best_valid_nll = min(valid.values())
            summary.last_valid_nll = summary.valid_curve[-1][1]
            # judged at the end: a running run is "diverged" only once its loss went non-finite
            stalled = summary.best_valid_nll > STALLED_NLL if summary.finished else None
            summary.diverged = True if not_finite else stalled
    if summary.finished:
        summary.device = source.device
        result = json.loads(result_path.read_text(encoding="utf-8"))
        summary.sacrebleu = result["sacrebleu"]["score"]
        summary.sacrebleu_signature = result["sacrebleu"]["signature"]
        summary.tokenized_bleu = result["tokenized_bleu"]["score"]
        hypotheses = source.results / f"{run.name}.hyp.txt"
        if hypotheses.exists():
            lines = hypotheses.read_text(encoding="utf-8").splitlines()
            summary.distinct_hypotheses, summary.test_sentences = len(set(lines)), len(lines)
    return summary


def choose(run: Run, sources: list[Source]) -> tuple[RunSummary, list[RunSummary]]:
    """The cell's entry (the first device that finished it, else the furthest) and the run on other devices."""
    found = [summarize_run(run, source) for source in sources]
    started = [summary for summary in found if summary.device is not None]
    if not started:
        return found[0], []
    finished = [summary for summary in started if summary.finished]
    chosen = finished[0] if finished else max(started, key=lambda summary: summary.updates or 0)
    return chosen, [summary for summary in started if summary is not chosen]


def mean_and_spread(values: list[float]) -> str:
    """``mean ± half the range`` over seeds (one seed: the value alone)."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {(max(values) - min(values)) / 2:.2f}"


def table(runs: list[RunSummary]) -> str:
    """One row per method and depth: finished seeds, BLEU and best validation nll, mean ± spread."""
    groups: dict[tuple[int, str], list[RunSummary]] = defaultdict(list)
    for run in runs:
        groups[(run.encoder_layers, run.method)].append(run)
    rows = []
    for (layers, method), members in sorted(groups.items()):
        done = [r for r in members if r.finished]
        rows.append([f"{layers}L-{layers}L", method, f"{len(done)} of {len(members)}",
                     ", ".join(f"{r.seed}: {r.device}" for r in done) or "—",
                     mean_and_spread([r.sacrebleu for r in done]), mean_and_spread([r.tokenized_bleu for r in done]),
                     mean_and_spread([r.best_valid_nll for r in done]),
                     ", ".join(f"{r.distinct_hypotheses}" for r in done if r.distinct_hypotheses is not None) or "—",
                     ", ".join(str(r.seed) for r in done if r.diverged) or "—"])
    header = ["depth", "method", "finished seeds", "device (seed: device)", "sacreBLEU", "tokenized BLEU",
              "best valid nll", "distinct outputs (of 1000)", "diverged (seed)"]
    return markdown_table(header, rows)


def cross_device_table(pairs: list[tuple[RunSummary, RunSummary]]) -> str:
    """The same run (method, depth, seed, data order) on two devices, side by side."""
    rows = []
    for chosen, other in pairs:
        for summary in (chosen, other):
            rows.append([summary.name, summary.device, summary.updates, summary.best_valid_nll,
                         summary.last_valid_nll, summary.sacrebleu if summary.finished else "not evaluated"])
    return markdown_table(["run", "device", "updates", "best valid nll", "last valid nll", "sacreBLEU"], rows)


def curve_label(run: RunSummary, schedule: Schedule) -> str:
    """``method sSEED (device[, state])``: a run without a result says how far it got."""
    if run.finished:
        state = ""
    elif run.epochs == int(schedule.env["MAX_EPOCH"]):
        state = ", trained, not evaluated"
    else:
        state = f", stopped at {run.updates}"
    return f"{run.method} s{run.seed} ({run.device}{state})"


def plot_curves(runs: list[RunSummary], others: list[RunSummary], layers: int, schedule: Schedule,
                out: Path) -> None:
    """Every run's validation curve at one depth: a colour per method, a line style per seed; the same runs on
    the other device dotted."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    seeds = sorted({run.seed for run in runs})
    for run in runs + others:
        if run.valid_curve:
            updates, nll = zip(*run.valid_curve, strict=True)
            style = ":" if run in others else ("-", "-.", "--")[seeds.index(run.seed) % 3]
            ax.plot(updates, nll, label=curve_label(run, schedule), linewidth=1.3, linestyle=style,
                    color=COLOURS.get(run.method))
    ax.set_xlabel("update")
    ax.set_ylabel("validation nll (nats/token)")
    ax.set_title(f"Multi30k de→en, {layers}L-{layers}L, lr {schedule.env['LR']}, warmup {schedule.env['WARMUP']}")
    if ax.lines:
        ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    save_figure(fig, out / f"curves_{layers}L.png")


def shown(path: Path) -> str:
    """A path as summary.json records it: relative to the repository when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def summarize(out: Path, sources: list[Source], schedule: Schedule = TABLE) -> list[RunSummary]:
    """Write summary.json, curves_<depth>L.{csv,png} and table.md into ``out``; print the tables."""
    out.mkdir(parents=True, exist_ok=True)
    chosen_and_others = [choose(run, sources) for run in schedule.plan]
    runs = [chosen for chosen, _ in chosen_and_others]
    others = [other for _, found in chosen_and_others for other in found]
    write_json(out / "summary.json", {
        "schedule": schedule.env, "stalled_above_nll": STALLED_NLL,
        "sources": [{"device": s.device, "logs": shown(s.logs), "results": shown(s.results)} for s in sources],
        "runs": [asdict(run) for run in runs], "other_devices": [asdict(run) for run in others]})
    for layers in sorted({run.layers for run in schedule.plan}):
        at_depth = [run for run in runs if run.encoder_layers == layers]
        also = [run for run in others if run.encoder_layers == layers]
        write_csv(out / f"curves_{layers}L.csv", [
            {"run": run.name, "device": run.device, "update": update, "valid_nll": nll}
            for run in at_depth + also for update, nll in run.valid_curve])
        plot_curves(at_depth, also, layers, schedule, out)
    text = table(runs)
    pairs = [(chosen, other) for chosen, found in chosen_and_others for other in found]
    if pairs:
        text += "\n\nThe same runs on two devices:\n\n" + cross_device_table(pairs)
    write_atomically(str(out / "table.md"), text + "\n")
    print(text)
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin_evidence.convergence_summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default=TABLE.name,
                        help="whose runs: the table's (default) or the gentle follow-up's")
    parser.add_argument("--out", type=Path, help="default: docs/results/convergence (table), "
                                                 "docs/results/convergence_gentle (gentle)")
    parser.add_argument("--source", nargs=3, action="append", metavar=("DEVICE", "LOGS", "RESULTS"),
                        help="a device's recipe logs and result JSONs, in order of preference (repeat; default: "
                             "this CPU's, then the GPU's)")
    args = parser.parse_args(argv)
    schedule = SCHEDULES[args.schedule]
    out = args.out or REPO / "docs" / "results" / schedule.work.name
    sources = ([Source(device, Path(logs), Path(results)) for device, logs, results in args.source]
               if args.source else default_sources(schedule))
    summarize(out, sources, schedule)


if __name__ == "__main__":
    main()
