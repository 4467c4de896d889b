"""User-facing errors: one line that says what is wrong and what to do, no traceback."""

from __future__ import annotations

import sys
from types import TracebackType


class AdminError(ValueError):
    """A problem with the user's input that they can fix; printed without a traceback."""


def install_excepthook() -> None:
    """Print our user errors as ``fairseq-admin: error: ...`` (exit status 1) instead of a traceback.

    Only our own error types are affected; every other exception keeps Python's hook.
    """
    previous = sys.excepthook
    if getattr(previous, "_fairseq_admin", False):
        return

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if isinstance(exc, AdminError):
            print(f"fairseq-admin: error: {exc}", file=sys.stderr, flush=True)
        else:
            previous(kind, exc, tb)

    hook._fairseq_admin = True  # type: ignore[attr-defined]
    sys.excepthook = hook
