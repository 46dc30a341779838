"""The base class of errors shown to users.

A ``UserError``'s message says what is wrong and what to change (a file, a field, a missing
piece). Interfaces (the CLI, the widgets, the Panel app) print it as it is, without a
traceback; any other exception is a bug and is shown with its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input or set-up; its message is meant for them."""


class Cancelled(UserError, RuntimeError):
    """A step was cancelled by the user; nothing half-done was saved."""
