"""The checks of fairseq-admin that need a GPU, in one run that prints ONE JSON object on stdout.

CI has no GPU, so these run by hand on a GPU machine (``scripts/gpu_check.sh`` installs what is
missing there from carried wheels first, then runs this module from the repository root). Every part
runs real ``fairseq-train`` processes; a part that fails is recorded in the JSON (``ok: false`` and the
reason, the log's tail) and the next part still runs. Progress goes to stderr.

* ``fp16_flat``: Admin under the flat ``--fp16`` path (fairseq's FP16Optimizer: one flat fp32 master
  copy, no ``--fp16-no-flatten-grads``), ``--optimizer radam`` and ``adam``: loss finite and going
  down, fp16 loss scaling active, ω and every weight in the saved checkpoint finite.
* ``one_step``: ``--init-type adaptive`` with an empty save dir: profiles, writes the profile, trains;
  its ω against the two-step profile of ``fp16_flat`` (same flags).
* ``profiling_100L``: 100L-100L ``transformer_admin_wmt_en_de`` profiling: the time fairseq logs, wall
  time, and GPU memory (peak, and what the model alone holds after profiling).
* ``throughput``: Admin / stock ``transformer`` words/s (fairseq's ``wps``, intervals after the first)
  at the same dims, runs interleaved; also the whole-process wall-time ratio.

    python -m fairseq_admin_evidence.gpu_check DATA_BIN [--cpu] [--out-dir DIR] [--parts a,b] [--budget-s 330]
    # the throughput ratio only:
    python -m fairseq_admin_evidence.gpu_check DATA_BIN --parts throughput --reps 6 --throughput-updates 300
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairseq_admin_evidence.common import REPO
from fairseq_admin_evidence.outputs import write_json
from fairseq_admin_evidence.runs import USER_DIR
from fairseq_admin_tools.fairseq_log import records

PARTS = ("fp16_flat", "one_step", "profiling_100L", "throughput")

# Runs fairseq-train in this Python and reports CUDA memory: the peak over the run, and, when Admin
# logs "admin: profiled", what is allocated then (the fp32 model) and the peak up to then.
# fairseq_cli.train calls logging.basicConfig when imported, so our handler is added after it.
WRAPPER = r"""
import atexit, json, logging, sys
import torch
import fairseq_cli.train as train
marks = {}
class ProfilingMark(logging.Handler):
    def emit(self, record):
        if "profiled_allocated" not in marks and record.getMessage().startswith("admin: profiled"):
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                marks["profiled_allocated"] = torch.cuda.memory_allocated()
                marks["profiled_peak_allocated"] = torch.cuda.max_memory_allocated()
def report():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        marks["peak_allocated"] = torch.cuda.max_memory_allocated()
        marks["peak_reserved"] = torch.cuda.max_memory_reserved()
    print("GPU_CHECK_MEMORY " + json.dumps(marks), flush=True)
atexit.register(report)
logging.getLogger().addHandler(ProfilingMark())
sys.argv[0] = "fairseq-train"
train.cli_main()
"""


@dataclass
class Config:
    """Sizes of one check run: the GPU sizes, or tiny ones for a CPU smoke run (``--cpu``)."""

    cpu: bool
    data: Path
    work: Path
    deadline: float
    small_model: list[str]
    big_model: list[str]
    stock_big_model: list[str]
    deep_model: list[str]
    precision: list[str]
    updates: int
    throughput_updates: int
    throughput_max_tokens: int
    reps: int
    log: list[str] = field(default_factory=list)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def gpu_config(data: Path, work: Path, deadline: float, ffn_xavier: list[str]) -> Config:
    wmt = ["--encoder-layers", "6", "--decoder-layers", "6", "--share-all-embeddings"]
    return Config(
        cpu=False, data=data, work=work, deadline=deadline,
        small_model=["--arch", "transformer_admin_iwslt_de_en", *wmt],
        big_model=["--arch", "transformer_admin_wmt_en_de", *wmt],
        stock_big_model=["--arch", "transformer_wmt_en_de", *wmt],
        deep_model=["--arch", "transformer_admin_wmt_en_de", "--encoder-layers", "100", "--decoder-layers", "100",
                    "--share-all-embeddings", *ffn_xavier],
        precision=["--fp16"], updates=40, throughput_updates=100, throughput_max_tokens=8192, reps=3,
    )


def cpu_config(data: Path, work: Path, deadline: float, ffn_xavier: list[str]) -> Config:
    tiny = ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
            "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
            "--share-all-embeddings"]
    two = ["--encoder-layers", "2", "--decoder-layers", "2"]
    return Config(
        cpu=True, data=data, work=work, deadline=deadline,
        small_model=["--arch", "transformer_admin", *two, *tiny],
        big_model=["--arch", "transformer_admin", *two, *tiny],
        stock_big_model=["--arch", "transformer", *two, *tiny],
        deep_model=["--arch", "transformer_admin", *two, *tiny, *ffn_xavier],
        precision=[], updates=6, throughput_updates=6, throughput_max_tokens=512, reps=1,
    )


def progress(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Run:
    """One finished fairseq-train process."""

    name: str
    code: int
    wall_s: float
    log: str
    log_path: Path
    memory: dict[str, int]

    def tail(self, chars: int = 1500) -> str:
        return self.log[-chars:]

    def values(self, key: str) -> list[float]:
        """One value of fairseq's per-interval ``train_inner`` lines."""
        return [r.values[key] for r in records(self.log.splitlines(), ("train_inner",)) if key in r.values]


