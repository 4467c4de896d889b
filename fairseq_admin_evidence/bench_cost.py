"""What Admin costs: training throughput against stock fairseq, and the profiling pass's time and memory.

1. Throughput: ``transformer_admin --init-type adaptive`` against stock fairseq ``transformer`` (the
   ``transformer_iwslt_de_en`` architecture with the same dims), same data and flags, real
   ``fairseq-train`` subprocesses, interleaved (stock, admin, admin, stock, ...) so that load from other
   users of the machine hits both alike. Throughput is fairseq's own ``wps`` of each ``train_inner``
   interval after the first (warm-up excluded); the ratio admin/stock is taken per repetition. Also per
   repetition: the whole process's wall time and CPU seconds (startup, model build, data loading and the
   ω set-up included; the same command bar the model flags), for a "before and after" of a change.
2. Profiling cost at ``transformer_wmt_en_de`` dims (d512, ffn 2048, 8 heads), 6L-6L, 18L-18L, 100L-100L:
   * the real ``--init-type adaptive-profiling`` subprocess: wall time, the profiling time fairseq logs,
     and the process's peak RSS (``os.wait4`` rusage ``ru_maxrss``); for the smaller sizes also a
     one-update ``fairseq-train`` subprocess (Adam) for comparison;
   * in-process, on one model and one batch, the memory each step adds over the built model (Linux
     VmHWM after resetting it via /proc/self/clear_refs): Admin's ``profile_model`` (forward only,
     ``torch.no_grad``) against one training forward+backward (activations kept, plus gradients).

    python -m fairseq_admin_evidence.bench_cost          # ~20 min on 2 quiet cores (100L-100L profiling included)
    python -m fairseq_admin_evidence.bench_cost --toy    # CI size
"""

from __future__ import annotations

import argparse
import gc
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from fairseq_admin_evidence.data import ensure_data
from fairseq_admin_evidence.fairseq_logs import parse_fairseq_log
from fairseq_admin_evidence.in_process import batches, build_in_process
from fairseq_admin_evidence.methods import model_flags
from fairseq_admin_evidence.outputs import RESULTS, hardware, markdown_table, spread, write_csv, write_json
from fairseq_admin_evidence.runs import fairseq_train
from fairseq_admin_tools.figures import pyplot, save_figure

COMMON = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt",
          "--warmup-updates", "50", "--warmup-init-lr", "1e-7", "--criterion", "label_smoothed_cross_entropy",
          "--label-smoothing", "0.1", "--seed", "1", "--cpu", "--num-workers", "0", "--no-progress-bar",
          "--log-format", "json", "--disable-validation", "--no-save"]


def on_device(flags: list[str], device: str) -> list[str]:
    """fairseq flags for a device: as they are on CPU; on a GPU without ``--cpu``, with ``--fp16`` (Admin's regime)."""
    return list(flags) if device == "cpu" else [*(f for f in flags if f != "--cpu"), "--fp16"]


TOY_ARCH_FLAGS = ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
                  "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]
MIB = 1024.0


def timed_run(argv: list[str], log: Path) -> dict[str, Any]:
    """One ``fairseq-train`` run: its mean ``wps`` after the first interval (warm-up excluded), wall and CPU seconds."""
    run = fairseq_train(argv, log, progress=False)
    intervals, _ = parse_fairseq_log(log)
    wps = [r["wps"] for r in intervals[1:]] or [r["wps"] for r in intervals]
    return {"wps": statistics.mean(wps), "intervals": len(wps), "seconds": run.seconds, "cpu_s": run.cpu_seconds}


def interleaved(variants: dict[str, list[str]], train: list[str], out: Path, reps: int) -> list[dict[str, Any]]:
    """Each variant's flags added to ``train``, once per repetition, in alternating order (A B, B A, ...) so that
    load from other users of the machine hits all alike; one row per run (``rep``, ``model``, :func:`timed_run`)."""
    names = list(variants)
    rows = []
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            rows.append({"rep": rep, "model": name,
                         **timed_run([*train, *variants[name]], out / f"{name}_{rep}.log")})
            print(f"  rep {rep} {name:>9}: {rows[-1]['wps']:.0f} tokens/s ({rows[-1]['seconds']:.1f} s)", flush=True)
    return rows


