"""The base class of errors shown to users.

A ``UserError``'s message says what is wrong and what to change (a file, a field, a missing
piece). Interfaces (the CLI, the widgets, the Panel app) print it as it is, without a
traceback; any other exception is a bug and is shown with its traceback.
"""

from __future__ import annotations

import traceback


class UserError(Exception):
    """An error caused by the user's input or set-up; its message is meant for them."""


class Cancelled(UserError, RuntimeError):
    """A step was cancelled by the user; nothing half-done was saved."""


def error_text(e: BaseException, frames: int = 4) -> str:
    """An error as a user reads it, its message once: the message alone for input errors
    (``UserError``, ``ValueError``, ``FileNotFoundError``); for any other exception its type and
    message, then the last ``frames`` frames of its traceback (without the traceback's last line,
    which would repeat the message)."""
    if isinstance(e, UserError | ValueError | FileNotFoundError):
        return str(e)
    where = "".join(traceback.format_tb(e.__traceback__)[-frames:])
    return f"{type(e).__name__}: {e}\n\nTraceback (most recent call last):\n{where}".rstrip()