class PartFailed(Exception):
    """A part's check did not hold; the message says which, the JSON keeps what was measured."""

    def __init__(self, message: str, facts: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.facts = facts or {}


def fairseq_train(cfg: Config, name: str, args: list[str], timeout_s: float) -> Run:
    """One real fairseq-train process (through WRAPPER), its log kept under the work dir."""
    timeout_s = min(timeout_s, cfg.remaining())
    if timeout_s < 20:
        raise PartFailed(f"{name}: not started, the check's time budget is spent")
    log_path = cfg.work / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-c", WRAPPER, str(cfg.data), "--user-dir", str(USER_DIR), *args,
               "--seed", "1", "--num-workers", "0", "--no-progress-bar", "--log-format", "simple"]
    if cfg.cpu:
        command.append("--cpu")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}
    if cfg.cpu:
        env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cfg.log.append(" ".join(command[:1] + ["-c", "WRAPPER"] + command[3:]))
    start = time.perf_counter()
    with open(log_path, "w") as out:
        try:
            code = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            code = 124
    wall = time.perf_counter() - start
    log = log_path.read_text(errors="replace")
    match = re.search(r"^GPU_CHECK_MEMORY (\{.*\})$", log, re.MULTILINE)
    memory = json.loads(match.group(1)) if match else {}
    progress(f"  {name}: exit {code} in {wall:.0f}s")
    return Run(name, code, wall, log, log_path, memory)


def succeeded(run: Run) -> Run:
    if run.code != 0:
        why = "timed out" if run.code == 124 else f"exit {run.code}"
        raise PartFailed(f"{run.name}: fairseq-train {why}", {"log_tail": run.tail()})
    return run


def training_flags(cfg: Config, optimizer: str, updates: int, max_tokens: int) -> list[str]:
    return ["--optimizer", optimizer, "--adam-betas", "(0.9, 0.98)", "--lr", "5e-4", "--lr-scheduler",
            "inverse_sqrt", "--warmup-updates", "10", "--warmup-init-lr", "1e-7",
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--dropout", "0.1",
            "--max-tokens", str(max_tokens), "--max-update", str(updates), "--disable-validation",
            "--no-epoch-checkpoints", "--log-interval", "1" if cfg.cpu else "5", *cfg.precision]


