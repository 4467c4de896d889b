"""What one Admin training step costs against stock fairseq's, resolved to about 1 %: per-update time and profiles.

One process, the same batches, one fairseq ``Trainer`` per model (stock ``transformer_iwslt_de_en`` at the given
dims; ``transformer_admin`` with trainable ω, ``--init-type adaptive``; and with frozen ω,
``--admin-omega-fixed``), all seeded alike, and a second stock trainer, ``control``, whose ratio to stock is the
benchmark's own noise: the resolution of the other ratios. After ``--warmup`` untimed passes over the ``--block``
batches, the models take turns update by update: stock, admin, frozen, control on one batch, the reverse order on
the next, for ``--pairs`` repetitions. Each turn gives a ratio to stock per model; per (dim, threads) the median
and min–max over all turns, of wall time and of process CPU time, and the geometric mean with its 95 % interval,
of the whole update and of its forward and backward pass alone. Single updates scatter by ±10 % on a shared
machine, so 1 % takes many turns: short updates (few ``--max-tokens``) and many ``--pairs`` resolve it fastest, and
a stopped run goes on with ``--resume``. Two identical trainers can differ by a percent or two for as long as they
live; ``--rebuild-every K`` builds all of them afresh every K repetitions, in a rotated order, so that this offset
averages out as well. ``--profile-rounds N`` adds ``torch.profiler``
tables (N profiled passes per model, in turn): per operator the calls and the median self time per update, and the
difference to stock, i.e. the operators that make up the extra time. ``--device cuda`` runs on a GPU, in fp16.
Writes ``steps.csv``, ``summary.json``, ``ratios.png`` and ``profile_*``.

    python -m fairseq_admin_evidence.bench_step                          # d128 and d512, 1 and 2 threads
    python -m fairseq_admin_evidence.bench_step --dims 512 --threads 1 --profile-rounds 3
    python -m fairseq_admin_evidence.bench_step --max-tokens 256 --block 10 --pairs 100,36 --rebuild-every 10 --resume
    python -m fairseq_admin_evidence.bench_step --toy                    # CI size
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from fairseq_admin_evidence.bench_cost import COMMON, on_device
from fairseq_admin_evidence.data import ensure_data
from fairseq_admin_evidence.methods import model_flags
from fairseq_admin_evidence.outputs import (
    RESULTS,
    hardware,
    markdown_table,
    ratio_interval,
    read_csv,
    spread,
    write_csv,
    write_json,
)
from fairseq_admin_evidence.runs import fairseq_train
from fairseq_admin_tools.figures import pyplot, save_figure

MODELS = ("stock", "admin", "frozen", "control")
"""``control`` is a second stock trainer: control/stock is the benchmark's own noise, the resolution of the rest."""
PROFILED = MODELS[:3]
COMPARED = MODELS[1:]
STOCK_ARCH = "transformer_iwslt_de_en"


