"""Reference test: our model against a transcription of the original Admin implementation.

The original is Transformer-Clinic (LiyuanLucasLiu/Transformer-Clinic), a fairseq 0.8 fork. Below is a
short, independent transcription of what its code computes with ``--init-type adaptive`` /
``adaptive-profiling`` (``fairseq/fairseq/modules/transformer_layer.py``, ``multihead_attention.py``,
``models/transformer.py``, ``modules/sinusoidal_positional_embedding.py``), written from reading that code
with plain torch ops and numpy, never calling our layers. Our model is fairseq 0.12's stock layers with
the ``residual_connection`` hook; if the two ever disagree, one of them is not Admin as published.

Loading our weights into the transcription only renames them: fairseq 0.8's fused ``in_proj_weight`` is
our q/k/v projections stacked, and the original's ``*_ratio_change`` vectors are our ω.
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import build_model
from torch import Tensor

# --- The transcription of Transformer-Clinic (fairseq 0.8 fork) -------------------------------------------------

# The original's names for each side's ω, in forward order (TransformerEncoderLayer / TransformerDecoderLayer).
ORIGINAL_RATIO_NAMES = {
    "encoder": ("attention_ratio_change", "fc_ratio_change"),
    "decoder": ("self_ratio_change", "encoder_ratio_change", "fc_ratio_change"),
}


@dataclass
class OriginalConfig:
    """The few ``args`` the original's layers read."""

    encoder_layers: int
    decoder_layers: int
    embed_dim: int
    encoder_heads: int
    decoder_heads: int
    padding_idx: int
    dropout: float
    attention_dropout: float
    activation_dropout: float


@dataclass
class ProfilingRatio:
    """The original's module-level ``encoder_ratio`` / ``decoder_ratio`` during ``adaptive-profiling``."""

    value: float = 1.0
    omegas: list[float] = field(default_factory=list)


