"""Admin on a GPU, with real fairseq-train: fairseq's flat ``--fp16`` path (one flat fp32 master copy, no
``--fp16-no-flatten-grads``) under RAdam and Adam, and one-step Admin (profile and train in one run).

Skipped without CUDA. ``scripts/gpu_check.sh --cpu`` runs them on CPU (``FAIRSEQ_ADMIN_GPU_TESTS=cpu``: the tiny
model, fp32, since fairseq's flat fp16 optimizer needs CUDA), so that their code runs in CI too, not first on a GPU.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, TINY_TRAINING, fairseq, train_log

ON_CPU = os.environ.get("FAIRSEQ_ADMIN_GPU_TESTS") == "cpu"
pytestmark = pytest.mark.skipif(not ON_CPU and not torch.cuda.is_available(),
                                reason="needs CUDA (scripts/gpu_check.sh --cpu runs these on CPU)")

if ON_CPU:
    MODEL, UPDATES, MAX_TOKENS, PRECISION = TINY_MODEL, 8, 1024, []
else:
    MODEL = ["--arch", "transformer_admin_iwslt_de_en", "--encoder-layers", "6", "--decoder-layers", "6",
             "--share-all-embeddings"]
    UPDATES, MAX_TOKENS, PRECISION = 40, 4096, ["--fp16"]


def training(optimizer: str, updates: int = UPDATES) -> list[str]:
    """conftest's TINY_TRAINING with this optimizer, on the GPU (no --cpu and bigger batches) unless run on CPU."""
    flags = [f for f in TINY_TRAINING if ON_CPU or f != "--cpu"]
    flags[flags.index("--optimizer") + 1] = optimizer
    flags[flags.index("--max-tokens") + 1] = str(MAX_TOKENS)
    return [*flags, "--max-update", str(updates), "--admin-profile-tokens", "4096", "--disable-validation",
            "--no-epoch-checkpoints", *PRECISION]


def train(data_bin: Path, *flags: str | Path) -> str:
    result = fairseq("fairseq-train", data_bin, "--user-dir", "fairseq_admin", *MODEL, *flags, timeout=900)
    return result.stdout + result.stderr


def profile_omegas(path: Path) -> list[float]:
    return [branch["omega"] for branch in json.loads(path.read_text())["branches"]]


@pytest.fixture(scope="module")
def two_step_profile(data_bin: Path, tmp_path_factory) -> Path:
    """The profile of a separate --init-type adaptive-profiling run (Adam flags, as one_step's)."""
    save_dir = tmp_path_factory.mktemp("profiled_gpu")
    train(data_bin, *training("adam"), "--init-type", "adaptive-profiling", "--save-dir", save_dir)
    return save_dir / "admin_profile.json"


@pytest.mark.parametrize("optimizer", ["radam", "adam"])
def test_flat_fp16_trains(optimizer: str, data_bin: Path, two_step_profile: Path, tmp_path: Path) -> None:
    """Loss finite and going down, fp16 loss scaling active, every weight and ω in the checkpoint finite."""
    log = train(data_bin, *training(optimizer), "--init-type", "adaptive", "--admin-profile", two_step_profile,
                "--save-dir", tmp_path)
    losses = train_log(log, "loss")
    assert len(losses) == UPDATES and all(math.isfinite(v) for v in losses), log[-3000:]
    assert sum(losses[-2:]) < sum(losses[:2]), losses
    if not ON_CPU:
        assert train_log(log, "loss_scale"), "no loss_scale in fairseq's log: fp16 is not active"
    state = torch.load(tmp_path / "checkpoint_last.pt", map_location="cpu", weights_only=False)["model"]
    omegas = [value for key, value in state.items() if key.endswith(".omega")]
    assert omegas and all(torch.isfinite(o.float()).all() for o in omegas)
    assert all(torch.isfinite(v.float()).all() for v in state.values() if torch.is_tensor(v) and v.is_floating_point())


def test_one_step_admin_profiles_as_two_step(data_bin: Path, two_step_profile: Path, tmp_path: Path) -> None:
    """--init-type adaptive with an empty save dir profiles now, writes the profile, trains, and its ω are the ones
    a separate profiling run gives (to fp32 rounding on a GPU, whose kernels need not be bitwise reproducible)."""
    log = train(data_bin, *training("adam", 3), "--init-type", "adaptive", "--save-dir", tmp_path)
    sources = re.findall(r"admin: rank (\d+): ω from (.*?), omega digest (\w+)", log)
    assert sources and "profiled now" in sources[0][1], log[-3000:]
    assert all(math.isfinite(v) for v in train_log(log, "loss"))
    mine, reference = profile_omegas(tmp_path / "admin_profile.json"), profile_omegas(two_step_profile)
    assert len(mine) == len(reference)
    if ON_CPU:
        assert mine == reference
    else:
        assert max(abs(a - b) / b for a, b in zip(mine, reference, strict=True)) < 1e-5
