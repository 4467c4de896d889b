"""The evidence's fairseq flags per method (the methods themselves: :mod:`fairseq_admin_tools.methods`)."""

from __future__ import annotations

from fairseq_admin_tools.methods import COLOURS, METHODS

__all__ = ["COLOURS", "METHODS", "method_flags", "model_flags", "needs_profile"]


def needs_profile(method: str) -> bool:
    return METHODS[method].profiles


def method_flags(method: str) -> list[str]:
    return METHODS[method].train_flags()


def model_flags(layers: int, dim: int, ffn: int, heads: int, dropout: float = 0.1) -> list[str]:
    """transformer_admin at the given size, embeddings shared (joint dictionary)."""
    return [
        "--arch", "transformer_admin_iwslt_de_en",
        "--encoder-layers", str(layers), "--decoder-layers", str(layers),
        "--encoder-embed-dim", str(dim), "--decoder-embed-dim", str(dim),
        "--encoder-ffn-embed-dim", str(ffn), "--decoder-ffn-embed-dim", str(ffn),
        "--encoder-attention-heads", str(heads), "--decoder-attention-heads", str(heads),
        "--share-all-embeddings", "--dropout", str(dropout),
    ]
