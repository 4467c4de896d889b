"""What the measurements write and print: CSV and JSON files (written atomically) and markdown tables."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from fairseq_admin_evidence.common import REPO
from fairseq_admin_tools.files import write_atomically

RESULTS = REPO / "results"
"""Where each measurement writes by default (``results/<name>``; the published ones are in docs/results)."""


def write_csv(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Rows as CSV, the first row's keys as the header."""
    rows = list(rows)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0].keys()) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(str(path), text.getvalue())


def read_csv(path: Path, text: Collection[str] | None = None, ints: Collection[str] = ()) -> list[dict[str, Any]]:
    """Rows of a CSV file that :func:`write_csv` wrote: as strings, or, with ``text`` (the columns that stay strings)
    given, every other column back as the number it was: ``int`` for the columns in ``ints``, else ``float``."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if text is None:
        return rows
    return [{k: v if k in text else int(v) if k in ints else float(v) for k, v in row.items()} for row in rows]


def write_json(path: Path, value: Any, indent: int = 2, default: Any = None) -> None:
    write_atomically(str(path), json.dumps(value, indent=indent, default=default) + "\n")


def _cell(value: Any) -> str:
    """Floats with 3 significant decimals (more digits in scientific form when very small or large)."""
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.3f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table, numbers right-aligned. Printed and pasted into docs."""
    from tabulate import tabulate

    rows = [list(row) for row in rows]
    numeric = [bool(rows) and all(isinstance(row[i], int | float) for row in rows) for i in range(len(header))]
    return tabulate([[_cell(v) for v in row] for row in rows], headers=list(header), tablefmt="github",
                    disable_numparse=True, colalign=["right" if n else "left" for n in numeric])


def spread(values: Sequence[float]) -> dict[str, Any]:
    """The one summary of repeated measurements here: median and min–max, with every value."""
    import statistics

    values = list(values)
    return {"n": len(values), "median": statistics.median(values), "min": min(values), "max": max(values),
            "all": values}


def mean_interval(values: Sequence[float]) -> dict[str, float]:
    """Mean with a 95 % confidence interval (Student's t, not the normal 1.96: a few independent samples, e.g. a
    handful of rebuilt trainers, are common here); one value gives an unbounded interval."""
    import math
    import statistics

    from scipy.stats import t

    n = len(values)
    mean = statistics.fmean(values)
    half = t.ppf(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n) if n > 1 else math.inf
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half}


def ratio_interval(ratios: Sequence[float]) -> dict[str, float]:
    """Geometric mean of paired ratios with a 95 % confidence interval (:func:`mean_interval` of their logarithms).

    The median and min–max of :func:`spread` say how single pairs scatter; this says how well the many pairs pin
    down the ratio itself: its half-width shrinks as 1/√n, which is what lets a noisy machine resolve 1 %.
    """
    import math

    logs = mean_interval([math.log(r) for r in ratios])
    return {"n": logs["n"], "geo_mean": math.exp(logs["mean"]), "low": math.exp(logs["low"]),
            "high": math.exp(logs["high"])}


def hardware(device: str = "cpu") -> str:
    """What a measurement ran on, in words ("2 CPU cores (<model>)", "one <GPU name> GPU")."""
    import os

    if device == "cuda":
        import torch

        return f"one {torch.cuda.get_device_name(0)} GPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{cores} CPU core{'s' if cores != 1 else ''}" + (f" ({model})" if model else "")
