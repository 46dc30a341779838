"""What every step widget shares: status and error display, background jobs, callback registries.

Design rules (the same for every widget in this package):

* every button calls a public method that a notebook or a test can call directly, without a
  click; the method does the work synchronously and returns its result;
* a button runs that method on a background thread (``StepWidget.start``) so a long job never
  blocks the kernel, shows a progress bar while it runs, and puts any exception into the
  widget's error area (never swallowed); ``StepWidget.wait`` joins the job (tests, papermill);
* state lives in the ``Workspace``; widgets hold views of it, nothing else.
"""

from __future__ import annotations

import html
import threading
import traceback
from collections.abc import Callable
from typing import Any

import ipywidgets as w
import traitlets

from builder import UserError

# Images embedded in widget HTML are capped so saved notebooks stay small.
THUMB_SIDE = 96


class StepWidget(w.VBox):
    """Base class: a titled box with a status line, a progress bar and an error area.

    Traitlets (not synced to the browser; observe them from Python):

    * ``busy`` -- a background job is running;
    * ``status`` -- the last status message (plain text);
    * ``error`` -- the last error message ("" when the last job succeeded).
    """

    busy = traitlets.Bool(False)
    status = traitlets.Unicode("")
    error = traitlets.Unicode("")

    title = "Step"

    def __init__(self, **kwargs: Any):
        self._status_html = w.HTML()
        self._error_html = w.HTML()
        self.progress = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="240px", visibility="hidden"))
        self._job: threading.Thread | None = None
        self._job_result: Any = None
        self._job_error: BaseException | None = None
        self._lock = threading.Lock()
        header = w.HTML(f"<h3 style='margin:4px 0'>{html.escape(self.title)}</h3>")
        self._footer = w.VBox([w.HBox([self.progress, self._status_html]), self._error_html])
        super().__init__(**kwargs)
        self._header = header

    def _compose(self, *body: w.Widget) -> None:
        """Lay out header, the step's own body, then the status/progress/error footer."""
        self.children = (self._header, *body, self._footer)

    # ---- status / errors -------------------------------------------------------------------
    @traitlets.observe("status")
    def _show_status(self, change) -> None:
        self._status_html.value = f"<span style='color:#555'>{html.escape(change['new'])}</span>"

    @traitlets.observe("error")
    def _show_error(self, change) -> None:
        msg = change["new"]
        if not msg:
            self._error_html.value = ""
            return
        first, _, rest = msg.partition("\n")
        detail = (f"<details><summary>details</summary><pre style='font-size:11px'>{html.escape(rest)}</pre>"
                  "</details>") if rest.strip() else ""
        self._error_html.value = (
            "<div class='vf-error' style='color:#b00020;border:1px solid #f3c4cc;background:#fff5f6;"
            f"padding:6px;border-radius:4px'><b>Error:</b> {html.escape(first)}{detail}</div>"
        )

    def set_error(self, exc: BaseException | str | None, with_traceback: bool = False) -> None:
        """Show ``exc`` in the widget's error area (None clears it)."""
        if exc is None:
            self.error = ""
        elif isinstance(exc, str):
            self.error = exc
        else:
            text = str(exc) or type(exc).__name__
            if with_traceback:
                # the frames only: the traceback's last line would repeat the message
                text += "\nTraceback (most recent call last):\n" + "".join(traceback.format_tb(exc.__traceback__))
            self.error = text

    def set_progress(self, done: int, total: int) -> None:
        """Update the progress bar (thread-safe enough for ipywidgets: plain trait sets)."""
        self.progress.max = max(1, total)
        self.progress.value = min(done, self.progress.max)

    # ---- background jobs -------------------------------------------------------------------
    def start(self, label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> threading.Thread | None:
        """Run ``fn(*args, **kwargs)`` on a background thread; errors land in ``error``.

        Buttons call this with a public method, so the kernel stays responsive while it runs.
        Returns the thread, or None (and an error message) if another job is still running.
        """
        with self._lock:
            if self._job is not None and self._job.is_alive():
                self.error = f"still busy with: {self.status}; wait for it to finish"
                return None
            self.busy = True
            self.error = ""
            self.status = f"{label} ..."
            self.progress.layout.visibility = "visible"
            self._job_result, self._job_error = None, None

            def target() -> None:
                try:
                    self._job_result = fn(*args, **kwargs)
                    # A method that reports its own failure sets ``error``; keep its status then.
                    if not self.error:
                        self.status = f"{label}: done"
                except Exception as e:  # noqa: BLE001 - shown in the widget, and kept for wait()
                    self._job_error = e
                    self.set_error(e, with_traceback=not _is_user_error(e))
                    self.status = f"{label}: failed"
                finally:
                    self.progress.layout.visibility = "hidden"
                    self.busy = False

            self._job = threading.Thread(target=target, name=f"visforge-{type(self).__name__}", daemon=True)
            self._job.start()
            return self._job

    def wait(self, timeout: float | None = None, raise_errors: bool = False) -> Any:
        """Block until the current background job ends; return its result.

        With ``raise_errors`` a failed job's exception is re-raised (tests use it); otherwise it
        stays displayed in the widget and in ``error``.
        """
        job = self._job
        if job is not None:
            job.join(timeout)
            if job.is_alive():
                raise TimeoutError(f"{type(self).__name__}: job still running after {timeout} s")
        if raise_errors and self._job_error is not None:
            raise self._job_error
        return self._job_result

    def _run_guarded(self, label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` now (synchronously) showing any error in the widget, then re-raise it."""
        self.error = ""
        try:
            out = fn(*args, **kwargs)
        except Exception as e:
            self.set_error(e, with_traceback=not _is_user_error(e))
            self.status = f"{label}: failed"
            raise
        self.status = f"{label}: done"
        return out

    def _on(self, fn: Callable[[], Any]) -> Callable[[], None]:
        """A click handler for a quick synchronous action: errors are shown, never raised into
        ipywidgets' callback machinery (which would only log them)."""

        def handler() -> None:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - displayed in the widget
                if not self.error:
                    self.set_error(e, with_traceback=not _is_user_error(e))

        return handler


def _is_user_error(exc: BaseException) -> bool:
    """Errors whose message says everything (bad input, missing pieces): no traceback shown."""
    return isinstance(exc, (UserError, ValueError, FileNotFoundError, NotAvailable))


class NotAvailable(RuntimeError):
    """A step's API is not built yet (or its optional dependencies are missing)."""


def button(description: str, handler: Callable[[], Any], style: str = "", icon: str = "",
           tooltip: str = "") -> w.Button:
    """A button whose click calls ``handler()`` (a zero-argument callable)."""
    b = w.Button(description=description, button_style=style, icon=icon, tooltip=tooltip or description,
                 layout=w.Layout(width="auto"))
    b.on_click(lambda _b: handler())
    return b
