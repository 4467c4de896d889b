"""What each option of fairseq's ``TransformerConfig`` does under ``transformer_admin``: works, or is refused.

Every flat field of fairseq's config (``encoder_layers``, ``cross_self_attention``, ...) has one entry in
:data:`TRANSFORMER_OPTIONS`; the README's option table is :func:`markdown_table`, and a test checks both
against fairseq's own dataclass, so a fairseq that adds an option fails a test instead of leaving it
unreviewed. The options that cannot work are refused at model build (:func:`check_supported`) with one
error that names them, instead of failing at the first forward pass or silently doing something else.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from fairseq_admin_tools.errors import AdminError

WORKS = "works"

_BASE_LAYERS = (
    "BASE layers put expert layers into the decoder whose residual `x + expert(x)` fairseq computes inside "
    "the BaseLayer, not through `residual_connection`: Admin would neither profile nor scale them"
)
_TIED_ADAPTIVE = (
    "fairseq's transformer fails on it too ('Embedding' object has no attribute 'weights_for_band'): tying "
    "needs AdaptiveInput embeddings, which only transformer_lm builds"
)

TRANSFORMER_OPTIONS: dict[str, str] = {
    "activation_fn": WORKS,
    "dropout": WORKS,
    "attention_dropout": WORKS,
    "activation_dropout": WORKS,
    "relu_dropout": WORKS,
    "adaptive_input": "works (the translation transformer builds no adaptive input; fairseq reads the flag only "
                      "for quant-noise)",
    "encoder_embed_path": WORKS,
    "encoder_embed_dim": WORKS,
    "encoder_ffn_embed_dim": WORKS,
    "encoder_layers": WORKS,
    "encoder_attention_heads": WORKS,
    "encoder_normalize_before": "works with --init-type default (stock Pre-LN); refused with the Post-LN init "
                                "types (adaptive, adaptive-profiling, admin-closed-form, deepnorm, rezero)",
    "encoder_learned_pos": WORKS,
    "encoder_layerdrop": "works (profiling runs every layer; fairseq-admin-export refuses it)",
    "encoder_layers_to_keep": "works, in training and at generation (`--model-overrides`); fairseq-admin-export "
                              "refuses it",
    "encoder_xformers_att_config": "works where xFormers is installed (not tested here); refused at build "
                                   "without it",
    "max_source_positions": WORKS,
    "decoder_embed_path": WORKS,
    "decoder_embed_dim": WORKS,
    "decoder_ffn_embed_dim": WORKS,
    "decoder_layers": WORKS,
    "decoder_attention_heads": WORKS,
    "decoder_normalize_before": "as encoder_normalize_before",
    "decoder_learned_pos": WORKS,
    "decoder_layerdrop": "as encoder_layerdrop",
    "decoder_layers_to_keep": "as encoder_layers_to_keep",
    "decoder_xformers_att_config": "as encoder_xformers_att_config",
    "decoder_input_dim": "works (a hydra field; fairseq-train has no flag for it)",
    "decoder_output_dim": WORKS,
    "max_target_positions": WORKS,
    "share_decoder_input_output_embed": WORKS,
    "share_all_embeddings": WORKS,
    "merge_src_tgt_embed": WORKS,
    "no_token_positional_embeddings": WORKS,
    "adaptive_softmax_cutoff": "works (with fairseq's `--criterion adaptive_loss --ddp-backend legacy_ddp`)",
    "adaptive_softmax_dropout": WORKS,
    "adaptive_softmax_factor": WORKS,
    "layernorm_embedding": WORKS,
    "tie_adaptive_weights": f"refused: {_TIED_ADAPTIVE}",
    "tie_adaptive_proj": f"refused: {_TIED_ADAPTIVE}",
    "no_scale_embedding": WORKS,
    "checkpoint_activations": WORKS,
    "offload_activations": WORKS,
    "no_cross_attention": WORKS,
    "cross_self_attention": "works (fairseq-admin-export refuses it: decoder self-attention also reads the "
                            "encoder output)",
    "quant_noise_pq": WORKS,
    "quant_noise_pq_block_size": WORKS,
    "quant_noise_scalar": "works on CUDA as in fairseq (not tested here); refused on CPU: fairseq's scalar "
                          "quantizer calls `.cuda()`, stock transformer included",
    "min_params_to_wrap": "works (FSDP wrapping as fairseq's own layers; `--ddp-backend fully_sharded` needs "
                          "fairscale, not tested here)",
    "char_inputs": "works (fairseq's transformer does not read it)",
    "base_layers": f"refused: {_BASE_LAYERS}",
    "base_sublayers": "works (read only with base_layers)",
    "base_shuffle": "works (read only with base_layers)",
    "export": WORKS,
    "no_decoder_final_norm": "works (it matters only with decoder_normalize_before)",
}
"""Each flat TransformerConfig field: ``works[ (note)]``, or ``refused: why``."""


def _xformers_missing(args: Any, side: str) -> bool:
    return bool(getattr(args, f"{side}_xformers_att_config", None)) and importlib.util.find_spec("xformers") is None


def _without_cuda(args: Any) -> bool:
    import torch

    return bool(getattr(args, "cpu", False)) or not torch.cuda.is_available()


_REFUSALS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "base_layers": (lambda a: (getattr(a, "base_layers", 0) or 0) > 0, _BASE_LAYERS),
    "tie_adaptive_weights": (lambda a: bool(getattr(a, "tie_adaptive_weights", False)), _TIED_ADAPTIVE),
    "tie_adaptive_proj": (lambda a: bool(getattr(a, "tie_adaptive_proj", False)), _TIED_ADAPTIVE),
    "quant_noise_scalar": (lambda a: (getattr(a, "quant_noise_scalar", 0) or 0) > 0 and _without_cuda(a),
                           "fairseq's scalar quantizer calls .cuda(): train on a GPU"),
    "encoder_xformers_att_config": (lambda a: _xformers_missing(a, "encoder"),
                                    "xFormers is not installed: pip install xformers"),
    "decoder_xformers_att_config": (lambda a: _xformers_missing(a, "decoder"),
                                    "xFormers is not installed: pip install xformers"),
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_supported(args: Any) -> None:
    """Refuse, in one error, every option set in ``args`` that transformer_admin cannot honour."""
    refused = [f"{flag(name)} ({why})" for name, (applies, why) in _REFUSALS.items() if applies(args)]
    if refused:
        raise AdminError(
            f"transformer_admin cannot use {'; '.join(refused)}. Drop {'it' if len(refused) == 1 else 'them'}; "
            "the README's option table lists what works"
        )


def markdown_table() -> str:
    """The README's table: one row per option, in fairseq's order."""
    rows = ["| option | with `transformer_admin` |", "|---|---|"]
    rows += [f"| `{flag(name)}` | {support} |" for name, support in TRANSFORMER_OPTIONS.items()]
    return "\n".join(rows)
