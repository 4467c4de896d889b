"""The Admin layers: fairseq's own Post-LN layers, with every residual connection through an :class:`AdminShortcut`.

fairseq 0.12's layers call ``self.residual_connection(x, residual)`` once per residual branch: 2 per
encoder layer (self-attention, FFN), 3 per decoder layer (self-attention, cross-attention, FFN). Our layers
hand those calls, in order, to their shortcuts. The branch layout is defined once here
(:data:`BRANCHES`), and :func:`check_branch_order` verifies on a built model that fairseq really calls the
hook in that order, so a fairseq that changed it would fail loudly instead of scaling the wrong branch.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn as nn
from fairseq.models.transformer import TransformerConfig
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase, TransformerEncoderLayerBase
from torch import Tensor

from fairseq_admin_tools.errors import AdminError

SIDES = ("encoder", "decoder")
BRANCHES = {"encoder": ("self_attn", "ffn"), "decoder": ("self_attn", "cross_attn", "ffn")}
"""The residual branches of one layer of each side, in the order fairseq's forward pass runs them."""

BRANCH_MODULES = {"self_attn": "self_attn", "cross_attn": "encoder_attn", "ffn": "fc2"}
"""For each branch, the sub-module whose output is the branch (before dropout)."""

BRANCH_LAYER_NORMS = {"self_attn": "self_attn_layer_norm", "cross_attn": "encoder_attn_layer_norm",
                      "ffn": "final_layer_norm"}
"""For each branch, its LayerNorm (after the shortcut sum in Post-LN, on the branch input in Pre-LN)."""


def layer_branches(side: str, has_cross_attention: bool = True) -> tuple[str, ...]:
    """The branches of one layer; a decoder without cross-attention has only two."""
    if side == "decoder" and not has_cross_attention:
        return ("self_attn", "ffn")
    return BRANCHES[side]