def _trainers(data: Path, out: Path, layers: int, dim: int, max_tokens: int, block: int, device: str,
              order: tuple[str, ...] = MODELS, samples: list | None = None):
    """{model: (trainer, model)}, built in ``order``, and the batches every model trains on (``samples`` if given)."""
    import torch
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    from fairseq_admin_evidence.in_process import batches, build_in_process

    size = model_flags(layers, dim, 4 * dim, max(1, dim // 32))
    common = [str(data), *on_device([a for a in COMMON if a != "--no-save"], device), *size,
              "--max-tokens", str(max_tokens), "--save-dir", str(out)]
    profile = out / "admin_profile.json"
    if not profile.exists():
        fairseq_train([*common, "--init-type", "adaptive-profiling", "--admin-profile", str(profile)],
                      out / "profile.log", progress=False)
    admin = ["--init-type", "adaptive", "--admin-profile", str(profile)]
    flags = {"stock": ["--arch", STOCK_ARCH], "admin": admin, "frozen": [*admin, "--admin-omega-fixed"],
             "control": ["--arch", STOCK_ARCH]}
    built = {}
    for name in order:
        torch.manual_seed(1)
        args, task, model = build_in_process([*common, *flags[name]])
        trainer = Trainer(convert_namespace_to_omegaconf(args), task, model, task.build_criterion(args))
        samples = samples or batches(task, model, args, "train", block, max_tokens)
        built[name] = (trainer, model)
    return {name: built[name] for name in MODELS}, samples


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


PHASES = {"forward_backward": ("task", "train_step"), "optimizer": ("optimizer", "step"),
          "clip": (None, "clip_grad_norm"), "zero_grad": ("optimizer", "zero_grad")}
"""The parts of fairseq's ``Trainer.train_step`` timed on their own: the forward and backward pass (the task's
``train_step``), the optimizer's step (where the per-parameter work for the ω vectors goes), gradient clipping and
zeroing."""


def _time_phases(trainer: Any) -> dict[str, float]:
    """Wrap the trainer's phases (:data:`PHASES`) so that each call adds its seconds to the returned dict."""
    seconds = dict.fromkeys(PHASES, 0.0)
    for phase, (owner, method) in PHASES.items():
        target = trainer if owner is None else getattr(trainer, owner)
        original = getattr(target, method)

        def timed(*args: Any, _original: Any = original, _phase: str = phase, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                seconds[_phase] += time.perf_counter() - start

        setattr(target, method, timed)
    return seconds


def _step(trainer: Any, sample: dict, phases: dict[str, float]) -> dict[str, float]:
    """Wall and process CPU seconds of one update (GPU work waited for), and of its phases."""
    for phase in phases:
        phases[phase] = 0.0
    _synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.train_step([sample])
    _synchronize()
    return {"seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu,
            **{f"{phase}_s": value for phase, value in phases.items()}}


def _block(trainer: Any, samples: list) -> None:
    for sample in samples:
        trainer.train_step([sample])
    _synchronize()


def _in_turn(turn: int, models: tuple[str, ...] = MODELS) -> tuple[str, ...]:
    """The order of one turn: stock, admin, frozen, control, then the reverse, so that drift hits every model alike;
    and every second turn the order is rotated by one, so that every model takes every place equally often. (Whoever
    runs first after a repetition's bookkeeping, or first on a batch larger than the one before, measurably runs
    slower: a fixed order gave stock that place in every even turn.)"""
    rotated = _rotated(models, turn // 2)
    return rotated if turn % 2 == 0 else tuple(reversed(rotated))


def _rotated(models: tuple[str, ...], shift: int) -> tuple[str, ...]:
    shift %= len(models)
    return models[shift:] + models[:shift]


def _profile(built: dict, samples: list, out: Path, tag: str, rounds: int) -> str:
    """Per-operator self time per update (median over ``rounds`` profiled blocks each, in turn) and calls per update,
    for every model; the table lists the operators whose calls differ from stock's or whose time differs most."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    times: dict[str, dict[str, list[float]]] = {name: {} for name in PROFILED}
    calls: dict[str, dict[str, float]] = {name: {} for name in PROFILED}
    for rep in range(rounds):
        for name in _in_turn(rep, PROFILED):
            with profile(activities=activities) as prof:
                _block(built[name][0], samples)
            averages = prof.key_averages()
            if rep == 0:
                (out / f"profile_{tag}_{name}.txt").write_text(
                    averages.table(sort_by="self_cpu_time_total", row_limit=40))
            for event in averages:
                times[name].setdefault(event.key, []).append(event.self_cpu_time_total / 1000 / len(samples))
                calls[name][event.key] = event.count / len(samples)
    median = {name: {op: statistics.median(v + [0.0] * (rounds - len(v))) for op, v in ops.items()}
              for name, ops in times.items()}
    rows = []
    for op in set(median["stock"]) | set(median["admin"]) | set(median["frozen"]):
        ms = [median[m].get(op, 0.0) for m in PROFILED]
        n = [calls[m].get(op, 0.0) for m in PROFILED]
        rows.append([op, *(int(c) if c == int(c) else round(c, 1) for c in n), round(ms[0], 2), round(ms[1] - ms[0], 2),
                     round(ms[2] - ms[0], 2)])
    structural = [r for r in rows if r[1] != r[2] or r[1] != r[3]]
    by_time = sorted((r for r in rows if r not in structural), key=lambda r: -max(abs(r[5]), abs(r[6])))
    structural.sort(key=lambda r: -max(abs(r[5]), abs(r[6])))
    totals = [sum(median[m].values()) for m in PROFILED]
    table_rows = structural + by_time[:12] + [["(all operators)", "", "", "", round(totals[0], 1),
                                               round(totals[1] - totals[0], 1), round(totals[2] - totals[0], 1)]]
    table = markdown_table(["operator", "calls/update stock", "admin", "frozen ω", "stock ms/update",
                            "admin − stock", "frozen − stock"], table_rows)
    (out / f"profile_{tag}_difference.md").write_text(
        f"Self CPU time per update, median of {rounds} profiled blocks of {len(samples)} updates per model, in turn. "
        "First the operators whose call counts differ from stock's, then the largest other differences (noise).\n\n"
        + table + "\n")
    return table


def build_order(rep: int, rebuild_every: int) -> tuple[str, ...]:
    """The order the trainers of repetition ``rep`` were built in: :data:`MODELS`, rotated by one at every rebuild."""
    return _rotated(MODELS, rep // rebuild_every if rebuild_every else 0)


def _done_rows(path: Path) -> list[dict[str, Any]]:
    """The rows a stopped run of this setting wrote (``--resume``), typed as :func:`measure` makes them."""
    if not path.exists():
        return []
    return read_csv(path, text=("model",), ints=("dim", "threads", "rep", "batch"))


def measure(data: Path, out: Path, layers: int, dim: int, threads: int, max_tokens: int, block: int, pairs: int,
            warmup: int, profile_rounds: int, device: str, resume: bool = False, rebuild_every: int = 0
            ) -> list[dict[str, Any]]:
    """One row per timed update. Models take turns update by update (stock, admin, frozen on a batch, then the
    reverse order on the next), so that the three updates compared are seconds apart: the machine's drift and
    bursts of other load hit them alike. Python's garbage collector waits until a repetition is done.

    The rows so far are written after every repetition (``steps_d<dim>_<threads>t.csv``); with ``resume`` a run
    goes on from the repetitions such a file already holds (turns are paired within themselves, so a restart
    between repetitions changes nothing but the warm-up).

    Two identical trainers can differ by a percent or two for as long as they live (where their tensors landed), and
    such an offset does not shrink with more turns. With ``rebuild_every`` k, every k repetitions all trainers are
    built afresh (same seed, same weights) in a rotated order and warmed up again, so that those offsets vary and
    average out too."""
    import gc

    import torch

    partial_csv = out / f"steps_d{dim}_{threads}t.csv"
    rows = _done_rows(partial_csv) if resume else []
    first = max((r["rep"] for r in rows), default=-1) + 1
    if first >= pairs:
        return rows
    torch.set_num_threads(threads)
    built, phases, samples = {}, {}, None
    for rep in range(first, pairs):
        if rep == first or (rebuild_every and rep % rebuild_every == 0):
            built.clear()
            gc.collect()
            order = build_order(rep, rebuild_every)
            print(f"  d{dim} {threads}t rep {rep + 1}: building the trainers in the order {', '.join(order)}",
                  flush=True)
            built, samples = _trainers(data, out / f"d{dim}", layers, dim, max_tokens, block, device, order, samples)
            phases = {name: _time_phases(trainer) for name, (trainer, _) in built.items()}
            for _ in range(warmup):  # the allocator, kernels and optimizer state settle
                for trainer, _ in built.values():
                    _block(trainer, samples)
        gc.collect()
        gc.disable()
        try:
            for index, sample in enumerate(samples):
                for name in _in_turn(rep * len(samples) + index):
                    rows.append({"dim": dim, "threads": threads, "rep": rep, "batch": index, "model": name,
                                 **_step(built[name][0], sample, phases[name])})
        finally:
            gc.enable()
        mine = [r for r in rows if r["rep"] == rep]
        ms = {m: 1000 * sum(r["seconds"] for r in mine if r["model"] == m) / len(samples) for m in MODELS}
        write_csv(partial_csv, rows)
        print(f"  d{dim} {threads}t rep {rep + 1}/{pairs}: " + ", ".join(f"{m} {v:.1f}" for m, v in ms.items())
              + " ms/update", flush=True)
    if profile_rounds:
        print(_profile(built, samples, out, f"d{dim}_{threads}t", profile_rounds), flush=True)
    return rows


def _turn_ratios(rows: list[dict[str, Any]], model: str, key: str) -> dict[tuple[int, int], float]:
    by_turn: dict[tuple[int, int], dict[str, float]] = {}
    for row in rows:
        by_turn.setdefault((row["rep"], row["batch"]), {})[row["model"]] = row[key]
    return {turn: times[model] / times["stock"] for turn, times in sorted(by_turn.items())}


def ratios(rows: list[dict[str, Any]], model: str, key: str = "seconds") -> list[float]:
    """model/stock per (repetition, batch): the updates of the models on one batch, taken in turn."""
    return list(_turn_ratios(rows, model, key).values())


def instance_ratios(rows: list[dict[str, Any]], model: str, rebuild_every: int, key: str = "seconds") -> list[float]:
    """model/stock per set of trainer instances (the repetitions between two rebuilds): the geometric mean of its
    turns. An instance's offset is shared by all its turns, so with rebuilds these are the independent samples."""
    by_instance: dict[int, list[float]] = {}
    for (rep, _), ratio in _turn_ratios(rows, model, key).items():
        by_instance.setdefault(rep // rebuild_every, []).append(ratio)
    return [statistics.geometric_mean(values) for _, values in sorted(by_instance.items())]


def headline(setting: dict[str, Any], model: str) -> dict[str, float]:
    """The interval a setting resolves: over its trainer instances where it rebuilt them, else over its turns."""
    return setting.get(f"{model}_over_stock_instances") or setting[f"{model}_over_stock_interval"]


def phase_medians(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per model, the median milliseconds of each phase of an update (:data:`PHASES`)."""
    return {model: {phase: round(1000 * statistics.median(r[f"{phase}_s"] for r in rows if r["model"] == model), 2)
                    for phase in PHASES} for model in MODELS}


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    """Left: every turn's ratio (how single updates scatter). Right: the geometric means with their 95 % intervals
    (what the turns together resolve; over the trainer instances where they were rebuilt), on an axis that shows
    1 %."""
    plt = pyplot()
    fig, (turns, means) = plt.subplots(1, 2, figsize=(11, 3.8))
    labels = [f"d{s['dim']} {s['threads']}t" for s in summary]
    labels_of = {"admin": "Admin, trainable ω", "frozen": "Admin, frozen ω", "control": "stock again (noise)"}
    for offset, (model, marker) in enumerate((("admin", "o"), ("frozen", "s"), ("control", "x"))):
        for i, s in enumerate(summary):
            values, x = s[f"{model}_over_stock"]["all"], i + 0.2 * (offset - 1)
            turns.plot([x] * len(values), values, marker, alpha=0.15, color=f"C{offset}")
            interval = headline(s, model)
            means.errorbar(x, interval["geo_mean"], yerr=[[interval["geo_mean"] - interval["low"]],
                                                          [interval["high"] - interval["geo_mean"]]],
                           fmt=marker, ms=8, capsize=4, color=f"C{offset}",
                           label=labels_of[model] if i == 0 else None)
    rebuilt = any(f"{m}_over_stock_instances" in s for s in summary for m in COMPARED)
    for ax, title in ((turns, "each turn"), (means, "geometric mean, 95 % interval"
                                             + (" over trainer instances" if rebuilt else ""))):
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_title(title)
    turns.set_ylabel("time per update / stock's")
    means.axhspan(0.99, 1.01, color="gray", alpha=0.12, lw=0)
    means.legend(fontsize=8)
    fig.suptitle("One training step, the same batch, models in turn")
    save_figure(fig, path)


def _instance_intervals(rows: list[dict[str, Any]], rebuild_every: int) -> dict[str, Any]:
    """With rebuilt trainers: the number of instances and, per model, the interval over them (whole update, and
    forward and backward only)."""
    if not rebuild_every:
        return {}
    instances = {m: instance_ratios(rows, m, rebuild_every) for m in COMPARED}
    if len(instances["admin"]) < 2:
        return {}
    return {"instances": len(instances["admin"]),
            **{f"{m}_over_stock_instances": ratio_interval(values) for m, values in instances.items()},
            **{f"{m}_forward_backward_over_stock_instances":
               ratio_interval(instance_ratios(rows, m, rebuild_every, "forward_backward_s")) for m in COMPARED}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin_evidence.bench_step",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="fairseq data-bin (default: prepare Multi30k)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_step")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--dims", default="128,512")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--max-tokens", default="2048,1024", help="per dim (comma-separated), or one for all")
    parser.add_argument("--block", type=int, default=3, help="batches (each repetition times every model on each)")
    parser.add_argument("--pairs", default="8", help="repetitions, per dim (comma-separated), or one for all")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes over the batches per model first")
    parser.add_argument("--profile-rounds", type=int, default=0,
                        help="also a torch.profiler difference table per setting, over this many blocks per model")
    parser.add_argument("--rebuild-every", type=int, default=0,
                        help="build all trainers afresh, in a rotated order, every N repetitions (0: never), so that "
                             "the offset of one trainer instance against another averages out")
    parser.add_argument("--resume", action="store_true",
                        help="go on from the repetitions a stopped run left in OUT/steps_d<dim>_<threads>t.csv")
    parser.add_argument("--toy", action="store_true", help="tiny sizes (CI)")
    args = parser.parse_args(argv)
    if args.toy:
        args.layers, args.dims, args.threads, args.max_tokens, args.block, args.pairs = 2, "32", "1", "512", 2, "2"
        args.warmup, args.profile_rounds, args.rebuild_every = 1, 2, 1
    return args


def per_dim(values: str, dims: list[int]) -> list[int]:
    """A comma-separated option with one value per dim, or one value for all."""
    numbers = [int(v) for v in values.split(",")]
    return numbers[:len(dims)] if len(numbers) >= len(dims) else [numbers[0]] * len(dims)


def _cell(values: dict[str, Any]) -> str:
    return f"{values['median']:.4f} ({values['min']:.4f}–{values['max']:.4f})"


def _interval(values: dict[str, Any]) -> str:
    return f"{values['geo_mean']:.4f} [{values['low']:.4f}, {values['high']:.4f}]"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = args.data or ensure_data()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, summary = [], []
    dims = [int(d) for d in args.dims.split(",")]
    for dim, max_tokens, pairs in zip(dims, per_dim(args.max_tokens, dims), per_dim(args.pairs, dims), strict=True):
        for threads in map(int, args.threads.split(",")):
            measured = measure(data, args.out, args.layers, dim, threads, max_tokens, args.block, pairs,
                               args.warmup, args.profile_rounds, args.device, args.resume, args.rebuild_every)
            rows += measured
            summary.append({
                "dim": dim, "threads": threads, "max_tokens": max_tokens, "pairs": pairs, "block": args.block,
                "rebuild_every": args.rebuild_every,
                "turns": len(ratios(measured, "admin")),
                **{f"{m}_over_stock": spread(ratios(measured, m)) for m in COMPARED},
                **{f"{m}_over_stock_cpu": spread(ratios(measured, m, "cpu_seconds")) for m in COMPARED},
                **{f"{m}_over_stock_interval": ratio_interval(ratios(measured, m)) for m in COMPARED},
                **{f"{m}_forward_backward_over_stock_interval":
                   ratio_interval(ratios(measured, m, "forward_backward_s")) for m in COMPARED},
                **_instance_intervals(measured, args.rebuild_every),
                "stock_ms": round(1000 * statistics.median(r["seconds"] for r in measured if r["model"] == "stock"),
                                  1),
                "phase_ms": phase_medians(measured)})
    write_csv(args.out / "steps.csv", rows)
    write_json(args.out / "summary.json", {"device": args.device, "hardware": hardware(args.device),
                                           "layers": args.layers,
                                           "warmup_blocks": args.warmup, "settings": summary})
    plot(summary, args.out / "ratios.png")
    print(markdown_table(["dim", "threads", "max tokens", "turns", "stock ms/update", "admin/stock median (min–max)",
                          "frozen ω/stock", "control (stock again)/stock", "admin/stock CPU time"],
                         [[s["dim"], s["threads"], s["max_tokens"], s["turns"], s["stock_ms"],
                           *(_cell(s[f"{m}_over_stock"]) for m in COMPARED), _cell(s["admin_over_stock_cpu"])]
                          for s in summary]))
    print(markdown_table(["dim", "threads", "turns", *(f"{m}/stock geometric mean [95 % interval]" for m in COMPARED),
                          *(f"{m}/stock, forward and backward only" for m in COMPARED[:2])],
                         [[s["dim"], s["threads"], s["turns"],
                           *(_interval(s[f"{m}_over_stock_interval"]) for m in COMPARED),
                           *(_interval(s[f"{m}_forward_backward_over_stock_interval"]) for m in COMPARED[:2])]
                          for s in summary]))
    rebuilt = [s for s in summary if "instances" in s]
    if rebuilt:
        print(markdown_table(["dim", "threads", "instances", *(f"{m}/stock over instances [95 % interval]"
                                                               for m in COMPARED),
                              *(f"{m}/stock, forward and backward only" for m in COMPARED[:2])],
                             [[s["dim"], s["threads"], s["instances"],
                               *(_interval(s[f"{m}_over_stock_instances"]) for m in COMPARED),
                               *(_interval(s[f"{m}_forward_backward_over_stock_instances"]) for m in COMPARED[:2])]
                              for s in rebuilt]))
    print(markdown_table(["dim", "threads", "model", *(f"{phase} ms" for phase in PHASES)],
                         [[s["dim"], s["threads"], model, *s["phase_ms"][model].values()]
                          for s in summary for model in MODELS]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
