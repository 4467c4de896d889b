"""The ω math and the profile file, against hand-computed values (no fairseq process needed)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fairseq_admin.admin import RunningVariance, SideProfiler, omega_sequence
from fairseq_admin.profile_file import (
    AdminProfile,
    BranchRecord,
    DataFacts,
    ModelFacts,
    ProfileError,
    SettingFacts,
    check_profile_matches,
    load_profile,
    save_profile,
)


def test_omega_recurrence_by_hand():
    # ω1 = 1; ω2 = sqrt(1·1.5 + 0.5) = sqrt(2); ω3 = sqrt(2·1.0 + 0.25) = 1.5
    omegas = omega_sequence([1.5, 1.0, 1.0], [0.5, 0.25, 0.75])
    assert omegas[0] == 1.0
    assert omegas[1] == pytest.approx(math.sqrt(2), rel=1e-12)
    assert omegas[2] == pytest.approx(1.5, rel=1e-12)


def test_running_variance_pools_batches_exactly():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(37, 5, generator=gen) * 3 + 1, torch.randn(11, 5, generator=gen)
    acc = RunningVariance()
    acc.add(a)
    acc.add(b)
    expected = np.var(torch.cat([a, b]).numpy().astype(np.float64))
    assert acc.variance == pytest.approx(expected, rel=1e-6)  # fp32 per batch


def test_side_profiler_reproduces_the_original_single_batch_recurrence():
    """As Transformer-Clinic: ratio starts at 1; after each branch r = sqrt(np.var(ω·x) + np.var(f))."""
    gen = torch.Generator().manual_seed(1)
    shortcuts = [torch.randn(4, 3, 8, generator=gen) * s for s in (1.2, 1.0, 0.9)]
    branches = [torch.randn(4, 3, 8, generator=gen) * s for s in (0.7, 1.3, 0.4)]
    profiler = SideProfiler(3)
    expected_ratio, seen = 1.0, []
    for i, (x, f) in enumerate(zip(shortcuts, branches, strict=True)):
        omega = profiler.omega(i)
        assert omega == pytest.approx(expected_ratio, rel=1e-6)
        seen.append(omega)
        profiler.record(i, x, f, padding_mask=None)
        expected_ratio = math.sqrt(np.var((omega * x.double()).numpy()) + np.var(f.double().numpy()))
    assert profiler.omegas() == pytest.approx(seen, rel=1e-6)


def test_padding_positions_are_excluded():
    x = torch.randn(5, 2, 4)  # (time, batch, channel)
    padding = torch.tensor([[False, False, False, True, True], [False, False, False, False, False]])
    x_padded = x.clone()
    x_padded[3:, 0] = 1e6  # garbage where batch 0 is padding
    clean, dirty = SideProfiler(1), SideProfiler(1)
    clean.record(0, x[:, 1:], x[:, 1:], None)
    keep = x_padded[:3, 0]
    clean.record(0, keep.unsqueeze(1), keep.unsqueeze(1), None)
    dirty.record(0, x_padded, x_padded, padding)
    assert dirty.input_variances()[0] == pytest.approx(clean.input_variances()[0], rel=1e-6)


SETTINGS = SettingFacts(dropout=0.1, attention_dropout=0.0, activation_dropout=0.0, activation_fn="relu",
                        no_scale_embedding=False, layernorm_embedding=False, encoder_learned_pos=False,
                        decoder_learned_pos=False, no_token_positional_embeddings=False, share_all_embeddings=True,
                        share_decoder_input_output_embed=False, cross_self_attention=False, quant_noise_pq=0.0,
                        ffn_init="default", profile_padding="exclude")


def _profile(layers: int = 2) -> AdminProfile:
    facts = ModelFacts("transformer_admin", layers, layers, 64, 64, 128, 128, 2, 2, False, False)
    branches = tuple(
        BranchRecord(side, layer, name, 1.0, 1.0, 0.5, 1.0 + 0.1 * layer)
        for side, names in (("encoder", ("self_attn", "ffn")), ("decoder", ("self_attn", "cross_attn", "ffn")))
        for layer in range(layers)
        for name in names
    )
    return AdminProfile(facts, SETTINGS, DataFacts(100, 5, 1, 1, 1024), branches)


def test_profile_roundtrip(tmp_path):
    path = tmp_path / "p.json"
    save_profile(_profile(), str(path))
    assert load_profile(str(path)) == _profile()
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]  # no temporary file left behind


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda text: text[: len(text) // 2], "not valid JSON"),
        (lambda text: text.replace('"omega": 1.1', '"omega": NaN', 1), "non-finite"),
        (lambda text: text.replace('"omega": 1.1', '"omega": -1.1', 1), "invalid value"),
        (lambda text: text.replace('"format_version": 2', '"format_version": 1'), "format version 1"),
        (lambda text: json.dumps({"hello": 1}), "not a fairseq-admin profile"),
    ],
)
def test_bad_profiles_are_named(tmp_path, corrupt, message):
    path = tmp_path / "p.json"
    path.write_text(corrupt(_profile().to_json()))
    with pytest.raises(ProfileError, match=message):
        load_profile(str(path))


def test_profile_of_another_model_is_refused():
    other = ModelFacts("transformer_admin", 3, 2, 64, 64, 128, 128, 2, 2, False, False)
    with pytest.raises(ProfileError, match="encoder_layers: profile 2, model 3"):
        check_profile_matches(_profile(), other, SETTINGS, "p.json")


def test_profile_under_other_settings_is_refused_naming_each():
    from dataclasses import replace

    facts = _profile().model
    check_profile_matches(_profile(), facts, SETTINGS, "p.json")  # same settings: accepted
    other = replace(SETTINGS, dropout=0.3, ffn_init="xavier")
    expected = r"dropout: profiled 0.1, now 0.3; ffn_init: profiled 'default', now 'xavier'"
    with pytest.raises(ProfileError, match=expected):
        check_profile_matches(_profile(), facts, other, "p.json")


def test_unknown_init_type_is_an_error_even_untyped():
    from fairseq_admin.init_types import lookup
    from fairseq_admin_tools.errors import AdminError

    with pytest.raises(AdminError, match="unknown --init-type 'adaptiv'"):
        lookup("adaptiv")
