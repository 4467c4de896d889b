"""The training monitor: real fairseq-train runs with --admin-monitor-interval, planted overflows and NaNs, and
fairseq-admin-monitor on what they wrote."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import BIN, TINY_MODEL, TINY_TRAINING, build_model, fairseq, train_log

from fairseq_admin_tools.monitor import account, collapses
from fairseq_admin_tools.monitor_records import MONITOR_FILE, current_records, read_records

BRANCHES = 2 * 3 + 3 * 3  # TINY_MODEL: 3 encoder layers of 2 branches, 3 decoder layers of 3
# a few batches an epoch (fp16 is slow on CPU): only the short pairs, small batches
SHORT = ["--max-source-positions", "14", "--max-target-positions", "14", "--max-tokens", "512"]
RECIPE_FP16 = ["--fp16-scale-window", "256", "--threshold-loss-scale", "0.03125"]  # the paper's, as recipes/run.sh
PLANTED = "encoder.layers.1"


def train(data_bin: Path, save_dir: Path, *extra: str, check: bool = True, model: list[str] = TINY_MODEL):
    return fairseq("fairseq-train", data_bin, "--user-dir", "fairseq_admin", *model, *TINY_TRAINING,
                   "--save-dir", save_dir, "--disable-validation", "--no-epoch-checkpoints", *extra,
                   check=check, env={"OMP_NUM_THREADS": "1"})


def with_profile(save_dir: Path, profile_path: Path) -> Path:
    save_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(profile_path, save_dir / "admin_profile.json")
    return save_dir


def test_monitoring_changes_nothing_in_training(data_bin, profile_path, tmp_path):
    """Losses, gradient norms and final weights are bit for bit those of the same run without the monitor."""
    runs = {}
    for name, extra in (("plain", []), ("monitored", ["--admin-monitor-interval", "2"])):
        save_dir = with_profile(tmp_path / name, profile_path)
        result = train(data_bin, save_dir, "--init-type", "adaptive", "--max-update", "8", *extra)
        state = torch.load(save_dir / "checkpoint_last.pt", map_location="cpu", weights_only=False)["model"]
        runs[name] = (result.stdout + result.stderr, state, save_dir)
    (plain, plain_state, plain_dir), (monitored, monitored_state, monitored_dir) = runs["plain"], runs["monitored"]
    assert train_log(plain, "loss") == train_log(monitored, "loss") and len(train_log(plain)) == 8
    assert train_log(plain, "gnorm") == train_log(monitored, "gnorm")
    assert plain_state.keys() == monitored_state.keys()
    assert all(torch.equal(plain_state[k], monitored_state[k]) for k in plain_state)
    # off: nothing written, nothing logged; on: the per-side summary in fairseq's own log lines
    assert not (plain_dir / MONITOR_FILE).exists() and "admin_ratio" not in plain
    assert "admin_ratio_dec_cross_attn=" in monitored and "admin_headroom=" in monitored
    records = read_records(str(monitored_dir / MONITOR_FILE))
    measures = [r for r in records if r["kind"] == "measure"]
    assert [r["update"] for r in measures] == [2, 4, 6, 8]
    for record in measures:
        assert len(record["branches"]) == BRANCHES and len(record["layers"]) == 6
        for branch in record["branches"]:
            assert 0 < branch["ratio"] < 10 and 0 < branch["max_abs"] < 1000
            assert branch["headroom"] == pytest.approx(math.log2(65504 / branch["max_abs"]))
            assert branch["omega_min"] - 1e-6 <= branch["omega_mean"] <= branch["omega_max"] + 1e-6
        assert all(0 < layer["grad_norm"] < 100 for layer in record["layers"])
    assert {b["omega_mean"] for b in measures[0]["branches"]} != {1.0}  # the profile's ω, not the stock 1


def test_ratio_is_the_branch_norm_over_the_shortcut_norm(data_bin, profile_path):
    """The recorded ratio is ‖f(x)‖ / ‖ω ⊙ x‖ over non-padding positions, computed here independently."""
    from fairseq_admin.layers import admin_shortcuts
    from fairseq_admin.monitor import BranchMonitor

    args, task, model = build_model(data_bin, "--init-type", "adaptive", "--admin-profile", str(profile_path))
    assert not hasattr(model, "admin_monitor")  # off by default: nothing attached
    monitor = BranchMonitor(model, interval=1, max_skipped=10, save_dir="unused")
    task.load_dataset("valid")
    batch = next(iter(task.get_batch_iterator(task.dataset("valid"), max_tokens=512).next_epoch_itr(shuffle=False)))
    shortcut = admin_shortcuts(model, "decoder")[1]  # decoder layer 0, cross-attention
    seen = {}

    def reference(module, inputs, output):
        residual, branch, mask = inputs
        keep = ~mask.t().unsqueeze(-1) if mask is not None else torch.ones_like(branch[..., :1], dtype=torch.bool)
        seen["ratio"] = float((branch * keep).norm() / (residual * module.omega * keep).norm())

    handle = shortcut.register_forward_hook(reference)
    model.eval()
    with torch.no_grad(), monitor.measuring(True) as statistics:
        model(**batch["net_input"])
    handle.remove()
    assert not any(s._forward_hooks for side in ("encoder", "decoder") for s in admin_shortcuts(model, side))
    index = next(i for i, site in enumerate(monitor.sites) if site[3] is shortcut)
    stats = statistics[index]
    assert math.sqrt(float(stats.branch_sq) / float(stats.shortcut_sq)) == pytest.approx(seen["ratio"], rel=1e-5)


def test_a_resumed_run_continues_the_file(data_bin, profile_path, tmp_path):
    save_dir = with_profile(tmp_path / "ck", profile_path)
    train(data_bin, save_dir, "--init-type", "adaptive", "--max-update", "4", "--admin-monitor-interval", "2")
    train(data_bin, save_dir, "--init-type", "adaptive", "--max-update", "8", "--admin-monitor-interval", "2")
    lines = (save_dir / MONITOR_FILE).read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines].count("start") == 2
    assert [r["update"] for r in read_records(str(save_dir / MONITOR_FILE)) if r["kind"] == "measure"] == [2, 4, 6, 8]


def test_a_restart_drops_the_records_it_redoes():
    records = [{"kind": "start", "update": 0}, {"kind": "measure", "update": 2}, {"kind": "measure", "update": 4},
               {"kind": "skipped", "update": 5}, {"kind": "start", "update": 2}, {"kind": "measure", "update": 4}]
    assert [(r["kind"], r["update"]) for r in current_records(records)] == [
        ("start", 0), ("measure", 2), ("start", 2), ("measure", 4)]


def _measure(update: int, ratios: list[float]) -> dict:
    return {"kind": "measure", "update": update, "layers": [], "branches": [
        {"side": "decoder", "layer": i, "branch": "cross_attn", "ratio": r, "omega_mean": 1.0, "omega_min": 1.0,
         "omega_max": 1.0, "max_abs": 4.0, "headroom": 14.0} for i, r in enumerate(ratios)]}


def test_the_account_names_a_collapse_and_when_it_began():
    records = [_measure(10, [0.3, 0.2]), _measure(20, [0.04, 0.2]), _measure(30, [0.04, 0.03]),
               _measure(40, [0.01, 0.02])]
    assert collapses([b | {"update": r["update"]} for r in records for b in r["branches"]], 0.05) == [
        "decoder cross-attention ratio below 0.05 in every layer from update 30"]
    lines = account(records, 0.05)
    assert "decoder cross-attention: mean ratio 0.250 at update 10 -> 0.015 at update 40 (layers 0-1)" in lines
    assert lines[-1] == "no skipped updates"
    recovered = [*records, _measure(50, [0.2, 0.01])]
    assert not collapses([b | {"update": r["update"]} for r in recovered for b in r["branches"]], 0.05)


def _checkpoint(data_bin: Path, profile_path: Path, tmp_path: Path) -> dict:
    save_dir = with_profile(tmp_path / "start", profile_path)
    train(data_bin, save_dir, "--init-type", "adaptive", "--max-update", "1", *SHORT)
    return torch.load(save_dir / "checkpoint_last.pt", map_location="cpu", weights_only=False)


def planted(checkpoint: dict, path: Path, change) -> Path:
    state = checkpoint["model"]
    change(state)
    torch.save(checkpoint, path)
    return path


def overflowing_ffn(state: dict) -> None:
    """fc2 weights scaled to fp16's largest value: still representable, but the branch output is not."""
    weight = state[f"{PLANTED}.fc2.weight"]
    state[f"{PLANTED}.fc2.weight"] = weight * (60000.0 / weight.abs().max())


