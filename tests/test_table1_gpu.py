"""The GPU Table 1's script, rehearsed on the CPU at toy size: the same pack and run steps, so that a GPU's time
goes to training, not to finding a typo (scripts/table1_gpu.sh, fairseq_admin_evidence.convergence's schedules)."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

from conftest import MULTI30K, REPO

from fairseq_admin_evidence.convergence import TABLE1_GPU, TABLE1_GPU_TOY


def script(step: str, root: Path, out: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOY": "1", "WHEELS": "0", "ADMIN_EVIDENCE_DIR": str(root), "MULTI30K_DIR": str(MULTI30K),
           "OMP_NUM_THREADS": "1", **({"OUT": str(out)} if out else {})}
    result = subprocess.run(["bash", "scripts/table1_gpu.sh", step], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_the_gpu_table_is_planned_as_asked():
    """11 runs: 18L Post-LN, Pre-LN, Admin x 2 seeds, closed-form and DeepNorm; 6L Post-LN, Pre-LN, Admin."""
    names = {run.name for run in TABLE1_GPU.plan}
    assert len(names) == 11 and sum(run.layers == 18 for run in TABLE1_GPU.plan) == 8
    env = TABLE1_GPU.env
    assert (env["DIM"], env["FFN_DIM"], env["HEADS"], env["PAPER_INIT"]) == ("256", "1024", "4", "1")
    assert int(env["MAX_EPOCH"]) >= 25 and "--patience 5" in env["TRAIN_ARGS"]
    assert "--admin-monitor-interval 100" in env["TRAIN_ARGS"] and "PRECISION" not in env  # fp16 on a GPU
    assert {k: v for k, v in TABLE1_GPU_TOY.env.items() if TABLE1_GPU.env.get(k) != v}.keys() <= {
        "DIM", "FFN_DIM", "HEADS", "MAX_TOKENS", "EFFECTIVE_TOKENS", "MAX_EPOCH", "MAX_TRAIN_PAIRS", "TRAIN_ARGS",
        "GENERATE_ARGS"}


def test_the_gpu_table_script_rehearsed_on_the_cpu(tmp_path):
    root, out = tmp_path / "evidence", tmp_path / "out"
    script("pack", root)
    profiles = list((root / "work" / "table1_gpu_toy" / "checkpoints").glob("*/admin_profile.json"))
    assert [p.parent.name for p in profiles] == ["multi30k_de_en-admin-2L-2L-s1111"]  # only Admin profiles
    run = script("run", root, out)
    assert "table1_gpu: " in run.stdout and "table1_gpu_toy.tar.gz" in run.stdout
    summary = json.loads((out / "summary" / "summary.json").read_text())
    runs = {entry["name"]: entry for entry in summary["runs"]}
    assert set(runs) == {r.name for r in TABLE1_GPU_TOY.plan}
    for entry in runs.values():
        assert entry["finished"] and entry["epochs"] == 2 and entry["sacrebleu_signature"].startswith("nrefs:1")
        assert entry["stopped_by"] == "epoch cap"  # not cut by the time budget
    with tarfile.open(out / "table1_gpu_toy.tar.gz") as archive:
        members = archive.getnames()
    assert sum(name.endswith("admin_monitor.jsonl") for name in members) == 2  # every run monitored
    assert "summary/summary.json" in members and any(name.endswith(".hyp.txt") for name in members)
    assert not any(name.endswith(".pt") for name in members)  # logs and results only, no checkpoints
