"""The comparator initializations: the values the formulas give, and that each one trains on Multi30k.

Expected values are computed here from the papers' formulas, independently of the plugin's
(fairseq_admin.admin.closed_form_omega, fairseq_admin.comparators.deepnorm_constants).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, TINY_TRAINING, build_model, fairseq, train_log

from fairseq_admin.export import export
from fairseq_admin_tools.errors import AdminError

N = M = 3  # TINY_MODEL's encoder and decoder layers


def shortcuts(model, side: str) -> list:
    return model.admin_shortcuts(side)


@pytest.mark.parametrize(("change", "fixed"), [("log", False), ("constant", True)])
def test_closed_form_values(data_bin: Path, change: str, fixed: bool) -> None:
    flags = ["--init-type", "admin-closed-form", "--admin-output-change", change]
    _, _, model = build_model(data_bin, *flags, *(["--admin-omega-fixed"] if fixed else []))
    for side, n in (("encoder", 2 * N), ("decoder", 3 * M)):
        expected = math.sqrt((n + 1) / math.log(n + 1) - 1) if change == "log" else math.sqrt(n)
        for shortcut in shortcuts(model, side):  # every residual, ω_1 included, as admin-torch
            assert torch.allclose(shortcut.omega, torch.full((64,), expected), rtol=0, atol=1e-6)
            assert shortcut.omega.requires_grad != fixed


def test_deepnorm_values(data_bin: Path) -> None:
    _, _, model = build_model(data_bin, "--init-type", "deepnorm")
    constants = {
        "encoder": (0.81 * (N**4 * M) ** (1 / 16), 0.87 * (N**4 * M) ** (-1 / 16)),
        "decoder": ((3 * M) ** (1 / 4), (12 * M) ** (-1 / 4)),
    }
    for side, (alpha, beta) in constants.items():
        for shortcut in shortcuts(model, side):
            assert not shortcut.omega.requires_grad  # a constant
            assert torch.allclose(shortcut.omega, torch.full((64,), alpha), rtol=0, atol=1e-6)
        layers = getattr(model, side).layers
        for name, gain in (("self_attn.q_proj", 1.0), ("self_attn.k_proj", 1.0), ("self_attn.v_proj", beta),
                           ("self_attn.out_proj", beta), ("fc1", beta), ("fc2", beta)):
            weights = [layer.get_submodule(name).weight for layer in layers]
            fan_out, fan_in = weights[0].shape
            std = torch.cat([w.detach().reshape(-1) for w in weights]).std().item()
            expected = gain * math.sqrt(2 / (fan_in + fan_out))  # xavier_normal_
            assert abs(std / expected - 1) < 0.06, (side, name, std, expected)
    cross = torch.cat([layer.encoder_attn.v_proj.weight.detach().reshape(-1) for layer in model.decoder.layers])
    assert abs(cross.std().item() / (constants["decoder"][1] * math.sqrt(2 / 128)) - 1) < 0.06


def test_rezero_structure(data_bin: Path) -> None:
    """One α per layer (ReZero's authors, the original's rezero_weight), shared by its sub-layers, 0 at init."""
    _, _, model = build_model(data_bin, "--init-type", "rezero", "--decoder-layers", "2")  # 3L-2L
    alphas = [name for name, p in model.named_parameters() if "rezero" in name]
    assert alphas == [f"encoder.layers.{i}.rezero_weight" for i in range(3)] + [
        f"decoder.layers.{i}.rezero_weight" for i in range(2)]
    for side in ("encoder", "decoder"):
        for shortcut in shortcuts(model, side):
            assert torch.equal(shortcut.omega, torch.ones(64)) and not shortcut.omega.requires_grad
        for layer in getattr(model, side).layers:
            assert layer.rezero_weight.requires_grad and layer.rezero_weight.item() == 0.0
            assert not any("LayerNorm" in type(m).__name__ for m in layer.modules())
    # x + α f(x) with α shared: a layer with α = a equals the per-branch formula with that a everywhere.
    layer = model.encoder.layers[0].eval()
    with torch.no_grad():
        layer.rezero_weight.fill_(0.5)
        x = torch.randn(4, 2, 64)
        h = x + 0.5 * layer.self_attn(x, x, x)[0]
        expected = h + 0.5 * layer.fc2(torch.relu(layer.fc1(h)))
        assert torch.allclose(layer(x, None), expected, atol=1e-6)


@pytest.fixture(scope="module")
def trained(data_bin: Path, tmp_path_factory) -> dict[str, tuple[Path, list[float]]]:
    """Each comparator trained a few updates with real fairseq-train: (checkpoint, per-update losses)."""
    runs = {}
    for init_type in ("admin-closed-form", "deepnorm", "rezero"):
        save_dir = tmp_path_factory.mktemp(init_type)
        result = fairseq("fairseq-train", data_bin, "--user-dir", "fairseq_admin", *TINY_MODEL, *TINY_TRAINING,
                         "--init-type", init_type, "--save-dir", save_dir, "--max-update", "8",
                         "--no-epoch-checkpoints", "--disable-validation", "--no-save-optimizer-state")
        runs[init_type] = (save_dir / "checkpoint_last.pt", train_log(result.stdout))
    return runs


def _checkpoint(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.mark.parametrize("init_type", ["admin-closed-form", "deepnorm", "rezero"])
def test_comparator_trains(trained, init_type: str) -> None:
    path, losses = trained[init_type]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    model = _checkpoint(path)
    omegas = {k: v for k, v in model.items() if k.endswith(".omega")}
    assert len(omegas) == 2 * N + 3 * M
    if init_type == "admin-closed-form":
        # trainable and moved, the embedding shortcut included (admin-torch puts ω on every residual)
        for side, n in (("encoder", 2 * N), ("decoder", 3 * M)):
            init = math.sqrt((n + 1) / math.log(n + 1) - 1)
            moved = [(v - init).abs().max().item() for k, v in omegas.items() if k.startswith(side)]
            assert all(m > 0 for m in moved) and max(m for m in moved) < 0.5
    elif init_type == "deepnorm":
        alphas = {"encoder": 0.81 * (N**4 * M) ** (1 / 16), "decoder": (3 * M) ** (1 / 4)}
        for key, value in omegas.items():  # constant: exactly the formula after training
            assert torch.allclose(value, torch.full_like(value, alphas[key.split(".")[0]]), rtol=0, atol=1e-6)
    else:
        alphas = [v.item() for k, v in model.items() if k.endswith(".rezero_weight")]
        assert len(alphas) == N + M and all(a != 0.0 for a in alphas)  # one α per layer, left 0: gradients reach it
        assert all(torch.equal(v, torch.ones_like(v)) for v in omegas.values())
        assert not any("layer_norm" in k and ".layers." in k for k in model)


@pytest.mark.parametrize("init_type", ["admin-closed-form", "deepnorm", "rezero"])
def test_comparators_are_not_exported(trained, init_type: str, tmp_path: Path) -> None:
    """ω_1 ≠ 1 or no LayerNorms: the export refuses instead of writing a different model."""
    out = tmp_path / "out.pt"
    with pytest.raises(AdminError, match=f"cannot fold --init-type {init_type}"):
        export(str(trained[init_type][0]), str(out))
    assert not out.exists()
