"""The training regimes of the stability runs, and the stock fairseq numbers measured under them.

Shared by :mod:`.stability` (which trains in them) and :mod:`.layer_dependency` (which rebuilds the
same models, with the same argv and seed, to measure them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Regime:
    name: str
    lr: float
    warmup: int
    max_tokens: int
    max_update: int
    validate_every: int
    report_at: tuple[int, ...]  # updates at which the table reports the losses


REGIMES = {
    "A": Regime("A", 2e-3, 50, 2048, 150, 25, (40, 80, 150)),
    "B": Regime("B", 1e-3, 300, 1024, 300, 50, (100, 200, 250, 300)),
}
TOY_REGIME = Regime("toy", 2e-3, 4, 1024, 6, 3, (3, 6))

# Stock fairseq's training nll_loss at these updates, per regime and method, measured earlier without the plugin
# ("Deep Post-LN vs Pre-LN on Multi30k, measured on a 2-core CPU":
# stock fairseq (fairseq-fixed 0.12.3.1, torch 2.13 CPU), Multi30k de→en, joint sentencepiece 8k,
# transformer_iwslt_de_en 18L-18L d128 ffn 512 4 heads, --share-all-embeddings, dropout 0.1, adam (0.9, 0.98),
# inverse_sqrt, warmup-init-lr 1e-7, label smoothing 0.1, seed 1, no validation). The same data, model,
# optimizer, seed and regimes as :func:`training_flags` (the validation runs here do not change training).
NOTES_STOCK_NLL = {
    "A": {"postln": {40: 8.69, 80: 8.24, 150: 8.37}, "preln": {40: 8.13, 80: 7.15, 150: 6.70}},
    "B": {"postln": {100: 9.54, 200: 8.26, 250: 7.91, 300: 7.65},
          "preln": {100: 8.80, 200: 6.99, 250: 6.49, 300: 6.11}},
}


def training_flags(regime: Regime, save_dir: Path, max_valid_steps: int, log_interval: int,
                   seed: int = 1) -> list[str]:
    """The notes' optimizer (adam, inverse_sqrt, label smoothing, seed 1) plus validation and one checkpoint."""
    return [
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", str(regime.lr),
        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(regime.warmup), "--warmup-init-lr", "1e-7",
        "--max-tokens", str(regime.max_tokens), "--max-update", str(regime.max_update),
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
        "--seed", str(seed), "--cpu", "--num-workers", "0",
        "--log-format", "json", "--log-interval", str(log_interval), "--no-progress-bar",
        "--validate-interval-updates", str(regime.validate_every), "--max-tokens-valid", "4096",
        "--max-valid-steps", str(max_valid_steps),
        "--save-dir", str(save_dir), "--no-epoch-checkpoints", "--no-save-optimizer-state",
    ]
