"""Reading ``fairseq-train --log-format json`` logs: the train_inner and valid records."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def parse_json_line(line: str) -> dict[str, Any] | None:
    """The JSON object a fairseq log line ends with, if any."""
    start = line.find("{")
    if start < 0:
        return None
    try:
        value = json.loads(line[start:])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _num(value: Any) -> float:
    return float(value) if value not in (None, "") else float("nan")


def parse_fairseq_log(path: Path) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """(train_inner rows, valid rows) from a ``--log-format json`` fairseq-train log."""
    train, valid = [], []
    for line in path.read_text().splitlines():
        rec = parse_json_line(line)
        if not rec:
            continue
        if "valid_num_updates" in rec:
            valid.append({"update": int(rec["valid_num_updates"]), "loss": _num(rec.get("valid_loss")),
                          "nll_loss": _num(rec.get("valid_nll_loss"))})
        elif "num_updates" in rec and "train_inner" in line:
            train.append({"update": int(rec["num_updates"]), "loss": _num(rec.get("loss")),
                          "nll_loss": _num(rec.get("nll_loss")), "wps": _num(rec.get("wps")),
                          "gnorm": _num(rec.get("gnorm"))})
    return train, valid


def value_at(rows: Sequence[dict[str, float]], update: int, key: str) -> float:
    """The logged value at exactly ``update`` (fairseq logs every --log-interval updates), else NaN."""
    for row in rows:
        if row["update"] == update:
            return row[key]
    return float("nan")
