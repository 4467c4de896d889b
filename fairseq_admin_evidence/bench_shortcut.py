"""What Admin adds to a training step beyond stock's, part by part: each residual connection, in microseconds per
branch (the kept code and the alternatives measured against it), and fairseq's per-parameter work for the ω vectors.

A whole update (``bench_step``) scatters by several percent from turn to turn, so it resolves Admin's cost only
to about 1 %. This isolates the part that differs: a stack of ``--layers`` Post-LN residual branches at the model's
width, ``x ← LN(shortcut(x, x ⊙ a))`` (one cheap branch, so the shortcut's work is a large share of the time),
forward and backward, with each way of computing the shortcut in turn (the order rotated by one every repetition):

* ``stock``: fairseq's ``residual + x``;
* ``frozen`` and ``trainable``: :class:`~fairseq_admin.layers.AdminShortcut` as it is, ω frozen or trainable
  (one fused ``addcmul``; for a trainable ω autograd's backward first copies the shortcut, ``shortcut * 1``);
* ``mul_add`` (not kept): a trainable ω as ``shortcut * ω`` with the branch added in place: no copy backward, one
  more pass forward;
* ``function`` (not kept): a trainable ω through a Python ``autograd.Function`` (``addcmul`` forward; backward
  ``grad * ω`` and ``(grad * shortcut)`` summed), the fewest native ops; in fairseq-train its backward also waits
  for the GIL (docs/results.md section 10).

Per variant the extra time per branch over stock, with a 95 % interval over the repetitions' paired differences.
Then the fixed cost of trainable ω vectors (``--vectors``, 28 in a 6L-6L model: the first branch of each side keeps
ω = 1): fairseq's gradient scaling, clipping norm, optimizer step and zeroing loop over parameters in Python, so
each vector costs the same whatever its size; timed on those vectors alone, with fairseq's ``adam`` (bench_step's)
and our ``radam`` (the recipes'). The branches' cost times their count plus the vectors', over a model's update
time, estimates Admin's ratio in ``bench_step`` with a far narrower interval than bench_step's own.
Writes ``shortcut.csv``, ``summary.json`` and ``shortcut.png``.

    python -m fairseq_admin_evidence.bench_shortcut                    # d 128 and 512, 1 and 2 threads, ~4 min
    python -m fairseq_admin_evidence.bench_shortcut --dims 512 --tokens 256 --threads 2 --reps 400
    python -m fairseq_admin_evidence.bench_shortcut --toy              # CI size
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from fairseq_admin_evidence.bench_step import per_dim
from fairseq_admin_evidence.outputs import RESULTS, hardware, markdown_table, mean_interval, write_csv, write_json
from fairseq_admin_tools.figures import pyplot, save_figure

VARIANTS = ("stock", "frozen", "trainable", "mul_add", "function")
KEPT = VARIANTS[:3]
OPTIMIZERS = ("adam", "radam")
SEQUENCE_LENGTH = 16
"""Tokens per sentence: ``--tokens`` is laid out as (time, batch, channel) = (16, tokens / 16, dim), as fairseq's
layers see a batch."""


def shortcut_variants(dim: int, device: str = "cpu", dtype: str = "float32") -> dict[str, Any]:
    """{variant: callable(shortcut, branch) -> ω ⊙ shortcut + branch}, each with its own ω, all of the same value."""
    import torch

    from fairseq_admin.layers import AdminShortcut

    class ShortcutFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, branch: torch.Tensor, shortcut: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(shortcut, omega)
            return torch.addcmul(branch, shortcut, omega)

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
            shortcut, omega = ctx.saved_tensors
            return grad, grad * omega, (grad * shortcut).sum_to_size(omega.shape)

    kind = getattr(torch, dtype)
    values = torch.rand(dim, generator=torch.Generator().manual_seed(0)).add(0.5).to(device, kind)  # the same ω
    frozen, trainable = AdminShortcut(dim).to(device, kind), AdminShortcut(dim).to(device, kind)
    with torch.no_grad():
        frozen.omega.copy_(values)
        trainable.omega.copy_(values)
    trainable.omega.requires_grad_(True)
    mul_add, function = (torch.nn.Parameter(values.clone()) for _ in range(2))
    return {
        "stock": lambda x, f: x + f,
        "frozen": frozen,
        "trainable": trainable,
        "mul_add": lambda x, f: (x * mul_add).add_(f),
        "function": lambda x, f: ShortcutFunction.apply(f, x, function),
    }


def check_alike(shortcuts: dict[str, Any], dim: int, device: str = "cpu", dtype: str = "float32") -> None:
    """Every Admin variant computes the same ω ⊙ x + f and the same gradients (to rounding: ``addcmul`` rounds once,
    ``mul_add`` twice), so that the timings compare like with like."""
    import torch

    generator = torch.Generator().manual_seed(1)
    shortcut, branch, grad = (torch.randn(3, 2, dim, generator=generator).to(device, getattr(torch, dtype))
                              for _ in range(3))
    tolerance = 1e-6 if dtype == "float32" else 1e-2
    results = {}
    for variant in VARIANTS[1:]:
        x, f = shortcut.clone().requires_grad_(True), branch.clone().requires_grad_(True)
        out = shortcuts[variant](x, f)
        results[variant] = (out, *torch.autograd.grad(out, (x, f), grad))
    for variant, values in results.items():
        for name, ours, reference in zip(("output", "shortcut gradient", "branch gradient"), values,
                                         results["frozen"], strict=True):
            if not torch.allclose(ours, reference, rtol=tolerance, atol=tolerance):
                raise AssertionError(f"bench_shortcut: {variant}'s {name} differs from the frozen shortcut's")


def _stack(dim: int, layers: int, device: str, dtype: str) -> Any:
    """One pass of the branch stack, forward and backward, for a shortcut callable (GPU work waited for)."""
    import torch

    kind = getattr(torch, dtype)
    norms = [torch.nn.LayerNorm(dim).to(device, kind) for _ in range(layers)]
    scales = [torch.nn.Parameter(torch.rand(dim).add(0.5).to(device, kind)) for _ in range(layers)]

    def run(shortcut: Any, x: torch.Tensor) -> None:
        for norm, scale in zip(norms, scales, strict=True):
            x = norm(shortcut(x, x * scale))
        x.float().sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    return run


def measure(dim: int, tokens: int, threads: int, layers: int, reps: int, block: int, device: str = "cpu",
            dtype: str = "float32") -> list[dict[str, Any]]:
    """Seconds per pass of every variant, ``block`` passes per variant in turn, ``reps`` times."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(1)
    shortcuts = shortcut_variants(dim, device, dtype)
    check_alike(shortcuts, dim, device, dtype)
    run = _stack(dim, layers, device, dtype)
    x = torch.randn(SEQUENCE_LENGTH, max(1, tokens // SEQUENCE_LENGTH), dim, device=device, dtype=getattr(torch, dtype),
                    requires_grad=True)
    for variant in VARIANTS:  # warm-up
        for _ in range(block):
            run(shortcuts[variant], x)
    rows = []
    for rep in range(reps):
        shift = rep % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            start = time.perf_counter()
            for _ in range(block):
                run(shortcuts[variant], x)
            rows.append({"dim": dim, "tokens": tokens, "threads": threads, "rep": rep, "variant": variant,
                         "seconds_per_pass": (time.perf_counter() - start) / block})
    return rows


def summarize(rows: list[dict[str, Any]], layers: int) -> dict[str, Any]:
    """Per variant: µs per pass (median), and the extra µs per branch over stock (mean of the paired differences of
    each repetition, with its 95 % interval)."""
    by_rep: dict[int, dict[str, float]] = {}
    for row in rows:
        by_rep.setdefault(row["rep"], {})[row["variant"]] = row["seconds_per_pass"]
    summary: dict[str, Any] = {}
    for variant in VARIANTS:
        extra = mean_interval([(r[variant] - r["stock"]) / layers * 1e6 for r in by_rep.values()])
        summary[variant] = {"us_per_pass": statistics.median(r[variant] for r in by_rep.values()) * 1e6,
                            "extra_us_per_branch": extra["mean"], "low": extra["low"], "high": extra["high"],
                            "n": extra["n"]}
    return summary


def parameter_cost(dim: int, vectors: int, optimizer: str, threads: int, reps: int) -> dict[str, float]:
    """Milliseconds per update that fairseq's per-parameter loops spend on ``vectors`` trainable ω of width ``dim``:
    gradient scaling (``multiply_grads``), the clipping norm, the optimizer step and zeroing, as ``Trainer``
    calls them; median and min over ``reps`` updates after a warm-up (RAdam's first 5 steps update nothing)."""
    import torch
    from fairseq.utils import clip_grad_norm_

    torch.set_num_threads(threads)
    if optimizer == "adam":
        from fairseq.optim.adam import FairseqAdam as Optimizer
        from fairseq.optim.adam import FairseqAdamConfig as Config
    else:
        from fairseq_admin.radam import FairseqRAdam as Optimizer
        from fairseq_admin.radam import FairseqRAdamConfig as Config
    omegas = [torch.nn.Parameter(torch.ones(dim)) for _ in range(vectors)]
    chosen = Optimizer(Config(adam_betas="(0.9, 0.98)", lr=[1e-3]), omegas)
    seconds = []
    for rep in range(10 + reps):
        for omega in omegas:
            omega.grad = torch.full_like(omega, 1e-3)
        start = time.perf_counter()
        chosen.multiply_grads(0.5)
        clip_grad_norm_(omegas, 0.0)
        chosen.step()
        chosen.zero_grad()
        if rep >= 10:
            seconds.append(time.perf_counter() - start)
    return {"ms_per_update": statistics.median(seconds) * 1e3, "min_ms": min(seconds) * 1e3}


def plot(settings: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / (len(VARIANTS) - 1)
    labels = [f"d {s['dim']}, {s['tokens']} tokens, {s['threads']}t" for s in settings]
    for i, variant in enumerate(VARIANTS[1:]):
        means = [s["variants"][variant]["extra_us_per_branch"] for s in settings]
        errors = [[m - s["variants"][variant]["low"] for m, s in zip(means, settings, strict=True)],
                  [s["variants"][variant]["high"] - m for m, s in zip(means, settings, strict=True)]]
        positions = [j + (i - (len(VARIANTS) - 2) / 2) * width for j in range(len(settings))]
        ax.bar(positions, means, width, yerr=errors, capsize=3,
               label=variant + ("" if variant in KEPT else " (not kept)"))
    ax.set_xticks(range(len(settings)), labels, fontsize=8)
    ax.set_ylabel("extra µs per branch over stock (95 %)")
    ax.set_title("The shortcut's own cost, forward and backward")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin_evidence.bench_shortcut",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_shortcut")
    parser.add_argument("--dims", default="128,512")
    parser.add_argument("--tokens", default="2048,256",
                        help="tokens per batch, per dim (comma-separated), or one for all")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--layers", type=int, default=30, help="branches in the stack (6L-6L has 30)")
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--block", type=int, default=3, help="passes per variant in a row")
    parser.add_argument("--vectors", type=int, default=28, help="trainable ω vectors (6L-6L: 28)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: on a GPU, in fp16 (Admin's regime there); --threads is then ignored")
    parser.add_argument("--toy", action="store_true", help="tiny sizes (CI)")
    options = parser.parse_args(argv)
    options.dtype = "float16" if options.device == "cuda" else "float32"
    if options.device == "cuda":
        options.threads = "1"
    if options.toy:
        options.dims, options.tokens, options.threads, options.layers, options.reps = "32", "64", "1", 3, 4
    return options


def measure_setting(options: argparse.Namespace, dim: int, tokens: int, threads: int) -> tuple[list, dict]:
    """One (dim, tokens, threads): the rows of every pass, and the setting's summary (printed as it ends)."""
    rows = measure(dim, tokens, threads, options.layers, options.reps, options.block, options.device, options.dtype)
    variants = summarize(rows, options.layers)
    # on a GPU fairseq's --fp16 hands the optimizer one flat tensor: no per-vector cost to measure there
    vectors = {name: parameter_cost(dim, options.vectors, name, threads, 10 * options.reps)
               for name in OPTIMIZERS} if options.device == "cpu" else {}
    print(f"d {dim}, {tokens} tokens, {threads} thread(s): "
          + ", ".join(f"{v} {c['extra_us_per_branch']:+.1f} [{c['low']:+.1f}, {c['high']:+.1f}] µs/branch"
                      for v, c in variants.items() if v != "stock")
          + "".join(f"; {options.vectors} ω vectors with {name} {cost['ms_per_update']:.2f} ms/update"
                    for name, cost in vectors.items()), flush=True)
    return rows, {"dim": dim, "tokens": tokens, "threads": threads, "variants": variants, "vectors": vectors}


def table(settings: list[dict[str, Any]], vectors: int) -> str:
    def cost(c: dict[str, float]) -> str:
        return f"{c['extra_us_per_branch']:+.1f} [{c['low']:+.1f}, {c['high']:+.1f}]"

    return markdown_table(
        ["setting", "stock µs/pass", *(f"{v} µs/branch [95 %]" for v in VARIANTS[1:]),
         *(f"{vectors} ω, {name} ms/update" for name in OPTIMIZERS)],
        [[f"d {s['dim']}, {s['tokens']} tokens, {s['threads']}t", round(s["variants"]["stock"]["us_per_pass"]),
          *(cost(s["variants"][v]) for v in VARIANTS[1:]),
          *(round(s["vectors"][name]["ms_per_update"], 2) if s["vectors"] else "" for name in OPTIMIZERS)]
         for s in settings])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_args(argv)
    dims = [int(d) for d in options.dims.split(",")]
    options.out.mkdir(parents=True, exist_ok=True)
    rows, settings = [], []
    for dim, count in zip(dims, per_dim(options.tokens, dims), strict=True):
        for threads in (int(t) for t in options.threads.split(",")):
            measured, setting = measure_setting(options, dim, count, threads)
            rows += measured
            settings.append(setting)
    write_csv(options.out / "shortcut.csv", rows)
    summary = {"hardware": hardware(options.device), "dtype": options.dtype, "layers": options.layers,
               "vectors": options.vectors, "reps": options.reps, "block": options.block,
               "when": time.strftime("%Y-%m-%d %H:%M:%S"), "settings": settings}
    write_json(options.out / "summary.json", summary)
    plot(settings, options.out / "shortcut.png")
    print(table(settings, options.vectors))
    return summary


if __name__ == "__main__":
    main()
