"""The training monitor's file, ``<save-dir>/admin_monitor.jsonl``: its format, written and read in one place.

One JSON object a line, appended (so a crash loses nothing written before it), each with ``kind`` and
``update``:

* ``start``: a (re)started run; ``update`` is the number of updates already done. Records of an earlier
  segment with a larger ``update`` were lost with its last checkpoint and are redone, so :func:`read_records`
  drops them: a resumed run continues the same file.
* ``measure``: every ``--admin-monitor-interval`` updates; ``branches`` (one entry per residual branch: side,
  layer, branch, ``ratio``, ``omega_mean``/``omega_min``/``omega_max``, ``max_abs``, ``headroom``) and
  ``layers`` (side, layer, ``grad_norm``).
* ``skipped``: an update fairseq skipped (gradient overflow) or a non-finite loss or gradient; ``reason``,
  ``loss_scale``, ``consecutive``, ``skipped_total``, ``first_nonfinite`` (phase, side, layer, branch, tensor,
  module) and ``largest_finite_before``.

Non-finite numbers are written as null, so that every JSON reader takes the file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from typing import Any

MONITOR_FILE = "admin_monitor.jsonl"
FORMAT_VERSION = 1
FP16_MAX = 65504.0
"""The largest finite fp16 value: ``headroom`` is log2(FP16_MAX / max_abs), in bits (negative: overflow)."""


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def append_record(path: str, record: dict[str, Any]) -> None:
    """Append one record and close the file, so it is on disk before training goes on."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(record, allow_nan=False) + "\n")


def current_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of the run as it stands: what a restart at update U redoes (update > U) is dropped."""
    kept: list[dict[str, Any]] = []
    for record in records:
        if record.get("kind") == "start":
            kept = [r for r in kept if r["update"] <= record["update"]]
        kept.append(record)
    return kept


def read_records(path: str) -> list[dict[str, Any]]:
    """The current records of a monitor file; a last line cut off by a crash is ignored."""
    records = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return current_records(records)
