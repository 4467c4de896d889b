"""The layers' contract with fairseq, and the profiling statistics' padding modes (in-process, real fairseq model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import build_model

from fairseq_admin_tools.errors import AdminError


def test_branch_order_is_checked(data_bin: Path) -> None:
    """A fairseq whose layers called residual_connection in another order would be refused, not silently wrong."""
    from fairseq_admin.layers import check_branch_order

    _, _, model = build_model(data_bin, "--init-type", "default")
    check_branch_order(model)  # fairseq 0.12: as our layout says
    layer = model.decoder.layers[0]
    layer.branch_names = ("self_attn", "ffn", "cross_attn")
    with pytest.raises(AdminError, match=r"calls residual_connection after \['self_attn', 'cross_attn', 'ffn'\]"):
        check_branch_order(model)


def test_every_branch_must_use_its_shortcut(data_bin: Path) -> None:
    """Checked once at build: a layout whose shortcut count differs from fairseq's residual calls is refused."""
    from fairseq_admin.layers import check_branch_order

    _, _, model = build_model(data_bin, "--init-type", "default")
    layer = model.encoder.layers[0]
    layer.admin_shortcuts.append(type(layer.admin_shortcuts[0])(64))  # a layout with a branch fairseq never runs
    with pytest.raises(AdminError, match="the encoder's layers make 2 residual connections, but Admin expects 3"):
        check_branch_order(model)
    del layer.admin_shortcuts[1:]  # one shortcut for two branches
    with pytest.raises(AdminError, match="make more residual connections, but Admin expects 1"):
        check_branch_order(model)


def _samples(args, task, model, count: int = 2) -> list[dict]:
    from fairseq_admin.profiling import first_training_batches

    samples = []
    for sample in first_training_batches(model, args, task):
        samples.append(sample)
        if len(samples) == count:
            return samples
    raise AssertionError("not enough batches")


def test_padding_modes(data_bin: Path) -> None:
    """include counts padding positions (as the original), exclude does not; without padding they agree."""
    from fairseq_admin.profiling import profile_samples

    args, task, model = build_model(data_bin, "--init-type", "default", "--dropout", "0")
    samples = _samples(args, task, model)
    assert any(s["net_input"]["src_tokens"].eq(task.source_dictionary.pad()).any() for s in samples)
    include = profile_samples(model, samples, include_padding=True)
    exclude = profile_samples(model, samples, include_padding=False)
    for side in ("encoder", "decoder"):
        assert include.omegas(side) != exclude.omegas(side)
        assert include.omegas(side)[0] == exclude.omegas(side)[0] == 1.0

    # One sentence, trimmed: no padding anywhere (source left-padded, target right-padded), so both modes agree.
    net_input = {k: v[:1] for k, v in samples[0]["net_input"].items()}
    pad = task.source_dictionary.pad()
    net_input["src_tokens"] = net_input["src_tokens"][:, -int(net_input["src_lengths"][0]):]
    target = net_input["prev_output_tokens"]
    net_input["prev_output_tokens"] = target[:, :int(target.ne(pad).sum())]
    assert not any(t.eq(pad).any() for t in (net_input["src_tokens"], net_input["prev_output_tokens"]))
    single = [{"net_input": net_input}]
    a = profile_samples(model, single, include_padding=True)
    b = profile_samples(model, single, include_padding=False)
    for side in ("encoder", "decoder"):
        assert a.omegas(side) == pytest.approx(b.omegas(side), rel=1e-6)
