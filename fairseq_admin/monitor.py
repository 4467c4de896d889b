"""The training monitor (``--admin-monitor-interval N``): each residual branch's dependency, ω and fp16 headroom,
and, for every update fairseq skips, where the first non-finite value appeared.

Measurement. Every N updates, forward hooks on the :class:`~fairseq_admin.layers.AdminShortcut`\\ s (every
residual connection of the model goes through one, Post-LN and Pre-LN alike) pool, over the update's
non-padding positions, ‖f(x)‖ and ‖ω ⊙ x‖ of each branch and the largest magnitude of ω ⊙ x + f(x) (what
enters the LayerNorm in Post-LN; the residual stream in Pre-LN); just before fairseq clips the gradients (they
are then all-reduced and summed over ``--update-freq``), the gradient norm of each layer's parameters. The
hooks exist only during that update and only read tensors, so training is unchanged (tested bit for bit).

Locating. fairseq skips an update when the fp16 loss scaler finds an overflow, and stops on a non-finite
gradient in fp32. Watching every tensor of every update for that would cost a synchronisation per module on
every update; instead, as fairseq's NanDetector does, the skipped update's batches are run again, with the
same seed and the loss scale that overflowed, under hooks on every module's output, on those outputs'
gradients and on every parameter's gradient, and the first non-finite one in execution order is named. The
replay takes no optimizer step and its gradients are cleared, so it changes nothing that follows.

The trainer side is two wrappers around fairseq's ``Trainer.train_step`` and ``Trainer.clip_grad_norm``
(:func:`attach_to_fairseq_trainer`); they call the model's monitor when it has one and are a plain call
otherwise. Rank 0 writes ``<save-dir>/admin_monitor.jsonl`` (format: :mod:`fairseq_admin_tools.monitor_records`)
and logs a summary per side and branch kind through fairseq's metrics every update (weight 0, like ``lr``), so it
shows in fairseq's log, its JSON log, TensorBoard and W&B.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from fairseq.logging import metrics
from fairseq.modules.fairseq_dropout import FairseqDropout
from torch import Tensor

from fairseq_admin.layers import BRANCH_LAYER_NORMS, BRANCH_MODULES, SIDES, admin_layers
from fairseq_admin_tools.monitor_records import (
    FORMAT_VERSION,
    FP16_MAX,
    MONITOR_FILE,
    append_record,
    finite_or_none,
    read_records,
)

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

SIDE_KEYS = {"encoder": "enc", "decoder": "dec"}
FRAMES_KEPT = 6
"""How many of the largest finite magnitudes met before the first non-finite value a skip record keeps."""


@dataclass(frozen=True)
class Site:
    """Where a tensor comes from: side and layer (None outside the layers), branch, and what it is."""

    module: str
    side: str | None = None
    layer: int | None = None
    branch: str | None = None
    tensor: str | None = None

    def describe(self) -> str:
        if self.layer is None:
            return self.tensor or self.module
        return f"{self.side} layer {self.layer} {self.branch}: {self.tensor}"


def _branch_site(side: str, layer: int, branches: tuple[str, ...], path: str, name: str) -> Site | None:
    """The branch a module of a layer belongs to, from its path inside the layer (``fc1``, ``self_attn.q_proj``)."""
    first, _, rest = path.partition(".")
    for branch, module in BRANCH_MODULES.items():
        if first == module:
            return Site(name, side, layer, branch, "branch output" if not rest else f"inside the branch ({path})")
        if first == BRANCH_LAYER_NORMS[branch]:
            return Site(name, side, layer, branch, "LayerNorm output")
    if first == "fc1":
        return Site(name, side, layer, "ffn", "inside the branch (fc1)")
    if first == "admin_shortcuts" and rest.isdigit():
        return Site(name, side, layer, branches[int(rest)], "shortcut sum")
    return None


def module_sites(model: nn.Module) -> dict[nn.Module, Site]:
    """Every module of the model (dropout aside: it passes non-finite values on, never makes them) with its site."""
    names = {module: name for name, module in model.named_modules()}
    sites = {module: Site(name, tensor=f"output of {name}") for module, name in names.items()
             if name and not isinstance(module, FairseqDropout)}
    for side in SIDES:
        for index, layer in enumerate(admin_layers(model, side)):
            for path, module in layer.named_modules():
                site = _branch_site(side, index, layer.branch_names, path, names.get(module, path)) if path else None
                if site is not None:
                    sites[module] = site
    return sites


class FirstNonFinite:
    """Hooks that name the first non-finite tensor of a forward and backward pass, in execution order."""

    def __init__(self, model: nn.Module) -> None:
        self.sites = module_sites(model)
        self.parameters = dict(model.named_parameters())
        self.first: dict[str, Any] | None = None
        self.before: list[dict[str, Any]] = []
        self.frames: deque[tuple[str, float]] = deque(maxlen=256)
        self.nonfinite_gradients: list[str] = []
        self._handles: list[Any] = []

    def __enter__(self) -> FirstNonFinite:
        for module, site in self.sites.items():
            self._handles.append(module.register_forward_hook(functools.partial(self._forward, site)))
        for name, parameter in self.parameters.items():
            if parameter.requires_grad:
                self._handles.append(parameter.register_hook(functools.partial(self._parameter_gradient, name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _check(self, phase: str, site: Site, tensor: Tensor, what: str) -> bool:
        """Note ``tensor``'s largest magnitude; on the first non-finite one, record where. True when non-finite."""
        if not tensor.is_floating_point() or tensor.numel() == 0:
            return False
        finite = bool(torch.isfinite(tensor).all())
        if finite:
            where = what if site.layer is None else f"{site.side} layer {site.layer} {site.branch}: {what}"
            self.frames.append((f"{where} ({phase})", float(tensor.detach().abs().max())))
        elif self.first is None:
            self.first = {"phase": phase, "side": site.side, "layer": site.layer, "branch": site.branch,
                          "tensor": what, "module": site.module}
            self.before = self.largest_before()
        return not finite

    def _forward(self, site: Site, module: nn.Module, inputs: Any, output: Any) -> None:
        for tensor in _tensors(output):
            self._check("forward", site, tensor, site.tensor or site.module)
            if tensor.requires_grad:
                tensor.register_hook(functools.partial(self._gradient, site))

    def _gradient(self, site: Site, grad: Tensor) -> None:
        self._check("backward", site, grad, f"gradient of {site.tensor or site.module}")

    def _parameter_gradient(self, name: str, grad: Tensor) -> None:
        site = Site(name, tensor=f"gradient of parameter {name}")
        if self._check("backward", site, grad, site.tensor):
            self.nonfinite_gradients.append(name)

    def largest_before(self) -> list[dict[str, Any]]:
        """The largest finite magnitudes met so far, largest first."""
        top = sorted(self.frames, key=lambda frame: -frame[1])[:FRAMES_KEPT]
        return [{"tensor": what, "max_abs": value} for what, value in top]


