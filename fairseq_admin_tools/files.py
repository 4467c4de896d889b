"""Atomic file writes (readers see the old file or the whole new one, never a part), and reading text.

Every file fairseq-admin writes for a user (profiles, checkpoints, results) goes through here, so an
interrupted run never leaves a truncated file under a name that a later step would take as done.

The new file gets the permissions a plain ``open(path, "w")`` would give it (0666 less the umask,
and a directory's default ACL where there is one): ``tempfile.mkstemp`` would make every file 0600,
which hides a shared ``--save-dir``'s profile and checkpoints from the rest of a team.
"""

from __future__ import annotations

import gzip
import os
import secrets
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


class AtomicFile:
    """A file written under a temporary name beside ``path``; :meth:`commit` renames it into place.

    As a context manager it commits when the block ends normally and discards the temporary file when it
    raises. Text files are UTF-8 with ``\\n`` line ends, as the perl tools and fairseq read them.
    """

    def __init__(self, path: str, mode: str = "w") -> None:
        self.path = path
        fd, self.temp_path = _create_temp_beside(path)
        text = "b" not in mode
        self.file: IO = os.fdopen(fd, mode, encoding="utf-8" if text else None, newline="\n" if text else None)

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        publish(self.temp_path, self.path)

    def discard(self) -> None:
        self.file.close()
        if os.path.exists(self.temp_path):
            os.unlink(self.temp_path)

    def __enter__(self) -> IO:
        return self.file

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def publish(temp_path: str, path: str) -> None:
    """Rename a finished file or directory into place, durably (for outputs other programs wrote)."""
    os.replace(temp_path, path)
    _fsync_directory(os.path.dirname(os.path.abspath(path)))


def write_atomically(path: str, text: str) -> None:
    with AtomicFile(path) as out:
        out.write(text)


def torch_save_atomically(obj: Any, path: str) -> None:
    import torch

    with AtomicFile(path, "wb") as out:
        torch.save(obj, out)


def open_text(path: str, errors: str = "strict", newline: str | None = None) -> IO[str]:
    """A UTF-8 text file for reading, gunzipped on the fly when its name ends in ``.gz``."""
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors=errors, newline=newline)
    return open(path, encoding="utf-8", errors=errors, newline=newline)