def checkpoint_facts(path: Path) -> dict[str, Any]:
    """ω (range, count) and whether every floating-point weight in a saved checkpoint is finite."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    omegas = [v.float() for k, v in state.items() if k.endswith(".omega")]
    tensors = [v for v in state.values() if torch.is_tensor(v) and v.is_floating_point()]
    return {"omega_count": len(omegas),
            "omega_min": min(float(o.min()) for o in omegas) if omegas else None,
            "omega_max": max(float(o.max()) for o in omegas) if omegas else None,
            "omegas_finite": all(bool(torch.isfinite(o).all()) for o in omegas),
            "weights_finite": all(bool(torch.isfinite(t.float()).all()) for t in tensors),
            "weight_dtypes": sorted({str(t.dtype) for t in tensors})}


def profile_omegas(path: Path) -> list[float]:
    return [b["omega"] for b in json.loads(path.read_text())["branches"]]


def loss_summary(run: Run) -> dict[str, Any]:
    losses = run.values("loss")
    facts: dict[str, Any] = {"losses": losses, "loss_scale": run.values("loss_scale")[-1:] or None,
                             "wps": run.values("wps")[-1:] or None, "wall_s": round(run.wall_s, 1),
                             "gpu_peak_allocated_mib": mib(run.memory.get("peak_allocated"))}
    facts["loss_finite"] = bool(losses) and all(math.isfinite(v) for v in losses)
    facts["loss_went_down"] = len(losses) >= 2 and losses[-1] < losses[0]
    return facts


def last_update(run: Run) -> int | None:
    """The last num_updates fairseq logged (train_inner or the end-of-epoch summary)."""
    found = re.findall(r"num_updates[= ](\d+)", run.log)
    return int(found[-1]) if found else None


def mib(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def part_fp16_flat(cfg: Config, shared: dict[str, Any]) -> dict[str, Any]:
    work = cfg.work / "fp16_flat"
    profile = work / "admin_profile.json"
    # The same flags as one_step's (bar --init-type), so its profile is the two-step reference.
    base = [*cfg.small_model, *training_flags(cfg, "adam", cfg.updates, 4096), "--admin-profile-tokens", "4096"]
    succeeded(fairseq_train(cfg, "fp16_profile", [*base, "--init-type", "adaptive-profiling", "--save-dir", str(work)],
                            120))
    shared["two_step_profile"] = profile
    result: dict[str, Any] = {"flags": " ".join(cfg.precision) or "fp32 (CPU smoke run)",
                              "profile_omega_range": [min(profile_omegas(profile)), max(profile_omegas(profile))]}
    failures = []
    for optimizer in ("radam", "adam"):
        save = work / optimizer
        args = [*cfg.small_model, *training_flags(cfg, optimizer, cfg.updates, 4096), "--init-type", "adaptive",
                "--admin-profile", str(profile), "--save-dir", str(save)]
        run = fairseq_train(cfg, f"fp16_{optimizer}", args, 150)
        facts: dict[str, Any] = {"exit": run.code}
        if run.code == 0:
            facts.update(loss_summary(run))
            facts.update(checkpoint_facts(save / "checkpoint_last.pt"))
            if not cfg.cpu and not facts["loss_scale"]:
                failures.append(f"{optimizer}: no loss_scale in the log (fp16 not active?)")
            for key in ("loss_finite", "loss_went_down", "omegas_finite", "weights_finite"):
                if not facts[key]:
                    failures.append(f"{optimizer}: {key} is false")
        else:
            facts["log_tail"] = run.tail()
            failures.append(f"{optimizer}: fairseq-train exit {run.code}")
        result[optimizer] = facts
    if failures:
        raise PartFailed("; ".join(failures), result)
    return result


def part_one_step(cfg: Config, shared: dict[str, Any]) -> dict[str, Any]:
    work = cfg.work / "one_step"
    work.mkdir(parents=True, exist_ok=True)
    args = [*cfg.small_model, *training_flags(cfg, "adam", 10 if not cfg.cpu else 3, 4096),
            "--admin-profile-tokens", "4096", "--init-type", "adaptive", "--save-dir", str(work)]
    run = succeeded(fairseq_train(cfg, "one_step", args, 150))
    written = work / "admin_profile.json"
    sources = re.findall(r"admin: rank (\d+): ω from (.*?), omega digest (\w+)", run.log)
    result: dict[str, Any] = {"profile_written": written.exists(), "omega_source": sources,
                              "updates": last_update(run), "wall_s": round(run.wall_s, 1),
                              "loss_finite": all(math.isfinite(v) for v in run.values("loss"))}
    reference = shared.get("two_step_profile")
    if written.exists() and reference is not None and reference.exists():
        mine, theirs = profile_omegas(written), profile_omegas(reference)
        result["omegas_equal_two_step"] = mine == theirs
        result["max_abs_omega_diff_vs_two_step"] = (max(abs(a - b) for a, b in zip(mine, theirs, strict=True))
                                                    if len(mine) == len(theirs) else "branch counts differ")
    if not (result["profile_written"] and sources and "profiled now" in sources[0][1] and result["loss_finite"]):
        raise PartFailed("one-step Admin did not profile now, write the profile and train", result)
    return result


def part_profiling_100l(cfg: Config, shared: dict[str, Any]) -> dict[str, Any]:
    work = cfg.work / "profiling_100L"
    args = [*cfg.deep_model, *training_flags(cfg, "adam", 1, 4096), "--admin-profile-tokens", "4096",
            "--init-type", "adaptive-profiling", "--save-dir", str(work)]
    run = succeeded(fairseq_train(cfg, "profiling_100L", args, 240))
    match = re.search(r"admin: profiled (\d+) branches on (\d+) tokens / (\d+) sentences \((\d+) batches\) in "
                      r"([\d.]+)s", run.log)
    omegas = profile_omegas(work / "admin_profile.json")
    memory = run.memory
    model_bytes = memory.get("profiled_allocated")
    result = {"model": " ".join(cfg.deep_model), "branches": int(match.group(1)) if match else None,
              "tokens": int(match.group(2)) if match else None, "profiling_s": float(match.group(5)) if match else None,
              "process_wall_s": round(run.wall_s, 1), "omega_range": [min(omegas), max(omegas)],
              "gpu_allocated_after_profiling_mib (model, fp32)": mib(model_bytes),
              "gpu_peak_allocated_mib": mib(memory.get("profiled_peak_allocated", memory.get("peak_allocated"))),
              "gpu_peak_reserved_mib": mib(memory.get("peak_reserved"))}
    if model_bytes is not None and "profiled_peak_allocated" in memory:
        result["gpu_profiling_extra_over_model_mib"] = mib(memory["profiled_peak_allocated"] - model_bytes)
    return result


def part_throughput(cfg: Config, shared: dict[str, Any]) -> dict[str, Any]:
    work = cfg.work / "throughput"
    base = training_flags(cfg, "adam", cfg.throughput_updates, cfg.throughput_max_tokens)
    base = [*base[:base.index("--log-interval")], "--log-interval", "10" if not cfg.cpu else "2",
            *base[base.index("--log-interval") + 2:], "--no-save"]
    profile = work / "admin_profile.json"
    succeeded(fairseq_train(cfg, "throughput_profile", [*cfg.big_model, *base, "--init-type", "adaptive-profiling",
                                                         "--save-dir", str(work)], 120))
    runs = {"stock": cfg.stock_big_model,
            "admin": [*cfg.big_model, "--init-type", "adaptive", "--admin-profile", str(profile)]}
    rows: list[dict[str, Any]] = []
    pair_s = 0.0
    for rep in range(cfg.reps):
        if rep > 0 and cfg.remaining() < 1.5 * pair_s + 20:
            progress(f"  throughput: stopping after {rep} pairs (time budget)")
            break
        started = time.monotonic()
        for name in (("stock", "admin") if rep % 2 == 0 else ("admin", "stock")):
            run = succeeded(fairseq_train(cfg, f"throughput_{name}_{rep}", [*runs[name], *base], 150))
            wps = run.values("wps")
            steady = wps[1:] or wps
            rows.append({"rep": rep, "model": name, "wps": statistics.mean(steady) if steady else float("nan"),
                         "intervals": len(steady), "wall_s": round(run.wall_s, 2),
                         "gpu_peak_allocated_mib": mib(run.memory.get("peak_allocated"))})
        pair_s = time.monotonic() - started
    pairs = [(a, s) for a in rows if a["model"] == "admin" for s in rows if s["model"] == "stock"
             and s["rep"] == a["rep"]]
    ratios = [a["wps"] / s["wps"] for a, s in pairs]
    walls = [a["wall_s"] / s["wall_s"] for a, s in pairs]
    return {"models": {"admin": " ".join(runs["admin"][:2]), "stock": " ".join(runs["stock"][:2]),
                       "dims": " ".join(cfg.stock_big_model[2:])},
            "updates": cfg.throughput_updates, "max_tokens": cfg.throughput_max_tokens, "precision": cfg.precision,
            "wps_ratio_admin_over_stock": summary(ratios), "wall_ratio_admin_over_stock": summary(walls),
            "runs": rows}


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "median": statistics.median(values), "min": min(values), "max": max(values),
            "all": [round(v, 4) for v in values]}


def environment() -> dict[str, Any]:
    facts: dict[str, Any] = {"python": platform.python_version()}
    try:
        import torch

        facts.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():
            facts.update(device=torch.cuda.get_device_name(0),
                         capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                         device_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    except Exception as err:  # recorded, the parts say the rest
        facts["torch_error"] = f"{type(err).__name__}: {err}"
    for name in ("fairseq", "hydra", "omegaconf", "numpy", "tensorboardX"):
        try:
            module = __import__(name)
            facts[name] = getattr(module, "__version__", "?")
        except Exception as err:
            facts[name] = f"import failed: {type(err).__name__}: {err}"
    try:
        facts["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                         text=True, timeout=10).stdout.strip() or None
    except Exception:
        facts["commit"] = None
    return facts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin_evidence.gpu_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="fairseq binarized data dir (joined dictionary), e.g. Multi30k de-en")
    parser.add_argument("--cpu", action="store_true", help="smoke run on CPU: tiny models, fp32, same code paths")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--budget-s", type=float, default=330.0,
                        help="stop starting runs after this many seconds (default 330: the whole check in < 6 min)")
    parser.add_argument("--reps", type=int, default=None,
                        help="throughput: interleaved stock/admin pairs (default 3 on GPU, 1 with --cpu)")
    parser.add_argument("--throughput-updates", type=int, default=None,
                        help="throughput: updates per run (default 100 on GPU, 6 with --cpu)")
    parser.add_argument("--work-dir", type=Path, default=None, help="where runs write (default: a temporary dir)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="also write gpu_check.json and gpu_check_logs.tar.gz (every run's log) here")
    args = parser.parse_args(argv)
    args.parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if not any(args.data.glob("dict.*.txt")):
        parser.error(f"{args.data} holds no fairseq dictionary (dict.*.txt): pass a binarized data dir")
    if args.work_dir is not None and args.work_dir.exists() and any(args.work_dir.iterdir()):
        parser.error(f"--work-dir {args.work_dir} is not empty; the checks need fresh save dirs")
    return args


def make_config(args: argparse.Namespace, started: float) -> Config:
    """The sizes of this run (GPU or --cpu), in a fresh work dir (--work-dir or a temporary one)."""
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    ffn_xavier = ["--ffn-init", "xavier"]
    make = cpu_config if args.cpu else gpu_config
    cfg = make(args.data.resolve(), work, started + args.budget_s, ffn_xavier)
    if args.reps is not None:
        cfg.reps = max(1, args.reps)
    if args.throughput_updates is not None:
        cfg.throughput_updates = max(2, args.throughput_updates)
    return cfg


PART_FUNCTIONS: dict[str, Callable[[Config, dict[str, Any]], dict[str, Any]]] = {
    "fp16_flat": part_fp16_flat, "one_step": part_one_step, "profiling_100L": part_profiling_100l,
    "throughput": part_throughput}


def run_part(name: str, cfg: Config, shared: dict[str, Any]) -> dict[str, Any]:
    """One part's result: ``ok`` and what it measured, or why it failed; never raises."""
    progress(f"{name}: start ({cfg.remaining():.0f}s of the budget left)")
    part_start = time.monotonic()
    try:
        result = {"ok": True, **PART_FUNCTIONS[name](cfg, shared)}
    except PartFailed as err:
        result = {"ok": False, "error": str(err), **err.facts}
    except Exception as err:  # a bug or an environment problem: record it, run the next part
        result = {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-2000:]}
    result["part_s"] = round(time.monotonic() - part_start, 1)
    progress(f"{name}: {'ok' if result['ok'] else 'FAILED: ' + result['error'][:300]} ({result['part_s']}s)")
    return result


