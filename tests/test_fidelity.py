"""Fidelity to the paper's code: fairseq 0.8's initialization (--ffn-init xavier) and the original's 100L profile."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAINING, build_model, fairseq

# The original implementation's published profile of 100L-100L transformer_wmt_en_de (admin-torch's
# example/profile.ratio.init, written by Transformer-Clinic's --init-type adaptive-profiling): ω of the
# last branch of each side, lines 200 (encoder branch 200) and 500 (decoder branch 300).
PUBLISHED_LAST_OMEGA = {"encoder": 8.836019515991211, "decoder": 11.249613761901855}


def _layers(model):
    return [*model.encoder.layers, *model.decoder.layers]


def test_xavier_is_fairseq_08s_initialization(data_bin: Path) -> None:
    _, _, stock = build_model(data_bin, "--init-type", "default")
    _, _, xavier = build_model(data_bin, "--init-type", "default", "--ffn-init", "xavier")
    for layer in _layers(xavier):
        for linear in (layer.fc1, layer.fc2):
            fan_out, fan_in = linear.weight.shape
            bound = math.sqrt(6 / (fan_in + fan_out))  # xavier_uniform_
            assert linear.weight.abs().max() <= bound and linear.weight.abs().max() > 0.9 * bound
            assert torch.count_nonzero(linear.bias) == 0
        for attn in (layer.self_attn, getattr(layer, "encoder_attn", None)):
            if attn is not None:
                assert all(torch.count_nonzero(p.bias) == 0 for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    # fairseq 0.12's own initialization is what --ffn-init default keeps: kaiming-uniform FFN, non-zero biases.
    for layer in _layers(stock):
        fan_in = layer.fc1.weight.shape[1]
        assert layer.fc1.weight.abs().max() <= 1 / math.sqrt(fan_in) and torch.count_nonzero(layer.fc1.bias) > 0
        assert torch.count_nonzero(layer.self_attn.q_proj.bias) > 0


@pytest.mark.parametrize("init_type", ["admin-closed-form", "deepnorm", "rezero"])
def test_xavier_goes_with_every_init_type(data_bin: Path, init_type: str) -> None:
    _, _, model = build_model(data_bin, "--init-type", init_type, "--ffn-init", "xavier")
    assert all(torch.count_nonzero(layer.fc1.bias) == 0 for layer in _layers(model))


@pytest.mark.slow
def test_100_layer_profile_matches_the_originals(data_bin: Path, tmp_path: Path) -> None:
    """With the paper's initialization our profiler gives the original's published 100L-100L ω (within 3 %).

    Profiled as the paper recipes do (and the original did): the first training batch, padding counted.
    """
    fairseq("fairseq-train", data_bin, "--user-dir", "fairseq_admin", "--arch", "transformer_admin_wmt_en_de",
            "--encoder-layers", "100", "--decoder-layers", "100", "--share-all-embeddings",
            "--attention-dropout", "0.1", "--activation-dropout", "0.1", "--ffn-init", "xavier",
            "--init-type", "adaptive-profiling", "--save-dir", tmp_path, "--max-tokens", "4096",
            "--admin-profile-tokens", "1", "--admin-profile-padding", "include",  # the original's protocol: one batch
            *[a for a in TINY_TRAINING if a not in ("--max-tokens", "1024")], timeout=1800)
    branches = json.loads((tmp_path / "admin_profile.json").read_text())["branches"]
    for side, published in PUBLISHED_LAST_OMEGA.items():
        ours = [b["omega"] for b in branches if b["side"] == side]
        assert len(ours) == (200 if side == "encoder" else 300)
        print(f"{side}: last ω ours {ours[-1]:.3f}, original {published:.3f} ({ours[-1] / published - 1:+.2%})")
        assert ours[-1] == pytest.approx(published, rel=0.03)