@pytest.mark.parametrize("precision,monitor", [
    (["--fp16", "--fp16-no-flatten-grads"], True),
    (["--memory-efficient-fp16"], True),
    (["--fp16", "--fp16-no-flatten-grads"], False),  # fairseq's own handler, with compat's fix alone
], ids=["fp16", "memory-efficient-fp16", "fp16-without-monitor"])
def test_a_planted_fp16_overflow_is_named_and_skipped(precision, monitor, data_bin, profile_path, tmp_path):
    restore = planted(_checkpoint(data_bin, profile_path, tmp_path), tmp_path / "planted.pt", overflowing_ffn)
    save_dir = with_profile(tmp_path / "ck", profile_path)
    extra = ["--admin-monitor-interval", "2", "--admin-max-skipped", "2"] if monitor else []
    result = train(data_bin, save_dir, "--init-type", "adaptive", "--restore-file", restore, "--reset-optimizer",
                   "--reset-dataloader", "--max-epoch", "1", *SHORT, *precision, *RECIPE_FP16, *extra, "--no-save")
    log = result.stdout + result.stderr
    fairseq_skips = log.count("gradient overflow detected, ignoring gradient")
    assert fairseq_skips >= 3, log[-3000:]  # on CPU too: the run goes on, as fairseq does on a GPU
    if not monitor:
        assert not (save_dir / MONITOR_FILE).exists()
        return
    skips = [r for r in read_records(str(save_dir / MONITOR_FILE)) if r["kind"] == "skipped"]
    assert len(skips) == fairseq_skips and [s["skipped_total"] for s in skips] == list(range(1, len(skips) + 1))
    first = skips[0]
    assert first["first_nonfinite"] == {"phase": "forward", "side": "encoder", "layer": 1, "branch": "ffn",
                                        "tensor": "branch output", "module": f"{PLANTED}.fc2"}
    assert first["loss_scale"] == 128.0 and first["reason"] == "non-finite loss" and not first["fatal"]
    assert first["largest_finite_before"] and not first["nonfinite_parameters"]
    assert "first non-finite value: encoder layer 1 ffn: branch output (forward)" in log
    assert "updates in a row skipped (more than --admin-max-skipped 2)" in log and "--bf16" in log
    tool = fairseq("fairseq-admin-monitor", save_dir)
    assert f"{len(skips)} skipped updates, the first at update 1 in encoder layer 1 ffn: branch output" in tool.stdout
    for name in ("skipped.png", "skipped.csv", "summary.txt"):
        assert (save_dir / "monitor" / name).stat().st_size > 0


