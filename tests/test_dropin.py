"""transformer_admin as a drop-in for fairseq's transformer: every TransformerConfig option, every loading API.

In-process: each option of fairseq's ``TransformerConfig`` is set to a value other than its default and the
model is built exactly as fairseq-train builds it. An option that works gives, with ``--init-type default``,
the stock ``transformer``'s loss to the bit, and with one-step ``--init-type adaptive`` a profiled, finite
training step; a refused option fails at build with an error that names it. Then real checkpoints through
fairseq's loading APIs: ``load_model_ensemble_and_task``, the hub interface, ensembles, ``--model-overrides``,
``fairseq-interactive``; and cross-self-attention through the whole workflow.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import BIN, REPO, build, fairseq

from fairseq_admin.transformer_options import TRANSFORMER_OPTIONS, flag, markdown_table
from fairseq_admin_tools.errors import AdminError

SMALL = ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "32",
         "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
         "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "512", "--cpu", "--seed", "1", "--num-workers", "0",
         "--ddp-backend", "legacy_ddp"]
SMOOTHED = ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"]
ADAPTIVE_SOFTMAX = ["--adaptive-softmax-cutoff", "200,500", "--criterion", "adaptive_loss"]

# One non-default setting per option (an option's flags, plus what fairseq needs beside it).
TRIALS: dict[str, list[str]] = {
    "activation_fn": ["--activation-fn", "gelu"],
    "dropout": ["--dropout", "0.3"],
    "attention_dropout": ["--attention-dropout", "0.2"],
    "activation_dropout": ["--activation-dropout", "0.2"],
    "relu_dropout": ["--relu-dropout", "0.2"],
    "adaptive_input": ["--adaptive-input"],
    "encoder_embed_path": ["--encoder-embed-path", "{embeddings}"],
    "encoder_embed_dim": ["--encoder-embed-dim", "48"],
    "encoder_ffn_embed_dim": ["--encoder-ffn-embed-dim", "96"],
    "encoder_layers": ["--encoder-layers", "3"],
    "encoder_attention_heads": ["--encoder-attention-heads", "4"],
    "encoder_normalize_before": ["--encoder-normalize-before"],
    "encoder_learned_pos": ["--encoder-learned-pos"],
    "encoder_layerdrop": ["--encoder-layerdrop", "0.5"],
    "encoder_layers_to_keep": ["--encoder-layers", "3", "--encoder-layers-to-keep", "0,2"],
    "encoder_xformers_att_config": ["--encoder-xformers-att-config", '{"name": "scaled_dot_product"}'],
    "max_source_positions": ["--max-source-positions", "256"],
    "decoder_embed_path": ["--decoder-embed-path", "{embeddings}"],
    "decoder_embed_dim": ["--decoder-embed-dim", "48"],
    "decoder_ffn_embed_dim": ["--decoder-ffn-embed-dim", "96"],
    "decoder_layers": ["--decoder-layers", "3"],
    "decoder_attention_heads": ["--decoder-attention-heads", "4"],
    "decoder_normalize_before": ["--decoder-normalize-before"],
    "decoder_learned_pos": ["--decoder-learned-pos"],
    "decoder_layerdrop": ["--decoder-layerdrop", "0.5"],
    "decoder_layers_to_keep": ["--decoder-layers", "3", "--decoder-layers-to-keep", "1"],
    "decoder_xformers_att_config": ["--decoder-xformers-att-config", '{"name": "scaled_dot_product"}'],
    "decoder_input_dim": [],  # no flag: set on the parsed args (see _build)
    "decoder_output_dim": ["--decoder-output-dim", "48"],
    "max_target_positions": ["--max-target-positions", "256"],
    "share_decoder_input_output_embed": ["--share-decoder-input-output-embed"],
    "share_all_embeddings": ["--share-all-embeddings"],
    "merge_src_tgt_embed": ["--merge-src-tgt-embed"],
    "no_token_positional_embeddings": ["--no-token-positional-embeddings"],
    "adaptive_softmax_cutoff": ADAPTIVE_SOFTMAX,
    "adaptive_softmax_dropout": [*ADAPTIVE_SOFTMAX, "--adaptive-softmax-dropout", "0.2"],
    "adaptive_softmax_factor": [*ADAPTIVE_SOFTMAX, "--adaptive-softmax-factor", "2"],
    "layernorm_embedding": ["--layernorm-embedding"],
    "tie_adaptive_weights": [*ADAPTIVE_SOFTMAX, "--tie-adaptive-weights"],
    "tie_adaptive_proj": [*ADAPTIVE_SOFTMAX, "--tie-adaptive-proj"],
    "no_scale_embedding": ["--no-scale-embedding"],
    "checkpoint_activations": ["--checkpoint-activations"],
    "offload_activations": ["--checkpoint-activations", "--offload-activations"],
    "no_cross_attention": ["--no-cross-attention"],
    "cross_self_attention": ["--cross-self-attention"],
    "quant_noise_pq": ["--quant-noise-pq", "0.2"],
    "quant_noise_pq_block_size": ["--quant-noise-pq", "0.2", "--quant-noise-pq-block-size", "4"],
    "quant_noise_scalar": ["--quant-noise-scalar", "0.2"],
    "min_params_to_wrap": ["--min-params-to-wrap", "10"],
    "char_inputs": ["--char-inputs"],
    "base_layers": ["--base-layers", "1"],
    "base_sublayers": ["--base-sublayers", "2"],
    "base_shuffle": ["--base-shuffle", "0"],
    "export": ["--export"],
    "no_decoder_final_norm": ["--no-decoder-final-norm"],
}
# Options refused on this machine (no CUDA, no xFormers); the table says which work elsewhere.
REFUSED_HERE = {"tie_adaptive_weights", "tie_adaptive_proj", "base_layers", "quant_noise_scalar",
                "encoder_xformers_att_config", "decoder_xformers_att_config"}
# fairseq-admin-export refuses these, naming why (see its module docstring).
NOT_EXPORTABLE = {"encoder_layerdrop", "decoder_layerdrop", "encoder_layers_to_keep", "decoder_layers_to_keep",
                  "cross_self_attention"}
PRE_LN = {"encoder_normalize_before", "decoder_normalize_before"}
# fairseq's own transformer cannot train with these from the command line: argparse gives layers_to_keep as a
# list, which its build_model then splits as a string. transformer_admin declares it a string (model.py).
STOCK_FAILS = {"encoder_layers_to_keep", "decoder_layers_to_keep"}


def _flat_fields() -> list[str]:
    from fairseq.dataclass import FairseqDataclass
    from fairseq.models.transformer import TransformerConfig

    names = []
    for outer in dataclasses.fields(TransformerConfig):
        if outer.name.startswith("_"):
            continue
        if isinstance(outer.type, type) and issubclass(outer.type, FairseqDataclass):
            names += [f"{outer.name}_{inner.name}" for inner in dataclasses.fields(outer.type)
                      if not inner.name.startswith("_")]
        else:
            names.append(outer.name)
    return names


def test_the_option_table_lists_every_transformer_config_field_and_is_the_readmes():
    assert sorted(TRANSFORMER_OPTIONS) == sorted(_flat_fields())
    assert sorted(TRIALS) == sorted(TRANSFORMER_OPTIONS)
    assert markdown_table() in (REPO / "README.md").read_text()
    for name, support in TRANSFORMER_OPTIONS.items():
        assert re.match(r"(works|refused: |as [a-z_]+$)", support), (name, support)


@pytest.fixture(scope="module")
def embeddings(data_bin: Path, tmp_path_factory) -> Path:
    """A pretrained-embedding file in fairseq's text format (a header, then ``word v1 .. vd``) for 20 words."""
    words = [line.split()[0] for line in (data_bin / "dict.en.txt").read_text().splitlines()[:20]]
    path = tmp_path_factory.mktemp("embed") / "embed.txt"
    lines = [f"{len(words)} 32"] + [" ".join([w] + [f"{0.01 * (i + j):.3f}" for j in range(32)])
                                    for i, w in enumerate(words)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _build(data_bin: Path, arch: str, option: str, extra: list[str], save_dir: Path, embeddings: Path):
    trial = [a.replace("{embeddings}", str(embeddings)) for a in TRIALS[option]]
    if "--encoder-embed-dim" in trial or "--decoder-embed-dim" in trial:  # the embedding file is 32-wide
        trial = [a.replace(str(embeddings), "") for a in trial]
    criterion = [] if "--criterion" in trial else SMOOTHED
    argv = [str(data_bin), "--arch", arch, "--save-dir", str(save_dir), *SMALL, *criterion, *extra, *trial]
    if arch == "transformer_admin":
        argv += ["--user-dir", str(REPO / "fairseq_admin"), "--admin-profile-tokens", "512"]
    return build(argv, overrides={"decoder_input_dim": 48} if option == "decoder_input_dim" else None)


def _first_batch(task, model) -> dict:
    from fairseq import utils

    task.load_dataset("train", epoch=1, combine=True)
    return next(iter(task.get_batch_iterator(
        dataset=task.dataset("train"), max_tokens=512, max_positions=utils.resolve_max_positions(
            task.max_positions(), model.max_positions()), ignore_invalid_inputs=True, seed=1,
        num_workers=0).next_epoch_itr(shuffle=False)))


def _training_loss(args, task, model) -> torch.Tensor:
    from fairseq import utils

    sample = _first_batch(task, model)
    model.train()
    utils.set_torch_seed(2)
    loss, _, _ = task.build_criterion(args)(model, sample)
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("option", list(TRIALS))
def test_every_option_works_like_the_stock_transformer_or_is_refused(option, data_bin, embeddings, tmp_path):
    if option in REFUSED_HERE:
        with pytest.raises(AdminError, match=re.escape(flag(option))):
            _build(data_bin, "transformer_admin", option, ["--init-type", "adaptive"], tmp_path, embeddings)
        return
    if option not in STOCK_FAILS:
        stock = _training_loss(*_build(data_bin, "transformer", option, [], tmp_path / "stock", embeddings))
        default = _training_loss(*_build(data_bin, "transformer_admin", option, [], tmp_path / "default",
                                         embeddings))
        assert torch.equal(stock, default), (option, stock, default)
    if option in PRE_LN:
        with pytest.raises(AdminError, match="for Post-LN models"):
            _build(data_bin, "transformer_admin", option, ["--init-type", "adaptive"], tmp_path, embeddings)
        return
    args, task, model = _build(data_bin, "transformer_admin", option, ["--init-type", "adaptive"],
                               tmp_path / "admin", embeddings)
    assert (tmp_path / "admin" / "admin_profile.json").is_file()  # one-step Admin profiled
    assert _exported_like_stock(option, args, task, model, data_bin, embeddings, tmp_path) == (
        option not in NOT_EXPORTABLE)
    loss = _training_loss(args, task, model)
    omegas = [p for n, p in model.named_parameters() if n.endswith(".omega")]
    assert torch.isfinite(loss) and max(float(w.max()) for w in omegas) > 1.0
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def _exported_like_stock(option, args, task, model, data_bin, embeddings, tmp_path) -> bool:
    """fairseq-admin-export's folding, in-process: refused (False), or a stock model with the same outputs."""
    from fairseq_admin.export import check_foldable, fold_omegas

    state = model.state_dict()
    try:
        check_foldable(vars(args), state)
    except AdminError:
        return False
    _, _, stock = _build(data_bin, "transformer", option, [], tmp_path / "exported", embeddings)
    stock.load_state_dict(fold_omegas(state), strict=True)
    sample = _first_batch(task, model)
    model.eval(), stock.eval()
    with torch.no_grad():
        admin_out, stock_out = model(**sample["net_input"])[0], stock(**sample["net_input"])[0]
    torch.testing.assert_close(stock_out, admin_out, rtol=1e-4, atol=1e-4)
    return True


# Every init type under the options that change a layer's structure or its call.
STRUCTURAL = ["cross_self_attention", "no_cross_attention", "decoder_layerdrop", "checkpoint_activations",
              "layernorm_embedding", "decoder_output_dim"]


@pytest.mark.parametrize("init_type", ["admin-closed-form", "deepnorm", "rezero"])
@pytest.mark.parametrize("option", STRUCTURAL)
def test_every_init_type_trains_under_the_structural_options(init_type, option, data_bin, embeddings, tmp_path):
    args, task, model = _build(data_bin, "transformer_admin", option, ["--init-type", init_type], tmp_path,
                               embeddings)
    loss = _training_loss(args, task, model)
    assert torch.isfinite(loss)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


# Real checkpoints through fairseq's loading APIs.

TINY = ["--user-dir", "fairseq_admin", "--arch", "transformer_admin", "--encoder-layers", "2", "--decoder-layers",
        "2", "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2",
        "--decoder-attention-heads", "2", "--share-all-embeddings", "--optimizer", "adam", "--lr", "1e-3",
        "--max-tokens", "1024", *SMOOTHED, "--cpu", "--seed", "1", "--no-progress-bar", "--log-format", "simple",
        "--num-workers", "0", "--disable-validation", "--no-epoch-checkpoints", "--admin-profile-tokens", "2048"]
DECODE = ["--cpu", "--beam", "2", "--max-len-b", "8", "--batch-size", "50", "--required-batch-size-multiple", "1"]


@pytest.fixture(scope="module")
def checkpoints(data_bin: Path, tmp_path_factory) -> dict[str, Path]:
    """Two Admin checkpoints: standard, and cross-self-attention without cross-attention (profiled first)."""
    root = tmp_path_factory.mktemp("dropin")
    out = {}
    for name, flags in (("admin", []), ("cross_self", ["--no-cross-attention", "--cross-self-attention"])):
        save = root / name
        if name == "cross_self":  # the paper's two steps: profile, then train
            fairseq("fairseq-train", data_bin, *TINY, *flags, "--init-type", "adaptive-profiling", "--save-dir", save)
            assert (save / "admin_profile.json").is_file() and not (save / "checkpoint_last.pt").exists()
        fairseq("fairseq-train", data_bin, *TINY, *flags, "--init-type", "adaptive", "--save-dir", save,
                "--max-update", "4")
        out[name] = save / "checkpoint_last.pt"
    return out


@pytest.mark.slow
def test_cross_self_attention_resumes_decodes_and_export_refuses_it(checkpoints, data_bin, tmp_path):
    save = checkpoints["cross_self"].parent
    resumed = fairseq("fairseq-train", data_bin, *TINY, "--no-cross-attention", "--cross-self-attention",
                      "--init-type", "adaptive", "--save-dir", tmp_path / "resumed", "--restore-file",
                      checkpoints["cross_self"], "--max-update", "6")
    log = resumed.stdout + resumed.stderr
    assert f"ω from {checkpoints['cross_self']}" in log and "admin: profiled" not in log
    assert "num_updates 6" in resumed.stdout
    generated = fairseq("fairseq-generate", data_bin, "--user-dir", "fairseq_admin", "--path",
                        checkpoints["cross_self"], *DECODE)
    assert len(re.findall(r"^H-\d+\t", generated.stdout, re.M)) == 1000
    refused = subprocess.run([str(BIN / "fairseq-admin-export"), str(checkpoints["cross_self"]),
                              str(tmp_path / "stock.pt")], capture_output=True, text=True, cwd=REPO)
    assert refused.returncode != 0 and "--cross-self-attention" in refused.stderr
    assert not (tmp_path / "stock.pt").exists() and (save / "checkpoint_last.pt").is_file()


@pytest.mark.slow
def test_a_loaded_admin_model_has_the_training_args_like_a_loaded_transformer(checkpoints):
    from fairseq import checkpoint_utils

    import fairseq_admin  # noqa: F401

    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoints["admin"])])
    args = models[0].args
    assert (args.seed, args.lr, args.optimizer, args.max_tokens) == (1, [1e-3], "adam", 1024)
    assert args.data == cfg.task.data and args.encoder_layers == 2 and args.encoder.layers == 2
    assert args.init_type == "adaptive" and models[0].cfg.encoder.layers == 2


