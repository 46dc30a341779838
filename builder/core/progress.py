"""Progress with real units from deep inside a step to whoever runs it (a job).

A step's inner loops call ``report("epoch 2/5 · loss 0.41", done=2, total=5, unit="epochs")``;
without a listener that is a no-op. A job sets the listener for the thread that does its work
(``reporting_to``), and a job's child process sets one that writes the reports to a file its
parent reads, so a training in a child process shows epochs and loss, not a bare bar.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# (message, fraction, done, total, unit) -> None
Listener = Callable[[str, float | None, float | None, float | None, str], None]

_LISTENER: contextvars.ContextVar[Listener | None] = contextvars.ContextVar("visforge_progress", default=None)


def report(message: str, fraction: float | None = None, *, done: float | None = None, total: float | None = None,
           unit: str = "") -> None:
    """Tell the job running this code how far it is: a message and ``done``/``total`` ``unit``
    (the fraction defaults to done/total). Does nothing when no job listens."""
    listener = _LISTENER.get()
    if listener is None:
        return
    if fraction is None and done is not None and total:
        fraction = done / total
    listener(message, fraction, done, total, unit)


def listening() -> bool:
    """Whether a job listens to ``report`` here (a step may skip work only a listener needs)."""
    return _LISTENER.get() is not None


@contextmanager
def reporting_to(listener: Listener | None) -> Iterator[None]:
    """Send the ``report`` calls made inside the block (in this thread or task) to ``listener``."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)
