"""User-facing errors: one line that says what is wrong and what to do, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

Result = TypeVar("Result")


class AdminError(ValueError):
    """A problem with the user's input that they can fix; printed without a traceback."""


def install_excepthook() -> None:
    """Print our user errors as ``fairseq-admin: error: ...`` (exit status 1) instead of a traceback.

    For fairseq's own CLIs, which load the plugin and call our code deep inside; only our own error types
    are affected, every other exception keeps Python's hook.
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


def command_line_tool(prog: str) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """Decorate a console script's ``main``: an :class:`AdminError` ends it as ``PROG: error: ...``, exit 1.

    The one error wrapper of every ``fairseq-admin-*`` entry point, so each ``main`` just raises.
    """

    def decorate(main: Callable[..., Result]) -> Callable[..., Result]:
        @functools.wraps(main)
        def entry(*args: object, **kwargs: object) -> Result:
            try:
                return main(*args, **kwargs)
            except AdminError as err:
                sys.exit(f"{prog}: error: {err}")

        return entry

    return decorate
