"""fairseq glue: the ``transformer_admin`` model and its architectures.

The model is fairseq's own Post-LN ``transformer`` with one change: every residual
connection goes through an :class:`AdminShortcut`, ``ω ⊙ x + f(x)``, using the
``residual_connection`` hook that fairseq's layers already call once per branch
(2 per encoder layer, 3 per decoder layer). Everything else, forward pass included,
is fairseq's code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from typing import Any
from collections.abc import Iterator

import torch
import torch.nn as nn
from fairseq.distributed import fsdp_wrap
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerConfig, TransformerModel
from fairseq.models.transformer.transformer_decoder import TransformerDecoderBase
from fairseq.models.transformer.transformer_encoder import TransformerEncoderBase
from fairseq.models.transformer.transformer_legacy import (
    base_architecture,
    transformer_iwslt_de_en,
    transformer_vaswani_wmt_en_de_big,
    transformer_wmt_en_de,
)
from fairseq.modules.checkpoint_activations import checkpoint_wrapper
from fairseq.modules.transformer_layer import (
    TransformerDecoderLayerBase,
    TransformerEncoderLayerBase,
)
from torch import Tensor

from fairseq_admin.admin import SideProfiler
from fairseq_admin.errors import AdminError
from fairseq_admin.profile_file import (
    ModelFacts,
    check_profile_matches,
    default_profile_path,
    load_profile,
)

logger = logging.getLogger(__name__)
# fairseq lowers the root logger to WARNING on ranks > 0; our few lines (ω per rank) should still show.
logger.setLevel(logging.INFO)

INIT_TYPES = ("default", "adaptive-profiling", "adaptive", "admin-closed-form", "deepnorm", "rezero")
ENCODER_BRANCHES = ("self_attn", "ffn")
DECODER_BRANCHES = ("self_attn", "cross_attn", "ffn")


class AdminShortcut(nn.Module):
    """``ω ⊙ shortcut + branch``: the one place Admin touches a residual connection.

    ω starts as a buffer of ones (exactly the stock ``shortcut + branch``); Admin
    turns it into a trainable parameter unless asked to keep it constant. While a
    :class:`SideProfiler` is attached, each call first sets ω from the branches
    before it, then records this branch's statistics.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("omega", torch.ones(dim))
        self.profiler: SideProfiler | None = None
        self.index = 0  # position of this branch on its side, set with the profiler

    def make_trainable(self) -> None:
        value = self.omega.detach().clone()
        del self._buffers["omega"]
        self.omega = nn.Parameter(value)

    def forward(self, shortcut: Tensor, branch: Tensor, padding_mask: Tensor | None) -> Tensor:
        if self.profiler is not None:
            with torch.no_grad():
                self.omega.fill_(self.profiler.omega(self.index))
            self.profiler.record(self.index, shortcut, branch, padding_mask)
        return shortcut * self.omega + branch


class _ShortcutRouting:
    """Hands fairseq's ``residual_connection`` calls to this layer's shortcuts, in call order."""

    admin_shortcuts: nn.ModuleList
    _next_shortcut: int
    _padding_mask: Tensor | None

    def residual_connection(self, x: Tensor, residual: Tensor) -> Tensor:
        shortcut = self.admin_shortcuts[self._next_shortcut]
        self._next_shortcut += 1
        return shortcut(residual, x, self._padding_mask)


class AdminEncoderLayer(_ShortcutRouting, TransformerEncoderLayerBase):
    def __init__(self, cfg: TransformerConfig, return_fc: bool = False) -> None:
        super().__init__(cfg, return_fc=return_fc)
        self.admin_shortcuts = nn.ModuleList(AdminShortcut(self.embed_dim) for _ in ENCODER_BRANCHES)

    def forward(self, x, encoder_padding_mask: Tensor | None, attn_mask: Tensor | None = None):
        self._next_shortcut, self._padding_mask = 0, encoder_padding_mask
        try:
            return super().forward(x, encoder_padding_mask, attn_mask)
        finally:
            self._padding_mask = None


class AdminDecoderLayer(_ShortcutRouting, TransformerDecoderLayerBase):
    def __init__(self, cfg: TransformerConfig, no_encoder_attn: bool = False, **kwargs: Any) -> None:
        super().__init__(cfg, no_encoder_attn=no_encoder_attn, **kwargs)
        branches = [b for b in DECODER_BRANCHES if not (no_encoder_attn and b == "cross_attn")]
        self.admin_shortcuts = nn.ModuleList(AdminShortcut(self.embed_dim) for _ in branches)

    def forward(self, x, *args: Any, self_attn_padding_mask: Tensor | None = None, **kwargs: Any):
        self._next_shortcut, self._padding_mask = 0, self_attn_padding_mask
        try:
            return super().forward(x, *args, self_attn_padding_mask=self_attn_padding_mask, **kwargs)
        finally:
            self._padding_mask = None


