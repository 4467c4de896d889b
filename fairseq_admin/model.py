"""fairseq glue: the ``transformer_admin`` model, its config and its architectures.

The model is fairseq's own Post-LN ``transformer`` whose layers route every residual connection
through an :class:`~fairseq_admin.layers.AdminShortcut`, ``ω ⊙ x + f(x)``; everything else,
forward pass included, is fairseq's code. ``--init-type`` (:mod:`fairseq_admin.init_types`) then
sets ω, after ``--ffn-init`` has set the initialization of fairseq 0.8 where asked.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import field, fields, make_dataclass
from typing import Any, Optional

import torch.nn as nn
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.distributed import fsdp_wrap
from fairseq.models import ARCH_CONFIG_REGISTRY, register_model, register_model_architecture
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
from omegaconf import II, DictConfig, OmegaConf

from fairseq_admin import init_types
from fairseq_admin.layers import (
    SIDES,
    AdminDecoderLayer,
    AdminEncoderLayer,
    AdminShortcut,
    admin_layers,
    admin_shortcuts,
    check_branch_order,
)
from fairseq_admin.monitor import BranchMonitor
from fairseq_admin.profiling import PADDING_MODES
from fairseq_admin.transformer_options import check_supported
from fairseq_admin_tools.errors import AdminError

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

FFN_INITS = ("default", "xavier")


def _flat_transformer_fields() -> list[tuple[str, Any, Any]]:
    """fairseq's TransformerConfig with its nested groups flattened to the legacy names (encoder_layers, ...).

    fairseq's own argparse flags for the transformer are this flattening (``gen_parser_from_dataclass(...,
    with_prefix="")``), and its legacy model code reads these flat names; a flat dataclass lets both
    ``fairseq-train`` and ``fairseq-hydra-train`` hand our model one config of the same shape. (In
    fairseq-train the arch functions still fill the defaults, e.g. decoder dims = encoder dims; in hydra,
    which runs no arch function, give every dimension.) ``layers_to_keep`` is declared ``List[int]`` but read
    as a comma-separated string (``"0,2"``) by fairseq's model and checkpoint code, so it is a string here.
    """
    flat = []
    for outer in fields(TransformerConfig):
        if outer.name.startswith("_"):
            continue
        if isinstance(outer.type, type) and issubclass(outer.type, FairseqDataclass):
            for inner in fields(outer.type):
                if inner.name.startswith("_"):
                    continue
                name = f"{outer.name}_{inner.name}"
                default = inner.default
                if isinstance(default, str) and default.startswith("${model."):  # ${model.decoder.embed_dim}
                    default = "${model." + default[len("${model."):].replace(".", "_")
                kind = Optional[str] if inner.name == "layers_to_keep" else inner.type  # see the docstring
                flat.append((name, kind, _copy_field(inner, default)))
        else:
            flat.append((outer.name, outer.type, _copy_field(outer, outer.default)))
    return flat


def _copy_field(original: dataclasses.Field, default: Any) -> dataclasses.Field:
    if original.default_factory is not dataclasses.MISSING:
        return field(default_factory=original.default_factory, metadata=original.metadata)
    return field(default=default, metadata=original.metadata)


def _admin_fields() -> list[tuple[str, Any, Any]]:
    """Our options, plus the training settings profiling reads (interpolated from the run's config in hydra)."""
    return [
        ("init_type", ChoiceEnum(init_types.INIT_TYPE_NAMES), field(default="default", metadata={"help": "; ".join(
            f"{t.name}: {t.help}" for t in init_types.INIT_TYPES.values())})),
        ("ffn_init", ChoiceEnum(FFN_INITS), field(default="default", metadata={"help": (
            "default: fairseq 0.12's initialization; xavier: fairseq 0.8's, as the paper's code (FFN weights "
            "xavier_uniform, FFN and q/k/v biases 0)")})),
        ("admin_profile", Optional[str], field(default=None, metadata={
            "help": "profile file (default: <save-dir>/admin_profile.json)"})),
        ("admin_profile_tokens", int, field(default=8192, metadata={
            "help": "target tokens the profiling pass reads (at least one batch)"})),
        ("admin_profile_padding", ChoiceEnum(PADDING_MODES), field(default="exclude", metadata={
            "help": "exclude: statistics over non-padding positions; include: over every element, as the original"})),
        ("admin_output_change", ChoiceEnum(["log", "constant"]), field(default="log", metadata={
            "help": "admin-closed-form: output change O(log n) or O(1)"})),
        ("admin_omega_fixed", bool, field(default=False, metadata={
            "help": "keep ω constant instead of a trainable vector"})),
        ("admin_monitor_interval", int, field(default=0, metadata={"help": (
            "every N updates, log each residual branch's dependency ratio, ω, fp16 headroom and layer gradient "
            "norm to <save-dir>/admin_monitor.jsonl and fairseq's log, and locate every skipped update's first "
            "non-finite value (0: off)")})),
        ("admin_max_skipped", int, field(default=10, metadata={
            "help": "with the monitor on, warn when more than this many updates in a row are skipped"})),
        ("admin_omegas_from_checkpoint", bool, field(default=False, metadata={
            "help": "set by fairseq-admin in the configs it saves: ω come from the checkpoint, not a profile"})),
        # Read by profiling; in fairseq-train they come from the command line, in hydra from these paths.
        ("seed", int, field(default=II("common.seed"))),
        ("cpu", bool, field(default=II("common.cpu"))),
        ("max_tokens", Optional[int], field(default=II("dataset.max_tokens"))),
        ("batch_size", Optional[int], field(default=II("dataset.batch_size"))),
        ("required_batch_size_multiple", int, field(default=II("dataset.required_batch_size_multiple"))),
        ("train_subset", str, field(default=II("dataset.train_subset"))),
        ("data_buffer_size", int, field(default=II("dataset.data_buffer_size"))),
        ("save_dir", str, field(default=II("checkpoint.save_dir"))),
        ("restore_file", str, field(default=II("checkpoint.restore_file"))),
        ("finetune_from_model", Optional[str], field(default=II("checkpoint.finetune_from_model"))),
        ("checkpoint_suffix", str, field(default=II("checkpoint.checkpoint_suffix"))),
    ]


TransformerAdminConfig = make_dataclass(
    "TransformerAdminConfig", _flat_transformer_fields() + _admin_fields(), bases=(FairseqDataclass,)
)
TransformerAdminConfig.__doc__ = "transformer_admin's config: fairseq's TransformerConfig, flat, + Admin's options."


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


@register_model("transformer_admin", dataclass=TransformerAdminConfig)
class TransformerAdminModel(TransformerModel):
    """Post-LN Transformer whose shortcuts are set by ``--init-type`` (Admin and comparators)."""

    @classmethod
    def add_args(cls, parser):
        # No defaults here (fairseq's convention): the architecture functions fill them in.
        gen_parser_from_dataclass(parser, TransformerAdminConfig(), delete_default=True, with_prefix="")

    @classmethod
    def build_model(cls, args, task):
        if getattr(args, "arch", None) is None and getattr(args, "_name", None) is None:
            # fairseq's dataclass path (TransformerAdminConfig.from_namespace) drops the name; it is this arch
            args._name = "transformer_admin"
        transformer_admin(args)
        check_supported(args)
        init_type = init_types.lookup(args.init_type)
        if init_type.post_ln_only and (args.encoder_normalize_before or args.decoder_normalize_before):
            raise AdminError(
                f"--init-type {init_type.name} is for Post-LN models, but --encoder-normalize-before or "
                "--decoder-normalize-before is set (Pre-LN). Drop those flags, or use --init-type default "
                "for a Pre-LN baseline"
            )
        model = super().build_model(args, task)
        model.args = TransformerConfig.from_namespace(training_namespace(args))  # what a stock model holds
        check_branch_order(model)
        if str(args.ffn_init) == "xavier":
            initialize_as_fairseq_08(model)
        init_type.initialize(model, args, task)
        if args.admin_monitor_interval > 0:
            model.admin_monitor = BranchMonitor(model, args.admin_monitor_interval, args.admin_max_skipped,
                                                args.save_dir)
        return model

    def admin_shortcuts(self, side: str) -> list[AdminShortcut]:
        """The shortcuts of one side ("encoder" or "decoder") in the order the forward pass uses them."""
        return admin_shortcuts(self, side)

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        return AdminTransformerEncoder(TransformerConfig.from_namespace(args), src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        return AdminTransformerDecoder(cfg, tgt_dict, embed_tokens, no_encoder_attn=cfg.no_cross_attention)


def training_namespace(cfg: Any) -> argparse.Namespace:
    """The flat ``Namespace`` of every training option that a stock ``transformer`` keeps as ``model.args``.

    fairseq hands a legacy model (``transformer``) the whole flat training Namespace, so scripts read
    ``model.args.seed`` or ``model.args.data``; a dataclass model like ours gets only its model config. The
    model config fairseq builds (in fairseq-train, fairseq-hydra-train and when loading a checkpoint) still
    hangs in the run's config tree, so we flatten that tree as fairseq's own legacy conversion would: each
    group's options, each named component (task, criterion, optimizer, ...) as ``name=_name``, the model's
    options last, and ``arch``.
    """
    flat: dict[str, Any] = {}
    root = cfg._get_root() if isinstance(cfg, DictConfig) else None
    if root is not None and root is not cfg:
        for group in root:
            node = root._get_node(group)
            if group == "model" or not isinstance(node, DictConfig):
                continue
            values = OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
            name = values.pop("_name", None)
            if name is not None:
                flat[group] = name
            flat.update({key: value for key, value in values.items() if value != "???"})
    model_values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else vars(cfg)
    flat.update({key: value for key, value in model_values.items() if not key.startswith("_")})
    flat["arch"] = getattr(cfg, "arch", None) or getattr(cfg, "_name", None) or "transformer_admin"
    flat["_name"] = flat["arch"]
    return argparse.Namespace(**flat)


def initialize_as_fairseq_08(model: nn.Module) -> None:
    """``--ffn-init xavier``: the layers' initialization of fairseq 0.8, which the paper's code used.

    fairseq 0.8 built fc1/fc2 with its ``Linear()`` helper (xavier_uniform weights, zero bias) and
    attention with one fused in-projection whose bias was zero. fairseq 0.12 uses plain ``nn.Linear``
    for the FFN (kaiming-uniform, non-zero bias) and separate q/k/v projections with nn.Linear's
    non-zero bias. (Its q/k/v weights, xavier_uniform with gain 1/√2 per projection, have the same
    distribution as 0.8's fused xavier_uniform; embeddings, output projection and out_proj match too.)
    """
    for side in SIDES:
        for layer in admin_layers(model, side):
            for linear in (layer.fc1, layer.fc2):
                nn.init.xavier_uniform_(linear.weight)
                nn.init.zeros_(linear.bias)
            for attn in (layer.self_attn, getattr(layer, "encoder_attn", None)):
                if attn is None:
                    continue
                for projection in (attn.q_proj, attn.k_proj, attn.v_proj):
                    if projection.bias is not None:
                        nn.init.zeros_(projection.bias)


# Architectures: the stock transformer's, plus Admin's own defaults.


ADMIN_DEFAULTS = {name: spec.default for name, _, spec in _admin_fields()
                  if not (isinstance(spec.default, str) and spec.default.startswith("${"))}
"""Our options' defaults, as the dataclass declares them (the fields read from other groups excluded)."""


def transformer_admin(args):
    for name, default in ADMIN_DEFAULTS.items():
        setattr(args, name, getattr(args, name, default))
    base_architecture(args)


# register_model(..., dataclass=...) registers `--arch transformer_admin` as a no-op; in fairseq-train it
# must apply the legacy defaults (e.g. decoder dims follow --encoder-embed-dim) like every other arch.
ARCH_CONFIG_REGISTRY["transformer_admin"] = transformer_admin


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