def throughput(data: Path, out: Path, size: list[str], stock_size: list[str], max_tokens: int, updates: int,
               log_interval: int, reps: int, device: str = "cpu", old_user_dir: Path | None = None,
               frozen: bool = False) -> list[dict[str, Any]]:
    """Interleaved stock/admin runs; one row per run with its mean post-warm-up wps.

    ``old_user_dir``: another version of the plugin (a checkout of an earlier commit), run as a third model
    ``old``, profiled by its own code, for a before-and-after of a change in the same run. ``frozen``: also Admin
    with ``--admin-omega-fixed``.
    """
    train = [str(data), *on_device(COMMON, device), "--max-tokens", str(max_tokens), "--max-update", str(updates),
             "--log-interval", str(log_interval)]
    profile = out / "throughput" / "admin_profile.json"
    if profile.exists():
        profile.unlink()
    fairseq_train([*train, *size, "--init-type", "adaptive-profiling", "--admin-profile", str(profile),
                   "--save-dir", str(out / "throughput")], out / "throughput" / "profile.log", progress=False)
    runs = {"stock": stock_size, "admin": [*size, "--init-type", "adaptive", "--admin-profile", str(profile)]}
    if frozen:
        runs["frozen"] = [*runs["admin"], "--admin-omega-fixed"]
    if old_user_dir is not None:
        old = ["--user-dir", str(old_user_dir)]
        old_profile = out / "throughput" / "old" / "admin_profile.json"
        old_profile.unlink(missing_ok=True)
        fairseq_train([*train, *size, *old, "--init-type", "adaptive-profiling", "--admin-profile", str(old_profile),
                       "--save-dir", str(old_profile.parent)], old_profile.parent / "profile.log", progress=False)
        runs["old"] = [*size, *old, "--init-type", "adaptive", "--admin-profile", str(old_profile)]
    return interleaved(runs, train, out / "throughput", reps)


def _proc_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next peak is this step's own."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class MemoryProbe:
    """Current and peak memory in KiB, and a peak reset: the process's RSS (Linux VmRSS/VmHWM) on CPU, the CUDA
    caching allocator's allocated bytes on a GPU."""

    def __init__(self, device: str) -> None:
        self.device = device

    def reset(self) -> None:
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            _reset_peak()

    def current(self) -> int:
        if self.device == "cuda":
            import torch

            return torch.cuda.memory_allocated() // 1024
        return _proc_kib("VmRSS")

    def peak(self) -> int:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() // 1024
        return _proc_kib("VmHWM")


def in_process_memory(data: Path, layers: int, max_tokens: int, arch_flags: list[str],
                      device: str = "cpu") -> dict[str, Any]:
    """Extra peak memory over the built model: Admin's forward-only profiling vs one forward+backward."""
    argv = [str(data), "--arch", "transformer_admin_wmt_en_de", "--encoder-layers", str(layers),
            "--decoder-layers", str(layers), "--share-all-embeddings", "--init-type", "default",
            "--max-tokens", str(max_tokens), "--admin-profile-tokens", str(max_tokens),
            *(["--cpu"] if device == "cpu" else []),
            "--num-workers", "0", "--seed", "1", "--criterion", "label_smoothed_cross_entropy",
            "--label-smoothing", "0.1", *arch_flags]
    args, task, model = build_in_process(argv)
    from fairseq_admin.profiling import profile_model

    criterion = task.build_criterion(args)
    sample = batches(task, model, args, "train", 1, max_tokens, seed=1)[0]
    params = sum(p.numel() * p.element_size() for p in model.parameters()) // 1024
    if device == "cuda":
        from fairseq import utils

        model.cuda()
        sample = utils.move_to_cuda(sample)
    probe = MemoryProbe(device)
    probe.reset()
    base = probe.current()
    start = time.perf_counter()
    profile = profile_model(model, args, task)
    profiling_s = time.perf_counter() - start
    profiling_extra = probe.peak() - base
    probe.reset()
    base = probe.current()
    start = time.perf_counter()
    model.train()
    loss, _, _ = criterion(model, sample)
    loss.backward()
    probe.peak()  # waits for the GPU
    train_s = time.perf_counter() - start
    train_extra = probe.peak() - base
    return {"layers": layers, "device": device, "params_kib": params, "profile_tokens": profile.data.tokens,
            "batch_tokens": int(sample["ntokens"]), "profiling_s": profiling_s, "profiling_extra_kib": profiling_extra,
            "fwd_bwd_s": train_s, "fwd_bwd_extra_kib": train_extra}


