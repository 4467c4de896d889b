"""Atomic file writes: readers see the old file or the whole new one, never a part.

Every file fairseq-admin writes for a user (profiles, checkpoints, results) goes through here, so an
interrupted run never leaves a truncated file under a name that a later step would take as done.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import IO, Any


def _replace_atomically(path: str, mode: str, write: Callable[[IO], None]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_atomically(path: str, text: str) -> None:
    _replace_atomically(path, "w", lambda out: out.write(text))


def torch_save_atomically(obj: Any, path: str) -> None:
    import torch

    _replace_atomically(path, "wb", lambda out: torch.save(obj, out))
