"""``fairseq-admin-export IN.pt OUT.pt``: fold a trained Admin model's ω into a stock fairseq ``transformer``.

Why it is exact. In the Post-LN layers every shortcut but the first of each side reads the output
of a LayerNorm, ``y = γ ⊙ n + b`` (n the normalized input), and that ``y`` goes to exactly two
places: the shortcut, scaled by ω, and the input projections of the branch. So with

    γ' = ω ⊙ γ,   b' = ω ⊙ b          (the LayerNorm emits y' = ω ⊙ y)
    W' = W / ω[None, :],  bias unchanged  (each input projection: W' y' = W y)

the shortcut becomes ``y' = ω ⊙ y`` with ω = 1 (the stock ``x + f(x)``) and every branch sees the
same pre-activations, for any vector ω with no zero entry. Which LayerNorm and which projections:

=========================  ==============================================  =====================
branch (layer l)            LayerNorm whose output it reads                 projections divided
=========================  ==============================================  =====================
encoder self-attn, l > 0    ``encoder.layers.{l-1}.final_layer_norm``       self_attn q, k, v
encoder ffn                 ``encoder.layers.{l}.self_attn_layer_norm``     fc1
decoder self-attn, l > 0    ``decoder.layers.{l-1}.final_layer_norm``       self_attn q, k, v
decoder cross-attn          ``decoder.layers.{l}.self_attn_layer_norm``     encoder_attn q only
decoder ffn                 ``decoder.layers.{l}.encoder_attn_layer_norm``  fc1
=========================  ==============================================  =====================

(cross-attention keys/values read the encoder output, which no ω touches; without cross-attention
the decoder ffn reads ``self_attn_layer_norm``.) The first branch of each side reads the embeddings,
which no LayerNorm precedes, so its ω_1 must be exactly 1, as ``--init-type adaptive`` keeps it. The
last LayerNorm of each side (the encoder output, the decoder's input to the output projection)
precedes no ω and is left alone.

Anything this argument does not cover is refused with one error instead of exporting a different
model: ω_1 ≠ 1 (admin-closed-form, deepnorm), ReZero (no LayerNorms), Pre-LN, layerdrop or pruned
layers, cross-self-attention, a zero ω entry, and any state-dict key that is not a stock
``transformer`` key. The output is loadable by stock fairseq 0.12 under torch's ``weights_only=True``
(no ``argparse.Namespace``: the model config is stored as a plain dict, arch ``transformer``), holds no
optimizer state, and is written atomically.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

import torch

from fairseq_admin_tools.errors import AdminError, command_line_tool
from fairseq_admin_tools.files import torch_save_atomically

STOCK_ARCH = "transformer"
OMEGA_KEY = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.admin_shortcuts\.(\d+)\.omega$")
STOCK_KEY = re.compile(
    r"^(encoder|decoder)\.("
    r"version|embed_tokens\.weight|embed_positions\.(weight|_float_tensor)|layernorm_embedding\.(weight|bias)"
    r"|output_projection\.weight"
    r"|project_in_dim\.weight|project_out_dim\.weight|quant_noise\.weight|adaptive_softmax\..+"
    r"|layers\.\d+\.(self_attn|encoder_attn)\.(q|k|v|out)_proj\.(weight|bias)"
    r"|layers\.\d+\.(self_attn_layer_norm|encoder_attn_layer_norm|final_layer_norm)\.(weight|bias)"
    r"|layers\.\d+\.fc[12]\.(weight|bias)"
    r")$"
)
PLAIN_TYPES = (str, int, float, bool, type(None), torch.Tensor)


def _model_args(state: dict) -> dict[str, Any]:
    """The model's argparse config as a plain dict, from the legacy ``args`` or ``cfg['model']``."""
    source = state.get("args")
    if source is None:
        cfg = state.get("cfg") or {}
        source = cfg.get("model")
    if isinstance(source, argparse.Namespace):
        return dict(vars(source))
    if isinstance(source, dict):
        return dict(source)
    raise AdminError("the checkpoint has no model config (neither 'args' nor cfg['model']); not a fairseq checkpoint?")