def _tensors(output: Any) -> Iterator[Tensor]:
    if isinstance(output, Tensor):
        yield output
    elif isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, Tensor):
                yield item


class _BranchStatistics:
    """Sums of squares of ω ⊙ x and f(x) over non-padding positions, and the largest |ω ⊙ x + f(x)|."""

    def __init__(self) -> None:
        self.shortcut_sq: Tensor | float = 0.0
        self.branch_sq: Tensor | float = 0.0
        self.max_abs: Tensor | float = 0.0

    def add(self, shortcut: Tensor, branch: Tensor, output: Tensor, omega: Tensor, padding_mask: Tensor | None) -> None:
        with torch.no_grad():
            scaled, branch = (shortcut * omega).float(), branch.float()
            if padding_mask is not None:
                keep = (~padding_mask.to(torch.bool)).transpose(0, 1).unsqueeze(-1)
                scaled, branch = scaled * keep, branch * keep
            self.shortcut_sq = self.shortcut_sq + scaled.square().sum()
            self.branch_sq = self.branch_sq + branch.square().sum()
            self.max_abs = torch.maximum(torch.as_tensor(self.max_abs), output.detach().abs().max().float())


def headroom_bits(max_abs: float) -> float:
    """log2(65504 / max_abs): how many doublings the largest value can take before fp16 overflows."""
    if not math.isfinite(max_abs):
        return -math.inf
    return math.log2(FP16_MAX / max_abs) if max_abs > 0 else math.inf


