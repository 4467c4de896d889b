"""Running ``fairseq-train`` (and other commands) as subprocesses: niced, logged, measured.

Every measurement that trains runs the real ``fairseq-train`` with the plugin's ``--user-dir``, one
thread, under ``nice``, its output kept in a log file; :func:`run_logged` also returns what the
process cost (wall and CPU seconds, peak RSS).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fairseq_admin_evidence.common import REPO
from fairseq_admin_evidence.fairseq_logs import parse_json_line
from fairseq_admin_tools.plugin_dir import plugin_dir

USER_DIR = Path(plugin_dir())
"""The plugin, as fairseq's ``--user-dir`` (the same module this package imports, wherever installed)."""
BIN = Path(sys.executable).parent
"""The console scripts (fairseq-train, fairseq-generate) of this Python's environment."""


def fairseq_env(threads: int = 1) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}  # progress lines as they come


@dataclass(frozen=True)
class Finished:
    """A finished subprocess and what it cost."""

    code: int
    seconds: float  # wall time
    peak_rss_kib: int  # the process's own peak RSS (os.wait4's ru_maxrss)
    cpu_seconds: float  # user + system: much less sensitive than wall time to other users of the machine


def _echo_progress(line: str) -> None:
    """One short line per fairseq train_inner / valid record of a ``--log-format json`` log."""
    if not ("train_inner" in line or "valid" in line and "{" in line or "Error" in line):
        return
    rec = parse_json_line(line)
    if rec and "num_updates" in rec:
        print(f"    u{rec['num_updates']:>4} train nll {rec.get('nll_loss')} wps {rec.get('wps')}", flush=True)
    elif rec and "valid_num_updates" in rec:
        print(f"    u{rec['valid_num_updates']:>4} valid loss {rec.get('valid_loss')} "
              f"nll {rec.get('valid_nll_loss')}", flush=True)


def run_logged(command: Sequence[str | os.PathLike], log_path: Path, progress: bool = True, threads: int = 1,
               nice: int = 10, env: dict[str, str] | None = None) -> Finished:
    """Run a command at nice level ``nice``, its output into ``log_path`` (first line: ``# command``).

    With ``progress``, echoes fairseq's train_inner and valid records as they come. ``env`` adds to the
    environment.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    increment = nice - os.nice(0)  # nice -n is relative: aim at the absolute level, not parent + 10
    full = ["nice", "-n", str(increment), *map(str, command)] if increment > 0 else list(map(str, command))
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("# " + " ".join(full) + "\n")
        log.flush()
        proc = subprocess.Popen(full, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**fairseq_env(threads), **(env or {})})
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                log.write(line)
                log.flush()  # an interrupted run keeps its log
                if progress:
                    _echo_progress(line)
        _, status, usage = os.wait4(proc.pid, 0)  # nice execs the command: same pid, its own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
    return Finished(proc.returncode, time.perf_counter() - start, usage.ru_maxrss, usage.ru_utime + usage.ru_stime)


def fairseq_train(args: Sequence[str | os.PathLike], log_path: Path, progress: bool = True) -> Finished:
    """One real ``fairseq-train`` subprocess with our plugin (or the ``--user-dir`` in ``args``, another version of
    it); raises with the log tail on failure."""
    user_dir = [] if "--user-dir" in map(str, args) else ["--user-dir", USER_DIR]
    finished = run_logged([BIN / "fairseq-train", *args, *user_dir], log_path, progress=progress)
    if finished.code != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"fairseq-train failed ({finished.code}), log {log_path}:\n{tail}")
    return finished
