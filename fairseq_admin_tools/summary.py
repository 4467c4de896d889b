"""``fairseq-admin-summary``: mean ± std over seeds, and paired significance between methods, from the result JSONs.

    fairseq-admin-summary results/ [--json summary.json] [--csv summary.csv] [--baseline postln]

Reads every ``<task>-<method>-<E>L-<D>L-s<seed>.json`` that ``fairseq-admin-evaluate`` wrote (any method of
:mod:`fairseq_admin_tools.methods`) and prints one row per (task, method, depth): the number of seeds, the
paper's BLEU (fairseq-generate's, on Moses tokens; the 13a tokenized BLEU for sentencepiece runs), sacreBLEU
and chrF, each as mean ± sample standard deviation (n − 1; 0 for a single seed).

Then, for each task, depth and seed, every method against the baseline method (``--baseline``, default
postln) on the same test set: sacreBLEU's paired bootstrap resampling (``sacrebleu.significance``, 1000
resamples, its fixed seed) of BLEU and chrF over the saved hypotheses, with the p-value of "no better than
the baseline".
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from fairseq_admin_tools.errors import AdminError, command_line_tool
from fairseq_admin_tools.files import write_atomically
from fairseq_admin_tools.methods import METHODS

SUMMARY_FORMAT_VERSION = 1
_METHOD = "|".join(re.escape(name) for name in sorted(METHODS, key=len, reverse=True))  # longest first
RUN_NAME = re.compile(rf"^(?P<task>.+)-(?P<method>{_METHOD})-(?P<enc>\d+)L-(?P<dec>\d+)L-s(?P<seed>\d+)$")
FIELDS = ["task", "method", "layers", "seeds", "n", "paper_bleu_mean", "paper_bleu_std", "paper_bleu_kind",
          "sacrebleu_mean", "sacrebleu_std", "chrf_mean", "chrf_std", "sacrebleu_signature"]
BOOTSTRAP_SAMPLES = 1000


@dataclass(frozen=True)
class Result:
    task: str
    method: str
    layers: str
    seed: int
    paper_bleu: float
    paper_bleu_kind: str
    sacrebleu: float
    signature: str
    chrf: float | None
    hypotheses: Path | None
    reference: Path | None


def _saved_file(path: Path, recorded: str | None, suffix: str) -> Path | None:
    """A file the result names: beside the JSON (results moved together), else where it was written."""
    beside = path.with_name(path.stem + suffix)
    if beside.is_file():
        return beside
    return Path(recorded) if recorded and Path(recorded).is_file() else None


def read_result(path: Path) -> Result | None:
    """One result JSON, or None if it is not a result named TASK-METHOD-EL-DL-sSEED."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-run the eval stage for it") from None
    if not isinstance(record, dict) or "sacrebleu" not in record:
        return None  # not a result of fairseq-admin-evaluate
    match = RUN_NAME.match(record.get("name") or path.stem)
    if not match:
        return None
    if "paper_bleu" in record:
        paper, kind = record["paper_bleu"]["score"], "fairseq BLEU4, Moses tokens"
    else:
        paper, kind = record["tokenized_bleu"]["score"], "13a tokenized BLEU"
    chrf = record["sacrebleu"].get("chrf", {}).get("score")  # format 2 on
    reference = record.get("reference")
    return Result(match["task"], match["method"], f"{match['enc']}L-{match['dec']}L", int(match["seed"]),
                  float(paper), kind, float(record["sacrebleu"]["score"]), record["sacrebleu"]["signature"],
                  None if chrf is None else float(chrf), _saved_file(path, record.get("hypotheses"), ".hyp.txt"),
                  Path(reference) if reference and Path(reference).is_file() else None)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(results: list[Result]) -> list[dict]:
    """One row per task / method / depth, seeds pooled."""
    groups: dict[tuple[str, str, str], list[Result]] = defaultdict(list)
    for result in results:
        groups[(result.task, result.method, result.layers)].append(result)
    rows = []
    for (task, method, layers), group in sorted(groups.items()):
        group.sort(key=lambda r: r.seed)
        paper_mean, paper_std = _mean_std([r.paper_bleu for r in group])
        sacre_mean, sacre_std = _mean_std([r.sacrebleu for r in group])
        chrfs = [r.chrf for r in group if r.chrf is not None]
        chrf_mean, chrf_std = _mean_std(chrfs) if chrfs else (None, None)
        rows.append({"task": task, "method": method, "layers": layers, "seeds": " ".join(str(r.seed) for r in group),
                     "n": len(group), "paper_bleu_mean": round(paper_mean, 2), "paper_bleu_std": round(paper_std, 2),
                     "paper_bleu_kind": "; ".join(sorted({r.paper_bleu_kind for r in group})),
                     "sacrebleu_mean": round(sacre_mean, 2), "sacrebleu_std": round(sacre_std, 2),
                     "chrf_mean": None if chrf_mean is None else round(chrf_mean, 2),
                     "chrf_std": None if chrf_std is None else round(chrf_std, 2),
                     "sacrebleu_signature": "; ".join(sorted({r.signature for r in group}))})
    return rows


def _lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="\n") as f:
        return [line[:-1] if line.endswith("\n") else line for line in f]


