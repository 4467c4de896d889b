"""Admin trains under fairseq's half-precision modes on CPU (real fairseq-train, Adam), monitored, and --bf16
works for the stock baselines too; the fp32 baseline also checks --tensorboard-logdir (tensorboardX installed).

fp16 math on CPU is slow, so the model is conftest's tiny one and each run is 6 updates;
``--fp16-init-scale 4`` keeps fairseq away from its overflow handler (which calls .cuda()).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, TINY_TRAINING, fairseq, train_log

from fairseq_admin_tools.monitor_records import MONITOR_FILE, read_records

UPDATES = 6
PRECISIONS = {
    "fp32": [],
    "fp16": ["--fp16", "--fp16-no-flatten-grads", "--fp16-init-scale", "4"],
    "memory-efficient-fp16": ["--memory-efficient-fp16", "--fp16-init-scale", "4"],
    "bf16": ["--bf16"],
}


def adam_training() -> list[str]:
    """conftest's TINY_TRAINING with --optimizer adam (fairseq's own) instead of radam."""
    flags = list(TINY_TRAINING)
    flags[flags.index("--optimizer") + 1] = "adam"
    return flags


def train(data_bin: Path, save_dir: Path, model: list[str], precision: list[str], *extra: str) -> str:
    result = fairseq("fairseq-train", data_bin, "--user-dir", "fairseq_admin", *model, *adam_training(),
                     *precision, "--save-dir", save_dir, "--max-update", str(UPDATES), "--no-epoch-checkpoints",
                     "--disable-validation", *extra, env={"OMP_NUM_THREADS": "1"})
    return result.stdout + result.stderr


def assert_loss_finite_and_falling(log: str) -> None:
    losses = train_log(log, "loss")
    assert len(losses) == UPDATES, log[-3000:]
    assert all(math.isfinite(v) for v in losses), losses
    assert sum(losses[-2:]) < sum(losses[:2]), losses  # mean of the last two below the first two


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_admin_trains_under_each_precision(precision, data_bin, profile_path, tmp_path):
    save_dir = tmp_path / "ck"
    save_dir.mkdir()
    shutil.copy(profile_path, save_dir / "admin_profile.json")
    tensorboard = tmp_path / "tb"
    extra = ["--tensorboard-logdir", str(tensorboard)] if precision == "fp32" else []
    log = train(data_bin, save_dir, [*TINY_MODEL, "--init-type", "adaptive"], PRECISIONS[precision], *extra,
                "--admin-monitor-interval", "3")
    assert "ω from" in log and "admin_profile.json" in log, log[-3000:]
    assert_loss_finite_and_falling(log)
    if precision in ("fp16", "memory-efficient-fp16"):
        assert "loss_scale=" in log  # fairseq's fp16 loss scaling ran
    state = torch.load(save_dir / "checkpoint_last.pt", map_location="cpu", weights_only=False)["model"]
    omegas = [v.float() for k, v in state.items() if k.endswith(".omega")]
    assert len(omegas) == 2 * 3 + 3 * 3  # 2 branches per encoder layer, 3 per decoder layer
    assert all(torch.isfinite(o).all() for o in omegas)
    assert max(float(o.max()) for o in omegas) > 1.05  # the profile's ω, not the stock 1
    if precision == "fp32":
        assert "install tensorboardX" not in log
        events = list(tensorboard.rglob("events.out.tfevents.*"))
        assert events, f"no event files under {tensorboard}"
        assert any(b"loss" in path.read_bytes() for path in events)  # the scalars fairseq logs
        # the monitor's per-side summary goes through fairseq's metrics, so TensorBoard has it too
        assert any(b"admin_ratio_dec_cross_attn" in path.read_bytes() for path in events)
    measures = [r for r in read_records(str(save_dir / MONITOR_FILE)) if r["kind"] == "measure"]
    assert [r["update"] for r in measures] == [3, 6]  # the monitor works under every precision
    assert all(b["ratio"] > 0 and b["headroom"] > 0 for r in measures for b in r["branches"])


def test_stock_transformer_trains_with_bf16(data_bin, tmp_path):
    """fairseq 0.12 turns --bf16 into --tpu (and fails without torch_xla); our compat fix covers stock archs."""
    stock = list(TINY_MODEL)
    stock[stock.index("--arch") + 1] = "transformer"
    log = train(data_bin, tmp_path / "ck", stock, PRECISIONS["bf16"])
    assert_loss_finite_and_falling(log)
    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt", map_location="cpu", weights_only=False)["model"]
    assert not any(k.endswith(".omega") for k in state)  # really the stock model
