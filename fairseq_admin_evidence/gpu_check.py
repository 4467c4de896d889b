"""The GPU checks of fairseq-admin in one run that prints ONE JSON object on stdout (progress on stderr).

Four parts, each a subprocess whose log is kept; a part that fails is recorded (``ok: false``, the log's tail)
and the next part still runs:

* ``tests``: ``pytest tests/test_gpu.py``: Admin under fairseq's flat ``--fp16`` path with RAdam and Adam, and
  one-step Admin (profiles, writes the profile, trains; its ω as a separate profiling run's);
* ``bench_cost``: :mod:`fairseq_admin_evidence.bench_cost` ``--device cuda``: training throughput admin/stock in
  fp16, and the profiling pass's time and GPU memory at 6L, 18L and 100L;
* ``bench_step``: :mod:`fairseq_admin_evidence.bench_step` ``--device cuda``: time per update of stock, Admin and
  frozen-ω Admin on the same batches, with the profiler's per-operator difference table;
* ``bench_shortcut``: :mod:`fairseq_admin_evidence.bench_shortcut` ``--device cuda``: the shortcut's own cost per
  branch in fp16, the kept code against the alternatives measured on CPU.

``--cpu`` runs the same parts on CPU at toy sizes (the tests with ``FAIRSEQ_ADMIN_GPU_TESTS=cpu``); CI runs it, so
this code runs before it meets a GPU.

    python -m fairseq_admin_evidence.gpu_check DATA_BIN [--cpu] [--out-dir DIR] [--parts tests,bench_cost,...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

from fairseq_admin_evidence.common import REPO
from fairseq_admin_evidence.outputs import RESULTS, hardware, write_json
from fairseq_admin_evidence.runs import run_logged

PARTS = ("tests", "bench_cost", "bench_step", "bench_shortcut")
READS_DATA = ("bench_cost", "bench_step")
"""The measurements that train on DATA_BIN (bench_shortcut times tensors of its own)."""

GPU_SIZES = {
    "bench_cost": ["--reps", "3", "--updates", "100", "--log-interval", "10", "--tp-dim", "512",
                   "--tp-max-tokens", "8192", "--profile-max-tokens", "4096", "--train-up-to", "100"],
    "bench_step": ["--dims", "512", "--threads", "1", "--max-tokens", "8192", "--block", "10", "--pairs", "20",
                   "--rebuild-every", "5", "--profile-rounds", "2"],
    "bench_shortcut": ["--dims", "512,1024", "--tokens", "8192", "--reps", "100"],
}
"""The measurements' sizes on a GPU (about 6 minutes on one H200 GPU); on CPU they run ``--toy``."""


def progress(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def part_command(name: str, data: Path, out: Path, cpu: bool) -> list[str]:
    if name == "tests":
        return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests" / "test_gpu.py"),
                f"--junitxml={out / 'tests.xml'}"]
    sizes = ["--toy"] if cpu else ["--device", "cuda", *GPU_SIZES[name]]
    data_flags = ["--data", str(data)] if name in READS_DATA else []
    return [sys.executable, "-m", f"fairseq_admin_evidence.{name}", *data_flags, "--out", str(out), *sizes]


def tests_result(path: Path) -> dict[str, Any]:
    """Counts from pytest's JUnit XML; ``ok`` only when something ran and nothing failed or was skipped."""
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    failed = [case.get("name") for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return {"ok": counts["tests"] > 0 and not (counts["failures"] or counts["errors"] or counts["skipped"]),
            **counts, "failed": failed}


def run_part(name: str, data: Path, out: Path, cpu: bool) -> dict[str, Any]:
    """One part's result: ``ok`` and what it measured (the benchmark's summary.json), or why it failed."""
    part_out = out / name
    part_out.mkdir(parents=True, exist_ok=True)
    env = {"FAIRSEQ_ADMIN_TEST_DATA_BIN": str(data)}
    if cpu:
        env.update(FAIRSEQ_ADMIN_GPU_TESTS="cpu", CUDA_VISIBLE_DEVICES="")
    progress(f"{name}: start")
    finished = run_logged(part_command(name, data, part_out, cpu), out / "logs" / f"{name}.log", progress=False,
                          threads=1, nice=0, env=env)
    result: dict[str, Any] = {"exit": finished.code, "seconds": round(finished.seconds, 1)}
    if name == "tests" and (part_out / "tests.xml").exists():
        result.update(tests_result(part_out / "tests.xml"))
    elif name != "tests" and (part_out / "summary.json").exists():
        result["summary"] = json.loads((part_out / "summary.json").read_text())
    result["ok"] = finished.code == 0 and result.get("ok", True)
    if not result["ok"]:
        result["log_tail"] = (out / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
    progress(f"{name}: {'ok' if result['ok'] else 'FAILED'} ({result['seconds']} s)")
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin_evidence.gpu_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="fairseq binarized data dir (joined dictionary), e.g. Multi30k de-en")
    parser.add_argument("--cpu", action="store_true", help="the same parts on CPU at toy sizes (what CI runs)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--out-dir", type=Path, default=RESULTS / "gpu_check",
                        help="gpu_check.json, each part's outputs and logs/ (default: results/gpu_check)")
    args = parser.parse_args(argv)
    args.parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if not any(args.data.glob("dict.*.txt")):
        parser.error(f"{args.data} holds no fairseq dictionary (dict.*.txt): pass a binarized data dir")
    if not args.cpu:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device is visible; on a machine without a GPU, run with --cpu")
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    data = args.data.resolve()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"check": "fairseq-admin gpu_check", "mode": "cpu" if args.cpu else "gpu",
                              "hardware": hardware("cpu" if args.cpu else "cuda"), "data": str(data),
                              "python": sys.version.split()[0], "parts": {}}
    for name in args.parts:
        report["parts"][name] = run_part(name, data, args.out_dir, args.cpu)
    report["ok"] = all(part["ok"] for part in report["parts"].values())
    report["total_s"] = round(time.monotonic() - started, 1)
    write_json(args.out_dir / "gpu_check.json", report, indent=1, default=str)
    print(json.dumps(report, indent=1, default=str), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
