"""``fairseq-admin-summary``: mean ± std over seeds, per task / method / depth, from the recipes' result JSONs.

    fairseq-admin-summary results/ [--json summary.json] [--csv summary.csv]

Reads every ``<task>-<method>-<E>L-<D>L-s<seed>.json`` that ``fairseq-admin-evaluate`` wrote and prints one
row per (task, method, depth): the number of seeds, the paper's BLEU (fairseq-generate's, on Moses tokens;
the 13a tokenized BLEU for sentencepiece runs) and sacreBLEU, each as mean ± sample standard deviation
(n − 1; 0 for a single seed). Results without a seed in their name (written before seeds were part of it)
are skipped with a note.
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

RUN_NAME = re.compile(r"^(?P<task>.+)-(?P<method>admin|postln|preln)-(?P<enc>\d+)L-(?P<dec>\d+)L-s(?P<seed>\d+)$")
FIELDS = ["task", "method", "layers", "seeds", "n", "paper_bleu_mean", "paper_bleu_std", "paper_bleu_kind",
          "sacrebleu_mean", "sacrebleu_std", "sacrebleu_signature"]


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


def read_result(path: Path) -> Result | None:
    """One result JSON, or None if its name carries no seed."""
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
    return Result(match["task"], match["method"], f"{match['enc']}L-{match['dec']}L", int(match["seed"]),
                  float(paper), kind, float(record["sacrebleu"]["score"]), record["sacrebleu"]["signature"])


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
        rows.append({"task": task, "method": method, "layers": layers, "seeds": " ".join(str(r.seed) for r in group),
                     "n": len(group), "paper_bleu_mean": round(paper_mean, 2), "paper_bleu_std": round(paper_std, 2),
                     "paper_bleu_kind": "; ".join(sorted({r.paper_bleu_kind for r in group})),
                     "sacrebleu_mean": round(sacre_mean, 2), "sacrebleu_std": round(sacre_std, 2),
                     "sacrebleu_signature": "; ".join(sorted({r.signature for r in group}))})
    return rows


def table(rows: list[dict]) -> str:
    header = f"{'task':<16} {'method':<7} {'layers':<9} {'n':>2}  {'paper BLEU':>15}  {'sacreBLEU':>15}  seeds"
    lines = [header, "-" * len(header)]
    for row in rows:
        paper = f"{row['paper_bleu_mean']:.2f} ± {row['paper_bleu_std']:.2f}"
        sacre = f"{row['sacrebleu_mean']:.2f} ± {row['sacrebleu_std']:.2f}"
        lines.append(f"{row['task']:<16} {row['method']:<7} {row['layers']:<9} {row['n']:>2}  {paper:>15}  "
                     f"{sacre:>15}  {row['seeds']}")
    return "\n".join(lines)


@command_line_tool("fairseq-admin-summary")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fairseq-admin-summary", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="result JSON files, or directories holding them")
    parser.add_argument("--json", default=None, help="also write the summary rows as JSON here")
    parser.add_argument("--csv", default=None, help="also write the summary rows as CSV here")
    args = parser.parse_args(argv)
    paths: list[Path] = []
    for item in map(Path, args.results):
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
    if not results:
        raise AdminError(f"no result JSONs named TASK-METHOD-EL-DL-sSEED.json in {' '.join(args.results)}; "
                         "run the recipes' eval stage first")
    rows = summarize(results)
    print(table(rows))
    if skipped:
        print(f"(skipped, no seed in the name: {', '.join(skipped)})")
    if args.json:
        write_atomically(args.json, json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    if args.csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_atomically(args.csv, out.getvalue())


if __name__ == "__main__":
    main()
