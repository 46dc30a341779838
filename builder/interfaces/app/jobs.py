"""The app's jobs: a long step runs on a background thread, one per workspace at a time, with a
progress bar, elapsed time and Cancel; jobs are recorded under ``<ws>/jobs/`` so a reloaded page
shows the running job and, after a server restart, an interrupted one to resume.

All of the app's job handling is in this module (``Job``, the server-wide registry, ``JobPanel``
and the ``StepCard`` base of the cards whose step runs as a job), so it can be swapped for a
job engine below the interfaces without touching the cards.
"""

from __future__ import annotations

import html
import json
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import panel as pn

from builder import META_FILE, Cancelled, UserError
from builder.interfaces.app.state import AppState, user_text, workspace_key

# The workspace's current (or last) job in this server process, shared by its sessions.
_LOCK = threading.Lock()
_JOBS: dict[str, Job] = {}


class Job:
    """One long step on a background thread: progress, elapsed time, cancel, result (plain data)."""

    def __init__(self, root: Path, step: str, label: str, params: dict[str, Any]):
        self.id = f"{time.strftime('%Y%m%d-%H%M%S')}-{step}-{secrets.token_hex(3)}"
        self.root, self.step, self.label, self.params = Path(root), step, label, params
        self.state = "running"  # running | done | failed | cancelled | interrupted
        self.started, self.ended = time.time(), None
        self.fraction: float | None = None
        self.message = "starting"
        self.result: Any = None
        self.error = ""
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self._saved = 0.0

    @property
    def elapsed(self) -> float:
        """Seconds since the job started (until it ended)."""
        return (self.ended or time.time()) - self.started

    def progress(self, message: str, fraction: float | None) -> None:
        """Report progress (``fraction`` None: unknown); saved at most every 2 s."""
        self.message, self.fraction = message, fraction
        if time.time() - self._saved > 2:
            self.save()

    def record(self) -> dict[str, Any]:
        """The job as the JSON record kept under ``<ws>/jobs/``."""
        return {"id": self.id, "step": self.step, "label": self.label, "params": self.params, "state": self.state,
                "started": self.started, "ended": self.ended, "message": self.message, "error": self.error}

    def save(self) -> None:
        """Write the job's record (only inside a workspace)."""
        self._saved = time.time()
        if (self.root / META_FILE).is_file():
            _write_record(self.root / "jobs" / f"{self.id}.json", self.record())