class AdminShortcut(nn.Module):
    """``ω ⊙ shortcut + branch``: the one place a residual connection is computed.

    ω is a per-channel parameter that starts at 1 (exactly the stock ``shortcut + branch``) and is frozen
    (``requires_grad=False``) unless an init type makes it trainable. One fused op (``addcmul``) forward, and
    autograd's native backward: for a frozen ω one multiply (``grad * ω``); for a trainable ω also ω's gradient.
    Two ways around the ``shortcut * 1`` copy autograd makes for ω's gradient were measured and not kept
    (``python -m fairseq_admin_evidence.bench_shortcut``, docs/results.md section 10): ``shortcut * ω`` with the
    branch added in place costs the same (one more pass forward, one fewer backward), and a Python
    ``autograd.Function`` saves no more, while in fairseq-train its backward must take Python's lock (the GIL) from
    fairseq's batch-prefetch thread once per trainable branch.
    ``padding_mask`` is not part of the math: the profiling hooks (:mod:`fairseq_admin.profiling`) read it from
    the call.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.omega = nn.Parameter(torch.ones(dim), requires_grad=False)

    def forward(self, shortcut: Tensor, branch: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        return torch.addcmul(branch, shortcut, self.omega)


class _ShortcutRouting(nn.Module):
    """Hands fairseq's ``residual_connection`` calls to this layer's shortcuts, in call order.

    ``rezero_weight`` (ReZero only, else None) is the layer's one α, shared by its branches:
    ``x + α · f(x)``, as in ReZero's authors' code and the original's ``--init-type rezero``.
    """

    side: str
    admin_shortcuts: nn.ModuleList
    rezero_weight: nn.Parameter | None

    def _init_routing(self, branches: tuple[str, ...]) -> None:
        self.branch_names = branches
        self.admin_shortcuts = nn.ModuleList(AdminShortcut(self.embed_dim) for _ in branches)
        self.rezero_weight = None  # a plain attribute until ReZero sets a parameter (a None parameter would look
        # "shared" with every other None parameter to fairseq's trainer)
        self._next_shortcut = 0
        self._padding_mask: Tensor | None = None

    def residual_connection(self, x: Tensor, residual: Tensor) -> Tensor:
        shortcut = self.admin_shortcuts[self._next_shortcut]
        self._next_shortcut += 1
        branch = x if self.rezero_weight is None else self.rezero_weight * x
        return shortcut(residual, branch, self._padding_mask)

    def _routed(self, padding_mask: Tensor | None, forward: Any, *args: Any, **kwargs: Any) -> Any:
        # The call count is checked once, at build (check_branch_order), not on every forward.
        self._next_shortcut, self._padding_mask = 0, padding_mask
        return forward(*args, **kwargs)


class AdminEncoderLayer(_ShortcutRouting, TransformerEncoderLayerBase):
    side = "encoder"

    def __init__(self, cfg: TransformerConfig, return_fc: bool = False) -> None:
        super().__init__(cfg, return_fc=return_fc)
        self._init_routing(layer_branches("encoder"))

    def forward(self, x, encoder_padding_mask: Tensor | None, attn_mask: Tensor | None = None):
        return self._routed(encoder_padding_mask, super().forward, x, encoder_padding_mask, attn_mask)


class AdminDecoderLayer(_ShortcutRouting, TransformerDecoderLayerBase):
    side = "decoder"

    def __init__(self, cfg: TransformerConfig, no_encoder_attn: bool = False, **kwargs: Any) -> None:
        super().__init__(cfg, no_encoder_attn=no_encoder_attn, **kwargs)
        self._init_routing(layer_branches("decoder", has_cross_attention=not no_encoder_attn))

    def forward(self, x, *args: Any, self_attn_padding_mask: Tensor | None = None, **kwargs: Any):
        return self._routed(self_attn_padding_mask, super().forward, x, *args,
                            self_attn_padding_mask=self_attn_padding_mask, **kwargs)


def admin_layers(model: nn.Module, side: str) -> list[_ShortcutRouting]:
    """The Admin layers of a side, in order, looking through activation-checkpoint / FSDP wrappers."""
    kind = AdminEncoderLayer if side == "encoder" else AdminDecoderLayer
    return [next(m for m in layer.modules() if isinstance(m, kind)) for layer in getattr(model, side).layers]


def admin_shortcuts(model: nn.Module, side: str) -> list[AdminShortcut]:
    """The shortcuts of one side, in the order the forward pass uses them."""
    return [s for layer in admin_layers(model, side) for s in layer.admin_shortcuts]


def branch_names(model: nn.Module, side: str) -> list[tuple[int, str]]:
    """(layer, branch) for each shortcut of a side, aligned with :func:`admin_shortcuts`."""
    return [(index, name) for index, layer in enumerate(admin_layers(model, side)) for name in layer.branch_names]


def check_branch_order(model: nn.Module) -> None:
    """Run the first layer of each side once: it must call ``residual_connection`` once per shortcut, and shortcut i
    must follow branch i's module. (Checked here, once, so that the training path checks nothing.)

    Forward hooks note which branch module (self_attn, encoder_attn, fc2) ran last before each
    ``residual_connection`` call; a mismatch means fairseq's layer code no longer matches our layout.
    """
    for side in SIDES:
        layers = admin_layers(model, side)
        if not layers:
            continue
        layer = layers[0]
        events: list[str] = []

        def note(name: str, *_: Any, events: list[str] = events) -> None:
            events.append(name)

        handles = [
            getattr(layer, module).register_forward_hook(partial(note, branch))
            for branch, module in BRANCH_MODULES.items()
            if getattr(layer, module, None) is not None
        ]
        handles += [s.register_forward_hook(partial(note, "residual")) for s in layer.admin_shortcuts]
        parameter = next(layer.parameters())
        x = torch.zeros(2, 1, layer.embed_dim, dtype=parameter.dtype, device=parameter.device)
        was_training = layer.training
        try:
            layer.eval()
            with torch.no_grad():
                if side == "encoder":
                    layer(x, None)
                else:
                    # cross-self-attention (--cross-self-attention) reads the encoder output in self-attention
                    needs_encoder = layer.encoder_attn is not None or layer.cross_self_attention
                    width = layer.encoder_attn.kdim if layer.encoder_attn is not None else layer.embed_dim
                    encoder_out = x.new_zeros(2, 1, width) if needs_encoder else None
                    layer(x, encoder_out, None)
        except IndexError:  # more residual_connection calls than shortcuts
            layer._next_shortcut = len(layer.admin_shortcuts) + 1
        finally:
            layer.train(was_training)
            for handle in handles:
                handle.remove()
        if layer._next_shortcut != len(layer.admin_shortcuts):
            made = layer._next_shortcut if layer._next_shortcut <= len(layer.admin_shortcuts) else "more"
            raise AdminError(
                f"the {side}'s layers make {made} residual connections, but Admin expects "
                f"{len(layer.admin_shortcuts)} ({', '.join(layer.branch_names)}): this fairseq version calls "
                "residual_connection differently; fairseq-admin supports fairseq 0.12"
            )
        seen = [events[i - 1] for i, event in enumerate(events) if event == "residual" and i > 0]
        if seen != list(layer.branch_names):
            raise AdminError(
                f"fairseq's {side} layer calls residual_connection after {seen}, but Admin's layout is "
                f"{list(layer.branch_names)}: ω would scale the wrong branches; fairseq-admin supports fairseq 0.12"
            )