def profiling_subprocesses(data: Path, out: Path, layers: int, max_tokens: int, train_up_to: int,
                           arch_flags: list[str], device: str = "cpu") -> dict[str, Any]:
    """The real profiling subprocess at one depth (and, up to ``train_up_to``, a one-update training one)."""
    size = ["--arch", "transformer_admin_wmt_en_de", "--encoder-layers", str(layers), "--decoder-layers",
            str(layers), "--share-all-embeddings", *arch_flags]
    base = [str(data), *size, *on_device(COMMON, device), "--max-tokens", str(max_tokens), "--admin-profile-tokens",
            str(max_tokens), "--max-update", "1", "--log-interval", "1"]
    run_dir = out / "profiling" / f"{layers}L"
    profile = run_dir / "admin_profile.json"
    if profile.exists():
        profile.unlink()
    log = run_dir / "profile.log"
    run = fairseq_train([*base, "--init-type", "adaptive-profiling", "--admin-profile", str(profile),
                         "--save-dir", str(run_dir)], log, progress=False)
    match = re.search(r"on (\d+) tokens .* in ([\d.]+)s", log.read_text())
    row: dict[str, Any] = {"layers": layers, "profile_tokens": int(match.group(1)) if match else -1,
                           "profiling_s": float(match.group(2)) if match else float("nan"),
                           "profiling_wall_s": run.seconds, "profiling_peak_rss_kib": run.peak_rss_kib,
                           "train1_wall_s": float("nan"), "train1_peak_rss_kib": -1}
    print(f"  {layers}L-{layers}L profiling subprocess: {row['profiling_s']:.1f}s profiling, "
          f"{run.seconds:.0f}s wall, peak RSS {run.peak_rss_kib / 1024:.0f} MiB", flush=True)
    if layers <= train_up_to:
        # --data-buffer-size 0: a one-update run can exit while fairseq's batch-prefetch thread is still in torch,
        # which aborts the process ("terminate called without an active exception") after training succeeded.
        run = fairseq_train([*base, "--init-type", "adaptive", "--admin-profile", str(profile), "--save-dir",
                             str(run_dir), "--data-buffer-size", "0"], run_dir / "train1.log", progress=False)
        row.update(train1_wall_s=run.seconds, train1_peak_rss_kib=run.peak_rss_kib)
        print(f"  {layers}L-{layers}L one-update training subprocess: {run.seconds:.0f}s wall, "
              f"peak RSS {run.peak_rss_kib / 1024:.0f} MiB", flush=True)
    return row


