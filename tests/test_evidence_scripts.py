"""The evidence (``python -m fairseq_admin_evidence.NAME``), each run once at toy size on real Multi30k so that
it cannot rot.

The measurements themselves run outside CI (see docs/results.md); here each module must run end to
end with real fairseq, write its CSV/JSON and PNG, and produce finite numbers.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_admin_evidence.outputs import ratio_interval, read_csv

REPO = Path(__file__).resolve().parents[1]
EVIDENCE = ("bench_cost", "bench_export", "bench_monitor", "bench_shortcut", "bench_step", "convergence",
            "convergence_summary", "gpu_check", "layer_dependency", "monitor_diagnosis", "output_change",
            "output_change_paper", "profile_differences", "stability")
HELPERS = ("common", "data", "fairseq_logs", "in_process", "methods", "outputs", "regimes", "runs")


def run_evidence(name: str, *args: str | os.PathLike) -> str:
    """``python -m fairseq_admin_evidence.NAME --toy ARGS`` from the repository root; its stdout."""
    command = [sys.executable, "-m", f"fairseq_admin_evidence.{name}", "--toy", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"{name} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


@pytest.fixture(scope="module")
def stability_out(data_bin: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stability")
    stdout = run_evidence("stability", "--data", data_bin, "--out", out)
    assert re.search(r"^\| toy +\| Admin +\|", stdout, re.MULTILINE), stdout
    return out


def test_stability(stability_out: Path) -> None:
    rows = read_csv(stability_out / "curves.csv")
    assert {r["method"] for r in rows} == {"postln", "preln", "admin"}
    assert {r["split"] for r in rows} == {"train", "valid"}
    assert all(math.isfinite(float(r["nll_loss"])) for r in rows)
    summary = json.loads((stability_out / "summary.json").read_text())
    assert set(summary["results"]["toy"]) == {"postln", "preln", "admin"}
    assert (stability_out / "stability_toy.png").stat().st_size > 0
    assert (stability_out / "toy" / "admin" / "admin_profile.json").exists()


def test_layer_dependency(stability_out: Path, data_bin: Path, tmp_path: Path) -> None:
    run_evidence("layer_dependency", "--data", data_bin, "--stability-dir", stability_out, "--out", tmp_path)
    rows = read_csv(tmp_path / "layer_dependency.csv")
    assert {(r["method"], r["stage"]) for r in rows} == {(m, s) for m in ("postln", "preln", "admin")
                                                         for s in ("init", "trained")}
    assert all(math.isfinite(float(r["beta"])) for r in rows)  # every branch measured
    assert (tmp_path / "layer_dependency_toy.png").stat().st_size > 0


def test_output_change(data_bin: Path, tmp_path: Path) -> None:
    stdout = run_evidence("output_change", "--data", data_bin, "--out", tmp_path,
                        "--methods", "postln,preln,admin")
    assert "better fit" in stdout
    fits = json.loads((tmp_path / "fits.json").read_text())
    for method in ("postln", "preln", "admin"):
        assert all(v > 0 and math.isfinite(v) for v in fits["mean_output_change"][method])
    assert (tmp_path / "output_change.png").stat().st_size > 0


def _mean_change(rows: list[dict[str, str]], method: str, sub_layer: int) -> float:
    values = [float(r["output_change"]) for r in rows if r["method"] == method and int(r["sub_layer"]) == sub_layer]
    return sum(values) / len(values)


def test_output_change_paper(data_bin: Path, tmp_path: Path) -> None:
    run_evidence("output_change_paper", "--data", data_bin, "--out", tmp_path)
    rows = read_csv(tmp_path / "output_change_paper.csv")
    methods = {"postln", "preln", "admin", "admin-closed-form", "deepnorm"}
    assert {r["method"] for r in rows} == methods
    assert len(rows) == len(methods) * 4 * 2  # 2 layers x 2 sub-layers, 2 perturbations
    assert all(0 < float(r["output_change"]) < math.inf for r in rows)
    # Admin and Post-LN share the initialization, the perturbation and ω_1 = 1, so the first two sub-layers see the
    # same inputs; from the third on, Admin's ω_2 > 1 makes them differ.
    for k in (1, 2):
        assert _mean_change(rows, "admin", k) == pytest.approx(_mean_change(rows, "postln", k), rel=1e-9)
    assert _mean_change(rows, "admin", 3) != pytest.approx(_mean_change(rows, "postln", 3), rel=1e-3)
    fits = json.loads((tmp_path / "output_change_paper.json").read_text())["fits"]
    assert {f["method"] for f in fits} == methods and all(f["better"] in ("N", "log N") for f in fits)
    assert (tmp_path / "output_change_paper.png").stat().st_size > 0


LOG_LINES = """\
2026-11-26 08:58:09 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 8.677 | nll_loss 8.017 | ppl 259.05 | wps 1421.7 | wpb 1330.2 | bsz 84 | num_updates 50
2026-11-26 09:05:07 | INFO | train_inner | epoch 001:    100 / 263 loss=9.973, nll_loss=9.468, ppl=708.13, wps=276.9, ups=0.16, wpb=1692.7, bsz=106.2, num_updates=100, lr=0.00141421, gnorm=1.346, train_wall=593, wall=610
2026-11-26 09:05:47 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 8.223 | nll_loss 7.426 | ppl 171.94 | wps 385.5 | wpb 1330.2 | bsz 84 | num_updates 100 | best_loss 8.223
2026-11-26 09:13:54 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 8.159 | nll_loss 7.351 | ppl 163.25 | wps 1437.2 | wpb 1330.2 | bsz 84 | num_updates 150 | best_loss 8.159
"""  # noqa: E501  (fairseq-train's simple-format lines, as a recipe log holds them)


def write_result(results: Path, name: str, sacrebleu: float, hypotheses: list[str]) -> None:
    """A run's result JSON and hypotheses, as fairseq-admin-evaluate leaves them."""
    (results / f"{name}.json").write_text(json.dumps({"sacrebleu": {"score": sacrebleu, "signature": "nrefs:1|x"},
                                                      "tokenized_bleu": {"score": sacrebleu + 0.5}}))
    (results / f"{name}.hyp.txt").write_text("".join(line + "\n" for line in hypotheses))


