"""A CPU-sized Table 1 on Multi30k: every method trained to a stated cap with the recipe users run.

    python -m fairseq_admin_evidence.convergence [--jobs 2] [--only NAME ...]   # resumes; skips finished runs
    python -m fairseq_admin_evidence.convergence_summary --out docs/results/convergence

Each run is ``recipes/run.sh multi30k METHOD LAYERS`` with one schedule for all (:data:`SCHEDULE`): the paper's
initialization and optimizer (``PAPER_INIT=1``: fairseq 0.8's FFN init, padding counted, first batch profiled;
RAdam), Multi30k de→en, d 128 / ffn 512 / 4 heads. The schedule is the notes' regime A (lr 2e-3, warmup 50,
2048 tokens), where 18L Post-LN stalls early. fairseq's checkpoint_last and the recipe's markers make every run
resumable: ``run`` again after an interruption and each run continues where it stopped.

``convergence_summary`` writes ``summary.json`` (one entry per planned run; runs not finished are listed with what they
reached and ``"finished": false``), ``curves_<depth>.csv`` / ``.png`` (validation nll of every run) and
``table.md`` (mean ± spread over seeds).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fairseq_admin_evidence.common import REPO

SCHEDULE: dict[str, str] = {
    "PAPER_INIT": "1",
    "LR": "2e-3",
    "WARMUP": "50",
    "MAX_TOKENS": "2048",
    "EFFECTIVE_TOKENS": "2048",
    "DROPOUT": "0.1",
    "MAX_EPOCH": "5",
    "MAX_UPDATE": "0",  # no update cap: MAX_EPOCH decides
    "SAVE_INTERVAL_UPDATES": "50",  # validation (the curves) and the recipe's average of the last 3 saves
    "AVG_LAST": "3",
}
"""One schedule for every run. MAX_EPOCH 5 is the cap the ~8 CPU-hour budget allows on 2 cores."""

TASK = "multi30k_de_en"
WORK = REPO / "work" / "convergence"
RESULTS = REPO / "results" / "convergence"
LOGS = WORK / "logs"


@dataclass(frozen=True)
class Run:
    """One planned cell of the table."""

    method: str
    layers: int
    seed: int

    @property
    def name(self) -> str:
        return f"{TASK}-{self.method}-{self.layers}L-{self.layers}L-s{self.seed}"


PLAN: tuple[Run, ...] = (
    # In the order they run: first what answers "Admin vs Pre-LN vs Post-LN at 18L", then the 6L row,
    # then the second seeds, then the comparators.
    Run("admin", 18, 1111),
    Run("preln", 18, 1111),
    Run("postln", 18, 1111),
    Run("admin", 6, 1111),
    Run("preln", 6, 1111),
    Run("postln", 6, 1111),
    Run("admin", 18, 2222),
    Run("preln", 18, 2222),
    Run("postln", 18, 2222),
    Run("admin-closed-form", 18, 1111),
    Run("deepnorm", 18, 1111),
)


def recipe_env(run: Run, threads: int) -> dict[str, str]:
    """The environment of one recipe run: ours, the schedule, the run's seed and its output folders."""
    env = dict(os.environ, **SCHEDULE)
    env.update(SEED=str(run.seed), ADMIN_WORK=str(WORK), RESULTS_DIR=str(RESULTS), OMP_NUM_THREADS=str(threads))
    env.pop("SEEDS", None)
    return env


def run_recipe(run: Run, threads: int, stage: str = "all") -> int:
    """Run (or resume) one cell; its output is appended to ``LOGS/<name>.log``. Returns the exit status."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{run.name}.log"
    command = ["nice", "-n", "10", "bash", str(REPO / "recipes" / "run.sh"), "multi30k", run.method,
               str(run.layers), stage]
    print(f"convergence: {run.name}: {stage} (log {log})", flush=True)
    with open(log, "a", encoding="utf-8") as out:
        status = subprocess.run(command, env=recipe_env(run, threads), stdout=out, stderr=subprocess.STDOUT).returncode
    print(f"convergence: {run.name}: {stage} exited {status}", flush=True)
    return status


def run_stages(run: Run, threads: int) -> int:
    """Profile, train and evaluate one cell (the recipe's stages after prepare). Returns the first failing status."""
    for stage in ("profile", "train", "eval"):
        status = run_recipe(run, threads, stage)
        if status != 0:
            return status
    return 0


def run_all(runs: Sequence[Run], jobs: int, threads: int, skip_prepare: bool = False) -> int:
    """Prepare the data once (unless ``skip_prepare``), then the runs ``jobs`` at a time.

    ``skip_prepare`` is for a machine that holds the prepared data (``WORK/data``) but not Multi30k itself, such
    as a GPU machine the data was carried to. Returns the number of runs that failed.
    """
    if not skip_prepare and run_recipe(runs[0], threads, "prepare") != 0:
        return len(runs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        statuses = list(pool.map(lambda run: run_stages(run, threads) if skip_prepare else run_recipe(run, threads),
                                 runs))
    return sum(status != 0 for status in statuses)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin_evidence.convergence", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="only these runs, in this order (names as in the plan)")
    parser.add_argument("--skip-prepare", action="store_true",
                        help="the data is already prepared under work/convergence/data (e.g. carried to a GPU machine "
                             "without Multi30k): run each run's profile, train and eval stages only")
    args = parser.parse_args(argv)
    unknown = set(args.only or ()) - {run.name for run in PLAN}
    if unknown:
        parser.error(f"not in the plan: {', '.join(sorted(unknown))}; the plan: {', '.join(r.name for r in PLAN)}")
    by_name = {run.name: run for run in PLAN}
    runs = [by_name[name] for name in args.only] if args.only else list(PLAN)
    return run_all(runs, args.jobs, args.threads, args.skip_prepare)


if __name__ == "__main__":
    sys.exit(main())
