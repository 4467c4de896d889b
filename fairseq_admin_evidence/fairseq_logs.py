"""fairseq-train logs as the measurements read them (rows by update), on the one parser of the tools."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fairseq_admin_tools.fairseq_log import parse_json_line, records

__all__ = ["parse_fairseq_log", "parse_json_line", "value_at"]

_KEYS = {"train_inner": ("loss", "nll_loss", "wps", "gnorm"), "valid": ("loss", "nll_loss")}


def parse_fairseq_log(path: Path) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """(train_inner rows, valid rows) of a fairseq-train log (json or simple format), by update."""
    rows: dict[str, list[dict[str, float]]] = {"train_inner": [], "valid": []}
    for record in records(path.read_text().splitlines(), tuple(_KEYS)):
        if "num_updates" in record.values:
            rows[record.kind].append({"update": int(record.values["num_updates"]),
                                      **{key: record.get(key) for key in _KEYS[record.kind]}})
    return rows["train_inner"], rows["valid"]


def value_at(rows: Sequence[dict[str, float]], update: int, key: str) -> float:
    """The logged value at exactly ``update`` (fairseq logs every --log-interval updates), else NaN."""
    for row in rows:
        if row["update"] == update:
            return row[key]
    return float("nan")
