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
    ``x_{i+1} = x_i + α · f(x_i)`` with ONE trainable scalar α per layer, shared by the layer's
    sub-layers and initialized to 0, as in ReZero's authors' code (``rezero/transformer/rztx.py``) and
    the original's ``--init-type rezero`` (its ``rezero_weight``); ω stays a frozen 1 and every LayerNorm
    of the layers (``self_attn_layer_norm``, ``encoder_attn_layer_norm``, ``final_layer_norm``) is replaced
    by the identity. Everything else (embeddings, dropout inside the branches, the output projection) is
    fairseq's stock Post-LN model, so this is ReZero on the same code path, not the paper's code.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn as nn

from fairseq_admin.admin import REZERO_ALPHA_INIT, closed_form_omega, deepnorm_constants
from fairseq_admin.layers import SIDES, admin_layers, admin_shortcuts

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

LAYER_NORMS = ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm")


def apply_closed_form(model: nn.Module, args: Any, task: Any = None) -> None:
    """``--init-type admin-closed-form``."""
    output_change = args.admin_output_change
    for side in SIDES:
        shortcuts = admin_shortcuts(model, side)
        omega = closed_form_omega(len(shortcuts), output_change)
        for shortcut in shortcuts:
            with torch.no_grad():
                shortcut.omega.fill_(omega)
            shortcut.omega.requires_grad_(not args.admin_omega_fixed)
        logger.info(f"admin: closed form O({output_change}): {side} ω = {omega:.4f} on all {len(shortcuts)} shortcuts")


def apply_deepnorm(model: nn.Module, args: Any = None, task: Any = None) -> None:
    """``--init-type deepnorm``."""
    constants = deepnorm_constants(len(model.encoder.layers), len(model.decoder.layers))
    for side in SIDES:
        alpha = getattr(constants, f"{side}_alpha")
        beta = getattr(constants, f"{side}_beta")
        with torch.no_grad():
            for shortcut in admin_shortcuts(model, side):
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


def apply_rezero(model: nn.Module, args: Any = None, task: Any = None) -> None:
    """``--init-type rezero``: one α per layer, LayerNorms removed."""
    for side in SIDES:
        for layer in admin_layers(model, side):
            layer.rezero_weight = nn.Parameter(torch.full((1,), REZERO_ALPHA_INIT))
            for name in LAYER_NORMS:
                if getattr(layer, name, None) is not None:
                    setattr(layer, name, nn.Identity())
    logger.info("admin: rezero: LayerNorms removed, one α = 0 per layer")
