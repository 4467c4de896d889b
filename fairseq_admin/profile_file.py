"""The Admin profile file: what profiling measured, and the model it was measured on.

JSON, one object::

    {"format": "fairseq-admin-profile", "format_version": 2,
     "model": {"arch": ..., "encoder_layers": ..., ...},       # ModelFacts: must match the model
     "settings": {"dropout": ..., "ffn_init": ..., ...},         # SettingFacts: everything else that changes ω
     "data": {"tokens": ..., "sentences": ..., "batches": ..., "seed": ..., "max_tokens": ...},
     "branches": [{"side": "encoder", "layer": 0, "branch": "self_attn",
                   "var_input": ..., "var_shortcut": ..., "var_branch": ..., "omega": ...}, ...]}

``var_input`` is Var[x_i], ``var_shortcut`` Var[ω_i·x_i] and ``var_branch`` Var[f_i(x_i)].
Written atomically (temporary file + rename), so an interrupted run never leaves half a profile.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from fairseq_admin_tools.errors import AdminError
from fairseq_admin_tools.files import write_atomically

FORMAT = "fairseq-admin-profile"
FORMAT_VERSION = 2  # 2: adds "settings"
PROFILE_FILENAME = "admin_profile.json"


class ProfileError(AdminError):
    """A profile that is missing, unreadable, or taken from another model or under other settings."""


def _arch(args: Any) -> str:
    """The architecture name: ``arch`` in an argparse namespace, ``_name`` in a hydra/dataclass config."""
    return getattr(args, "arch", None) or getattr(args, "_name", None)


@dataclass(frozen=True)
class ModelFacts:
    """What a profile must agree on with the model that uses it."""

    arch: str
    encoder_layers: int
    decoder_layers: int
    encoder_embed_dim: int
    decoder_embed_dim: int
    encoder_ffn_embed_dim: int
    decoder_ffn_embed_dim: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_normalize_before: bool
    decoder_normalize_before: bool

    @classmethod
    def from_args(cls, args: Any) -> ModelFacts:
        return cls(**{f.name: _arch(args) if f.name == "arch" else getattr(args, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class SettingFacts:
    """Every other setting that changes the forward pass at initialization, hence ω.

    The seed is not one: like the original, a profile taken once is reused across seeds.
    """

    dropout: float
    attention_dropout: float
    activation_dropout: float  # fairseq's effective value: --activation-dropout, else --relu-dropout
    activation_fn: str
    no_scale_embedding: bool
    layernorm_embedding: bool
    encoder_learned_pos: bool
    decoder_learned_pos: bool
    no_token_positional_embeddings: bool
    share_all_embeddings: bool
    share_decoder_input_output_embed: bool
    cross_self_attention: bool
    quant_noise_pq: float
    ffn_init: str
    profile_padding: str

    @classmethod
    def from_args(cls, args: Any) -> SettingFacts:
        return cls(
            dropout=float(args.dropout),
            attention_dropout=float(args.attention_dropout),
            activation_dropout=float(getattr(args, "activation_dropout", 0) or getattr(args, "relu_dropout", 0) or 0),
            activation_fn=str(args.activation_fn),
            no_scale_embedding=bool(args.no_scale_embedding),
            layernorm_embedding=bool(args.layernorm_embedding),
            encoder_learned_pos=bool(args.encoder_learned_pos),
            decoder_learned_pos=bool(args.decoder_learned_pos),
            no_token_positional_embeddings=bool(args.no_token_positional_embeddings),
            share_all_embeddings=bool(args.share_all_embeddings),
            share_decoder_input_output_embed=bool(args.share_decoder_input_output_embed),
            cross_self_attention=bool(getattr(args, "cross_self_attention", False)),
            quant_noise_pq=float(getattr(args, "quant_noise_pq", 0) or 0),
            ffn_init=str(args.ffn_init),
            profile_padding=str(args.admin_profile_padding),
        )


@dataclass(frozen=True)
class BranchRecord:
    side: str  # "encoder" or "decoder"
    layer: int
    branch: str  # "self_attn", "cross_attn" or "ffn"
    var_input: float
    var_shortcut: float
    var_branch: float
    omega: float


@dataclass(frozen=True)
class DataFacts:
    tokens: int
    sentences: int
    batches: int
    seed: int
    max_tokens: int | None


@dataclass(frozen=True)
class AdminProfile:
    model: ModelFacts
    settings: SettingFacts
    data: DataFacts
    branches: tuple[BranchRecord, ...]

    def omegas(self, side: str) -> list[float]:
        return [b.omega for b in self.branches if b.side == side]

    def to_json(self) -> str:
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": asdict(self.model),
            "settings": asdict(self.settings),
            "data": asdict(self.data),
            "branches": [asdict(b) for b in self.branches],
        }
        try:
            return json.dumps(payload, indent=1, allow_nan=False) + "\n"
        except ValueError as err:  # NaN or inf: the profiling forward pass overflowed
            raise ProfileError(
                "profiling measured a non-finite variance (NaN or inf), so no profile was written; "
                "the model's forward pass overflows at initialization — check the learning setup "
                "(dims, --max-tokens) and profile in fp32"
            ) from err


def default_profile_path(save_dir: str) -> str:
    return os.path.join(save_dir, PROFILE_FILENAME)


def save_profile(profile: AdminProfile, path: str) -> None:
    write_atomically(path, profile.to_json())


def _reject_constant(name: str) -> float:
    raise ProfileError(f"contains {name}")


def load_profile(path: str) -> AdminProfile:
    """Read and validate a profile; every way it can be wrong is a ProfileError that says what to do."""
    redo = "re-run profiling (--init-type adaptive-profiling) to write a new one"
    if not os.path.exists(path):
        raise ProfileError(
            f"no Admin profile at {path}. Run the profiling step first: the same fairseq-train "
            "command with --init-type adaptive-profiling (or point --admin-profile at an existing profile)"
        )
    try:
        with open(path) as f:
            raw = json.load(f, parse_constant=_reject_constant)
    except ProfileError as err:
        raise ProfileError(f"Admin profile {path} {err} (a non-finite value); {redo}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProfileError(f"Admin profile {path} is not valid JSON ({err}); it may be truncated; {redo}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ProfileError(f"{path} is not a fairseq-admin profile (no \"format\": \"{FORMAT}\"); {redo}")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ProfileError(
            f"Admin profile {path} has format version {raw.get('format_version')!r}; this fairseq-admin "
            f"reads version {FORMAT_VERSION} (version 2 records the settings that change ω); {redo}"
        )
    try:
        profile = AdminProfile(
            model=ModelFacts(**raw["model"]),
            settings=SettingFacts(**raw["settings"]),
            data=DataFacts(**raw["data"]),
            branches=tuple(BranchRecord(**b) for b in raw["branches"]),
        )
    except (KeyError, TypeError) as err:
        raise ProfileError(f"Admin profile {path} is incomplete or malformed ({err}); {redo}") from None
    for b in profile.branches:
        values = (b.var_input, b.var_shortcut, b.var_branch, b.omega)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values) or b.omega <= 0:
            raise ProfileError(
                f"Admin profile {path} has an invalid value at {b.side} layer {b.layer} {b.branch} "
                f"(ω must be a finite positive number); {redo}"
            )
    return profile


def _differences(profiled: Any, current: Any, what: str) -> list[str]:
    return [
        f"{name}: {what} {getattr(profiled, name)!r}, now {getattr(current, name)!r}"
        for name in (f.name for f in fields(profiled))
        if getattr(profiled, name) != getattr(current, name)
    ]


def check_profile_matches(profile: AdminProfile, facts: ModelFacts, settings: SettingFacts, path: str) -> None:
    """Stop with one clear error when a profile was taken from a different model or under other settings."""
    mismatches = [m.replace(", now ", ", model ") for m in _differences(profile.model, facts, "profile")]
    if mismatches:
        raise ProfileError(
            f"Admin profile {path} was taken from a different model ({'; '.join(mismatches)}). "
            "Profile this model (--init-type adaptive-profiling with the same model flags) "
            "or pass --admin-profile for the right one"
        )
    changed = _differences(profile.settings, settings, "profiled")
    if changed:
        raise ProfileError(
            f"Admin profile {path} was taken under other settings that change ω ({'; '.join(changed)}). "
            "Train with the profiled settings, or profile again with these (delete the profile or pass "
            "--admin-profile NEW with --init-type adaptive-profiling)"
        )
