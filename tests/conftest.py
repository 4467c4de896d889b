"""Shared fixtures: a real slice of Multi30k, prepared with our CLI, and real fairseq subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
MULTI30K = Path(os.environ.get("MULTI30K_DIR", REPO.parent / "shared" / "data" / "multi30k"))
BIN = Path(sys.executable).parent

# Modules whose every test trains in fairseq-train subprocesses: marked slow (scripts/test.sh --fast leaves them
# out). Slow tests elsewhere carry @pytest.mark.slow themselves.
SLOW_MODULES = {"test_comparators", "test_distributed", "test_evidence_scripts", "test_export", "test_monitor",
                "test_paper_pipelines", "test_precision", "test_table1_gpu", "test_workflow"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__ in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


# A model small enough for a 2-core CPU: a few seconds per fairseq-train call.
TINY_MODEL = [
    "--arch", "transformer_admin", "--encoder-layers", "3", "--decoder-layers", "3",
    "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2", "--share-all-embeddings",
]
TINY_TRAINING = [
    "--optimizer", "radam", "--adam-betas", "(0.9, 0.98)", "--lr", "3e-3",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "5", "--max-tokens", "1024",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--cpu", "--seed", "1", "--no-progress-bar", "--log-interval", "1", "--log-format", "simple",
    "--num-workers", "0",
]


def fairseq(tool: str, *args: str | os.PathLike, check: bool = True, env: dict | None = None,
            timeout: int = 600, cwd: os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run a real fairseq console script (fairseq-train, fairseq-generate, ...) from this environment."""
    command = [str(BIN / tool), *map(str, args)]
    full_env = {**os.environ, "OMP_NUM_THREADS": "2", **(env or {})}
    result = subprocess.run(command, cwd=cwd or REPO, capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{tool} failed ({result.returncode}):\n{result.stderr[-4000:]}\n{result.stdout[-2000:]}")
    return result


def build(argv: Sequence[str | os.PathLike], *, from_config: bool = False,
          overrides: dict[str, Any] | None = None) -> tuple[Any, Any, Any]:
    """(args, task, model) from a fairseq-train command line, built in-process as fairseq-train builds it.

    The tests' one model builder, so that every test builds what training would: torch seeded with ``--seed``
    before the task and model are built. ``overrides`` sets parsed fields that have no flag. ``from_config``
    builds from the omegaconf config fairseq-train's ``main()`` converts the args to, and returns that model
    config as ``args``: the plugin then reads its options through omegaconf, as in a real run.
    """
    import torch
    from fairseq import options, tasks

    args = options.parse_args_and_arch(options.get_training_parser(), [*map(str, argv)])
    for name, value in (overrides or {}).items():
        setattr(args, name, value)
    seed, task_cfg = args.seed, args
    if from_config:
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        cfg = convert_namespace_to_omegaconf(args)
        args, task_cfg = cfg.model, cfg.task
    torch.manual_seed(seed)
    task = tasks.setup_task(task_cfg)
    return args, task, task.build_model(args)


def build_model(data_bin: Path, *flags: str | os.PathLike, from_config: bool = False) -> tuple[Any, Any, Any]:
    """(args, task, model): the TINY_MODEL with TINY_TRAINING and ``flags``, built by :func:`build`."""
    return build([data_bin, "--user-dir", REPO / "fairseq_admin", *TINY_MODEL, *TINY_TRAINING, *flags],
                 from_config=from_config)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """First 2000 Multi30k de-en training pairs, joint sentencepiece (1000) trained here, binarized.

    Prepared with fairseq-preprocess's option names (-s, -t, --destdir), which fairseq-admin-prepare accepts.
    """
    if not MULTI30K.is_dir():
        pytest.fail(f"Multi30k not found at {MULTI30K}; set MULTI30K_DIR")
    dest = tmp_path_factory.mktemp("multi30k")
    subprocess.run(
        [sys.executable, "-m", "fairseq_admin_tools.prepare", "--raw-dir", str(MULTI30K), "--destdir", str(dest),
         "-s", "de", "-t", "en", "--vocab-size", "1000", "--max-train-pairs", "2000"],
        cwd=REPO, check=True, capture_output=True,
    )
    return dest


@pytest.fixture(scope="session")
def data_bin(request: pytest.FixtureRequest) -> Path:
    """The fixture's data-bin; ``FAIRSEQ_ADMIN_TEST_DATA_BIN`` names another (a GPU machine's, without Multi30k)."""
    given = os.environ.get("FAIRSEQ_ADMIN_TEST_DATA_BIN")
    return Path(given) if given else request.getfixturevalue("data_dir") / "bin"


def train_log(stdout: str, key: str = "loss") -> list[float]:
    """Values of ``key`` from fairseq's per-update ``train_inner`` log lines (the tools' one log parser)."""
    from fairseq_admin_tools.fairseq_log import records

    return [r.values[key] for r in records(stdout.splitlines(), ("train_inner",))]


@pytest.fixture(scope="session")
def profile_path(data_bin: Path, tmp_path_factory) -> Path:
    """An Admin profile of the TINY_MODEL, written by a real profiling run."""
    save_dir = tmp_path_factory.mktemp("profiled")
    fairseq("fairseq-train", data_bin, "--user-dir", "fairseq_admin", *TINY_MODEL, *TINY_TRAINING,
            "--init-type", "adaptive-profiling", "--save-dir", save_dir, "--admin-profile-tokens", "4096")
    return save_dir / "admin_profile.json"