def run_summary(out: Path, *sources: tuple[str, Path, Path]) -> dict:
    command = [sys.executable, "-m", "fairseq_admin_evidence.convergence_summary", "--out", str(out)]
    for device, logs, results in sources:
        command += ["--source", device, str(logs), str(results)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def test_convergence_summary_reports_unfinished_runs_as_such(tmp_path: Path) -> None:
    from fairseq_admin_evidence.convergence import PLAN

    logs, results, out = tmp_path / "logs", tmp_path / "results", tmp_path / "out"
    logs.mkdir()
    results.mkdir()
    running, finished = PLAN[0].name, PLAN[1].name
    (logs / f"{running}.log").write_text(LOG_LINES)
    (logs / f"{finished}.log").write_text(LOG_LINES.replace("nll_loss 7.351", "nll_loss 7.001"))
    write_result(results, finished, 12.5, ["A man.", "A man.", "A dog."])
    summary = run_summary(out, ("cpu", logs, results))
    runs = {r["name"]: r for r in summary["runs"]}
    assert set(runs) == {run.name for run in PLAN}
    assert [name for name, r in runs.items() if r["finished"]] == [finished]
    assert runs[running]["updates"] == 150 and runs[running]["best_valid_nll"] == 7.351
    assert runs[running]["sacrebleu"] is None and runs[running]["diverged"] is None  # judged when finished
    assert runs[finished]["sacrebleu"] == 12.5 and runs[finished]["best_valid_nll"] == 7.001
    assert runs[finished]["diverged"] is True  # finished above 6 nats: stalled
    assert (runs[finished]["distinct_hypotheses"], runs[finished]["test_sentences"]) == (2, 3)
    assert runs[PLAN[2].name]["updates"] is None and runs[PLAN[2].name]["device"] is None  # not started
    assert summary["other_devices"] == []
    assert "1 of 2" in (out / "table.md").read_text()
    assert (out / "curves_18L.png").stat().st_size > 0


def test_convergence_summary_takes_each_cell_from_the_device_that_finished_it(tmp_path: Path) -> None:
    """A run finished on the second device and running on the first: the cell is the finished one, the other is
    listed beside it (never merged into it); a run finished on both is the first device's."""
    from fairseq_admin_evidence.convergence import PLAN

    cpu, gpu = (tmp_path / "cpu", tmp_path / "cpu_results"), (tmp_path / "gpu", tmp_path / "gpu_results")
    for folder in (*cpu, *gpu):
        folder.mkdir()
    on_gpu, on_both = PLAN[0].name, PLAN[1].name
    (cpu[0] / f"{on_gpu}.log").write_text(LOG_LINES)
    for logs, results, bleu in ((gpu[0], gpu[1], 20.0), (cpu[0], cpu[1], 21.0)):
        (logs / f"{on_both}.log").write_text(LOG_LINES)
        write_result(results, on_both, bleu, ["x"])
    (gpu[0] / f"{on_gpu}.log").write_text(LOG_LINES.replace("nll_loss 7.351", "nll_loss 6.5"))
    write_result(gpu[1], on_gpu, 15.0, ["x", "y"])
    summary = run_summary(tmp_path / "out", ("cpu", *cpu), ("h200", *gpu))
    runs = {r["name"]: r for r in summary["runs"]}
    assert (runs[on_gpu]["device"], runs[on_gpu]["sacrebleu"], runs[on_gpu]["best_valid_nll"]) == ("h200", 15.0, 6.5)
    assert (runs[on_both]["device"], runs[on_both]["sacrebleu"]) == ("cpu", 21.0)
    others = {(r["name"], r["device"]): r for r in summary["other_devices"]}
    assert set(others) == {(on_gpu, "cpu"), (on_both, "h200")}
    assert others[(on_gpu, "cpu")]["finished"] is False and others[(on_both, "h200")]["sacrebleu"] == 20.0
    assert "The same runs on two devices" in (tmp_path / "out" / "table.md").read_text()


def test_gpu_check_cpu_path(data_bin: Path, tmp_path: Path) -> None:
    """scripts/gpu_check.sh --cpu: the GPU tests on CPU, then bench_cost, bench_step and bench_shortcut at toy sizes;
    one JSON."""
    result = subprocess.run(["bash", "scripts/gpu_check.sh", data_bin, "--cpu", "--out-dir", tmp_path], cwd=REPO,
                            capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["ok"] and report["mode"] == "cpu" and list(report["parts"]) == [
        "tests", "bench_cost", "bench_step", "bench_shortcut"]
    tests = report["parts"]["tests"]
    assert (tests["tests"], tests["failures"], tests["errors"], tests["skipped"]) == (3, 0, 0, 0)

    cost = report["parts"]["bench_cost"]["summary"]
    assert cost["throughput"]["ratio_admin_over_stock"]["median"] > 0
    (row,) = cost["profiling"]
    assert row["profiling_peak_rss_kib"] > 0 and row["train1_peak_rss_kib"] > 0
    assert row["inproc_fwd_bwd_extra_kib"] >= 0
    for png in ("throughput.png", "profiling_memory.png"):
        assert (tmp_path / "bench_cost" / png).stat().st_size > 0

    assert (tmp_path / "logs" / "tests.log").exists()
    check_bench_step(report["parts"]["bench_step"]["summary"], tmp_path, data_bin)
    (shortcut,) = report["parts"]["bench_shortcut"]["summary"]["settings"]
    assert shortcut["variants"]["trainable"]["n"] == 4 and (tmp_path / "bench_shortcut" / "shortcut.png").exists()


BUILT_IN_ORDER = re.compile(r"building the trainers in the order (.+)")


def check_bench_step(step: dict, tmp_path: Path, data_bin: Path) -> None:
    """gpu_check's toy bench_step: turns in alternating order, phases, intervals, the profile, rebuilds and --resume."""
    (setting,) = step["settings"]
    assert setting["pairs"] == 2 and all(0.5 < r < 2 for r in setting["admin_over_stock"]["all"])
    rows = read_csv(tmp_path / "bench_step" / "steps.csv")
    in_turn = ["stock", "admin", "frozen", "control"]
    assert [r["model"] for r in rows[:8]] == in_turn + in_turn[::-1]
    assert [r["model"] for r in rows[8:16]] == in_turn[1:] + in_turn[:1] + (in_turn[1:] + in_turn[:1])[::-1]
    assert len(rows) == 4 * setting["turns"] == 4 * 2 * 2  # 2 repetitions over 2 batches
    assert 0.5 < setting["control_over_stock"]["median"] < 2
    phases = setting["phase_ms"]["admin"]
    assert set(phases) == {"forward_backward", "optimizer", "clip", "zero_grad"} and all(v > 0 for v in phases.values())
    assert all(float(r["forward_backward_s"]) < float(r["seconds"]) for r in rows)
    difference = (tmp_path / "bench_step" / "profile_d32_1t_difference.md").read_text()
    assert re.search(r"^\| aten::addcmul +\| 0 +\| \d", difference, re.MULTILINE)  # Admin's op, absent from stock
    assert (tmp_path / "bench_step" / "ratios.png").stat().st_size > 0
    for model in ("admin", "frozen", "control"):
        interval = setting[f"{model}_over_stock_interval"]
        assert interval["n"] == setting["turns"] and interval["low"] < interval["geo_mean"] < interval["high"]
        assert setting[f"{model}_forward_backward_over_stock_interval"]["n"] == setting["turns"]
    # --toy builds every trainer afresh after each repetition, in a rotated order (instance offsets average out)
    built_in = BUILT_IN_ORDER.findall((tmp_path / "logs" / "bench_step.log").read_text())
    assert setting["rebuild_every"] == 1 and setting["instances"] == 2
    assert all(setting[f"{m}_over_stock_instances"]["n"] == 2 for m in ("admin", "frozen", "control"))
    assert built_in == ["stock, admin, frozen, control", "admin, frozen, control, stock"]

    # --resume: a run stopped after its first repetition goes on from there and keeps what it had measured
    partial = tmp_path / "bench_step" / "steps_d32_1t.csv"
    first_rep = [r for r in read_csv(partial) if r["rep"] == "0"]
    partial.write_text("".join(partial.read_text().splitlines(keepends=True)[:1 + len(first_rep)]))
    resumed_log = run_evidence("bench_step", "--data", data_bin, "--out", tmp_path / "bench_step", "--resume")
    assert BUILT_IN_ORDER.findall(resumed_log) == ["admin, frozen, control, stock"]  # repetition 1's trainers
    resumed = read_csv(tmp_path / "bench_step" / "steps.csv")
    assert resumed[:len(first_rep)] == first_rep and len(resumed) == len(rows)
    assert [r["rep"] for r in resumed[len(first_rep):]] == ["1"] * (len(rows) - len(first_rep))


def test_instance_ratios() -> None:
    """With rebuilt trainers the samples are the instances: per instance the geometric mean of its turns' ratios."""
    from fairseq_admin_evidence.bench_step import instance_ratios

    seconds = {0: (1.0, 1.1), 1: (1.0, 1.21), 2: (2.0, 1.8), 3: (1.0, 0.9)}  # rep: (stock, admin)
    rows = [{"rep": rep, "batch": 0, "model": model, "seconds": value}
            for rep, pair in seconds.items() for model, value in zip(("stock", "admin"), pair, strict=True)]
    one, two = instance_ratios(rows, "admin", rebuild_every=2)
    assert one == pytest.approx(math.sqrt(1.1 * 1.21)) and two == pytest.approx(0.9)
    assert instance_ratios(rows, "admin", rebuild_every=1) == pytest.approx([1.1, 1.21, 0.9, 0.9])


def test_ratio_interval() -> None:
    """The geometric mean of paired ratios, and a 95 % interval (Student's t) that narrows as 1/√n."""
    from scipy.stats import t

    few = ratio_interval([0.9, 1.1, 1.0, 1.05])
    many = ratio_interval([0.9, 1.1, 1.0, 1.05] * 25)
    assert few["geo_mean"] == pytest.approx(math.exp(sum(map(math.log, (0.9, 1.1, 1.0, 1.05))) / 4))
    assert many["geo_mean"] == pytest.approx(few["geo_mean"])
    assert few["low"] < many["low"] < many["geo_mean"] < many["high"] < few["high"]
    width = {n: math.log(i["high"] / i["low"]) for n, i in ((4, few), (100, many))}
    assert width[100] / width[4] == pytest.approx(t.ppf(0.975, 99) / t.ppf(0.975, 3) * math.sqrt(3 / 99), rel=0.02)
    assert ratio_interval([1.2])["high"] == math.inf


def test_bench_cost_before_and_after(data_bin: Path, tmp_path: Path) -> None:
    """--old-user-dir (what scripts/bench_before_after.sh passes): a third model, another copy of the plugin."""
    old = tmp_path / "old"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", old, "HEAD"], cwd=REPO, check=True)
    try:
        run_evidence("bench_cost", "--data", data_bin, "--out", tmp_path / "out", "--skip-profiling",
                     "--old-user-dir", old / "fairseq_admin")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", old], cwd=REPO, check=True)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["throughput"]
    assert summary["ratio_old_over_stock"]["median"] > 0 and summary["ratio_admin_over_stock"]["median"] > 0
    logs = {name: (tmp_path / "out" / "throughput" / f"{name}_0.log").read_text() for name in ("admin", "old")}
    assert str(old / "fairseq_admin") in logs["old"].splitlines()[0]
    assert str(old / "fairseq_admin") not in logs["admin"].splitlines()[0]


def test_bench_monitor(data_bin: Path, tmp_path: Path) -> None:
    run_evidence("bench_monitor", "--data", data_bin, "--out", tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["pairs"] == 2 and len(summary["cost_ratio"]["wps"]["all"]) == 2
    assert all(0.5 < ratio < 2 for key in ("wps", "seconds", "cpu_s") for ratio in summary["cost_ratio"][key]["all"])
    rows = read_csv(tmp_path / "runs.csv")
    assert [r["model"] for r in rows] == ["plain", "monitored", "monitored", "plain"]
    assert (tmp_path / "runs" / "admin_monitor.jsonl").exists()  # the monitored runs really monitored
    assert (tmp_path / "ratios.png").stat().st_size > 0


def test_bench_monitor_in_one_process(data_bin: Path, tmp_path: Path) -> None:
    run_evidence("bench_monitor", "--steps", "--data", data_bin, "--out", tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mode"] == "steps" and len(summary["cost_ratio"]["seconds"]["all"]) == 2
    records = [json.loads(line) for line in (tmp_path / "steps" / "admin_monitor.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "measure" for r in records) == 3  # one per monitored block (warm-up included)


def test_bench_shortcut(tmp_path: Path) -> None:
    """Every variant in turn, each repetition one row per variant, and the extra µs per branch with its interval."""
    stdout = run_evidence("bench_shortcut", "--out", tmp_path)
    rows = read_csv(tmp_path / "shortcut.csv", text={"variant"}, ints={"dim", "tokens", "threads", "rep"})
    variants = ["stock", "frozen", "trainable", "mul_add", "function"]
    assert [r["variant"] for r in rows[:5]] == variants  # the order rotates by one every repetition
    assert [r["variant"] for r in rows[5:10]] == variants[1:] + variants[:1]
    assert len(rows) == 4 * 5 and all(r["seconds_per_pass"] > 0 for r in rows)
    (setting,) = json.loads((tmp_path / "summary.json").read_text())["settings"]
    assert setting["variants"]["stock"]["extra_us_per_branch"] == 0
    for variant in variants[1:]:
        cost = setting["variants"][variant]
        assert cost["n"] == 4 and cost["low"] < cost["extra_us_per_branch"] < cost["high"]
    assert all(0 < setting["vectors"][name]["min_ms"] <= setting["vectors"][name]["ms_per_update"]
               for name in ("adam", "radam"))
    assert "| d 32, 64 tokens, 1t" in stdout and (tmp_path / "shortcut.png").stat().st_size > 0


def test_bench_shortcut_compares_like_with_like() -> None:
    """A variant that computed something else would be refused before it is timed."""
    from fairseq_admin_evidence.bench_shortcut import check_alike, shortcut_variants

    shortcuts = shortcut_variants(8)
    check_alike(shortcuts, 8)
    shortcuts["function"] = lambda x, f: x + f  # ω forgotten
    with pytest.raises(AssertionError, match="function's output differs"):
        check_alike(shortcuts, 8)


@pytest.mark.parametrize("name", EVIDENCE)
def test_help(name: str) -> None:
    result = subprocess.run([sys.executable, "-m", f"fairseq_admin_evidence.{name}", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"usage: python -m fairseq_admin_evidence.{name}" in result.stdout


def test_imports_are_light() -> None:
    """Importing the package, its helpers or a measurement loads none of torch, fairseq, matplotlib, numpy."""
    modules = ", ".join(f"fairseq_admin_evidence.{name}" for name in (*HELPERS, *EVIDENCE))
    code = (f"import sys, {modules}\n"
            "print(sorted(m for m in ('torch', 'fairseq', 'matplotlib', 'numpy', 'tabulate') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


def test_convergence_schedules_keep_their_runs_apart() -> None:
    """The gentle follow-up changes lr and warmup only, and keeps its runs out of the table's folders."""
    from fairseq_admin_evidence.convergence import GENTLE, PLAN, TABLE, recipe_env

    table, gentle = recipe_env(PLAN[0], 1, TABLE), recipe_env(PLAN[0], 1, GENTLE)
    assert {key for key in TABLE.env if table[key] != gentle[key]} == {"LR", "WARMUP"}
    assert (gentle["LR"], gentle["WARMUP"], gentle["SEED"]) == ("1e-3", "300", str(PLAN[0].seed))
    assert len({table["ADMIN_WORK"], gentle["ADMIN_WORK"], table["RESULTS_DIR"], gentle["RESULTS_DIR"]}) == 4


def test_convergence_refuses_runs_not_in_the_plan() -> None:
    result = subprocess.run([sys.executable, "-m", "fairseq_admin_evidence.convergence", "--only", "nope"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "not in the table plan: nope" in result.stderr
