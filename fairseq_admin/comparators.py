"""The comparator initializations, as small changes on top of ``transformer_admin``'s shortcuts.

Each one is a value (or, for ReZero, a module) put into the existing :class:`AdminShortcut`
hook after fairseq has built the model. admin-closed-form's ω is Admin's own math
(:func:`fairseq_admin.admin.closed_form_omega`); DeepNorm's and ReZero's constants are not Admin's,
so they live here with the code that applies them.

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
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from fairseq_admin.admin import closed_form_omega
from fairseq_admin.layers import SIDES, admin_layers, admin_shortcuts

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

LAYER_NORMS = ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm")


@dataclass(frozen=True)
class DeepNormConstants:
    """DeepNorm's shortcut scale α and init gain β for each side of an encoder-decoder."""

    encoder_alpha: float
    encoder_beta: float
    decoder_alpha: float
    decoder_beta: float


def deepnorm_constants(encoder_layers: int, decoder_layers: int) -> DeepNormConstants:
    """DeepNet (Wang et al. 2022), encoder-decoder case: N encoder layers, M decoder layers.

    Encoder: α = 0.81 (N⁴M)^{1/16}, β = 0.87 (N⁴M)^{−1/16}; decoder: α = (3M)^{1/4}, β = (12M)^{−1/4}.
    α scales every shortcut, ``LN(α x + G(x))``; β is the xavier_normal gain of the value, attention
    output and FFN projections (query/key keep gain 1).
    """
    n, m = encoder_layers, decoder_layers
    if n < 1 or m < 1:
        raise ValueError("DeepNorm needs at least one encoder and one decoder layer")
    nm = n**4 * m
    return DeepNormConstants(
        encoder_alpha=0.81 * nm ** (1 / 16),
        encoder_beta=0.87 * nm ** (-1 / 16),
        decoder_alpha=(3 * m) ** (1 / 4),
        decoder_beta=(12 * m) ** (-1 / 4),
    )


REZERO_ALPHA_INIT = 0.0
"""ReZero (Bachlechner et al. 2020): x_{i+1} = x_i + α f(x_i) with one trainable scalar α per layer,
shared by the layer's sub-layers, that starts at 0."""


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