def paired_bootstrap(results: list[Result], baseline: str) -> tuple[list[dict], list[str]]:
    """Each method against ``baseline`` per task, depth and seed (rows), and what could not be compared (notes)."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    groups: dict[tuple[str, str, int], dict[str, Result]] = defaultdict(dict)
    for result in results:
        groups[(result.task, result.layers, result.seed)][result.method] = result
    rows, notes = [], []
    for (task, layers, seed), by_method in sorted(groups.items()):
        if len(by_method) < 2:
            continue
        where = f"{task} {layers} seed {seed}"
        if baseline not in by_method:
            notes.append(f"{where}: no {baseline} result to compare with")
            continue
        others = [m for m in sorted(by_method) if m != baseline]
        runs = [by_method[baseline], *(by_method[m] for m in others)]
        missing = [f"{r.method} ({'hypotheses' if r.hypotheses is None else 'reference'})" for r in runs
                   if r.hypotheses is None or r.reference is None]
        if missing:
            notes.append(f"{where}: saved {', '.join(missing)} not found")
            continue
        references = _lines(runs[0].reference)
        systems = [(r.method, _lines(r.hypotheses)) for r in runs]
        if any(len(hyps) != len(references) for _, hyps in systems):
            notes.append(f"{where}: hypotheses and reference differ in length")
            continue
        lowercase = "case:lc" in runs[0].signature
        test = PairedTest(systems, {"BLEU": BLEU(lowercase=lowercase), "chrF": CHRF(lowercase=lowercase)},
                          references=[references], test_type="bs", n_samples=BOOTSTRAP_SAMPLES)
        _, scores = test()
        bleu, chrf = scores["BLEU"], scores[next(k for k in scores if k.startswith("chrF"))]
        for index, method in enumerate(others, start=1):
            rows.append({"task": task, "layers": layers, "seed": seed, "method": method, "baseline": baseline,
                         "bleu": round(bleu[index].score, 2), "bleu_baseline": round(bleu[0].score, 2),
                         "bleu_p": round(bleu[index].p_value, 4), "chrf": round(chrf[index].score, 2),
                         "chrf_baseline": round(chrf[0].score, 2), "chrf_p": round(chrf[index].p_value, 4)})
    return rows, notes


def _mean_std_text(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else f"{mean:.2f} ± {std:.2f}"


def table(rows: list[dict]) -> str:
    header = (f"{'task':<16} {'method':<17} {'layers':<9} {'n':>2}  {'paper BLEU':>15}  {'sacreBLEU':>15}  "
              f"{'chrF':>15}  seeds")
    lines = [header, "-" * len(header)]
    for row in rows:
        paper = _mean_std_text(row["paper_bleu_mean"], row["paper_bleu_std"])
        sacre = _mean_std_text(row["sacrebleu_mean"], row["sacrebleu_std"])
        chrf = _mean_std_text(row["chrf_mean"], row["chrf_std"])
        lines.append(f"{row['task']:<16} {row['method']:<17} {row['layers']:<9} {row['n']:>2}  {paper:>15}  "
                     f"{sacre:>15}  {chrf:>15}  {row['seeds']}")
    return "\n".join(lines)


def bootstrap_table(rows: list[dict]) -> str:
    header = f"{'task':<16} {'layers':<9} {'seed':>5}  {'method vs baseline':<30} {'sacreBLEU':>15} {'p':>7}  " \
             f"{'chrF':>15} {'p':>7}"
    lines = [f"paired bootstrap ({BOOTSTRAP_SAMPLES} resamples, sacrebleu.significance)", header, "-" * len(header)]
    for row in rows:
        versus = f"{row['method']} vs {row['baseline']}"
        bleu = f"{row['bleu']:.2f} / {row['bleu_baseline']:.2f}"
        chrf = f"{row['chrf']:.2f} / {row['chrf_baseline']:.2f}"
        lines.append(f"{row['task']:<16} {row['layers']:<9} {row['seed']:>5}  {versus:<30} {bleu:>15} "
                     f"{row['bleu_p']:>7.4f}  {chrf:>15} {row['chrf_p']:>7.4f}")
    return "\n".join(lines)


def read_results(items: list[str]) -> tuple[list[Result], list[str]]:
    """The results in the given files and directories, and the names of the JSONs that are not results."""
    paths: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            paths += sorted(item.glob("*.json"))
        elif item.is_file():
            paths.append(item)
        else:
            raise AdminError(f"{item} does not exist; give result JSONs or their directory")
    results, skipped = [], []
    try:
        for path in paths:
            result = read_result(path)
            (results.append(result) if result else skipped.append(path.name))
    except (ValueError, KeyError) as err:
        raise AdminError(str(err)) from None
    return results, skipped


@command_line_tool("fairseq-admin-summary")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fairseq-admin-summary", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="result JSON files, or directories holding them")
    parser.add_argument("--json", default=None, help="also write the summary rows as JSON here")
    parser.add_argument("--csv", default=None, help="also write the summary rows as CSV here")
    parser.add_argument("--baseline", default="postln", choices=sorted(METHODS),
                        help="the method every other is tested against (paired bootstrap; default postln)")
    args = parser.parse_args(argv)
    results, skipped = read_results(args.results)
    if not results:
        raise AdminError(f"no result JSONs named TASK-METHOD-EL-DL-sSEED.json in {' '.join(args.results)}; "
                         "run the recipes' eval stage first")
    rows = summarize(results)
    print(table(rows))
    if skipped:
        print(f"(skipped, not named TASK-METHOD-EL-DL-sSEED with METHOD one of {', '.join(METHODS)}: "
              f"{', '.join(skipped)})")
    significance, notes = paired_bootstrap(results, args.baseline)
    if significance:
        print()
        print(bootstrap_table(significance))
    for note in notes:
        print(f"(not compared: {note})")
    if args.json:
        summary = {"format_version": SUMMARY_FORMAT_VERSION, "summary": rows, "paired_bootstrap": significance,
                   "not_compared": notes}
        write_atomically(args.json, json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    if args.csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_atomically(args.csv, out.getvalue())


if __name__ == "__main__":
    main()
