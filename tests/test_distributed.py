"""Data-parallel Admin training on CPU: 2 fairseq-train processes (gloo), fairseq's own distributed code."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from conftest import REPO, TINY_MODEL, TINY_TRAINING


def test_two_ranks_start_from_identical_omegas_and_train(data_bin, profile_path, tmp_path):
    save_dir = tmp_path / "ck"
    save_dir.mkdir()
    shutil.copy(profile_path, save_dir / "admin_profile.json")
    training = [a for a in TINY_TRAINING if a != "--cpu"]  # the launcher adds it
    result = subprocess.run(
        [sys.executable, "scripts/launch_cpu_ddp.py", "2", str(data_bin), "--user-dir", "fairseq_admin",
         *TINY_MODEL, *training, "--init-type", "adaptive", "--save-dir", str(save_dir),
         "--max-update", "3", "--no-epoch-checkpoints", "--disable-validation"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )
    assert result.returncode == 0, result.stdout[-4000:]
    digests = dict(re.findall(r"admin: rank (\d): ω from .* omega digest (\w+)", result.stdout))
    assert set(digests) == {"0", "1"}, result.stdout[-3000:]
    assert digests["0"] == digests["1"]
    assert "num_updates=3" in result.stdout
    assert (save_dir / "checkpoint_last.pt").exists()
