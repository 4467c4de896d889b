"""fairseq-hydra-train configures transformer_admin: the recipes' YAML configs compose, and profile → train →
fairseq-generate runs end to end (real fairseq-hydra-train / fairseq-generate processes, tiny size)."""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import REPO, fairseq

from fairseq_admin_tools.methods import METHODS as REGISTRY

HYDRA_DIR = REPO / "fairseq_admin_tools" / "hydra"
TASKS = sorted(p.stem for p in HYDRA_DIR.glob("*.yaml"))
METHODS = sorted(p.stem for p in (HYDRA_DIR / "method").glob("*.yaml"))


def test_there_is_a_config_for_every_recipe_task_and_method() -> None:
    assert TASKS == ["iwslt14_de_en", "multi30k_de_en", "wmt14_en_de", "wmt14_en_fr"]
    assert sorted(REGISTRY) == METHODS


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("task", TASKS)
def test_recipe_configs_compose_into_our_model_config(task: str, method: str) -> None:
    """What fairseq-hydra-train does before training: compose, add the registered dataclasses' defaults, resolve."""
    from fairseq.dataclass.initialize import add_defaults, hydra_init
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    import fairseq_admin  # noqa: F401  registers transformer_admin and its dataclass

    GlobalHydra.instance().clear()
    hydra_init(task)  # as fairseq-hydra-train: fairseq's schema stored under the config's name
    # version_base 1.1: what fairseq 0.12 runs hydra with (a newer base would make its later
    # hydra.experimental calls, e.g. in convert_namespace_to_omegaconf, raise in this process)
    with initialize_config_dir(config_dir=str(HYDRA_DIR), version_base="1.1"):
        cfg = compose(config_name=task, overrides=[f"method={method}", "task.data=/data",
                                                   f"common.user_dir={REPO / 'fairseq_admin'}"])
    GlobalHydra.instance().clear()
    add_defaults(cfg)  # merges TransformerAdminConfig: an unknown model key would fail here
    model = OmegaConf.to_container(cfg, resolve=True)["model"]
    assert model["init_type"] == REGISTRY[method].init_type
    assert model["encoder_normalize_before"] == model["decoder_normalize_before"] == (method == "preln")
    assert model["seed"] == 1111 and model["save_dir"] == cfg.checkpoint.save_dir  # interpolated for profiling
    paper = task != "multi30k_de_en"
    assert (model["ffn_init"], model["admin_profile_padding"]) == (
        ("xavier", "include") if paper else ("default", "exclude"))
    assert cfg.optimizer._name == "radam" and model["decoder_embed_dim"] == model["encoder_embed_dim"]


@pytest.mark.slow
def test_hydra_profile_train_generate(data_bin: Path, data_dir: Path, tmp_path: Path) -> None:
    save_dir = tmp_path / "ck"
    tiny = [f"task.data={data_bin}", f"common.user_dir={REPO / 'fairseq_admin'}", f"checkpoint.save_dir={save_dir}",
            "model.encoder_layers=2", "model.decoder_layers=2", "model.encoder_embed_dim=64",
            "model.decoder_embed_dim=64", "model.encoder_ffn_embed_dim=128", "model.decoder_ffn_embed_dim=128",
            "model.encoder_attention_heads=2", "model.decoder_attention_heads=2", "dataset.max_tokens=1024",
            "dataset.num_workers=0", "dataset.max_valid_steps=1", "common.log_interval=1", "common.seed=1",
            "model.admin_profile_tokens=2048", "lr_scheduler.warmup_updates=5"]
    hydra = ["fairseq-hydra-train", "--config-dir", HYDRA_DIR, "--config-name", "multi30k_de_en"]
    profiled = fairseq(*hydra, "method=admin", "model.init_type=adaptive-profiling", *tiny, cwd=tmp_path)
    profile = json.loads((save_dir / "admin_profile.json").read_text())
    assert profile["data"]["seed"] == 1 and profile["data"]["tokens"] >= 2048  # hydra's common.seed reached it
    assert "admin: wrote" in profiled.stdout + profiled.stderr and not list(save_dir.glob("*.pt"))

    trained = fairseq(*hydra, "method=admin", "optimization.max_update=4", *tiny, cwd=tmp_path)
    log = trained.stdout + trained.stderr
    assert f"ω from {save_dir / 'admin_profile.json'}" in log and "num_updates=4" in log
    state = torch.load(save_dir / "checkpoint_last.pt")
    omegas = [v for k, v in state["model"].items() if k.endswith(".omega")]
    assert len(omegas) == 2 * 2 + 2 * 3 and all(torch.isfinite(v).all() for v in omegas)
    losses = [float(v) for v in re.findall(r"\]\[train_inner\]\[INFO\] - .* loss=([0-9.]+)", log)]  # hydra's log format
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)

    generated = fairseq("fairseq-generate", data_bin, "--user-dir", "fairseq_admin", "--path",
                        save_dir / "checkpoint_last.pt", "--gen-subset", "valid", "--batch-size", "200",
                        "--required-batch-size-multiple", "1", "--beam", "2", "--max-len-a", "0", "--max-len-b", "5",
                        "--cpu")
    assert sum(line.startswith("H-") for line in generated.stdout.splitlines()) > 0


