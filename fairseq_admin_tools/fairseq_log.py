"""Reading fairseq-train's log lines, in its ``simple`` or ``json`` format: the one parser of every tool and test.

fairseq writes three kinds of statistics lines (``| INFO | KIND | ...``): ``train_inner`` every
``--log-interval`` updates, ``train`` at the end of an epoch, and ``valid`` after each validation. The
simple format spells them ``epoch 001:  3 / 63 loss=10.28, nll_loss=10.2, ...`` (train_inner) and
``epoch 001 | loss 10.28 | nll_loss 10.2 | ...`` (the others); the json format as one JSON object whose
train/valid summary keys carry a ``train_``/``valid_`` prefix. :func:`parse_line` gives all of them the
same shape: the kind and the numeric values under fairseq's own names (``loss``, ``num_updates``, ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

_LINE = re.compile(r"\| (?:INFO|WARNING) \| (train_inner|train|valid) \| (.*)$")
_EQUALS = re.compile(r"(\w+)=([^,\s]+)")
_BARS = re.compile(r"\| (\w+) ([^|\s]+)(?= \||$)")


@dataclass(frozen=True)
class LogRecord:
    kind: str
    """``train_inner``, ``train`` (the end-of-epoch summary) or ``valid``."""
    values: dict[str, float]

    def get(self, key: str, default: float = float("nan")) -> float:
        return self.values.get(key, default)


def _numbers(pairs: Iterable[tuple[str, Any]], prefix: str = "") -> dict[str, float]:
    values = {}
    for key, value in pairs:
        if prefix and key.startswith(prefix):
            key = key[len(prefix):]
        try:
            values[key] = float(value)
        except (TypeError, ValueError):
            continue
    return values


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


def parse_line(line: str) -> LogRecord | None:
    """One statistics line of fairseq-train's log (simple or json format), else None."""
    match = _LINE.search(line)
    if not match:
        return None
    kind, rest = match.groups()
    if rest.startswith("{"):
        record = parse_json_line(rest)
        if record is None:
            return None
        return LogRecord(kind, _numbers(record.items(), "" if kind == "train_inner" else f"{kind}_"))
    if kind == "train_inner":
        return LogRecord(kind, _numbers(_EQUALS.findall(rest)))
    values = _numbers(_BARS.findall("| " + rest))
    epoch = re.match(r"epoch (\d+)", rest)
    if epoch:
        values["epoch"] = float(epoch[1])
    return LogRecord(kind, values)


def records(lines: Iterable[str], kinds: tuple[str, ...] = ("train_inner", "train", "valid")) -> Iterator[LogRecord]:
    """Every statistics record of the given kinds, in log order."""
    for line in lines:
        record = parse_line(line)
        if record is not None and record.kind in kinds:
            yield record