@pytest.mark.slow
def test_the_hub_interface_translates_with_an_admin_checkpoint(checkpoints, data_dir):
    from fairseq.models.transformer import TransformerModel

    import fairseq_admin  # noqa: F401

    hub = TransformerModel.from_pretrained(
        str(checkpoints["admin"].parent), checkpoint_file="checkpoint_last.pt", data_name_or_path=str(data_dir / "bin"),
        bpe="sentencepiece", sentencepiece_model=str(data_dir / "spm.model"), beam=2, max_len_b=8)
    assert type(hub.models[0]).__name__ == "TransformerAdminModel"
    translation = hub.translate("Ein Hund läuft über die Wiese.")
    assert isinstance(translation, str) and translation.strip()


@pytest.mark.slow
def test_an_ensemble_of_admin_checkpoints_in_fairseq_interactive(checkpoints, data_dir):
    result = subprocess.run(
        [str(BIN / "fairseq-interactive"), str(data_dir / "bin"), "--user-dir", "fairseq_admin", "--path",
         f"{checkpoints['admin']}:{checkpoints['cross_self']}", "--bpe", "sentencepiece", "--sentencepiece-model",
         str(data_dir / "spm.model"), "--cpu", "--beam", "2", "--max-len-b", "8"],
        input="Ein Hund läuft.\nZwei Männer.\n", capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"loading model(s) from {checkpoints['admin']}:{checkpoints['cross_self']}" in result.stdout + result.stderr
    assert len(re.findall(r"^D-\d+\t", result.stdout, re.M)) == 2


@pytest.mark.slow
def test_generation_with_layers_to_keep_overrides_prunes_the_admin_checkpoint(checkpoints, data_bin):
    overrides = "{'encoder_layers_to_keep': '1', 'decoder_layers_to_keep': '0'}"
    full = fairseq("fairseq-generate", data_bin, "--user-dir", "fairseq_admin", "--path", checkpoints["admin"],
                   *DECODE)
    pruned = fairseq("fairseq-generate", data_bin, "--user-dir", "fairseq_admin", "--path", checkpoints["admin"],
                     *DECODE, "--model-overrides", overrides)
    hypotheses = [re.findall(r"^H-\d+\t.*$", r.stdout, re.M) for r in (full, pruned)]
    assert len(hypotheses[1]) == 1000 and hypotheses[0] != hypotheses[1]