class OriginalAdmin:
    """Transformer-Clinic's Post-LN Admin encoder-decoder, as functions of a weight dict (original names).

    ``profiling=True`` is the original's first training forward pass with ``--init-type adaptive-profiling``
    (every ratio is still 1.0 there, so ``not_initialized`` holds in every layer): each branch's ω is filled
    with the running ratio of its side, then the ratio becomes ``sqrt(np.var(residual*ω) + np.var(f))``.
    """

    def __init__(self, weights: dict[str, Tensor], cfg: OriginalConfig, training: bool, profiling: bool = False):
        self.w = dict(weights)  # profiling refills the ω entries, like ``ratio_change.data.fill_``
        self.cfg = cfg
        self.training = training
        self.ratios = {"encoder": ProfilingRatio(), "decoder": ProfilingRatio()} if profiling else None

    # modules/sinusoidal_positional_embedding.py + utils.make_positions
    def positions(self, tokens: Tensor) -> Tensor:
        pad, dim = self.cfg.padding_idx, self.cfg.embed_dim
        num_embeddings = pad + 1 + tokens.size(1)
        half_dim = dim // 2
        emb = math.log(10000) / (half_dim - 1)
        emb = torch.exp(torch.arange(half_dim, dtype=torch.float) * -emb)
        emb = torch.arange(num_embeddings, dtype=torch.float).unsqueeze(1) * emb.unsqueeze(0)
        table = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1).view(num_embeddings, -1)
        table[pad, :] = 0
        mask = tokens.ne(pad).int()
        positions = (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + pad
        return table.index_select(0, positions.view(-1)).view(tokens.size(0), tokens.size(1), -1)

    def embed(self, tokens: Tensor) -> Tensor:
        """TransformerEncoder.forward_embedding (the decoder's is the same with no project_in_dim), then T×B×C."""
        x = math.sqrt(self.cfg.embed_dim) * F.embedding(tokens, self.w["embed_tokens.weight"])
        x = x + self.positions(tokens)
        x = F.dropout(x, p=self.cfg.dropout, training=self.training)
        return x.transpose(0, 1)

    # modules/multihead_attention.py, fused in-projection, no incremental state
    def attention(self, prefix: str, query: Tensor, key: Tensor, heads: int, key_padding_mask: Tensor | None,
                  attn_mask: Tensor | None = None, self_attention: bool = True) -> Tensor:
        tgt_len, bsz, dim = query.size()
        head_dim = dim // heads
        weight, bias = self.w[f"{prefix}.in_proj_weight"], self.w[f"{prefix}.in_proj_bias"]
        if self_attention:  # in_proj_qkv
            q, k, v = F.linear(query, weight, bias).chunk(3, dim=-1)
        else:  # encoder_decoder_attention: in_proj_q(query), in_proj_k(key), in_proj_v(key)
            q = F.linear(query, weight[:dim], bias[:dim])
            k = F.linear(key, weight[dim:2 * dim], bias[dim:2 * dim])
            v = F.linear(key, weight[2 * dim:], bias[2 * dim:])
        q = q * head_dim**-0.5
        q = q.contiguous().view(tgt_len, bsz * heads, head_dim).transpose(0, 1)
        k = k.contiguous().view(-1, bsz * heads, head_dim).transpose(0, 1)
        v = v.contiguous().view(-1, bsz * heads, head_dim).transpose(0, 1)
        src_len = k.size(1)
        attn_weights = torch.bmm(q, k.transpose(1, 2))
        if attn_mask is not None:
            attn_weights += attn_mask.unsqueeze(0)
        if key_padding_mask is not None:
            attn_weights = attn_weights.view(bsz, heads, tgt_len, src_len)
            attn_weights = attn_weights.masked_fill(key_padding_mask.unsqueeze(1).unsqueeze(2), float("-inf"))
            attn_weights = attn_weights.view(bsz * heads, tgt_len, src_len)
        attn_weights_float = F.softmax(attn_weights, dim=-1, dtype=torch.float32)
        attn_probs = F.dropout(attn_weights_float.type_as(attn_weights), p=self.cfg.attention_dropout,
                               training=self.training)
        attn = torch.bmm(attn_probs, v).transpose(0, 1).contiguous().view(tgt_len, bsz, dim)
        return F.linear(attn, self.w[f"{prefix}.out_proj.weight"], self.w[f"{prefix}.out_proj.bias"])

    def ffn(self, prefix: str, x: Tensor) -> Tensor:
        x = F.relu(F.linear(x, self.w[f"{prefix}.fc1.weight"], self.w[f"{prefix}.fc1.bias"]))
        x = F.dropout(x, p=self.cfg.activation_dropout, training=self.training)
        x = F.linear(x, self.w[f"{prefix}.fc2.weight"], self.w[f"{prefix}.fc2.bias"])
        return F.dropout(x, p=self.cfg.dropout, training=self.training)

    def layer_norm(self, name: str, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.cfg.embed_dim,), self.w[f"{name}.weight"], self.w[f"{name}.bias"], 1e-5)

    def admin_residual(self, side: str, ratio_name: str, residual: Tensor, x: Tensor) -> Tensor:
        """``x + residual * ratio_change``, where x is the branch after dropout; profiling first sets the ratio."""
        if self.ratios is not None:
            state = self.ratios[side]
            ratio = torch.empty_like(self.w[ratio_name]).fill_(state.value)
            self.w[ratio_name] = ratio
            state.omegas.append(float(ratio[0]))
            input_var = np.var((residual * ratio).clone().cpu().float().data.contiguous().view(-1).numpy())
            output_var = np.var(x.clone().cpu().float().data.contiguous().view(-1).numpy())
            state.value = np.sqrt(input_var + output_var)
        return x + residual * self.w[ratio_name]

    def encoder_layer(self, i: int, x: Tensor, encoder_padding_mask: Tensor | None) -> Tensor:
        p = f"encoder.layers.{i}"
        residual = x
        x = self.attention(f"{p}.self_attn", x, x, self.cfg.encoder_heads, encoder_padding_mask)
        x = F.dropout(x, p=self.cfg.dropout, training=self.training)
        x0 = self.layer_norm(f"{p}.self_attn_layer_norm",
                             self.admin_residual("encoder", f"{p}.attention_ratio_change", residual, x))
        residual = x0
        x = self.ffn(p, x0)
        return self.layer_norm(f"{p}.final_layer_norm",
                               self.admin_residual("encoder", f"{p}.fc_ratio_change", residual, x))

    def decoder_layer(self, i: int, x: Tensor, encoder_out: Tensor, encoder_padding_mask: Tensor | None,
                      self_attn_mask: Tensor, self_attn_padding_mask: Tensor | None) -> Tensor:
        p, heads = f"decoder.layers.{i}", self.cfg.decoder_heads
        residual = x
        x = self.attention(f"{p}.self_attn", x, x, heads, self_attn_padding_mask, attn_mask=self_attn_mask)
        x = F.dropout(x, p=self.cfg.dropout, training=self.training)
        x = self.layer_norm(f"{p}.self_attn_layer_norm",
                            self.admin_residual("decoder", f"{p}.self_ratio_change", residual, x))
        residual = x
        x = self.attention(f"{p}.encoder_attn", x, encoder_out, heads, encoder_padding_mask, self_attention=False)
        x = F.dropout(x, p=self.cfg.dropout, training=self.training)
        x = self.layer_norm(f"{p}.encoder_attn_layer_norm",
                            self.admin_residual("decoder", f"{p}.encoder_ratio_change", residual, x))
        residual = x
        x = self.ffn(p, x)
        return self.layer_norm(f"{p}.final_layer_norm",
                               self.admin_residual("decoder", f"{p}.fc_ratio_change", residual, x))

    def padding_mask(self, tokens: Tensor) -> Tensor | None:
        mask = tokens.eq(self.cfg.padding_idx)
        return mask if mask.any() else None

    @staticmethod
    def future_mask(x: Tensor) -> Tensor:
        dim = x.size(0)
        return torch.triu(torch.full((dim, dim), float("-inf"), dtype=x.dtype), 1)

    def encoder(self, src_tokens: Tensor) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """Encoder output (T×B×C), its padding mask, and every layer's output."""
        x = self.embed(src_tokens)
        mask = self.padding_mask(src_tokens)
        states = []
        for i in range(self.cfg.encoder_layers):
            x = self.encoder_layer(i, x, mask)
            states.append(x)
        return x, mask, states

    def decoder(self, prev_output_tokens: Tensor, encoder_out: Tensor,
                encoder_padding_mask: Tensor | None) -> tuple[Tensor, list[Tensor]]:
        """Output logits (B×T×V, shared input/output embedding) and every layer's output."""
        x = self.embed(prev_output_tokens)
        padding_mask = self.padding_mask(prev_output_tokens)
        states = []
        for i in range(self.cfg.decoder_layers):
            x = self.decoder_layer(i, x, encoder_out, encoder_padding_mask, self.future_mask(x), padding_mask)
            states.append(x)
        return F.linear(x.transpose(0, 1), self.w["embed_tokens.weight"]), states


