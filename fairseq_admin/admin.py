"""The Admin math, in one place.

Admin (Liu et al., EMNLP 2020) rescales every Post-LN shortcut:
``x_{i+1} = LN(ω_i ⊙ x_i + f_i(x_i))``. The scales come from forward passes that
measure the variance of each residual branch. Per side (encoder, decoder) the
original implementation (Transformer-Clinic) runs the recurrence

    ω_1 = 1,   ω_{i+1} = sqrt(Var[ω_i · x_i] + Var[f_i(x_i)]) = sqrt(ω_i² Var[x_i] + Var[f_i])

where ``x_i`` is branch i's input (the shortcut) and ``f_i(x_i)`` its output
after dropout. Since ω is a scalar during profiling, ``Var[ω_i · x_i] =
ω_i² · Var[x_i]``, which lets statistics pooled over several batches be turned
into ω after the fact (see :class:`SideProfiler`).

What we compute, and where it differs from the original on purpose (each difference
is in recipes/README.md's table with its measured effect):

* statistics: population variance (ddof 0, as ``np.var``) of every element of the
  time × batch × channel tensor. The original counts padding positions too
  (``--admin-profile-padding include`` does the same); our default (``exclude``) skips them,
  so that ω does not depend on how batches happen to be padded;
* pooling: the original uses the first training batch only; we pool the first batches
  until ``--admin-profile-tokens`` target tokens (Var of all their elements, merged exactly
  with Chan et al.'s formula), then run the recurrence once on the pooled variances. Branch
  i of batch k runs with the ω of the statistics seen so far. With one batch this is the
  original's computation;
* precision: each batch's statistics in fp32, merged in float64, the model in fp32
  whatever ``--fp16``/``--bf16`` say (the original profiled under ``--fp16``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def omega_sequence(input_vars: Sequence[float], branch_vars: Sequence[float]) -> list[float]:
    """ω for each branch of one side, from Var[x_i] and Var[f_i] of the branches before it.

    Returns one ω per branch: ω_1 = 1 and ω_{i+1} = sqrt(ω_i² Var[x_i] + Var[f_i]).
    """
    if len(input_vars) != len(branch_vars):
        raise ValueError("need as many input variances as branch variances")
    omegas: list[float] = []
    omega = 1.0
    for var_x, var_f in zip(input_vars, branch_vars, strict=True):
        omegas.append(omega)
        omega = math.sqrt(omega * omega * var_x + var_f)
    return omegas


def closed_form_omega(num_branches: int, output_change: str = "log") -> float:
    """Profiling-free ω of admin-torch for a side with ``num_branches`` residual branches.

    ``log``: output change O(log n), ω = ((n+1)/ln(n+1) − 1)^½; ``constant``: O(1), ω = n^½.
    """
    n = num_branches
    if n < 1:
        raise ValueError("a side needs at least one residual branch")
    if output_change == "log":
        return math.sqrt((n + 1) / math.log(n + 1) - 1)
    if output_change == "constant":
        return math.sqrt(n)
    raise ValueError(f"unknown output change scale {output_change!r}; use 'log' or 'constant'")


@dataclass
class RunningVariance:
    """Mean and variance of every element seen so far: fp32 per batch, merged in float64 (Chan et al.)."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, values: torch.Tensor) -> None:
        values = values.detach().float().reshape(-1)
        n = values.numel()
        if n == 0:
            return
        batch_var, batch_mean = torch.var_mean(values, correction=0)
        batch_m2, batch_mean = batch_var.item() * n, batch_mean.item()
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def variance(self) -> float:
        return self.m2 / self.count if self.count else float("nan")


def non_padding(x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Rows of a (time, batch, channel) tensor at non-padding positions; the mask is (batch, time).

    Without a mask every position counts (``--admin-profile-padding include``, as the original).
    """
    if padding_mask is None:
        return x.reshape(-1, x.size(-1))
    return x[~padding_mask.transpose(0, 1).to(torch.bool)]


class SideProfiler:
    """Records Var[x_i] and Var[f_i] for the residual branches of one side, in the order they run.

    ``omega(i)`` is the ω branch i must run with: the recurrence over branches
    0..i−1 as measured so far. Within one forward pass the earlier branches of the
    same pass are already recorded, so branch i runs with ω_1..ω_i set, exactly as
    the original implementation does.
    """

    def __init__(self, num_branches: int) -> None:
        self.inputs = [RunningVariance() for _ in range(num_branches)]
        self.branches = [RunningVariance() for _ in range(num_branches)]

    def omega(self, index: int) -> float:
        # Branch `index` itself may not be recorded yet; its ω depends only on the ones before.
        upto = index + 1
        return omega_sequence(self.input_variances()[:upto], self.branch_variances()[:upto])[index]

    def record(
        self,
        index: int,
        shortcut: torch.Tensor,
        branch: torch.Tensor,
        padding_mask: torch.Tensor | None,
    ) -> None:
        self.inputs[index].add(non_padding(shortcut, padding_mask))
        self.branches[index].add(non_padding(branch, padding_mask))

    def omegas(self) -> list[float]:
        return omega_sequence(self.input_variances(), self.branch_variances())

    def input_variances(self) -> list[float]:
        return [acc.variance for acc in self.inputs]

    def branch_variances(self) -> list[float]:
        return [acc.variance for acc in self.branches]

