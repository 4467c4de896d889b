"""``--optimizer radam`` against a float64 transcription of the paper's code, and in real fairseq-train runs."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fairseq, train_log

from fairseq_admin.radam import RAdam

LR, BETAS, EPS, WEIGHT_DECAY = 1e-3, (0.9, 0.98), 1e-8, 0.05
SHAPES = [(7,), (4, 5), (2, 3, 4), (1,)]
STEPS = 30
FIRST_REAL_STEP = 6  # N_t >= 5 first at t = 6 with β2 = 0.98
SKIPPED = {(1, 3), (1, 11), (3, 0)}  # (parameter, step) pairs without a gradient: their step counts lag behind


def original_step(p: np.ndarray, grad: np.ndarray, state: dict, lr: float, betas: tuple[float, float], eps: float,
                  weight_decay: float) -> np.ndarray:
    """Transformer-Clinic ``radam_fairseq/radam.py`` ``RAdam.step`` for one parameter, in float64 numpy."""
    beta1, beta2 = betas
    state["exp_avg_sq"] = state["exp_avg_sq"] * beta2 + (1 - beta2) * grad * grad
    state["exp_avg"] = state["exp_avg"] * beta1 + (1 - beta1) * grad
    state["step"] += 1
    beta2_t = beta2 ** state["step"]
    n_sma_max = 2 / (1 - beta2) - 1
    n_sma = n_sma_max - 2 * state["step"] * beta2_t / (1 - beta2_t)
    if weight_decay != 0:
        p = p + (-weight_decay * lr) * p
    if n_sma >= 5:
        step_size = lr * math.sqrt((1 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) * n_sma_max / n_sma
                                   / (n_sma_max - 2)) / (1 - beta1 ** state["step"])
        p = p - step_size * state["exp_avg"] / (np.sqrt(state["exp_avg_sq"]) + eps)
    # else: the original's SGD-style fallback is commented out: no update
    return p


def gradient_sequence(seed: int = 0) -> list[list[np.ndarray]]:
    """Per step, one float64 gradient per shape, with scales from 1e-3 to 1."""
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=shape) * 10.0 ** rng.uniform(-3, 0) for shape in SHAPES] for _ in range(STEPS)]


def run_ours(initial: list[np.ndarray], grads: list[list[np.ndarray]], dtype: torch.dtype) -> list[list[np.ndarray]]:
    """Our optimizer on parameters of ``dtype``; the parameters (as float64) after every step."""
    params = [torch.nn.Parameter(torch.tensor(p, dtype=dtype)) for p in initial]
    optimizer = RAdam(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    history = []
    for step, step_grads in enumerate(grads):
        for index, (p, g) in enumerate(zip(params, step_grads, strict=True)):
            p.grad = None if (index, step) in SKIPPED else torch.tensor(g, dtype=dtype)
        optimizer.step()
        history.append([p.detach().double().numpy().copy() for p in params])
    for p in params:
        assert p.dtype == dtype
        assert optimizer.state[p]["exp_avg"].dtype == optimizer.state[p]["exp_avg_sq"].dtype == torch.float32
    return history


def run_original(initial: list[np.ndarray], grads: list[list[np.ndarray]],
                 round_to: torch.dtype | None = None) -> list[list[np.ndarray]]:
    """The transcription; ``round_to`` stores parameters (and gradients) in that dtype between steps."""
    def stored(x: np.ndarray) -> np.ndarray:
        return x if round_to is None else torch.tensor(x).to(round_to).double().numpy()

    params = [stored(p) for p in initial]
    states = [{"step": 0, "exp_avg": np.zeros(p.shape), "exp_avg_sq": np.zeros(p.shape)} for p in initial]
    history = []
    for step, step_grads in enumerate(grads):
        for index, g in enumerate(step_grads):
            if (index, step) not in SKIPPED:
                params[index] = stored(original_step(params[index], stored(g), states[index], LR, BETAS, EPS,
                                                     WEIGHT_DECAY))
        history.append([p.copy() for p in params])
    return history


def test_matches_the_original_update_rule_in_fp32():
    rng = np.random.default_rng(1)
    initial = [rng.normal(size=shape) for shape in SHAPES]
    initial = [torch.tensor(p, dtype=torch.float32).double().numpy() for p in initial]  # exactly representable
    grads = [[torch.tensor(g, dtype=torch.float32).double().numpy() for g in step] for step in gradient_sequence()]
    ours, original = run_ours(initial, grads, torch.float32), run_original(initial, grads)

    pairs = [(a, b) for mine, theirs in zip(ours, original, strict=True) for a, b in zip(mine, theirs, strict=True)]
    largest = max(np.abs(a - b).max() for a, b in pairs)
    largest_ulps = max((np.abs(a - b) / np.spacing(np.abs(b).astype(np.float32))).max() for a, b in pairs)
    print(f"largest |ours - float64 original| over {STEPS} steps: {largest:.3g} ({largest_ulps:.1f} fp32 ulps)")
    # fp32 storage rounds twice a step (decay, then update), half an ulp each, at most; one real step here moves
    # a parameter by 1e-5 to 1e-3, i.e. hundreds of ulps.
    assert largest_ulps <= STEPS

    decay = 1 - WEIGHT_DECAY * LR
    for step in range(FIRST_REAL_STEP - 1):  # N_t < 5: weight decay only
        np.testing.assert_allclose(ours[step][0], initial[0] * decay ** (step + 1), rtol=1e-6, atol=0)
    moved = np.abs(ours[FIRST_REAL_STEP - 1][0] - ours[FIRST_REAL_STEP - 2][0] * decay).max()
    assert moved > 1e-5  # the first rectified step is a real one: its step size is 0.084·lr at t = 6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_parameters_get_fp32_math(dtype: torch.dtype):
    """Memory-efficient fp16/bf16: half-precision parameters, fp32 moments, each step rounded once to half."""
    rng = np.random.default_rng(2)
    initial = [rng.normal(size=shape) * 0.05 for shape in SHAPES]  # weight-sized, so lr-sized steps show in half
    grads = gradient_sequence(3)
    ours, original = run_ours(initial, grads, dtype), run_original(initial, grads, round_to=dtype)
    ulp = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[dtype]
    for step in range(STEPS):
        for a, b in zip(ours[step], original[step], strict=True):
            # fp32 vs float64 math may round to the neighbouring half value, now and then
            np.testing.assert_allclose(a, b, rtol=1.01 * ulp, atol=0)
    total_change = max(np.abs(a - b).max() for a, b in zip(ours[-1], original[0], strict=True))
    assert total_change > 1e-3  # 24 real steps: the parameters moved by far more than rounding (~5e-5 here)


def test_state_dict_round_trip_resumes_exactly():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in SHAPES]
    grads = [[torch.randn(shape) for shape in SHAPES] for _ in range(10)]

    def steps(optimizer: RAdam, step_grads: list[list[torch.Tensor]]) -> None:
        for per_param in step_grads:
            for p, g in zip(optimizer.param_groups[0]["params"], per_param, strict=True):
                p.grad = g.clone()
            optimizer.step()

    straight = RAdam([torch.nn.Parameter(p.detach().clone()) for p in params], lr=LR, betas=BETAS,
                     weight_decay=WEIGHT_DECAY)
    steps(straight, grads)
    first = RAdam([torch.nn.Parameter(p.detach().clone()) for p in params], lr=LR, betas=BETAS,
                  weight_decay=WEIGHT_DECAY)
    steps(first, grads[:7])
    resumed = RAdam([torch.nn.Parameter(p.detach().clone()) for p in first.param_groups[0]["params"]], lr=LR,
                    betas=BETAS, weight_decay=WEIGHT_DECAY)
    resumed.load_state_dict(first.state_dict())
    steps(resumed, grads[7:])
    for a, b in zip(straight.param_groups[0]["params"], resumed.param_groups[0]["params"], strict=True):
        assert torch.equal(a, b)


def test_loads_older_and_half_cast_state():
    """A torch.optim.RAdam checkpoint holds ``step`` as a tensor; torch casts loaded moments to the param dtype."""
    initial, grad = np.array([0.5, -1.0, 2.0]), np.array([1.0, 0.5, -0.25])
    moments = {"exp_avg": np.array([0.1, -0.2, 0.3]), "exp_avg_sq": np.array([0.01, 0.04, 0.09])}
    param = torch.nn.Parameter(torch.tensor(initial, dtype=torch.float16))
    optimizer = RAdam([param], lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    saved = {"step": torch.tensor(7.0), **{key: torch.tensor(value).float() for key, value in moments.items()}}
    group = {"lr": LR, "betas": BETAS, "eps": EPS, "weight_decay": WEIGHT_DECAY, "params": [0]}
    optimizer.load_state_dict({"state": {0: saved}, "param_groups": [group]})
    assert optimizer.state[param]["exp_avg"].dtype == torch.float16
    param.grad = torch.tensor(grad, dtype=torch.float16)
    optimizer.step()

    state = optimizer.state[param]
    assert type(state["step"]) is int and state["step"] == 8
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    # What the original computes from the same (half-cast) state, at step 8 (a real step).
    half = {key: torch.tensor(value).half().double().numpy() for key, value in moments.items()}
    expected_state = {"step": 7, **half}
    expected = original_step(initial, grad, expected_state, LR, BETAS, EPS, WEIGHT_DECAY)
    np.testing.assert_allclose(param.detach().double().numpy(), expected, rtol=2.0**-10)
    np.testing.assert_allclose(state["exp_avg"].numpy(), expected_state["exp_avg"], rtol=1e-6)


# Real fairseq-train: every precision mode fairseq offers an optimizer, 10 updates each.
SMALL_MODEL = [
    "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2", "--share-all-embeddings", "--dropout", "0",
]
RADAM_TRAINING = [
    "--optimizer", "radam", "--adam-betas", "(0.9, 0.98)", "--weight-decay", "0.0001", "--lr", "1e-2",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "6", "--max-tokens", "512", "--max-update", "10",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--cpu", "--seed", "1",
    "--no-progress-bar", "--log-interval", "1", "--log-format", "simple", "--num-workers", "0",
    "--user-dir", "fairseq_admin", "--disable-validation",
]
# --bf16 needs the plugin's arch (it undoes fairseq's bf16 -> TPU switch); the flat --fp16 path (without
# --fp16-no-flatten-grads) cannot run on a CPU; --memory-efficient-fp16 is in the resume test below.
PRECISION_MODES = {
    "fp32": [],
    "fp16": ["--fp16", "--fp16-no-flatten-grads", "--fp16-init-scale", "4"],
    "memory-efficient-bf16": ["--memory-efficient-bf16"],
    "bf16": ["--bf16"],
}


def check_losses_go_down(losses: list[float]) -> None:
    assert len(losses) == 10 and all(math.isfinite(x) for x in losses)
    # Losses 1-6 are measured before any real step (N_t < 5 until step 6); 9 and 10 after 3 and 4 of them.
    assert np.mean(losses[-2:]) < np.mean(losses[:6]) - 0.3


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(PRECISION_MODES))
def test_fairseq_train_in_every_precision_mode(mode: str, data_bin: Path, tmp_path: Path):
    result = fairseq("fairseq-train", data_bin, "--arch", "transformer_admin", "--init-type", "default",
                     *SMALL_MODEL, *RADAM_TRAINING, *PRECISION_MODES[mode], "--save-dir", tmp_path, "--no-save")
    losses = train_log(result.stdout)
    print(f"{mode}: losses {losses}")
    check_losses_go_down(losses)


@pytest.mark.slow
def test_memory_efficient_fp16_resumes_exactly(data_bin: Path, tmp_path: Path):
    """fp16 parameters, fp32 moments: a run resumed from update 8 ends with the same weights as one that wasn't."""
    # The stock arch, so that only the optimizer state carries over into the resumed run.
    train = [data_bin, "--arch", "transformer", *SMALL_MODEL, *RADAM_TRAINING, "--memory-efficient-fp16",
             "--fp16-init-scale", "4", "--no-epoch-checkpoints", "--save-interval-updates", "8"]
    straight = fairseq("fairseq-train", *train, "--save-dir", tmp_path / "straight")
    losses = train_log(straight.stdout)
    print(f"memory-efficient-fp16: losses {losses}")
    check_losses_go_down(losses)

    (tmp_path / "resumed").mkdir()
    shutil.copy(tmp_path / "straight" / "checkpoint_1_8.pt", tmp_path / "resumed" / "checkpoint_last.pt")
    resumed = fairseq("fairseq-train", *train, "--save-dir", tmp_path / "resumed")
    assert train_log(resumed.stdout) == losses[8:]

    final = [torch.load(tmp_path / run / "checkpoint_last.pt", weights_only=False) for run in ("straight", "resumed")]
    state = final[0]["last_optimizer_state"]["state"]
    assert {s["step"] for s in state.values()} == {10}
    assert {s[k].dtype for s in state.values() for k in ("exp_avg", "exp_avg_sq")} == {torch.float32}
    for name, weight in final[0]["model"].items():
        assert torch.equal(weight, final[1]["model"][name]), name