def profiling_cost(data: Path, out: Path, layers_list: list[int], max_tokens: int, train_up_to: int,
                   arch_flags: list[str], device: str = "cpu") -> list[dict[str, Any]]:
    rows = []
    for layers in layers_list:
        row = profiling_subprocesses(data, out, layers, max_tokens, train_up_to, arch_flags, device)
        mem = in_process_memory(data, layers, max_tokens, arch_flags, device)
        row.update({f"inproc_{k}": v for k, v in mem.items() if k != "layers"})
        print(f"  {layers}L-{layers}L in-process: params {mem['params_kib'] / 1024:.0f} MiB; profiling +"
              f"{mem['profiling_extra_kib'] / 1024:.0f} MiB ({mem['profiling_s']:.1f}s), forward+backward +"
              f"{mem['fwd_bwd_extra_kib'] / 1024:.0f} MiB ({mem['fwd_bwd_s']:.1f}s)", flush=True)
        rows.append(row)
        gc.collect()
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin_evidence.bench_cost",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="fairseq data-bin (default: prepare Multi30k)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_cost")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: the same runs on a GPU, in fp16 (--fp16), memory from the CUDA allocator")
    parser.add_argument("--reps", type=int, default=5, help="throughput repetitions (each: one stock, one admin)")
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--log-interval", type=int, default=5,
                        help="wps is averaged over the intervals after the first")
    parser.add_argument("--tp-layers", type=int, default=6)
    parser.add_argument("--tp-dim", type=int, default=128)
    parser.add_argument("--tp-max-tokens", type=int, default=2048)
    parser.add_argument("--profile-layers", default="6,18,100")
    parser.add_argument("--profile-max-tokens", type=int, default=512)
    parser.add_argument("--train-up-to", type=int, default=18,
                        help="also run a one-update training subprocess up to this depth (100L Adam needs ~12 GB)")
    parser.add_argument("--old-user-dir", type=Path, default=None,
                        help="throughput: also this version of the plugin (e.g. an earlier commit's fairseq_admin/)")
    parser.add_argument("--with-frozen", action="store_true", help="throughput: also Admin with frozen ω")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-profiling", action="store_true")
    parser.add_argument("--toy", action="store_true", help="tiny sizes, one repetition (CI)")
    args = parser.parse_args(argv)
    args.arch_flags = []
    if args.toy:
        args.reps, args.updates, args.log_interval = 1, 4, 2
        args.tp_layers, args.tp_dim, args.tp_max_tokens = 1, 32, 512
        args.profile_layers, args.profile_max_tokens, args.train_up_to = "1", 256, 1
        args.arch_flags = TOY_ARCH_FLAGS
    return args


def admin_over_stock(rows: list[dict[str, Any]], key: str, model: str = "admin") -> list[float]:
    """Per repetition: ``model``'s ``key`` over stock's."""
    return [a[key] / s[key] for a, s in zip([r for r in rows if r["model"] == model],
                                            [r for r in rows if r["model"] == "stock"], strict=True)]


