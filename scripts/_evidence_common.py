"""Shared helpers for the evidence scripts: data, methods, fairseq runs, log parsing, tables, plots.

Kept in one place so that every script builds models, runs ``fairseq-train`` and reads its logs the
same way; the scripts only differ in what they measure.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
USER_DIR = REPO / "fairseq_admin"
BIN = Path(sys.executable).parent
RESULTS = REPO / "results"
DEFAULT_DATA = REPO / "work" / "multi30k_de_en"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # fairseq_admin itself, the same module fairseq's --user-dir imports

# Methods compared everywhere. Each is (label, init type, extra flags); Pre-LN is stock fairseq's flags.
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


def available_methods() -> dict[str, tuple[str, str, list[str]]]:
    """The base three, plus any comparator init type the installed model already knows."""
    from fairseq_admin.init_types import INIT_TYPES

    methods = dict(BASE_METHODS)
    methods.update({k: v for k, v in OPTIONAL_METHODS.items() if v[1] in INIT_TYPES})
    return methods


def needs_profile(method: str) -> bool:
    return available_methods()[method][1] == "adaptive"


def fairseq_env(threads: int = 1) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}  # progress lines as they come


def ensure_data(dest: Path = DEFAULT_DATA, vocab_size: int = 8000, max_train_pairs: int | None = None) -> Path:
    """Prepared Multi30k de-en (joint spm + fairseq-preprocess) via our own prepare CLI; returns bin/."""
    if (dest / "bin").is_dir():
        return dest / "bin"
    command = [sys.executable, "-m", "fairseq_admin.prepare", "--dest", str(dest), "--vocab-size", str(vocab_size)]
    if max_train_pairs:
        command += ["--max-train-pairs", str(max_train_pairs)]
    print(f"preparing data: {' '.join(command)}", flush=True)
    subprocess.run(command, cwd=REPO, check=True, env=fairseq_env())
    return dest / "bin"


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


def method_flags(method: str) -> list[str]:
    _, init_type, extra = available_methods()[method]
    return ["--init-type", init_type, *extra]


def run_logged(command: Sequence[str], log_path: Path, progress: bool = True, threads: int = 1,
               nice: int = 10) -> tuple[int, float, int]:
    """Run a command under ``nice``, its output into ``log_path``; echo progress lines.

    Returns (exit code, wall seconds, peak RSS of the child in KiB from getrusage).
    """
    import resource

    log_path.parent.mkdir(parents=True, exist_ok=True)
    increment = nice - os.nice(0)  # nice -n is relative: aim at the absolute level, not parent + 10
    full = ["nice", "-n", str(increment), *map(str, command)] if increment > 0 else list(map(str, command))
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(log_path, "w") as log:
        log.write("# " + " ".join(full) + "\n")
        log.flush()
        proc = subprocess.Popen(full, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=fairseq_env(threads))
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()  # an interrupted run keeps its log
            if progress and ("train_inner" in line or "valid" in line and "{" in line or "Error" in line):
                rec = parse_json_line(line)
                if rec and "num_updates" in rec:
                    print(f"    u{rec['num_updates']:>4} train nll {rec.get('nll_loss')} wps {rec.get('wps')}",
                          flush=True)
                elif rec and "valid_num_updates" in rec:
                    print(f"    u{rec['valid_num_updates']:>4} valid loss {rec.get('valid_loss')} "
                          f"nll {rec.get('valid_nll_loss')}", flush=True)
        code = proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of RUSAGE_CHILDREN is the max over all waited-for children; only exact if this one is largest.
    return code, time.perf_counter() - start, max(after, before)


def fairseq_train(args: Sequence[str], log_path: Path, progress: bool = True) -> float:
    """One real ``fairseq-train`` subprocess with our plugin; raises with the log tail on failure."""
    command = [str(BIN / "fairseq-train"), *args, "--user-dir", str(USER_DIR)]
    code, seconds, _ = run_logged(command, log_path, progress=progress)
    if code != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"fairseq-train failed ({code}), log {log_path}:\n{tail}")
    return seconds


def parse_json_line(line: str) -> dict[str, Any] | None:
    start = line.find("{")
    if start < 0:
        return None
    try:
        value = json.loads(line[start:])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _num(value: Any) -> float:
    return float(value) if value not in (None, "") else float("nan")


def parse_fairseq_log(path: Path) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """(train_inner rows, valid rows) from a ``--log-format json`` fairseq-train log."""
    train, valid = [], []
    for line in path.read_text().splitlines():
        rec = parse_json_line(line)
        if not rec:
            continue
        if "valid_num_updates" in rec:
            valid.append({"update": int(rec["valid_num_updates"]), "loss": _num(rec.get("valid_loss")),
                          "nll_loss": _num(rec.get("valid_nll_loss"))})
        elif "num_updates" in rec and "train_inner" in line:
            train.append({"update": int(rec["num_updates"]), "loss": _num(rec.get("loss")),
                          "nll_loss": _num(rec.get("nll_loss")), "wps": _num(rec.get("wps")),
                          "gnorm": _num(rec.get("gnorm"))})
    return train, valid


def value_at(rows: Sequence[dict[str, float]], update: int, key: str) -> float:
    """The logged value at exactly ``update`` (fairseq logs every --log-interval updates), else NaN."""
    for row in rows:
        if row["update"] == update:
            return row[key]
    return float("nan")


def write_csv(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    rows = list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else [])
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=False) + "\n")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats with 3 significant decimals. Printed and pasted into docs."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if v != v else f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot():
    """matplotlib with a file-only backend (no display on the CPU box or in CI)."""
    import logging

    # fairseq's logging setup lets DEBUG through, and matplotlib logs while it is imported
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Write a PNG (creating its directory) and free the figure."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_in_process(argv: Sequence[str]):
    """(args, task, model) built by fairseq's own parser, task and build_model, with our --user-dir.

    This is exactly what fairseq-train does before training (seeded the same way), so the model,
    Admin's profiling code and the batches are the real ones.
    """
    import numpy as np
    from fairseq import options, tasks, utils

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, input_args=[*map(str, argv), "--user-dir", str(USER_DIR)])
    utils.import_user_module(args)
    np.random.seed(args.seed)
    utils.set_torch_seed(args.seed)
    task = tasks.setup_task(args)
    model = task.build_model(args)
    return args, task, model


def batches(task: Any, model: Any, args: Any, split: str, count: int, max_tokens: int, seed: int = 1,
            shuffle: bool = True) -> list[dict[str, Any]]:
    """The first ``count`` batches of a split, built the way fairseq's trainer builds them."""
    from fairseq import utils

    task.load_dataset(split, epoch=1, combine=True)
    iterator = task.get_batch_iterator(
        dataset=task.dataset(split), max_tokens=max_tokens, max_sentences=None,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
        ignore_invalid_inputs=True, required_batch_size_multiple=8, seed=seed, num_shards=1, shard_id=0,
        num_workers=0, epoch=1,
    ).next_epoch_itr(shuffle=shuffle)
    out = []
    for sample in iterator:
        if sample:
            out.append(sample)
        if len(out) >= count:
            break
    return out
