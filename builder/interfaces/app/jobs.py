"""The app's long steps as jobs of the one job engine (``builder.start_step``, ``cancel_job``,
``running_job``, ``resume_job``): nothing here runs or records work itself.

Each card whose step runs as a job is a ``StepCard``; its ``JobView`` (inside the card) shows
the job's progress (fraction, and a message with units), elapsed time and Cancel, and Resume
when the workspace's newest job was interrupted. ``JobWatcher`` is one session's view of the
workspace's job: the job it started, or the one the engine runs (so a reloaded page finds it).
Stopping the app server cancels the jobs it runs (``stop_jobs``), so no child process is left
training or writing after it.
"""

from __future__ import annotations

import atexit
import html
import signal
import threading
from pathlib import Path
from typing import Any

import panel as pn

from builder import (
    JOB_STEPS,
    META_FILE,
    REPORT_STEPS,
    Cancelled,
    Job,
    UserError,
    Workspace,
    cancel_job,
    job_status,
    resume_job,
    running_job,
    start_step,
    step_not_applicable,
    step_report,
)
from builder.interfaces.app.state import AppState, workspace_key

# The workspaces this server process started jobs in (``stop_jobs`` cancels their running job).
_LOCK = threading.Lock()
_ROOTS: set[str] = set()


def progress_text(job: Job) -> str:
    """A running job's progress as the cards and the header show it: the message, the count in
    its units ("3/8 examples done"), the elapsed time and, once a fraction is known, an ETA."""
    p = job.progress
    parts = [html.escape(p.message)]
    if p.done is not None and p.total is not None:
        parts.append(f"{p.done:g}/{p.total:g} {html.escape(p.unit)} done".replace("  ", " "))
    parts.append(f"{job.elapsed:.1f} s elapsed")
    eta = job_eta(job)
    if eta is not None:
        parts.append(f"about {eta:.0f} s left" if eta >= 1 else "finishing")
    return " · ".join(parts)


def job_eta(job: Job) -> float | None:
    """Seconds left, from the elapsed time and the fraction done (None until it says enough)."""
    frac = job.fraction
    if frac is None or frac < 0.02 or job.elapsed < 1.0:
        return None
    return job.elapsed * (1.0 - frac) / frac


ERROR_BOX = {"max-height": "160px", "overflow": "auto", "white-space": "pre-wrap", "overflow-wrap": "anywhere",
             "font-size": "12px"}


class JobView:
    """The job row inside a card: progress bar, status line (progress in units, elapsed, ETA;
    after the job its outcome, an error in a bounded box), Cancel and Resume. The outcome
    belongs to the card: it clears when the card's state changes (``clear``)."""

    def __init__(self, state: AppState, card: StepCard):
        self.card = card
        self.progress = pn.indicators.Progress(value=0, max=100, visible=False, width=200, bar_color="primary")
        self.status = pn.pane.Markdown("", sizing_mode="stretch_width", css_classes=["vf-job-status"])
        self.error = pn.pane.HTML("", visible=False, sizing_mode="stretch_width", css_classes=["vf-job-error"],
                                  styles={**ERROR_BOX, "color": "#b00020"})
        self.cancel_button = pn.widgets.Button(label="Cancel", color="danger", visible=False)
        self.resume_button = pn.widgets.Button(label="Resume", visible=False)
        # Why the step does not apply to the task (a video task has no image model to adapt).
        self.not_applicable = pn.pane.Markdown("", visible=False, sizing_mode="stretch_width",
                                               css_classes=["vf-not-applicable"], styles={"color": "#8a5300"})
        self.cancel_button.on_click(lambda _e: state.guard(lambda: state.jobs and state.jobs.cancel()))
        self.resume_button.on_click(state.action(lambda: state.jobs and state.jobs.resume()))
        state.buttons.append(self.resume_button)

    def show_running(self, job: Job) -> None:
        """Show a running job: its progress in units, elapsed time, ETA and Cancel."""
        frac = job.fraction
        self.progress.value = -1 if frac is None else int(round(100 * frac))
        self.progress.visible = self.cancel_button.visible = True
        self.resume_button.visible = self.error.visible = False
        self.status.object = f"**{self.card.label}** running · {progress_text(job)}"

    def show_idle(self, text: str | None = None, error: str = "") -> None:
        """No job of this card runs: hide progress and Cancel (``text``: a new status line,
        ``error``: the failed job's error, shown once, in a box that scrolls)."""
        self.progress.visible = self.cancel_button.visible = False
        if text is not None:
            self.status.object = text
            self.error.object = f"<pre style='margin:0;white-space:pre-wrap'>{html.escape(error)}</pre>" if error else ""
            self.error.visible = bool(error)

    def clear(self) -> None:
        """Forget the last job's outcome (the card's state changed); a running job stays shown."""
        if not self.cancel_button.visible:
            self.show_idle("")

    def layout(self) -> pn.Column:
        """The row as a card shows it."""
        return pn.Column(self.not_applicable,
                         pn.Row(self.progress, self.cancel_button, self.resume_button, self.status,
                                sizing_mode="stretch_width"), self.error,
                         sizing_mode="stretch_width", css_classes=["vf-job"])