# The GPUs each config's batch is written for (its comment says so), as run.sh's NGPUS (Multi30k: the CPU).
CONFIG_GPUS = {"iwslt14_de_en": "1", "multi30k_de_en": "0", "wmt14_en_de": "4", "wmt14_en_fr": "8"}
# Settings that name one run, not the recipe: paths, logging, and what each tool sets for itself.
RUN_SPECIFIC = {"data", "save_dir", "user_dir", "admin_profile", "log_file", "distributed_world_size", "seed",
                "tensorboard_logdir", "wandb_project", "arch", "_name", "no_progress_bar"}
# Read by profiling only: run.sh passes them to its profile stage; one-step Admin in hydra profiles in training.
PROFILE_ONLY = {"admin_profile_tokens"}


def _composed(task: str):
    from fairseq.dataclass.initialize import add_defaults, hydra_init
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import fairseq_admin  # noqa: F401

    GlobalHydra.instance().clear()
    hydra_init(task)
    with initialize_config_dir(config_dir=str(HYDRA_DIR), version_base="1.1"):
        cfg = compose(config_name=task, overrides=["method=admin", "task.data=/data", "common.user_dir=/plugin"])
    GlobalHydra.instance().clear()
    add_defaults(cfg)
    return cfg


def _plain(value):
    """Values as both sides spell them: '(0.9, 0.98)' and [0.9, 0.98], 1e-09 and '1e-09', enums."""
    if isinstance(value, str):
        try:
            return _plain(ast.literal_eval(value))
        except (ValueError, SyntaxError):
            return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    return _plain(str(getattr(value, "value", value)))


@pytest.mark.parametrize("task", sorted(CONFIG_GPUS))
def test_the_hydra_config_and_config_sh_give_the_same_run(task: str) -> None:
    """Every option the recipe passes to fairseq-train, and every value the YAML sets, agree."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf
    from test_recipes import dry_run

    profile_command, command = [c for c in dry_run(task, "admin", "6", env={"NGPUS": CONFIG_GPUS[task]})
                                if c[0] == "fairseq-train"]
    cli, profile_cli = (convert_namespace_to_omegaconf(options.parse_args_and_arch(
        options.get_training_parser(), c[1:])) for c in (command, profile_command))
    hydra = _composed(task)
    given = {arg[2:].replace("-", "_") for arg in command[1:] + profile_command[1:] if arg.startswith("--")}
    yaml = OmegaConf.load(HYDRA_DIR / f"{task}.yaml")
    set_in_yaml = {(group, key) for group in yaml if group != "defaults"
                   for key in yaml[group] if OmegaConf.to_container(yaml[group])[key] != "???"}
    groups = [g for g in cli if OmegaConf.is_dict(cli[g])]
    differ = []
    for group in groups:
        for key in cli[group]:
            from_cli, from_yaml = key in given, (group, key) in set_in_yaml
            if key in RUN_SPECIFIC or not (from_cli or from_yaml) or key not in (hydra[group] or {}):
                continue
            recipe = (profile_cli if key in PROFILE_ONLY else cli)[group][key]
            if _plain(recipe) != _plain(hydra[group][key]):
                differ.append(f"{group}.{key}: config.sh {recipe!r}, yaml {hydra[group][key]!r}")
    assert not differ, "\n".join(differ)