def check_foldable(args: dict[str, Any], model: dict[str, torch.Tensor]) -> None:
    """Refuse everything the folding argument (module docstring) does not cover, in one clear error."""
    arch = args.get("arch") or args.get("_name")  # legacy namespace: arch; dataclass config: _name
    if not str(arch or "").startswith("transformer_admin"):
        raise AdminError(f"not a transformer_admin checkpoint (arch {arch!r})")
    from fairseq_admin.init_types import INIT_TYPES

    init_type = str(args.get("init_type", "default"))
    exportable = [name for name, entry in INIT_TYPES.items() if entry.exportable]
    if init_type not in exportable:
        raise AdminError(
            f"cannot fold --init-type {init_type} into a stock Transformer: only {', '.join(exportable)} "
            "keep ω_1 = 1 and the LayerNorms that absorb ω (admin-closed-form and deepnorm scale the embedding "
            "shortcut, rezero has no LayerNorms)"
        )
    problems = unfoldable_settings(args)
    if problems:
        raise AdminError(f"cannot fold ω exactly: {'; '.join(problems)}")
    unknown = [k for k in model if not OMEGA_KEY.match(k) and not STOCK_KEY.match(k)]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise AdminError(f"cannot fold ω exactly: keys a stock transformer does not have: {shown}")


def unfoldable_settings(args: dict[str, Any]) -> list[str]:
    """The model settings under which a stock Transformer would not compute what the Admin model did."""
    problems = []
    if args.get("encoder_normalize_before") or args.get("decoder_normalize_before"):
        problems.append("it is Pre-LN (--encoder/decoder-normalize-before)")
    for flag in ("encoder_layerdrop", "decoder_layerdrop"):
        if float(args.get(flag) or 0) > 0:
            problems.append(f"it was trained with --{flag.replace('_', '-')} {args[flag]}")
    for flag in ("encoder_layers_to_keep", "decoder_layers_to_keep"):
        if args.get(flag):
            problems.append(f"--{flag.replace('_', '-')} is set")
    if args.get("cross_self_attention"):
        problems.append("--cross-self-attention makes decoder self-attention read the encoder output too")
    return problems


def _branches(model: dict[str, torch.Tensor], side: str) -> list[tuple[int, int, str]]:
    """(layer, shortcut index, branch) for each ω of a side, in forward order."""
    from fairseq_admin.layers import layer_branches

    found = sorted((int(m[2]), int(m[3])) for m in map(OMEGA_KEY.match, model) if m and m[1] == side)
    branches = []
    for layer, index in found:
        names = layer_branches(side, f"{side}.layers.{layer}.encoder_attn.q_proj.weight" in model)
        if index >= len(names):
            raise AdminError(f"cannot fold ω exactly: unknown shortcut {side}.layers.{layer}.admin_shortcuts.{index}")
        branches.append((layer, index, names[index]))
    return branches


def _fold_targets(model: dict[str, torch.Tensor], side: str, layer: int, branch: str) -> tuple[str, list[str]]:
    """The LayerNorm that feeds a branch, and the branch's input projection weights."""
    prefix = f"{side}.layers"
    if branch == "self_attn":
        norm = f"{prefix}.{layer - 1}.final_layer_norm"
        projections = [f"{prefix}.{layer}.self_attn.{p}_proj.weight" for p in "qkv"]
    elif branch == "cross_attn":
        norm = f"{prefix}.{layer}.self_attn_layer_norm"
        projections = [f"{prefix}.{layer}.encoder_attn.q_proj.weight"]
    else:
        has_cross = f"{prefix}.{layer}.encoder_attn_layer_norm.weight" in model
        norm = f"{prefix}.{layer}.{'encoder_attn_layer_norm' if has_cross else 'self_attn_layer_norm'}"
        projections = [f"{prefix}.{layer}.fc1.weight"]
    return norm, projections