class StepCard:
    """A card whose step (one of the engine's ``JOB_STEPS``) runs as a job. ``inputs`` reads the
    card's widgets, ``job_params`` turns them into the step's parameters (preparing what the
    step needs), ``show`` displays a finished job's result."""

    step = ""
    label = ""
    uses_runtime = False  # the step runs with the workspace's shared runtime (engines, sandbox)

    def __init__(self, state: AppState):
        self.state = state
        self.job_view = JobView(state, self)

    def inputs(self) -> dict[str, Any]:
        """The card's inputs, read from its widgets."""
        return {}

    def job_params(self, **inputs: Any) -> dict[str, Any]:
        """The step's parameters (``start_step``'s keywords) for these inputs."""
        return dict(inputs)

    def show(self, result: Any, params: dict[str, Any]) -> None:
        """Show a finished job's result (``params``: what it was started with)."""
        raise NotImplementedError

    def buttons(self) -> list[pn.widgets.Button]:
        """The buttons that start the card's step (off while the step does not apply)."""
        return []

    def views(self) -> list[pn.viewable.Viewable]:
        """The views that show the step's last result (hidden while the step does not apply)."""
        return []

    def clear_outcome(self) -> None:
        """The task changed: forget what the card said about its last job beyond the status line."""

    def show_progress(self, job: Job) -> None:
        """Show more of a running job than its status line (a card's live view; default none)."""

    def hide_progress(self) -> None:
        """No job of this card runs (any more): its live view goes."""

    def load_saved(self) -> None:
        """Show the step's last result as saved in the workspace (``step_report``), so a reload
        or a server restart shows what the last finished job showed."""
        if self.step in REPORT_STEPS:
            report = step_report(self.state.workspace, self.step)
            if report is not None:
                self.render(report)

    def render(self, report: dict[str, Any]) -> None:
        """Draw a result (a finished job's, or the saved one) in the card's views."""

    def say(self, text: str) -> None:
        """Add to the card's status line (a finished job's result): it stays with the card."""
        status = self.job_view.status
        status.object = f"{status.object} — {text}" if status.object else text

    def start(self, **inputs: Any) -> Job:
        """Start the step as the workspace's job with the card's inputs (``inputs`` override them)."""
        assert self.state.jobs is not None
        return self.state.jobs.start(self, **{**self.inputs(), **inputs})

    def execute(self, **inputs: Any) -> Any:
        """Start the step, wait for it, show and return its result (scripts and tests). A
        cancelled job raises ``Cancelled``, a failed one ``UserError`` with the job's error."""
        assert self.state.jobs is not None
        job = self.start(**inputs)
        self.state.jobs.wait()
        if job.state == "cancelled":
            raise Cancelled(job.message)
        if job.state != "succeeded":
            raise UserError(job.error or f"{self.label} ended {job.state}")
        return job.result


