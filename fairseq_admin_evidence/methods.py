"""The methods compared (Post-LN, Pre-LN, Admin and the comparators) and the fairseq flags of each.

Each method is (label, init type, extra flags); Pre-LN is stock fairseq's flags.
"""

from __future__ import annotations

BASE_METHODS: dict[str, tuple[str, str, list[str]]] = {
    "postln": ("Post-LN", "default", []),
    "preln": ("Pre-LN", "default", ["--encoder-normalize-before", "--decoder-normalize-before"]),
    "admin": ("Admin", "adaptive", []),
}
# Comparators another change may add to --init-type; picked up here when the model offers them.
OPTIONAL_METHODS: dict[str, tuple[str, str, list[str]]] = {
    "admin-closed-form": ("Admin (closed form)", "admin-closed-form", []),
    "deepnorm": ("DeepNorm", "deepnorm", []),
    "rezero": ("ReZero", "rezero", []),
}
COLORS = {"postln": "tab:red", "preln": "tab:blue", "admin": "tab:green",
          "admin-closed-form": "tab:olive", "deepnorm": "tab:purple", "rezero": "tab:orange"}
"""Each method's colour in every figure."""


def available_methods() -> dict[str, tuple[str, str, list[str]]]:
    """The base three, plus any comparator init type the installed model already knows."""
    from fairseq_admin.init_types import INIT_TYPES

    methods = dict(BASE_METHODS)
    methods.update({k: v for k, v in OPTIONAL_METHODS.items() if v[1] in INIT_TYPES})
    return methods


def needs_profile(method: str) -> bool:
    return available_methods()[method][1] == "adaptive"


def method_flags(method: str) -> list[str]:
    _, init_type, extra = available_methods()[method]
    return ["--init-type", init_type, *extra]


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
