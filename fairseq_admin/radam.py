"""``--optimizer radam``: fairseq's optimizer interface over ``torch.optim.RAdam``.

The Admin paper's recipes train with RAdam (Liu et al., 2020); fairseq 0.12 has no RAdam.
(No ``from __future__ import annotations`` here: fairseq reads these dataclass types at runtime.)
The flags mirror fairseq's Adam (``--adam-betas``, ``--adam-eps``, ``--weight-decay``) so the
paper's command lines work unchanged.
"""

import ast
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Dict, List

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II


@dataclass
class FairseqRAdamConfig(FairseqDataclass):
    adam_betas: Any = field(default="(0.9, 0.999)", metadata={"help": "betas for the RAdam optimizer"})
    adam_eps: float = field(default=1e-8, metadata={"help": "epsilon for the RAdam optimizer"})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay"})
    lr: List[float] = II("optimization.lr")


@register_optimizer("radam", dataclass=FairseqRAdamConfig)
class FairseqRAdam(FairseqOptimizer):
    def __init__(self, cfg: FairseqRAdamConfig, params) -> None:
        super().__init__(cfg)
        self._optimizer = torch.optim.RAdam(params, **self.optimizer_config)

    @property
    def optimizer_config(self) -> Dict[str, Any]:
        betas = self.cfg.adam_betas
        if isinstance(betas, str):
            betas = ast.literal_eval(betas)
        return {
            "lr": self.cfg.lr[0] if isinstance(self.cfg.lr, Collection) else self.cfg.lr,
            "betas": tuple(betas),
            "eps": self.cfg.adam_eps,
            "weight_decay": self.cfg.weight_decay,
        }

    @property
    def supports_flat_params(self) -> bool:
        return True