class JobWatcher:
    """One session's view of the workspace's job (the engine's); ``register`` the step cards
    that show their jobs. ``poll`` (every 250 ms in a browser) updates the cards."""

    def __init__(self, state: AppState):
        self.state = state
        state.jobs = self
        self.cards: dict[str, StepCard] = {}
        self.job: Job | None = None  # the job this session follows (running, or the last one)
        self.header = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["vf-running-jobs"])
        self._shown: str | None = None
        self._interrupted: dict[str, Any] | None = None
        self._callback = None

    def register(self, *cards: StepCard) -> None:
        """The cards whose steps run as jobs (a job shows in its step's card)."""
        self.cards.update({card.step: card for card in cards})

    def current(self) -> Job | None:
        """The workspace's running job (from the engine), else the last job this session followed."""
        if self.state.has_workspace():
            live = running_job(self.state.workspace)
            if live is not None and (self.job is None or live.id != self.job.id):
                self.job = live
        return self.job

    def running(self) -> bool:
        """Whether a job of the workspace runs."""
        job = self.current()
        return job is not None and not job.finished

    def start(self, card: StepCard, **inputs: Any) -> Job:
        """Start ``card``'s step through the engine (one job per workspace at a time)."""
        ws = self.state.workspace
        reason = step_not_applicable(ws, card.step)  # said by the step's name, before anything is written
        if reason:
            raise UserError(reason)
        params = card.job_params(**inputs)
        runtime = self.state.runtime if card.uses_runtime else None
        self.state.say("")
        return self._follow(start_step(ws, card.step, runtime=runtime, **params))

    def _follow(self, job: Job) -> Job:
        with _LOCK:
            _ROOTS.add(workspace_key(self.state.root))
        self.job, self._interrupted = job, None
        for card in self.cards.values():
            card.job_view.resume_button.visible = False
        self.poll()
        return job

    def cancel(self) -> None:
        """Cancel the running job through the engine (it ends "cancelled", nothing saved)."""
        job = self.current()
        if job is not None and not job.finished:
            cancel_job(self.state.workspace, job.id, wait=2.0)
        self.poll()

    def wait(self, timeout: float | None = None) -> Job | None:
        """Block until the followed job ends (scripts and tests); returns it."""
        job = self.current()
        if job is not None:
            job.wait(timeout)
        self.poll()
        return job

    def show_applicable(self) -> None:
        """Say in each card whose step does not apply to the task why (``step_not_applicable``)."""
        ws = self.state.workspace
        for card in self.cards.values():
            reason = step_not_applicable(ws, card.step) or ""
            card.job_view.not_applicable.object = html.escape(reason)
            card.job_view.not_applicable.visible = bool(reason)
            # Its button is off and its last result (of another task, still in the workspace) hidden.
            for button in card.buttons():
                self.state.inapplicable.discard(id(button))
                if reason:
                    self.state.inapplicable.add(id(button))
            for view in card.views():
                view.visible = not reason
        self.state.set_disabled(self.state.busy())

    def clear_outcomes(self) -> None:
        """The task changed: the cards' last job outcomes no longer describe it."""
        for card in self.cards.values():
            card.job_view.clear()
            card.clear_outcome()

    def find_interrupted(self) -> None:
        """Show the workspace's newest job in its card; an interrupted one (its process is gone:
        the server stopped) is offered for resuming when the engine can start it again."""
        rec = job_status(self.state.workspace)
        card = self.cards.get(rec["step"]) if rec else None
        if rec is None or card is None or self.running():
            return
        if rec["state"] == "interrupted" and rec["step"] in JOB_STEPS:
            self._interrupted = rec
            card.job_view.resume_button.visible = True
            card.job_view.show_idle(f"**{card.label}** was interrupted (the server stopped); "
                                    "press Resume to start it again.")
        elif rec["state"] in ("cancelled", "failed"):
            card.job_view.show_idle(f"**{card.label}** {rec['state']} (last job)")

    def resume(self) -> Job | None:
        """Start the interrupted job again with its parameters (``resume_job``)."""
        rec = self._interrupted
        if rec is None:
            return None
        card = self.cards[rec["step"]]
        runtime = self.state.runtime if card.uses_runtime else None
        return self._follow(resume_job(self.state.workspace, rec["id"], runtime=runtime))

    def poll(self) -> None:
        """Show the job's progress in its card; a job that ended is shown once (result or error)."""
        job = self.current()
        for step, card in self.cards.items():
            if job is not None and step == job.step and not job.finished:
                card.job_view.show_running(job)
                self.state.guard(lambda card=card: card.show_progress(job))
            else:
                card.job_view.show_idle()
                card.hide_progress()
        self.state.set_disabled(self.state.busy())
        self._show_header(job)
        if job is not None and job.finished and job.id != self._shown:
            self._shown = job.id
            self._show_ended(job)

    def _show_header(self, job: Job | None) -> None:
        """The page header lists the workspace's running job (with its card's step number)."""
        text = ""
        if job is not None and not job.finished:
            card = self.cards.get(job.step)
            label = card.label if card is not None else job.label
            text = (f"<div class='vf-running' style='padding:4px 8px;background:#eef4ff;border-radius:4px'>"
                    f"Running: <b>{html.escape(label)}</b> · {progress_text(job)} "
                    "<small>(Cancel is in its card)</small></div>")
        if self.header.object != text:
            self.header.object = text

    def _show_ended(self, job: Job) -> None:
        """A job's outcome in its own card (never in the page's message area, where it would
        outlive the card's state): the result, "cancelled after", or the error once."""
        card = self.cards.get(job.step)
        label = card.label if card is not None else job.label
        if card is None:
            self.state.say(f"{html.escape(label)} {job.state}", "success" if job.state == "succeeded" else "warning")
            return
        if job.state == "succeeded":
            card.job_view.show_idle(f"**{label}** finished in {job.elapsed:.1f} s")
            self.state.guard(lambda: card.show(job.result, job.params))
        elif job.state == "cancelled":
            self.state.guard(self.state.refresh)  # nothing was saved: the cards show the workspace as it is
            card.job_view.show_idle(f"<span style='color:#b45309'>**{label}** cancelled after {job.elapsed:.1f} s: "
                                    f"{html.escape(job.message)}</span>")
        else:
            card.job_view.show_idle(f"<span style='color:#b00020'>**{label}** {job.state} after "
                                    f"{job.elapsed:.1f} s:</span>", error=job.error or job.message)

    def start_polling(self) -> None:
        """In a browser session, poll the job every 250 ms."""
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None and self._callback is None:
            self._callback = pn.state.add_periodic_callback(self.poll, period=250)

    def close(self) -> None:
        """Stop polling (the job itself keeps running for the next page load)."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None


def stop_jobs(wait: float = 30.0) -> None:
    """Cancel the running job of every workspace this process started jobs in and wait for
    them to end: child processes are killed, the jobs end "cancelled" with nothing saved.
    Called when the app server stops (signal, end of serving, interpreter exit)."""
    with _LOCK:
        roots = sorted(_ROOTS)
    for root in roots:
        if not (Path(root) / META_FILE).is_file():
            continue
        ws = Workspace.open(root)
        job = running_job(ws)
        if job is not None:
            job.cancel("the app server stopped")
            job.wait(wait)


def stop_on_sigterm() -> None:
    """Make SIGTERM end serving the way Ctrl-C does (an exception through the server's loop),
    so ``stop_jobs`` runs on the way out instead of the process dying with its jobs running."""
    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread: the caller handles its signals
        pass


atexit.register(stop_jobs)
