"""Atomic file writes: readers see the old file or the whole new one, never a part.

Every file fairseq-admin writes for a user (profiles, checkpoints, results) goes through here, so an
interrupted run never leaves a truncated file under a name that a later step would take as done.

The new file gets the permissions a plain ``open(path, "w")`` would give it (0666 less the umask,
and a directory's default ACL where there is one): ``tempfile.mkstemp`` would make every file 0600,
which hides a shared ``--save-dir``'s profile and checkpoints from the rest of a team.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import IO, Any

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _create_temp_beside(path: str) -> tuple[int, str]:
    """A new, empty file next to ``path`` (same file system, so os.replace is atomic), mode 0666 & ~umask.

    Passing 0o666 to os.open lets the kernel apply the umask exactly as open() does; O_EXCL makes the
    random name ours alone.
    """
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    while True:
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, _CREATE_FLAGS, 0o666), tmp
        except FileExistsError:
            continue


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (a crash right after os.replace keeps the new name)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not every platform or file system lets a directory be opened
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace_atomically(path: str, mode: str, write: Callable[[IO], None]) -> None:
    fd, tmp = _create_temp_beside(path)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(os.path.dirname(tmp))


def write_atomically(path: str, text: str) -> None:
    _replace_atomically(path, "w", lambda out: out.write(text))


def torch_save_atomically(obj: Any, path: str) -> None:
    import torch

    _replace_atomically(path, "wb", lambda out: torch.save(obj, out))
