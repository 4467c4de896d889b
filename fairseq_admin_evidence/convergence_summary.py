"""The Table 1 runs, read back: summary.json, validation curves per depth (CSV + PNG) and the table.

Reads what the runs left (``python -m fairseq_admin_evidence.convergence run``): each run's recipe log
(fairseq-train's simple-format lines, appended across resumptions) and its result JSON
(``fairseq-admin-evaluate``). A run that has not finished is listed with what it reached and
``"finished": false``; no figure is made up for it.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fairseq_admin_evidence.common import REPO
from fairseq_admin_evidence.convergence import LOGS, PLAN, RESULTS, SCHEDULE, Run
from fairseq_admin_evidence.figures import pyplot, save_figure
from fairseq_admin_evidence.outputs import markdown_table, write_csv, write_json
from fairseq_admin_tools.files import write_atomically

STALLED_NLL = 6.0
"""A run whose best validation nll stays above this many nats learned little beyond word frequencies: every
run that trains passes it within its first epoch (its first validations are at ~8 nats)."""

_FIELD = re.compile(r"\| (\w+) ([-\d.e+naif]+)(?= \||$)")
_EPOCH = re.compile(r"\| epoch (\d+) \|")


@dataclass
class RunSummary:
    """One entry of summary.json."""

    name: str
    method: str
    encoder_layers: int
    decoder_layers: int
    seed: int
    finished: bool
    updates: int | None = None
    epochs: int | None = None
    best_valid_nll: float | None = None
    last_valid_nll: float | None = None
    sacrebleu: float | None = None
    sacrebleu_signature: str | None = None
    tokenized_bleu: float | None = None
    diverged: bool | None = None
    valid_curve: list[tuple[int, float]] = field(default_factory=list)


def log_fields(line: str) -> dict[str, float]:
    """The ``| key value |`` numbers of one fairseq simple-format log line."""
    values = {}
    for key, text in _FIELD.findall(line):
        try:
            values[key] = float(text)
        except ValueError:
            continue
    return values


def read_log(path: Path) -> tuple[dict[int, float], int | None, int | None, bool]:
    """Validation nll by update, the last update and epoch, and whether any loss was not finite.

    A resumed run repeats no update, but a restarted one may: the last line for an update wins.
    """
    valid: dict[int, float] = {}
    updates = epochs = None
    not_finite = False
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if "| INFO | valid |" not in line and "| INFO | train" not in line:
            continue
        values = log_fields(line)
        if "num_updates" not in values:
            continue
        update = int(values["num_updates"])
        not_finite |= any(not math.isfinite(values.get(key, 0.0)) for key in ("loss", "nll_loss"))
        if "| INFO | valid |" in line:
            valid[update] = values["nll_loss"]
        updates = max(updates or 0, update)
        epoch = _EPOCH.search(line)
        if epoch and "| INFO | train |" in line:  # the end-of-epoch line
            epochs = max(epochs or 0, int(epoch[1]))
    return valid, updates, epochs, not_finite


def summarize_run(run: Run, logs: Path = LOGS, results: Path = RESULTS) -> RunSummary:
    result_path = results / f"{run.name}.json"
    log_path = logs / f"{run.name}.log"
    summary = RunSummary(run.name, run.method, run.layers, run.layers, run.seed, finished=result_path.exists())
    if log_path.exists():
        valid, summary.updates, summary.epochs, not_finite = read_log(log_path)
        summary.valid_curve = sorted(valid.items())
        if valid:
            summary.best_valid_nll = min(valid.values())
            summary.last_valid_nll = summary.valid_curve[-1][1]
            # judged at the end: a running run is "diverged" only once its loss went non-finite
            stalled = summary.best_valid_nll > STALLED_NLL if summary.finished else None
            summary.diverged = True if not_finite else stalled
    if summary.finished:
        result = json.loads(result_path.read_text(encoding="utf-8"))
        summary.sacrebleu = result["sacrebleu"]["score"]
        summary.sacrebleu_signature = result["sacrebleu"]["signature"]
        summary.tokenized_bleu = result["tokenized_bleu"]["score"]
    return summary


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
                     mean_and_spread([r.sacrebleu for r in done]), mean_and_spread([r.tokenized_bleu for r in done]),
                     mean_and_spread([r.best_valid_nll for r in done]),
                     ", ".join(str(r.seed) for r in done if r.diverged) or "—"])
    header = ["depth", "method", "finished seeds", "sacreBLEU", "tokenized BLEU", "best valid nll", "stalled (seed)"]
    return markdown_table(header, rows)


def plot_curves(runs: list[RunSummary], layers: int, out: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        if run.valid_curve:
            updates, nll = zip(*run.valid_curve, strict=True)
            state = "" if run.finished else " (running)"
            ax.plot(updates, nll, label=f"{run.method} s{run.seed}{state}", linewidth=1.2)
    ax.set_xlabel("update")
    ax.set_ylabel("validation nll (nats/token)")
    ax.set_title(f"Multi30k de→en, {layers}L-{layers}L, lr {SCHEDULE['LR']}, warmup {SCHEDULE['WARMUP']}")
    if ax.lines:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, out / f"curves_{layers}L.png")


def summarize(out: Path, logs: Path = LOGS, results: Path = RESULTS) -> list[RunSummary]:
    """Write summary.json, curves_<depth>L.{csv,png} and table.md into ``out``; print the table."""
    out.mkdir(parents=True, exist_ok=True)
    runs = [summarize_run(run, logs, results) for run in PLAN]
    write_json(out / "summary.json", {"schedule": SCHEDULE, "stalled_above_nll": STALLED_NLL,
                                      "runs": [asdict(run) for run in runs]})
    for layers in sorted({run.layers for run in PLAN}):
        at_depth = [run for run in runs if run.encoder_layers == layers]
        write_csv(out / f"curves_{layers}L.csv", [{"run": run.name, "update": update, "valid_nll": nll}
                                                   for run in at_depth for update, nll in run.valid_curve])
        plot_curves(at_depth, layers, out)
    text = table(runs)
    write_atomically(str(out / "table.md"), text + "\n")
    print(text)
    return runs



def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin_evidence.convergence_summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "convergence")
    parser.add_argument("--logs", type=Path, default=LOGS, help="the runs' recipe logs")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the runs' result JSONs")
    args = parser.parse_args(argv)
    summarize(args.out, args.logs, args.results)


if __name__ == "__main__":
    main()