def original_weights(ours: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict under the original's names: q/k/v fused into in_proj, ω as ``*_ratio_change``."""
    weights: dict[str, Tensor] = {}
    for name, value in ours.items():
        if re.search(r"\.[qkv]_proj\.(weight|bias)$", name):
            continue
        shortcut = re.fullmatch(r"(encoder|decoder)\.layers\.(\d+)\.admin_shortcuts\.(\d)\.omega", name)
        if shortcut:
            side, layer, index = shortcut.group(1), shortcut.group(2), int(shortcut.group(3))
            weights[f"{side}.layers.{layer}.{ORIGINAL_RATIO_NAMES[side][index]}"] = value.detach().clone()
        else:
            weights[name] = value.detach().clone()
        projection = re.fullmatch(r"(.*)\.out_proj\.(weight|bias)", name)
        if projection:
            prefix, kind = projection.groups()
            weights[f"{prefix}.in_proj_{kind}"] = torch.cat([ours[f"{prefix}.{p}_proj.{kind}"] for p in "qkv"])
    weights["embed_tokens.weight"] = weights["encoder.embed_tokens.weight"]  # --share-all-embeddings
    return weights


# --- Our model, built in-process as fairseq-train's main() builds it (conftest.build_model(from_config=True)) --------


def original_config(args: Any, task: Any) -> OriginalConfig:
    return OriginalConfig(
        encoder_layers=args.encoder_layers, decoder_layers=args.decoder_layers, embed_dim=args.encoder_embed_dim,
        encoder_heads=args.encoder_attention_heads, decoder_heads=args.decoder_attention_heads,
        padding_idx=task.source_dictionary.pad(), dropout=args.dropout, attention_dropout=args.attention_dropout,
        activation_dropout=args.activation_dropout or args.relu_dropout,  # the original's fallback
    )


def padded_batch(task: Any) -> dict:
    """A real Multi30k batch with padding in the source (left) and in the decoder input (right)."""
    task.load_dataset("valid")
    iterator = task.get_batch_iterator(dataset=task.dataset("valid"), max_sentences=6, seed=1,
                                       required_batch_size_multiple=1)
    pad = task.source_dictionary.pad()
    for sample in iterator.next_epoch_itr(shuffle=False):
        net_input = sample["net_input"]
        if net_input["src_tokens"].eq(pad).any() and net_input["prev_output_tokens"].eq(pad).any():
            return sample
    raise AssertionError("no validation batch with padding on both sides")


@pytest.fixture(scope="module")
def model_from_profile(data_bin, profile_path, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("reference")
    shutil.copy(profile_path, save_dir / "admin_profile.json")
    return build_model(data_bin, "--save-dir", save_dir, "--init-type", "adaptive", from_config=True)


def test_layers_and_outputs_equal_the_original(model_from_profile):
    """Eval mode, ω from a real profile: every layer, the encoder output and the logits agree."""
    args, task, model = model_from_profile
    model.eval()
    omegas = [s.omega for side in ("encoder", "decoder") for s in model.admin_shortcuts(side)]
    assert len({round(o[0].item(), 6) for o in omegas}) > 2  # ω really come from the profile, not all 1
    sample = padded_batch(task)
    src, prev = sample["net_input"]["src_tokens"], sample["net_input"]["prev_output_tokens"]
    original = OriginalAdmin(original_weights(model.state_dict()), original_config(args, task), training=False)

    with torch.no_grad():
        ours_encoder = model.encoder(src, src_lengths=sample["net_input"]["src_lengths"], return_all_hiddens=True)
        ours_logits, extra = model.decoder(prev, encoder_out=ours_encoder)
        ref_encoder_out, ref_mask, ref_encoder_states = original.encoder(src)
        ref_logits, ref_decoder_states = original.decoder(prev, ref_encoder_out, ref_mask)

        # Each layer on its own, fed our previous layer's output (fairseq 0.12 lists the embedding first).
        ours_encoder_states = ours_encoder["encoder_states"]
        ours_decoder_states = extra["inner_states"]
        encoder_out, mask = ours_encoder["encoder_out"][0], ours_encoder["encoder_padding_mask"][0]
        assert torch.equal(mask, ref_mask)
        layer_diffs = []
        for i in range(args.encoder_layers):
            out = original.encoder_layer(i, ours_encoder_states[i], mask)
            layer_diffs.append(("encoder", i, (out - ours_encoder_states[i + 1]).abs().max().item()))
        future = original.future_mask(ours_decoder_states[0])
        for i in range(args.decoder_layers):
            out = original.decoder_layer(i, ours_decoder_states[i], encoder_out, mask, future,
                                         original.padding_mask(prev))
            layer_diffs.append(("decoder", i, (out - ours_decoder_states[i + 1]).abs().max().item()))

    stack_diffs = {
        "embedding": (original.embed(src) - ours_encoder_states[0]).abs().max().item(),
        "encoder states": max((a - b).abs().max().item() for a, b in zip(ref_encoder_states,
                                                                         ours_encoder_states[1:], strict=True)),
        "encoder out": (ref_encoder_out - encoder_out).abs().max().item(),
        "decoder states": max((a - b).abs().max().item() for a, b in zip(ref_decoder_states,
                                                                         ours_decoder_states[1:], strict=True)),
        "logits": (ref_logits - ours_logits).abs().max().item(),
    }
    print(f"max |ours - original| per layer: {layer_diffs}; whole stack: {stack_diffs}")
    for side, i, diff in layer_diffs:
        assert diff < 1e-5, (side, i, diff)
    for name, diff in stack_diffs.items():
        assert diff < 1e-5, (name, diff)


def test_profiling_with_padding_gives_the_original_omegas(data_bin, tmp_path):
    """Training mode, dropout 0, one padded batch: ω of our profiling (padding included) = the original's."""
    from fairseq_admin.profiling import profile_samples

    args, task, model = build_model(data_bin, "--save-dir", tmp_path, "--init-type", "default", "--dropout", "0",
                                    "--attention-dropout", "0", "--activation-dropout", "0", from_config=True)
    sample = padded_batch(task)
    original = OriginalAdmin(original_weights(model.state_dict()), original_config(args, task), training=True,
                             profiling=True)
    with torch.no_grad():
        encoder_out, mask, _ = original.encoder(sample["net_input"]["src_tokens"])
        original.decoder(sample["net_input"]["prev_output_tokens"], encoder_out, mask)

    included = profile_samples(model, [sample], include_padding=True)
    excluded = profile_samples(model, [sample], include_padding=False)
    for side in ("encoder", "decoder"):
        reference = original.ratios[side].omegas
        agreement = np.max(np.abs(np.array(included.omegas(side)) / reference - 1))
        print(f"{side}: original {reference}\n  ours, padding included {included.omegas(side)}"
              f"\n  ours, padding excluded {excluded.omegas(side)}"
              f"\n  max relative difference, included: {agreement:.1e}")
        branches = args.encoder_layers * 2 if side == "encoder" else args.decoder_layers * 3
        assert len(reference) == len(included.omegas(side)) == branches
        assert reference[0] == 1.0 and len(set(reference)) == len(reference)
        np.testing.assert_allclose(included.omegas(side), reference, rtol=1e-5)
        # The default (padding excluded) measures something else on this batch: the test can tell them apart.
        assert np.max(np.abs(np.array(excluded.omegas(side)) / reference - 1)) > 1e-4