def _write_record(path: Path, record: dict[str, Any]) -> None:
    """Write a job record whole or not at all (a temporary file renamed over it)."""
    path.parent.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def job_records(root: Path) -> list[dict[str, Any]]:
    """The jobs recorded in the workspace, oldest first."""
    out = []
    for p in sorted((Path(root) / "jobs").glob("*.json")):
        try:
            out.append(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    return out


class StepCard:
    """A card whose step runs as a job: ``compute`` does the work (``job`` None: synchronously,
    in the caller), ``show`` displays its result, ``params`` reads the card's inputs."""

    step = ""
    label = ""

    def __init__(self, state: AppState):
        self.state = state

    def params(self) -> dict[str, Any]:
        """The step's parameters, read from the card's widgets."""
        return {}

    def compute(self, job: Job | None, **params: Any) -> Any:
        """Do the step's work; report progress and stop when asked through ``job``."""
        raise NotImplementedError

    def show(self, result: Any) -> None:
        """Show what ``compute`` returned."""
        raise NotImplementedError

    def on_cancel(self) -> None:
        """Called when the user cancels this step's job (the job's ``stop`` is already set)."""

    def start(self) -> Job:
        """Start the step as the workspace's job with the card's parameters."""
        assert self.state.jobs is not None
        return self.state.jobs.start(self, **self.params())


class JobPanel:
    """The job row of the page (progress, status, Cancel, Resume) and the session's view of the
    workspace's job; ``register`` the step cards whose results it shows."""

    def __init__(self, state: AppState):
        self.state = state
        state.jobs = self
        self.cards: dict[str, StepCard] = {}
        self.progress = pn.indicators.Progress(value=0, max=100, visible=False, width=260, bar_color="primary")
        self.job_status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.cancel_button = pn.widgets.Button(label="Cancel", color="danger", visible=False)
        self.resume_button = pn.widgets.Button(label="Resume", visible=False)
        self.cancel_button.on_click(lambda _e: self.cancel())
        self.resume_button.on_click(state.action(self.resume))
        state.buttons.append(self.resume_button)
        self._shown_job: str | None = None
        self._interrupted: dict[str, Any] | None = None
        self._callback = None

    def register(self, *cards: StepCard) -> None:
        """The cards whose steps run as jobs (a job's result is shown by its step's card)."""
        self.cards.update({card.step: card for card in cards})

    @property
    def job(self) -> Job | None:
        """The workspace's current (or last) job in this server process."""
        return _JOBS.get(workspace_key(self.state.root))

    def running(self) -> bool:
        """Whether the workspace's job is running."""
        job = self.job
        return job is not None and job.state == "running"

    def start(self, card: StepCard, wait: bool = False, **params: Any) -> Job:
        """Start ``card``'s step as the workspace's job (one at a time); ``wait`` joins it."""
        ws = self.state.workspace
        with _LOCK:
            current = _JOBS.get(workspace_key(ws.root))
            if current is not None and current.state == "running":
                raise UserError(f"busy with {current.label}: wait for it or cancel it")
            job = Job(ws.root, card.step, card.label, params)
            _JOBS[workspace_key(ws.root)] = job
        job.save()
        self.state.say("")
        job.thread = threading.Thread(target=_work, args=(card, job), name=f"visforge-{card.step}", daemon=True)
        job.thread.start()
        self.poll()
        if wait:
            job.thread.join()
            self.poll()
        return job

    def cancel(self) -> None:
        """Cancel the running job: its work stops (sandboxed programs and child processes are killed)."""
        job = self.job
        if job is not None and job.state == "running":
            job.stop.set()
            job.message = "cancelling ..."
            card = self.cards.get(job.step)
            if card is not None:
                card.on_cancel()

    def wait(self, timeout: float | None = None) -> Job | None:
        """Block until the current job ends (tests); returns it."""
        job = self.job
        if job is not None and job.thread is not None:
            job.thread.join(timeout)
        self.poll()
        return job

    def find_interrupted(self) -> None:
        """Mark jobs recorded as running but not alive in this server as interrupted; offer Resume."""
        live = self.job
        for rec in job_records(self.state.root):
            if rec.get("state") == "running" and (live is None or live.id != rec["id"]):
                rec["state"] = "interrupted"
                _write_record(self.state.root / "jobs" / f"{rec['id']}.json", rec)
                self._interrupted = rec
        if self._interrupted is not None:
            self.resume_button.visible = True
            self.job_status.object = (f"**{self._interrupted['label']}** was interrupted (the server stopped); "
                                      "press Resume to start it again.")

    def resume(self) -> Job | None:
        """Start the interrupted job again with its parameters."""
        rec, self._interrupted = self._interrupted, None
        self.resume_button.visible = False
        if rec is None:
            return None
        card = self.cards.get(rec["step"])
        if card is None:
            raise ValueError(f"the interrupted job's step {rec['step']!r} is not a step of this app")
        return self.start(card, **rec.get("params", {}))

    def poll(self) -> None:
        """Show the job's progress (a periodic callback in the browser; called directly otherwise)."""
        job = self.job
        running = job is not None and job.state == "running"
        self.cancel_button.visible = running
        self.progress.visible = running
        if running:
            frac = job.fraction
            self.progress.value = -1 if frac is None else int(round(100 * max(0.0, min(1.0, frac))))
            self.job_status.object = (f"**{job.label}** running · {html.escape(job.message)} · "
                                      f"{job.elapsed:.1f} s elapsed")
        self.state.set_disabled(self.state.busy())
        if job is not None and not running and job.id != self._shown_job:
            self._shown_job = job.id
            self._show_ended(job)

    def _show_ended(self, job: Job) -> None:
        if job.state == "done":
            self.job_status.object = f"**{job.label}** finished in {job.elapsed:.1f} s"
            card = self.cards.get(job.step)
            if card is not None:
                self.state.guard(lambda: card.show(job.result))
        elif job.state == "cancelled":
            self.job_status.object = f"**{job.label}** cancelled after {job.elapsed:.1f} s"
            self.state.say(f"{job.label} cancelled: {html.escape(job.message)}", "warning")
            self.state.guard(self.state.task_changed)
        else:
            self.job_status.object = f"**{job.label}** failed after {job.elapsed:.1f} s"
            self.state.say(f"**Error:** {html.escape(job.error)}", "danger")

    def layout(self) -> pn.Row:
        """The job row; in a browser session it also starts polling the job."""
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None and self._callback is None:
            self._callback = pn.state.add_periodic_callback(self.poll, period=250)
        return pn.Row(self.progress, self.cancel_button, self.resume_button, self.job_status,
                      sizing_mode="stretch_width", css_classes=["vf-job"])

    def close(self) -> None:
        """Stop polling (the job itself keeps running for the next page load)."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None


def _work(card: StepCard, job: Job) -> None:
    try:
        job.result = card.compute(job, **job.params)
        job.state, job.message = "done", "done"
    except Cancelled as e:
        job.state, job.message = "cancelled", str(e)
    except Exception as e:  # noqa: BLE001 - shown to the user
        job.state, job.error = "failed", user_text(e)
    job.ended = time.time()
    job.save()