def _wrap_layer(layer: nn.Module, cfg: TransformerConfig) -> nn.Module:
    """Activation checkpointing and FSDP wrapping, as fairseq's build_*_layer does them."""
    checkpoint = cfg.checkpoint_activations
    if checkpoint:
        layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
    return fsdp_wrap(layer, min_num_params=cfg.min_params_to_wrap if not checkpoint else 0)


class AdminTransformerEncoder(TransformerEncoderBase):
    def build_encoder_layer(self, cfg):
        return _wrap_layer(AdminEncoderLayer(cfg, return_fc=self.return_fc), cfg)


class AdminTransformerDecoder(TransformerDecoderBase):
    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        return _wrap_layer(AdminDecoderLayer(cfg, no_encoder_attn=no_encoder_attn), cfg)


@register_model("transformer_admin")
class TransformerAdminModel(TransformerModel):
    """Post-LN Transformer whose shortcuts are rescaled by Admin (``--init-type``)."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        # No defaults here (fairseq's convention): the architecture functions fill them in.
        parser.add_argument("--init-type", choices=INIT_TYPES,
                            help="default: ω = 1 (stock Post-LN); adaptive-profiling: measure the "
                                 "branch variances, write the profile and exit; adaptive: set ω from "
                                 "the profile and train; admin-closed-form, deepnorm, rezero: comparators "
                                 "(see fairseq_admin/comparators.py)")
        parser.add_argument("--admin-profile", metavar="PATH",
                            help="profile file (default: <save-dir>/admin_profile.json)")
        parser.add_argument("--admin-profile-tokens", type=int, metavar="N",
                            help="target tokens the profiling pass reads (at least one batch; default 8192)")
        parser.add_argument("--admin-output-change", choices=("log", "constant"),
                            help="admin-closed-form: output change O(log n) (default) or O(1)")
        parser.add_argument("--admin-omega-fixed", action="store_true",
                            help="keep ω a constant buffer instead of a trainable vector")

    @classmethod
    def build_model(cls, args, task):
        transformer_admin(args)
        check_init_type(args)
        model = super().build_model(args, task)
        initialize_omegas(model, args, task)
        return model

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        return AdminTransformerEncoder(TransformerConfig.from_namespace(args), src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        return AdminTransformerDecoder(cfg, tgt_dict, embed_tokens, no_encoder_attn=cfg.no_cross_attention)

    def admin_shortcuts(self, side: str) -> list[AdminShortcut]:
        """The shortcuts of one side ("encoder" or "decoder") in the order the forward pass uses them."""
        layers = getattr(self, side).layers
        return [s for layer in layers for s in layer.modules() if isinstance(s, AdminShortcut)]


def branch_names(model: TransformerAdminModel, side: str) -> Iterator[tuple[int, str]]:
    """(layer, branch name) for each shortcut of a side, aligned with ``admin_shortcuts(side)``."""
    for index, layer in enumerate(getattr(model, side).layers):
        names = ENCODER_BRANCHES if side == "encoder" else DECODER_BRANCHES
        if side == "decoder" and layer.encoder_attn is None:
            names = ("self_attn", "ffn")
        for name in names:
            yield index, name


def check_init_type(args) -> None:
    """Admin rescales Post-LN shortcuts; refuse combinations that cannot mean anything."""
    if args.init_type == "default":
        return
    if args.encoder_normalize_before or args.decoder_normalize_before:
        raise AdminError(
            f"--init-type {args.init_type} is for Post-LN models, but --encoder-normalize-before or "
            "--decoder-normalize-before is set (Pre-LN). Drop those flags, or use --init-type default "
            "for a Pre-LN baseline"
        )


def omegas_in_checkpoint(args) -> str | None:
    """Where ω will come from if fairseq is about to restore a checkpoint, else None.

    Mirrors fairseq's checkpoint_utils.load_checkpoint: checkpoint_last.pt in --save-dir, or
    --restore-file, or --finetune-from-model on a first launch.
    """
    if getattr(args, "admin_omegas_from_checkpoint", False):
        return "the checkpoint being loaded"  # model rebuilt from a saved config (generate, export)
    restore_file = getattr(args, "restore_file", None)
    save_dir = getattr(args, "save_dir", None)
    if restore_file is None or save_dir is None:
        return None
    suffix = getattr(args, "checkpoint_suffix", "") or ""
    if restore_file == "checkpoint_last.pt":
        path = os.path.join(save_dir, f"checkpoint_last{suffix}.pt")
        finetune = getattr(args, "finetune_from_model", None)
        if not os.path.exists(path) and finetune:
            path = finetune
    else:
        path = restore_file
    return path if os.path.exists(path) else None


def omega_digest(model: TransformerAdminModel) -> str:
    """Short hash of every ω, to compare them across ranks in the logs."""
    digest = hashlib.sha256()
    for side in ("encoder", "decoder"):
        for shortcut in model.admin_shortcuts(side):
            digest.update(shortcut.omega.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def initialize_omegas(model: TransformerAdminModel, args, task) -> None:
    """Set ω as --init-type asks; profiling ends the process here, after writing the profile."""
    if args.init_type == "default":
        return
    if args.init_type in ("admin-closed-form", "deepnorm", "rezero"):
        from fairseq_admin.comparators import initialize_comparator

        initialize_comparator(model, args)
        return
    if args.init_type == "adaptive-profiling":
        from fairseq_admin.profiling import profile_and_exit

        profile_and_exit(model, args, task)
    source = omegas_in_checkpoint(args)
    if source is None:
        path = args.admin_profile or default_profile_path(args.save_dir)
        profile = load_profile(path)
        check_profile_matches(profile, ModelFacts.from_args(args), path)
        set_omegas(model, profile.omegas("encoder"), profile.omegas("decoder"))
        source = path
    if not args.admin_omega_fixed:
        for side in ("encoder", "decoder"):
            # ω_1 scales the embeddings, which no LayerNorm precedes; keeping it the constant 1
            # that profiling gives it is what lets a trained model fold ω into a stock Transformer.
            for shortcut in model.admin_shortcuts(side)[1:]:
                shortcut.make_trainable()
    # Saved with the config: a model rebuilt from a checkpoint takes ω from its state, not a profile.
    args.admin_omegas_from_checkpoint = True
    rank = getattr(args, "distributed_rank", 0)
    logger.info(f"admin: rank {rank}: ω from {source}, omega digest {omega_digest(model)}")


def set_omegas(model: TransformerAdminModel, encoder: list[float], decoder: list[float]) -> None:
    for side, values in (("encoder", encoder), ("decoder", decoder)):
        shortcuts = model.admin_shortcuts(side)
        if len(shortcuts) != len(values):
            raise AdminError(f"profile has {len(values)} {side} branches, model has {len(shortcuts)}")
        with torch.no_grad():
            for shortcut, value in zip(shortcuts, values, strict=True):
                shortcut.omega.fill_(value)


# Architectures: the stock transformer's, plus Admin's own defaults.


@register_model_architecture("transformer_admin", "transformer_admin")
def transformer_admin(args):
    args.init_type = getattr(args, "init_type", "default")
    args.admin_profile = getattr(args, "admin_profile", None)
    args.admin_profile_tokens = getattr(args, "admin_profile_tokens", 8192)
    args.admin_omega_fixed = getattr(args, "admin_omega_fixed", False)
    args.admin_output_change = getattr(args, "admin_output_change", "log")
    if args.init_type == "adaptive-profiling" and getattr(args, "distributed_world_size", 1) > 1:
        raise AdminError(
            f"profiling must run in a single process, but the world size is {args.distributed_world_size}: "
            "every process would measure its own shard and the ranks would disagree on ω. Run it with "
            "--distributed-world-size 1 (and CUDA_VISIBLE_DEVICES=0), then train with --init-type adaptive "
            "on all devices"
        )
    allow_bf16_without_tpu(args)
    base_architecture(args)


def allow_bf16_without_tpu(args) -> None:
    """fairseq 0.12 turns ``--bf16`` into ``--tpu`` and then fails without torch_xla; undo that off TPUs.

    Architecture functions run after fairseq's own argument post-processing, so this is the first
    place a plugin can set it right, and it only acts where no TPU runtime is installed.
    """
    if getattr(args, "bf16", False) and getattr(args, "tpu", False) and importlib.util.find_spec("torch_xla") is None:
        args.tpu = False


@register_model_architecture("transformer_admin", "transformer_admin_iwslt_de_en")
def transformer_admin_iwslt_de_en(args):
    transformer_iwslt_de_en(args)
    transformer_admin(args)


@register_model_architecture("transformer_admin", "transformer_admin_wmt_en_de")
def transformer_admin_wmt_en_de(args):
    transformer_wmt_en_de(args)
    transformer_admin(args)


@register_model_architecture("transformer_admin", "transformer_admin_wmt_en_de_big")
def transformer_admin_wmt_en_de_big(args):
    transformer_vaswani_wmt_en_de_big(args)
    transformer_admin(args)
