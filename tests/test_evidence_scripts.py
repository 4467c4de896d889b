"""The evidence (``python -m fairseq_admin_evidence.NAME``), each run once at toy size on real Multi30k so that
it cannot rot.

The measurements themselves run outside CI (see docs/results.md); here each module must run end to
end with real fairseq, write its CSV/JSON and PNG, and produce finite numbers.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EVIDENCE = ("bench_cost", "bench_export", "gpu_check", "layer_dependency", "output_change", "profile_differences",
            "stability")
HELPERS = ("common", "data", "fairseq_logs", "figures", "in_process", "methods", "outputs", "regimes", "runs")


def run_evidence(name: str, *args: str | os.PathLike) -> str:
    """``python -m fairseq_admin_evidence.NAME --toy ARGS`` from the repository root; its stdout."""
    command = [sys.executable, "-m", f"fairseq_admin_evidence.{name}", "--toy", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"{name} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def stability_out(data_bin: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stability")
    stdout = run_evidence("stability", "--data", data_bin, "--out", out)
    assert re.search(r"^\| toy +\| Admin +\|", stdout, re.MULTILINE), stdout
    return out


def test_stability(stability_out: Path) -> None:
    rows = read_csv(stability_out / "curves.csv")
    assert {r["method"] for r in rows} == {"postln", "preln", "admin"}
    assert {r["split"] for r in rows} == {"train", "valid"}
    assert all(math.isfinite(float(r["nll_loss"])) for r in rows)
    summary = json.loads((stability_out / "summary.json").read_text())
    assert set(summary["results"]["toy"]) == {"postln", "preln", "admin"}
    assert (stability_out / "stability_toy.png").stat().st_size > 0
    assert (stability_out / "toy" / "admin" / "admin_profile.json").exists()


def test_layer_dependency(stability_out: Path, data_bin: Path, tmp_path: Path) -> None:
    run_evidence("layer_dependency", "--data", data_bin, "--stability-dir", stability_out, "--out", tmp_path)
    rows = read_csv(tmp_path / "layer_dependency.csv")
    assert {(r["method"], r["stage"]) for r in rows} == {(m, s) for m in ("postln", "preln", "admin")
                                                         for s in ("init", "trained")}
    assert all(0.0 <= float(r["beta"]) <= 1.0 for r in rows)
    assert (tmp_path / "layer_dependency_toy.png").stat().st_size > 0


def test_output_change(data_bin: Path, tmp_path: Path) -> None:
    stdout = run_evidence("output_change", "--data", data_bin, "--out", tmp_path,
                        "--methods", "postln,preln,admin")
    assert "better fit" in stdout
    fits = json.loads((tmp_path / "fits.json").read_text())
    for method in ("postln", "preln", "admin"):
        assert all(v > 0 and math.isfinite(v) for v in fits["mean_output_change"][method])
    assert (tmp_path / "output_change.png").stat().st_size > 0


def test_bench_cost(data_bin: Path, tmp_path: Path) -> None:
    run_evidence("bench_cost", "--data", data_bin, "--out", tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["throughput"]["ratio_admin_over_stock"]["median"] > 0
    (row,) = summary["profiling"]
    assert row["profiling_peak_rss_kib"] > 0 and row["train1_peak_rss_kib"] > 0
    assert row["inproc_fwd_bwd_extra_kib"] >= 0
    for png in ("throughput.png", "profiling_memory.png"):
        assert (tmp_path / png).stat().st_size > 0


@pytest.mark.parametrize("name", EVIDENCE)
def test_help(name: str) -> None:
    result = subprocess.run([sys.executable, "-m", f"fairseq_admin_evidence.{name}", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"usage: python -m fairseq_admin_evidence.{name}" in result.stdout


def test_imports_are_light() -> None:
    """Importing the package, its helpers or a measurement loads none of torch, fairseq, matplotlib, numpy."""
    modules = ", ".join(f"fairseq_admin_evidence.{name}" for name in (*HELPERS, *EVIDENCE))
    code = (f"import sys, {modules}\n"
            "print(sorted(m for m in ('torch', 'fairseq', 'matplotlib', 'numpy', 'tabulate') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