def plot_throughput(rows: list[dict[str, Any]], title: str, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = {"stock": "stock (transformer_iwslt_de_en)", "admin": "admin (transformer_admin adaptive)",
              "old": "admin, the --old-user-dir version", "frozen": "admin, frozen ω"}
    for name, color in (("stock", "tab:red"), ("admin", "tab:green"), ("frozen", "tab:blue"), ("old", "tab:gray")):
        mine = [r for r in rows if r["model"] == name]
        if mine:
            ax.plot([r["rep"] for r in mine], [r["wps"] for r in mine], "o-", color=color, label=labels[name])
    ax.set_xlabel("repetition (runs interleaved)")
    ax.set_ylabel("training tokens/s (fairseq wps)")
    ax.set_title(title)
    ax.legend()
    save_figure(fig, path)


def report_throughput(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """Part 1: the interleaved runs, throughput.csv/.png, the table; returns summary.json's "throughput"."""
    ffn, heads = 4 * args.tp_dim, max(1, args.tp_dim // 32)
    size = model_flags(args.tp_layers, args.tp_dim, ffn, heads)
    stock = ["--arch", "transformer_iwslt_de_en", *size[2:]]
    rows = throughput(data, args.out, size, stock, args.tp_max_tokens, args.updates, args.log_interval, args.reps,
                      args.device, args.old_user_dir, args.with_frozen)
    write_csv(args.out / "throughput.csv", rows)
    ratios, cpu, wall = (admin_over_stock(rows, key) for key in ("wps", "cpu_s", "seconds"))
    summary = {"size": f"{args.tp_layers}L-{args.tp_layers}L d{args.tp_dim} ffn{ffn}",
               "max_tokens": args.tp_max_tokens, "updates": args.updates, "ratio_admin_over_stock": spread(ratios),
               # Whole runs (startup included): a contention-robust cross-check of the wps ratio, not a rate.
               "cpu_seconds_ratio_admin_over_stock": spread(cpu), "wall_seconds_ratio_admin_over_stock": spread(wall),
               "commands": {name: (args.out / "throughput" / f"{name}_0.log").read_text().splitlines()[0]
                            .removeprefix("# ") for name in ("stock", "admin")}}
    for other in ("frozen", "old"):
        if any(r["model"] == other for r in rows):
            summary.update({f"{key}_{other}_over_stock": spread(admin_over_stock(rows, field, other))
                            for key, field in (("ratio", "wps"), ("cpu_seconds_ratio", "cpu_s"),
                                               ("wall_seconds_ratio", "seconds"))})
    if args.old_user_dir is not None:
        summary["old_user_dir"] = str(args.old_user_dir)
    plot_throughput(rows, f"{summary['size']}, max-tokens {args.tp_max_tokens}; ratio median "
                          f"{statistics.median(ratios):.3f}", args.out / "throughput.png")
    print(markdown_table(["size", "stock wps (median)", "admin wps (median)", "wps ratio min", "wps ratio median",
                          "wps ratio max", "wall ratio median", "CPU s ratio median"],
                         [[summary["size"], statistics.median(r["wps"] for r in rows if r["model"] == "stock"),
                           statistics.median(r["wps"] for r in rows if r["model"] == "admin"),
                           min(ratios), statistics.median(ratios), max(ratios), statistics.median(wall),
                           statistics.median(cpu)]]), flush=True)
    return summary


def plot_profiling_memory(rows: list[dict[str, Any]], max_tokens: int, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["inproc_profiling_extra_kib"] / MIB for r in rows], 0.4,
           label="profiling (forward, no_grad)")
    ax.bar([i + 0.2 for i in x], [r["inproc_fwd_bwd_extra_kib"] / MIB for r in rows], 0.4,
           label="training forward+backward")
    ax.set_xticks(list(x), [f"{r['layers']}L" for r in rows])
    ax.set_ylabel("peak memory over the built model (MiB)")
    ax.set_title(f"transformer_wmt_en_de dims, one batch of {max_tokens} tokens")
    ax.legend()
    save_figure(fig, path)


def report_profiling(args: argparse.Namespace, data: Path) -> list[dict[str, Any]]:
    """Part 2: profiling cost per depth, profiling.csv, the table and profiling_memory.png."""
    layers = [int(x) for x in args.profile_layers.split(",")]
    rows = profiling_cost(data, args.out, layers, args.profile_max_tokens, args.train_up_to, args.arch_flags,
                          args.device)
    write_csv(args.out / "profiling.csv", rows)
    print(markdown_table(
        ["size", "profiling s", "profiling peak RSS MiB", "1-update train peak RSS MiB", "params MiB",
         "profiling extra MiB", "fwd+bwd extra MiB"],
        [[f"{r['layers']}L-{r['layers']}L", r["profiling_s"], r["profiling_peak_rss_kib"] / MIB,
          r["train1_peak_rss_kib"] / MIB if r["train1_peak_rss_kib"] > 0 else "-",
          r["inproc_params_kib"] / MIB, r["inproc_profiling_extra_kib"] / MIB,
          r["inproc_fwd_bwd_extra_kib"] / MIB] for r in rows]), flush=True)
    plot_profiling_memory(rows, args.profile_max_tokens, args.out / "profiling_memory.png")
    return rows


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(1)
    data = args.data or ensure_data()
    summary: dict[str, Any] = {"device": args.device, "hardware": hardware(args.device)}
    if not args.skip_throughput:
        summary["throughput"] = report_throughput(args, data)
    if not args.skip_profiling:
        summary["profiling"] = report_profiling(args, data)
    write_json(args.out / "summary.json", summary)
    print(f"wrote {args.out}/", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