def test_a_planted_nan_parameter_is_named(data_bin, profile_path, tmp_path):
    def nan_weight(state: dict) -> None:
        state[f"{PLANTED}.fc1.weight"][0, 0] = float("nan")

    restore = planted(_checkpoint(data_bin, profile_path, tmp_path), tmp_path / "nan.pt", nan_weight)
    save_dir = with_profile(tmp_path / "ck", profile_path)
    result = train(data_bin, save_dir, "--init-type", "adaptive", "--restore-file", restore, "--max-update", "4",
                   "--admin-monitor-interval", "2", *SHORT, check=False)
    assert result.returncode != 0  # fairseq stops an fp32 run on a non-finite gradient; the monitor said where
    log = result.stdout + result.stderr
    assert f"first non-finite value: parameter {PLANTED}.fc1.weight holds NaN/Inf" in log
    (skip,) = [r for r in read_records(str(save_dir / MONITOR_FILE)) if r["kind"] == "skipped"]
    assert skip["fatal"] and skip["nonfinite_parameters"] == [f"{PLANTED}.fc1.weight"]
    assert skip["first_nonfinite"]["module"] == f"{PLANTED}.fc1"
    assert skip["first_nonfinite"]["tensor"] == "inside the branch (fc1)"


def test_the_monitor_tool_plots_a_run(data_bin, profile_path, tmp_path):
    save_dir = with_profile(tmp_path / "ck", profile_path)
    trained = train(data_bin, save_dir, "--init-type", "adaptive", "--max-update", "6", "--admin-monitor-interval",
                    "2", "--log-format", "json")
    assert '"admin_ratio_dec_cross_attn": ' in trained.stdout + trained.stderr  # fairseq's JSON log lines
    result = fairseq("fairseq-admin-monitor", save_dir, "--out", tmp_path / "plots")
    assert "3 measurements, the last at update 6" in result.stdout and "no skipped updates" in result.stdout
    for name in ("ratio", "omega", "headroom", "grad_norm", "skipped"):
        assert (tmp_path / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    rows = (tmp_path / "plots" / "branches.csv").read_text().splitlines()
    assert rows[0].startswith("update,side,layer,branch,ratio") and len(rows) == 1 + 3 * BRANCHES
    assert (tmp_path / "plots" / "summary.txt").read_text() == result.stdout.rsplit("fairseq-admin-monitor:", 1)[0]


def test_the_monitor_tool_says_what_is_missing(tmp_path):
    result = fairseq("fairseq-admin-monitor", tmp_path, check=False)
    assert result.returncode == 1 and "no admin_monitor.jsonl" in result.stderr and "--admin-monitor-interval" in \
        result.stderr
    assert (BIN / "fairseq-admin-monitor").exists()