def write_out_dir(out_dir: Path, report: dict[str, Any], work: Path) -> None:
    """gpu_check.json and, if any run wrote a log, gpu_check_logs.tar.gz."""
    write_json(out_dir / "gpu_check.json", report, indent=1, default=str)
    if (work / "logs").is_dir():
        with tarfile.open(out_dir / "gpu_check_logs.tar.gz", "w:gz") as tar:
            tar.add(work / "logs", arcname="logs")


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    cfg = make_config(args, started)
    report: dict[str, Any] = {"check": "fairseq-admin gpu_check", "mode": "cpu smoke" if args.cpu else "gpu",
                              "data": str(args.data), "environment": environment(), "parts": {}}
    progress(f"environment: {json.dumps(report['environment'])}")
    shared: dict[str, Any] = {}
    for name in args.parts:
        report["parts"][name] = run_part(name, cfg, shared)
    report["ok"] = all(p["ok"] for p in report["parts"].values())
    report["total_s"] = round(time.monotonic() - started, 1)
    report["commands"] = cfg.log
    if args.out_dir is not None:
        write_out_dir(args.out_dir, report, cfg.work)
    if args.work_dir is None:
        shutil.rmtree(cfg.work, ignore_errors=True)
    print(json.dumps(report, indent=1, default=str), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