def fold_omegas(model: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The stock-transformer state dict that computes what the Admin one does (see the module docstring)."""
    folded = {k: v for k, v in model.items() if not OMEGA_KEY.match(k)}
    for side in ("encoder", "decoder"):
        for position, (layer, index, branch) in enumerate(_branches(model, side)):
            key = f"{side}.layers.{layer}.admin_shortcuts.{index}.omega"
            omega = model[key].detach().to(torch.float64).reshape(-1)
            if position == 0:
                if not bool(torch.all(omega == 1)):
                    raise AdminError(
                        f"cannot fold ω exactly: {key} (ω_1, the shortcut of the embeddings) is not 1 "
                        f"(range {omega.min().item():.4g}..{omega.max().item():.4g}); no LayerNorm precedes it"
                    )
                continue
            if not bool(torch.all(omega != 0)) or not bool(torch.all(torch.isfinite(omega))):
                raise AdminError(f"cannot fold ω exactly: {key} has a zero or non-finite entry")
            norm, projections = _fold_targets(model, side, layer, branch)
            for name in (f"{norm}.weight", f"{norm}.bias", *projections):
                if name not in folded:
                    raise AdminError(f"cannot fold ω exactly: {key} needs {name}, which the checkpoint lacks")
            for name in (f"{norm}.weight", f"{norm}.bias"):
                folded[name] = (folded[name].to(torch.float64) * omega).to(model[name].dtype)
            for name in projections:
                folded[name] = (folded[name].to(torch.float64) / omega[None, :]).to(model[name].dtype)
    return folded


def _plain(value: Any, where: str) -> Any:
    """A copy made only of types torch's weights_only loader accepts with no allow-listing."""
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, f"{where}[]") for v in value)
    if isinstance(value, PLAIN_TYPES):
        return value
    raise AdminError(f"cannot store {where} ({type(value).__name__}) in a checkpoint stock fairseq can load")


def stock_config(state: dict, args: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's cfg with a plain-dict ``transformer`` model config and no trace of the plugin."""
    model_args = {k: v for k, v in args.items() if not k.startswith("admin_") and k not in ("init_type", "ffn_init")}
    model_args["arch"] = model_args["_name"] = STOCK_ARCH
    cfg = dict(state.get("cfg") or {})
    cfg["model"] = model_args
    common = dict(cfg.get("common") or {})
    if "user_dir" in common:
        common["user_dir"] = None
    cfg["common"] = common
    return _plain(cfg, "cfg")


def export(in_path: str, out_path: str) -> dict[str, Any]:
    """Fold IN into a stock transformer checkpoint at OUT (atomically); returns what was written."""
    if not os.path.isfile(in_path):
        raise AdminError(f"no checkpoint at {in_path}")
    if os.path.abspath(in_path) == os.path.abspath(out_path) or (
        os.path.exists(out_path) and os.path.samefile(in_path, out_path)
    ):
        raise AdminError(f"refusing to overwrite the input checkpoint {in_path}; give another OUT path")
    import fairseq_admin  # noqa: F401  (allow-lists argparse.Namespace for loading IN)

    state = torch.load(in_path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise AdminError(f"{in_path} is not a fairseq checkpoint (no 'model' state)")
    args = _model_args(state)
    check_foldable(args, state["model"])
    history = state.get("optimizer_history") or [{}]
    last = history[-1]
    out = {
        "args": None,
        "cfg": stock_config(state, args),
        "model": fold_omegas(state["model"]),
        "criterion": None,
        "optimizer_history": [
            {
                "criterion_name": last.get("criterion_name", "CrossEntropyCriterion"),
                "optimizer_name": last.get("optimizer_name", "none"),
                "lr_scheduler_state": _plain(last.get("lr_scheduler_state", {"best": None}), "lr_scheduler_state"),
                "num_updates": int(last.get("num_updates", 0)),
            }
        ],
        "task_state": _plain(state.get("task_state") or {}, "task_state"),
        "extra_state": {},
    }
    torch_save_atomically(out, out_path)
    return out


@command_line_tool("fairseq-admin-export")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fairseq-admin-export",
        description="Fold a trained transformer_admin checkpoint's ω into a stock fairseq 'transformer' "
                    "checkpoint (loads in fairseq-generate without --user-dir).",
    )
    parser.add_argument("input", metavar="IN.pt", help="transformer_admin checkpoint")
    parser.add_argument("output", metavar="OUT.pt", help="where to write the stock transformer checkpoint")
    options = parser.parse_args(argv)
    out = export(options.input, options.output)
    layers = sum(1 for k in out["model"] if k.endswith("final_layer_norm.weight"))
    print(f"fairseq-admin-export: wrote {options.output} (stock transformer, {layers} layers, ω folded)")


if __name__ == "__main__":
    main()
