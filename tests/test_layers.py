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


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_shortcut_math(dtype: str) -> None:
    """Trainable ω: the original's ``x + residual * ratio`` bit for bit, and autograd's ``addcmul`` gradients bit for
    bit; frozen ω: one fused ``addcmul``. The branch and the shortcut are never written to."""
    import torch

    from fairseq_admin.layers import AdminShortcut

    generator = torch.Generator().manual_seed(0)
    kind = getattr(torch, dtype)
    shortcut, branch, grad = (torch.randn(7, 3, 16, generator=generator).to(kind) for _ in range(3))
    omega = (torch.rand(16, generator=generator) + 0.5).to(kind)
    module = AdminShortcut(16).to(kind)
    with torch.no_grad():
        module.omega.copy_(omega)

    frozen = module(shortcut, branch)
    assert torch.equal(frozen, torch.addcmul(branch, shortcut, omega))

    module.omega.requires_grad_(True)
    x, f = shortcut.clone().requires_grad_(True), branch.clone().requires_grad_(True)
    out = module(x, f)
    assert torch.equal(out, f + x * omega)  # the original's rounding: product, then sum
    assert torch.equal(x, shortcut) and torch.equal(f, branch)
    ours = torch.autograd.grad(out, (x, f, module.omega), grad)
    reference_omega = omega.clone().requires_grad_(True)
    reference = torch.autograd.grad(torch.addcmul(f, x, reference_omega), (x, f, reference_omega), grad)
    for a, b in zip(ours, reference, strict=True):
        assert torch.equal(a, b)