def _loss_scale(trainer: Any) -> float | None:
    scaler = getattr(trainer.optimizer, "scaler", None)
    return None if scaler is None else float(scaler.loss_scale)


class BranchMonitor:
    """The monitor of one model; fairseq's trainer calls :meth:`around_train_step` and :meth:`around_clip`."""

    def __init__(self, model: nn.Module, interval: int, max_skipped: int, save_dir: str) -> None:
        self.model = model
        self.interval = interval
        self.max_skipped = max_skipped
        self.path = os.path.join(save_dir, MONITOR_FILE)
        self.sites = [(side, index, name, shortcut) for side in SIDES
                      for index, layer in enumerate(admin_layers(model, side))
                      for name, shortcut in zip(layer.branch_names, layer.admin_shortcuts, strict=True)]
        self.writes = False
        self.started = False
        self.skipped_total = 0
        self.consecutive = 0
        self.summary: dict[str, float] = {}
        self._statistics: list[_BranchStatistics] | None = None
        self._grad_norms: list[dict[str, Any]] | None = None
        self._nonfinite = False

    # -- the trainer's side

    def around_train_step(self, trainer: Any, train_step: Callable, samples: list, raise_oom: bool) -> Any:
        if not self.started:
            self._start(trainer)
        update = trainer.get_num_updates() + 1
        loss_scale = _loss_scale(trainer)
        self._nonfinite = False
        try:
            with self.measuring(update % self.interval == 0) as statistics:
                output = train_step(trainer, samples, raise_oom)
        except Exception as err:
            # fairseq stops the run on a non-finite gradient: FloatingPointError, or whatever its NanDetector
            # replay raises in its place (on torch 2.x, StopIteration on the encoder's dict output); say where first
            if self._nonfinite or isinstance(err, FloatingPointError):
                self._skipped(trainer, samples, update, loss_scale, fatal=True)
            raise
        if trainer.get_num_updates() == update:
            self.consecutive = 0
            if statistics is not None:
                self._measured(update, loss_scale, statistics)
        elif self._nonfinite:
            self._skipped(trainer, samples, update, loss_scale, fatal=False)
        for key, value in self.summary.items():
            metrics.log_scalar(key, value, weight=0, priority=900, round=4)
        return output

    def around_clip(self, trainer: Any, clip: Callable, clip_norm: float) -> Tensor:
        if self._statistics is not None:
            self._grad_norms = self._layer_gradient_norms(trainer)
        try:
            norm = clip(trainer, clip_norm)
        except (OverflowError, FloatingPointError):  # the fp16 loss scaler's verdicts
            self._nonfinite = True
            raise
        if not torch.isfinite(norm).all():  # fairseq itself checks right after, so no extra synchronisation
            self._nonfinite = True
        return norm

    # -- measurement

    @contextlib.contextmanager
    def measuring(self, measure: bool) -> Iterator[list[_BranchStatistics] | None]:
        """While ``measure``, hooks on every shortcut collect each branch's statistics of the forward passes run."""
        if not measure:
            yield None
            return
        self._statistics = [_BranchStatistics() for _ in self.sites]
        handles = [shortcut.register_forward_hook(functools.partial(self._branch_hook, stats))
                   for (*_, shortcut), stats in zip(self.sites, self._statistics, strict=True)]
        try:
            yield self._statistics
        finally:
            for handle in handles:
                handle.remove()
            self._statistics = None

    @staticmethod
    def _branch_hook(stats: _BranchStatistics, shortcut: nn.Module, inputs: tuple, output: Tensor) -> None:
        residual, branch, padding_mask = inputs
        stats.add(residual, branch, output, shortcut.omega, padding_mask)

    def _layer_gradient_norms(self, trainer: Any) -> list[dict[str, Any]]:
        """Each layer's gradient norm as the optimizer will see it (fp16 optimizers unscale lazily, by this factor)."""
        factor = float(getattr(trainer.optimizer, "_multiply_factor", 1.0))
        rows = []
        with torch.no_grad():
            for side in SIDES:
                for index, layer in enumerate(admin_layers(self.model, side)):
                    grads = [p.grad.float().norm() for p in layer.parameters() if p.grad is not None]
                    norm = torch.stack(grads).norm() * factor if grads else torch.zeros(())
                    rows.append({"side": side, "layer": index, "grad_norm": norm})
        return rows

    def _measured(self, update: int, loss_scale: float | None, statistics: list[_BranchStatistics]) -> None:
        numbers = torch.stack([torch.as_tensor(value, dtype=torch.float32).cpu() for stats in statistics
                               for value in (stats.shortcut_sq, stats.branch_sq, stats.max_abs)]).view(-1, 3).tolist()
        branches = []
        for (side, layer, name, shortcut), (shortcut_sq, branch_sq, max_abs) in zip(self.sites, numbers, strict=True):
            omega = shortcut.omega.detach().float()
            ratio = math.sqrt(branch_sq / shortcut_sq) if shortcut_sq > 0 else math.inf
            branches.append({"side": side, "layer": layer, "branch": name, "ratio": finite_or_none(ratio),
                             "omega_mean": float(omega.mean()), "omega_min": float(omega.min()),
                             "omega_max": float(omega.max()), "max_abs": finite_or_none(max_abs),
                             "headroom": finite_or_none(headroom_bits(max_abs))})
        layers = [{**row, "grad_norm": finite_or_none(float(row["grad_norm"]))} for row in self._grad_norms or []]
        self._grad_norms = None
        self.summary = summarize(branches, self.skipped_total)
        self._write({"kind": "measure", "update": update, "loss_scale": loss_scale, "branches": branches,
                     "layers": layers})

    # -- skipped updates

    def _skipped(self, trainer: Any, samples: list, update: int, loss_scale: float | None, fatal: bool) -> None:
        self.skipped_total += 1
        self.consecutive += 1
        self.summary["admin_skipped"] = self.skipped_total
        found = locate_nonfinite(trainer, samples, loss_scale)
        record = {"kind": "skipped", "update": update, "loss_scale": loss_scale, "fatal": fatal,
                  "consecutive": self.consecutive, "skipped_total": self.skipped_total, **found}
        self._write(record)
        if not self.writes:
            return
        where = describe_nonfinite(found)
        logger.info(f"admin-monitor: update {update} {'failed' if fatal else 'skipped'} ({found['reason']}, "
                    f"loss scale {loss_scale}): first non-finite value: {where}")
        if self.consecutive > self.max_skipped and (self.consecutive - 1) % self.max_skipped == 0:
            logger.warning(f"admin-monitor: {self.consecutive} updates in a row skipped (more than "
                           f"--admin-max-skipped {self.max_skipped}); the first non-finite value is {where}. "
                           f"{advice(found, loss_scale)}")

    # -- the file

    def _start(self, trainer: Any) -> None:
        self.started = True
        self.writes = getattr(trainer, "data_parallel_rank", 0) == 0
        if not self.writes:
            return
        done = trainer.get_num_updates()
        if os.path.exists(self.path):
            self.skipped_total = sum(r["kind"] == "skipped" and r["update"] <= done for r in read_records(self.path))
        self._write({"kind": "start", "update": done, "format": FORMAT_VERSION, "interval": self.interval,
                     "branches": [[side, layer, name] for side, layer, name, _ in self.sites]})
        logger.info(f"admin-monitor: every {self.interval} updates, and every skipped update, to {self.path}")

    def _write(self, record: dict[str, Any]) -> None:
        if self.writes:
            append_record(self.path, record)


