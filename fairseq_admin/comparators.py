"""The comparator initializations, as small changes on top of ``transformer_admin``'s shortcuts.

Each one is a value (or, for ReZero, a module) put into the existing :class:`AdminShortcut`
hook after fairseq has built the model; the formulas are in :mod:`fairseq_admin.admin`.

``admin-closed-form``
    admin-torch's profiling-free Admin: every residual of a side, the first one (which reads the
    embeddings) included, gets the same ω = ``closed_form_omega(n)`` with n the number of residual
    branches of that side (2N encoder, 3M decoder), exactly as ``admin_torch.as_module(n)`` is put on
    every residual in admin-torch's fairseq example. ω is a trainable vector (admin-torch's
    ``as_parameter``) unless ``--admin-omega-fixed``. Because ω_1 ≠ 1, such a model cannot be folded
    into a stock Transformer by ``fairseq-admin-export``.
``deepnorm``
    DeepNet's ``LN(α x + G(x))``: α is a constant buffer in every shortcut (the first one too), and
    the value, attention-output and FFN projections are re-drawn with ``xavier_normal_(gain=β)``,
    query/key with gain 1 (the DeepNet paper's pseudocode), per side (encoder α/β, decoder α/β;
    the decoder's cross-attention uses the decoder's β). Biases keep fairseq's initialization.
``rezero``
    ``x_{i+1} = x_i + α_i f(x_i)``: each shortcut becomes a :class:`ReZeroShortcut` (ω stays a
    constant 1, plus a trainable scalar α_i = 0 on the branch), and every LayerNorm of the layers
    (``self_attn_layer_norm``, ``encoder_attn_layer_norm``, ``final_layer_norm``) is replaced by the
    identity. Everything else (embeddings, dropout inside the branches, the output projection) is
    fairseq's stock Post-LN model, so this is ReZero on the same code path, not the paper's code.
"""

from __future__ import annotations

import logging
from typing import Any
from collections.abc import Iterator

import torch
import torch.nn as nn
from torch import Tensor

from fairseq_admin.admin import REZERO_ALPHA_INIT, closed_form_omega, deepnorm_constants
from fairseq_admin.model import (
    AdminDecoderLayer,
    AdminEncoderLayer,
    AdminShortcut,
    TransformerAdminModel,
)

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

COMPARATOR_INIT_TYPES = ("admin-closed-form", "deepnorm", "rezero")
OUTPUT_CHANGES = ("log", "constant")
LAYER_NORMS = ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm")


class ReZeroShortcut(AdminShortcut):
    """``ω ⊙ shortcut + α · branch`` with ω a constant 1 and α a trainable scalar (ReZero's residual weight)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.alpha = nn.Parameter(torch.tensor(REZERO_ALPHA_INIT))

    def forward(self, shortcut: Tensor, branch: Tensor, padding_mask: Tensor | None) -> Tensor:
        return shortcut * self.omega + self.alpha * branch


def admin_layers(model: TransformerAdminModel, side: str) -> Iterator[nn.Module]:
    """The Admin layers of a side, in order, looking through activation-checkpoint / FSDP wrappers."""
    kind = AdminEncoderLayer if side == "encoder" else AdminDecoderLayer
    for layer in getattr(model, side).layers:
        yield next(m for m in layer.modules() if isinstance(m, kind))


def initialize_comparator(model: TransformerAdminModel, args: Any) -> None:
    """Apply ``args.init_type`` (one of COMPARATOR_INIT_TYPES) to a freshly built model."""
    if args.init_type == "admin-closed-form":
        apply_closed_form(model, args.admin_output_change, trainable=not args.admin_omega_fixed)
    elif args.init_type == "deepnorm":
        apply_deepnorm(model)
    elif args.init_type == "rezero":
        apply_rezero(model)
    else:
        raise ValueError(f"not a comparator init type: {args.init_type}")


def apply_closed_form(model: TransformerAdminModel, output_change: str, trainable: bool) -> None:
    for side in ("encoder", "decoder"):
        shortcuts = model.admin_shortcuts(side)
        omega = closed_form_omega(len(shortcuts), output_change)
        for shortcut in shortcuts:
            with torch.no_grad():
                shortcut.omega.fill_(omega)
            if trainable:
                shortcut.make_trainable()
        logger.info(f"admin: closed form O({output_change}): {side} ω = {omega:.4f} on all {len(shortcuts)} shortcuts")


def apply_deepnorm(model: TransformerAdminModel) -> None:
    constants = deepnorm_constants(len(model.encoder.layers), len(model.decoder.layers))
    for side in ("encoder", "decoder"):
        alpha = getattr(constants, f"{side}_alpha")
        beta = getattr(constants, f"{side}_beta")
        with torch.no_grad():
            for shortcut in model.admin_shortcuts(side):
                shortcut.omega.fill_(alpha)
            for layer in admin_layers(model, side):
                for attn in (layer.self_attn, getattr(layer, "encoder_attn", None)):
                    if attn is None:
                        continue
                    nn.init.xavier_normal_(attn.q_proj.weight, gain=1.0)
                    nn.init.xavier_normal_(attn.k_proj.weight, gain=1.0)
                    nn.init.xavier_normal_(attn.v_proj.weight, gain=beta)
                    nn.init.xavier_normal_(attn.out_proj.weight, gain=beta)
                nn.init.xavier_normal_(layer.fc1.weight, gain=beta)
                nn.init.xavier_normal_(layer.fc2.weight, gain=beta)
        logger.info(f"admin: deepnorm: {side} α = {alpha:.4f} (constant), β = {beta:.4f}")


def apply_rezero(model: TransformerAdminModel) -> None:
    for side in ("encoder", "decoder"):
        for layer in admin_layers(model, side):
            layer.admin_shortcuts = nn.ModuleList(ReZeroShortcut(layer.embed_dim) for _ in layer.admin_shortcuts)
            for name in LAYER_NORMS:
                if getattr(layer, name, None) is not None:
                    setattr(layer, name, nn.Identity())
    logger.info("admin: rezero: LayerNorms removed, α = 0 on every branch")
