"""Progress of long jobs (corpus building, encoding, decoding, averaging): one tqdm style for every tool."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def _large(total: int | None) -> bool:
    """Counts as 1.2M above 10 000 items (or when the total is unknown), exact below."""
    return total is None or total > 10_000


def progress(items: Iterable[T], what: str, total: int | None = None, unit: str = "lines",
             **kwargs: Any) -> Iterator[T]:
    """``items``, with a bar on stderr: count, rate and, when ``total`` is known, time left (every few seconds)."""
    from tqdm import tqdm

    return iter(tqdm(items, desc=what, total=total, unit=f" {unit}", unit_scale=_large(total), mininterval=5,
                     file=sys.stderr, dynamic_ncols=True, **kwargs))


def bar(what: str, total: int | None = None, unit: str = "lines"):
    """A bar to update by hand (``with bar(...) as b: b.update(1)``), in the same style."""
    from tqdm import tqdm

    return tqdm(desc=what, total=total, unit=f" {unit}", unit_scale=_large(total), mininterval=2, file=sys.stderr,
                dynamic_ncols=True)


def count_lines(path: str) -> int:
    """Lines of a plain or gzipped file (``\\n`` only), to give a bar its total."""
    from fairseq_admin_tools.files import open_text

    with open_text(path, errors="replace", newline="\n") as f:
        return sum(1 for _ in f)