def summarize(branches: list[dict[str, Any]], skipped_total: int) -> dict[str, float]:
    """What goes into fairseq's log: the mean ratio per side and branch kind, mean ω per side, the least headroom."""
    summary: dict[str, float] = {}
    groups: dict[str, list[float]] = {}
    for row in branches:
        prefix = f"{SIDE_KEYS[row['side']]}_{row['branch']}"
        if row["ratio"] is not None:
            groups.setdefault(f"admin_ratio_{prefix}", []).append(row["ratio"])
        groups.setdefault(f"admin_omega_{SIDE_KEYS[row['side']]}", []).append(row["omega_mean"])
    for key, values in groups.items():
        summary[key] = sum(values) / len(values)
    headrooms = [row["headroom"] for row in branches if row["headroom"] is not None]
    if headrooms:
        summary["admin_headroom"] = min(headrooms)
    summary["admin_skipped"] = skipped_total
    return summary


def locate_nonfinite(trainer: Any, samples: list, loss_scale: float | None) -> dict[str, Any]:
    """Run the update's batches again under :class:`FirstNonFinite` hooks; nothing of the run is changed."""
    model = trainer.get_model()
    bad_parameters = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    scaler = getattr(trainer.optimizer, "scaler", None)
    scale_now = None if scaler is None else scaler.loss_scale
    finder = FirstNonFinite(model)
    losses_finite = True
    no_sync = getattr(trainer.model, "no_sync", contextlib.nullcontext)  # this replay is rank-local
    try:
        if scaler is not None and loss_scale is not None:
            scaler.loss_scale = loss_scale  # the scale that overflowed; fairseq has lowered it since
        trainer._set_seed()  # the seed fairseq gave this update: the same dropout masks
        trainer.zero_grad()
        with finder, no_sync():
            for sample in samples:
                sample, _ = trainer._prepare_sample(sample)
                loss, *_ = trainer.task.train_step(sample, trainer.model, trainer.criterion, trainer.optimizer,
                                                   trainer.get_num_updates(), ignore_grad=False)
                losses_finite = losses_finite and bool(torch.isfinite(loss).all())
                if finder.first is not None:
                    break
    except RuntimeError as err:  # a diagnosis must not end the run that fairseq would have continued
        logger.warning(f"admin-monitor: could not replay the skipped update: {err}")
    finally:
        trainer.zero_grad()
        if scaler is not None:
            scaler.loss_scale = scale_now
    reason = "non-finite loss" if not losses_finite else "gradient overflow" if scaler is not None else \
        "non-finite gradients"
    return {"reason": reason, "first_nonfinite": finder.first,
            "largest_finite_before": finder.before if finder.first is not None else finder.largest_before(),
            "nonfinite_parameters": bad_parameters, "nonfinite_gradients": finder.nonfinite_gradients[:FRAMES_KEPT]}


