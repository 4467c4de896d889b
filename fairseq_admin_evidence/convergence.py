"""A CPU-sized Table 1 on Multi30k: every method trained to a stated cap with the recipe users run.

    python -m fairseq_admin_evidence.convergence [--jobs 2] [--only NAME ...]   # resumes; skips finished runs
    python -m fairseq_admin_evidence.convergence_summary            # -> docs/results/convergence
    python -m fairseq_admin_evidence.convergence --schedule gentle --only multi30k_de_en-admin-18L-18L-s1111

Each run is ``recipes/run.sh multi30k METHOD LAYERS`` with one schedule for all (:data:`TABLE`): the paper's
initialization and optimizer (``PAPER_INIT=1``: fairseq 0.8's FFN init, padding counted, first batch profiled;
RAdam), Multi30k de→en, d 128 / ffn 512 / 4 heads. The schedule is the notes' regime A (lr 2e-3, warmup 50,
2048 tokens), where 18L Post-LN stalls early. fairseq's checkpoint_last and the recipe's markers make every run
resumable: ``run`` again after an interruption and each run continues where it stopped.

:data:`GENTLE` is the follow-up outside the table: the same runs with lr 1e-3 and warmup 300 (regime B's), to
tell whether what the table shows for a method comes from the method or from regime A's schedule.

``--skip-prepare`` is for a machine holding the prepared data (``work/convergence/data``) but not Multi30k, such as
a GPU machine (``scripts/convergence_on_gpu.sh``); its logs and results are read back by
``convergence_summary`` as a second device.

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
from pathlib import Path

from fairseq_admin_evidence.common import REPO, recipes_runner

ROOT = Path(os.environ.get("ADMIN_EVIDENCE_DIR", REPO))
"""Where the schedules keep ``work/`` (data, checkpoints, logs) and ``results/``: the repository, else
$ADMIN_EVIDENCE_DIR."""

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
"""One schedule for every run of the table. MAX_EPOCH 5 is the cap the ~8 CPU-hour budget allows on 2 cores."""

TASK = "multi30k_de_en"


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


@dataclass(frozen=True)
class Schedule:
    """A schedule (the recipe's environment) and where its runs keep their work, logs and results."""

    name: str
    env: dict[str, str]
    work: Path
    results: Path
    plan: tuple[Run, ...]

    @property
    def logs(self) -> Path:
        return self.work / "logs"


TABLE = Schedule("table", SCHEDULE, ROOT / "work" / "convergence", ROOT / "results" / "convergence", PLAN)
GENTLE = Schedule("gentle", {**SCHEDULE, "LR": "1e-3", "WARMUP": "300"}, ROOT / "work" / "convergence_gentle",
                  ROOT / "results" / "convergence_gentle", (Run("admin", 18, 1111), Run("preln", 18, 1111)))
"""The follow-up: 18L Admin and Pre-LN at regime B's lr and warmup, everything else as the table."""
MONITOR_ENV = {"MAX_UPDATE": "600", "TRAIN_ARGS": "--admin-monitor-interval 10"}
MONITOR_PLAN = (Run("admin", 18, 1111), Run("preln", 18, 1111))
MONITOR = Schedule("monitor", {**SCHEDULE, **MONITOR_ENV}, ROOT / "work" / "monitor", ROOT / "results" / "monitor",
                   MONITOR_PLAN)
MONITOR_GENTLE = Schedule("monitor_gentle", {**GENTLE.env, **MONITOR_ENV}, ROOT / "work" / "monitor_gentle",
                          ROOT / "results" / "monitor_gentle", MONITOR_PLAN)
"""The first 600 updates of 18L Admin and Pre-LN at the table's schedule and the gentle one, with the training
monitor every 10 updates (:mod:`fairseq_admin_evidence.monitor_diagnosis` reads them)."""
TABLE1_GPU_ENV = {
    "PAPER_INIT": "1", "DIM": "256", "FFN_DIM": "1024", "HEADS": "4",  # fp16: the recipe's default on a GPU
    "LR": "1e-3",  # the WMT'14 recipe's, whose 32k-token batch is the nearest to this one
    "WARMUP": "85",  # 8 % of the cap: 41 updates an epoch at 16384 tokens (Multi30k de-en, spm 8000), 25 epochs
    "MAX_TOKENS": "16384", "EFFECTIVE_TOKENS": "16384", "DROPOUT": "0.3", "MAX_EPOCH": "25", "MAX_UPDATE": "0",
    "SAVE_INTERVAL_UPDATES": "0", "AVG_LAST": "5",  # epoch checkpoints, the last 5 averaged
    "TRAIN_ARGS": "--patience 5 --admin-monitor-interval 100",  # stop after 5 epochs without a better valid loss
}
TABLE1_GPU_PLAN = (
    Run("admin", 18, 1111), Run("preln", 18, 1111), Run("postln", 18, 1111),
    Run("admin", 18, 2222), Run("preln", 18, 2222), Run("postln", 18, 2222),
    Run("admin-closed-form", 18, 1111), Run("deepnorm", 18, 1111),
    Run("admin", 6, 1111), Run("preln", 6, 1111), Run("postln", 6, 1111),
)
TABLE1_GPU = Schedule("table1_gpu", TABLE1_GPU_ENV, ROOT / "work" / "table1_gpu", ROOT / "results" / "table1_gpu",
                      TABLE1_GPU_PLAN)
"""Table 1 in Admin's own regime, every run side by side on one GPU (``scripts/table1_gpu.sh``): d 256, flat fp16
with the recipes' loss-scale flags, a warmup of 8 % of the run, up to 25 epochs or 5 without improvement."""
TABLE1_GPU_TOY = Schedule(
    "table1_gpu_toy", {**TABLE1_GPU_ENV, "DIM": "32", "FFN_DIM": "64", "HEADS": "2",
                       "MAX_TOKENS": "1024", "EFFECTIVE_TOKENS": "1024", "MAX_EPOCH": "2", "MAX_TRAIN_PAIRS": "300",
                       "TRAIN_ARGS": "--patience 5 --admin-monitor-interval 2", "GENERATE_ARGS": "--max-len-b 5"},
    ROOT / "work" / "table1_gpu_toy", ROOT / "results" / "table1_gpu_toy",
    (Run("admin", 2, 1111), Run("preln", 2, 1111)))
"""The CPU rehearsal of :data:`TABLE1_GPU` (CI runs it): two toy runs of a few updates, in fp32, by the same script."""
SCHEDULES = {schedule.name: schedule
             for schedule in (TABLE, GENTLE, MONITOR, MONITOR_GENTLE, TABLE1_GPU, TABLE1_GPU_TOY)}


def recipe_env(run: Run, threads: int, schedule: Schedule = TABLE) -> dict[str, str]:
    """The environment of one recipe run: ours, the schedule, the run's seed and its output folders."""
    env = dict(os.environ, **schedule.env)
    env.update(SEED=str(run.seed), ADMIN_WORK=str(schedule.work), RESULTS_DIR=str(schedule.results),
               OMP_NUM_THREADS=str(threads))
    env.pop("SEEDS", None)
    return env


def run_recipe(run: Run, threads: int, stage: str = "all", schedule: Schedule = TABLE) -> int:
    """Run (or resume) one cell; its output is appended to ``<logs>/<name>.log``. Returns the exit status."""
    schedule.logs.mkdir(parents=True, exist_ok=True)
    log = schedule.logs / f"{run.name}.log"
    command = ["nice", "-n", "10", "bash", str(recipes_runner()), "multi30k", run.method,
               str(run.layers), stage]
    print(f"convergence: {run.name}: {stage} (log {log})", flush=True)
    with open(log, "a", encoding="utf-8") as out:
        status = subprocess.run(command, env=recipe_env(run, threads, schedule), stdout=out,
                                stderr=subprocess.STDOUT).returncode
    print(f"convergence: {run.name}: {stage} exited {status}", flush=True)
    return status


def run_stages(run: Run, threads: int, schedule: Schedule = TABLE) -> int:
    """Profile, train and evaluate one cell (the recipe's stages after prepare). Returns the first failing status."""
    for stage in ("profile", "train", "eval"):
        status = run_recipe(run, threads, stage, schedule)
        if status != 0:
            return status
    return 0


def run_all(runs: Sequence[Run], jobs: int, threads: int, skip_prepare: bool = False,
            schedule: Schedule = TABLE) -> int:
    """Prepare the data once (unless ``skip_prepare``), then the runs ``jobs`` at a time.

    ``skip_prepare`` is for a machine that holds the prepared data (``<schedule's work>/data``) but not Multi30k
    itself, such as a GPU machine the data was carried to. Returns the number of runs that failed.
    """
    if not skip_prepare and run_recipe(runs[0], threads, "prepare", schedule) != 0:
        return len(runs)

    def one(run: Run) -> int:
        return run_stages(run, threads, schedule) if skip_prepare else run_recipe(run, threads, "all", schedule)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        statuses = list(pool.map(one, runs))
    return sum(status != 0 for status in statuses)


def prepare_and_profile(runs: Sequence[Run], threads: int, schedule: Schedule) -> int:
    """The CPU's part of a run made elsewhere: the data once and each Admin run's profile (fp32, as the recipe
    profiles). Returns the number of steps that failed."""
    if run_recipe(runs[0], threads, "prepare", schedule) != 0:
        return 1
    return sum(run_recipe(run, threads, "profile", schedule) != 0 for run in runs if run.method == "admin")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin_evidence.convergence", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="only these runs, in this order (names as in the plan)")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default=TABLE.name,
                        help="table (default): the table's schedule; gentle: the follow-up at lr 1e-3, warmup 300; "
                             "monitor, monitor_gentle: their first 600 updates of 18L Admin and Pre-LN, monitored; "
                             "table1_gpu (and its CPU rehearsal table1_gpu_toy): scripts/table1_gpu.sh's")
    parser.add_argument("--skip-prepare", action="store_true",
                        help="the data is already prepared under the schedule's work/.../data (e.g. carried to a GPU "
                             "machine without Multi30k): run each run's profile, train and eval stages only")
    parser.add_argument("--profile-only", action="store_true",
                        help="prepare the data and profile each Admin run, train nothing (what a GPU run carries)")
    args = parser.parse_args(argv)
    schedule = SCHEDULES[args.schedule]
    by_name = {run.name: run for run in schedule.plan}
    unknown = set(args.only or ()) - set(by_name)
    if unknown:
        parser.error(f"not in the {schedule.name} plan: {', '.join(sorted(unknown))}; "
                     f"the plan: {', '.join(by_name)}")
    runs = [by_name[name] for name in args.only] if args.only else list(schedule.plan)
    if args.profile_only:
        return prepare_and_profile(runs, args.threads, schedule)
    return run_all(runs, args.jobs, args.threads, args.skip_prepare, schedule)


if __name__ == "__main__":
    sys.exit(main())