def describe_nonfinite(found: dict[str, Any]) -> str:
    """One phrase for the log: the parameter that holds NaN/Inf, else the first non-finite tensor."""
    if found["nonfinite_parameters"]:
        return f"parameter {found['nonfinite_parameters'][0]} holds NaN/Inf"
    first = found["first_nonfinite"]
    if first is None:
        return "none in the replay (the overflow did not reproduce)"
    site = Site(first["module"], first["side"], first["layer"], first["branch"], first["tensor"])
    return f"{site.describe()} ({first['phase']})"


def advice(found: dict[str, Any], loss_scale: float | None) -> str:
    """What to try, from what the replay found."""
    first = found["first_nonfinite"]
    if found["nonfinite_parameters"]:
        return "The weights themselves are broken: resume from an earlier checkpoint."
    if first is not None and first["phase"] == "forward":
        return ("The forward pass leaves fp16's range, which no loss scale can fix: train in --bf16 or fp32, "
                "or lower --lr.")
    return (f"The gradients overflow at loss scale {loss_scale}: fairseq halves the scale at each skip, down to "
            "--threshold-loss-scale; lower that (or --min-loss-scale), or train in --bf16.")


def attach_to_fairseq_trainer() -> None:
    """Route fairseq's ``Trainer.train_step`` and ``Trainer.clip_grad_norm`` through the model's monitor, if any."""
    from fairseq.trainer import Trainer

    if getattr(Trainer.clip_grad_norm, "_fairseq_admin", False):
        return
    train_step, clip = Trainer.train_step, Trainer.clip_grad_norm

    @functools.wraps(train_step)
    def monitored_train_step(self: Any, samples: list, raise_oom: bool = False) -> Any:
        monitor = getattr(self.get_model(), "admin_monitor", None)
        if monitor is None:
            return train_step(self, samples, raise_oom)
        return monitor.around_train_step(self, train_step, samples, raise_oom)

    @functools.wraps(clip)
    def monitored_clip(self: Any, clip_norm: float) -> Tensor:
        monitor = getattr(self.get_model(), "admin_monitor", None)
        if monitor is None:
            return clip(self, clip_norm)
        return monitor.around_clip(self, clip, clip_norm)

    monitored_clip._fairseq_admin = True  # type: ignore[attr-defined]
    Trainer.train_step, Trainer.clip_grad_norm = monitored_train_step, monitored_clip
