"""One job engine: a long step (a run, Improve, fine-tune, export ...) as a ``Job``.

A job has explicit states, progress (a fraction and a message with units), a ``CancelToken``
and a record in the workspace (``<ws>/jobs/<id>.json``, written atomically)::

    queued -> running -> succeeded | failed | cancelled
    (a record left "running" by a process that is gone reads as "interrupted")

How the work runs, and how Cancel stops it, is the job's strategy:

- ``InThread``: ``fn(job)`` on a thread of this process; the work polls ``job.token``.
- ``InSandbox``: the same, plus a kill hook on the token (stop the sandbox workers), so
  programs running in the sandbox stop at once.
- ``InChildProcess``: ``module:function`` in a child process (its own session); Cancel kills
  its process group; the child's ``builder.core.progress.report`` calls (units: epochs,
  images, stages) reach the job through a file, else its tqdm bars on stderr are read.

There is one way to cancel: ``job.cancel()`` (or ``token.cancel()``). It always ends in the
state "cancelled"; the steps write their outputs at the end, and a job's ``on_cancelled``
clean-ups remove what a killed child left, so nothing half-done is saved.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from builder.core import progress as _progress
from builder.core.atomic import atomic_write_bytes, atomic_write_json
from builder.core.errors import Cancelled, UserError, error_text

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED = (
    "queued", "running", "succeeded", "failed", "cancelled", "interrupted")
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
FINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED, INTERRUPTED})
RESULT_LIMIT = 50_000  # a result bigger than this (as JSON) stays in memory, not in the record

__all__ = ["CANCELLED", "FAILED", "FINAL_STATES", "INTERRUPTED", "QUEUED", "RUNNING", "STATES", "SUCCEEDED",
           "CancelToken", "Cancelled", "InChildProcess", "InSandbox", "InThread", "Job", "JobProgress",
           "job_records", "live_job", "load_job_record"]


class CancelToken:
    """The one way to cancel: ``cancel()`` sets it and runs the kill hooks registered with
    ``on_cancel``; work polls it (``token()`` or ``token.cancelled``, so it can be passed where a
    ``should_stop`` callable is expected)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], None]] = []
        self.reason = ""

    @property
    def cancelled(self) -> bool:
        """True once ``cancel`` was called."""
        return self._event.is_set()

    def __call__(self) -> bool:
        """Same as ``cancelled``, so the token can be passed as a ``should_stop`` callable."""
        return self._event.is_set()

    def cancel(self, reason: str = "cancelled by the user") -> None:
        """Set the token and run every kill hook once (a failing hook does not stop the others)."""
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            try:
                hook()
            except Exception:  # noqa: BLE001 - a kill hook must not keep the others from running
                traceback.print_exc()

    def on_cancel(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run ``hook`` when the token is cancelled (now, if it already is); returns a remover."""
        with self._lock:
            if not self._event.is_set():
                self._hooks.append(hook)
                return lambda: self._remove(hook)
        hook()
        return lambda: None

    def _remove(self, hook: Callable[[], None]) -> None:
        with self._lock:
            if hook in self._hooks:
                self._hooks.remove(hook)

    def raise_if_cancelled(self, what: str = "the step") -> None:
        """Raise ``Cancelled`` when the token is set."""
        if self._event.is_set():
            raise Cancelled(f"{what} cancelled; nothing was saved")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled (True) or ``timeout`` seconds pass (False)."""
        return self._event.wait(timeout)


@dataclass
class JobProgress:
    """How far a job is: a fraction (None: unknown) and a message; ``done``/``total`` in ``unit``."""

    fraction: float | None = None
    message: str = "queued"
    done: float | None = None
    total: float | None = None
    unit: str = ""


# ---- strategies ------------------------------------------------------------------------------
class InThread:
    """Run ``fn(job)`` on the job's thread; the work polls ``job.token`` to stop (cooperative)."""

    name = "thread"

    def __init__(self, fn: Callable[[Job], Any]):
        self.fn = fn

    def execute(self, job: Job) -> Any:
        """Do the work; returns its result."""
        return self.fn(job)


class InSandbox(InThread):
    """``InThread`` whose Cancel also calls ``kill`` (stop the sandbox workers) at once."""

    name = "sandbox"

    def __init__(self, fn: Callable[[Job], Any], kill: Callable[[], None]):
        super().__init__(fn)
        self.kill = kill

    def execute(self, job: Job) -> Any:
        """Do the work with the kill hook registered on the job's token."""
        remove = job.token.on_cancel(self.kill)
        try:
            return self.fn(job)
        finally:
            remove()


# tqdm's bar on stderr: "<desc>: 40%|████      | 4/10 [...]"
_PROGRESS_RE = re.compile(r"([^\r\n|:]{0,60}?):?\s*(\d{1,3})%\|[^|]*\|\s*(\d+)/(\d+)")


class InChildProcess:
    """Call ``target`` ("package.module:function") with ``args``/``kwargs`` in a child process.

    The call and its result travel as pickles in a private folder; the result must be plain
    data (``to_dict()`` is used when it has one). The child runs in its own session, so a
    Ctrl-C in a terminal reaches only the parent, which cancels; Cancel kills the child's
    process group at once. Progress comes from the child's ``builder.core.progress.report``
    calls (written to ``progress.json`` in the private folder), or else from the tqdm bars it
    writes on stderr.
    """

    name = "child"

    def __init__(self, target: str, args: tuple = (), kwargs: dict[str, Any] | None = None, poll_s: float = 0.2):
        if ":" not in target:
            raise ValueError(f"{target!r}: a child-process target is 'package.module:function'")
        self.target, self.args, self.kwargs, self.poll_s = target, tuple(args), dict(kwargs or {}), poll_s

    def execute(self, job: Job) -> Any:
        """Start the child, follow its progress, kill it on Cancel; returns its result."""
        with tempfile.TemporaryDirectory(prefix="visforge-job-") as folder:
            base = Path(folder)
            (base / "call.pickle").write_bytes(pickle.dumps((self.target, self.args, self.kwargs)))
            log = base / "stderr.log"
            with open(log, "wb") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-c", "import sys; from builder.run.jobs import _child_main; _child_main(sys.argv[1])",
                     str(base)], stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
            remove = job.token.on_cancel(lambda: _kill_group(proc))
            try:
                self._follow(job, proc, log)
            finally:
                remove()
                _kill_group(proc)
            job.token.raise_if_cancelled(job.label or job.step)
            return self._result(base, log, proc.returncode)

    def _follow(self, job: Job, proc: subprocess.Popen, log: Path) -> None:
        last: Any = None
        reports = log.with_name(PROGRESS_FILE)
        while True:
            ended = proc.poll() is not None  # read once more after the end: the last report counts
            if not ended and job.token.wait(self.poll_s):
                return
            current = _read_reports(reports) or _read_tqdm(log, job.step)
            if current is not None and current != last:
                last = current
                message, fraction, done, total, unit = current
                job.report(message, fraction, done=done, total=total, unit=unit)
            if ended:
                return

    def _result(self, base: Path, log: Path, code: int | None) -> Any:
        result = base / "result.pickle"
        if not result.is_file():
            tail = log.read_text(encoding="utf-8", errors="replace")[-1500:] if log.is_file() else ""
            raise RuntimeError(f"{self.target}: the step's process ended without a result (exit code {code})\n{tail}")
        msg = pickle.loads(result.read_bytes())
        if msg[0] == "ok":
            return msg[1]
        _, kind, text, user = msg
        raise (UserError(text) if user else RuntimeError(f"{kind}: {text}"))


PROGRESS_FILE = "progress.json"  # in a child job's private folder: its latest progress report


def _read_reports(path: Path) -> tuple | None:
    """The child's latest ``progress.report`` (message, fraction, done, total, unit), if any."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec.get("message", ""), rec.get("fraction"), rec.get("done"), rec.get("total"), rec.get("unit", "")


def _read_tqdm(log: Path, step: str) -> tuple | None:
    """The last tqdm bar on the child's stderr, as a progress report in "steps"."""
    try:
        tail = log.read_bytes()[-2000:].decode("utf-8", "replace")
    except OSError:
        return None
    found = _PROGRESS_RE.findall(tail)
    if not found:
        return None
    desc, _pct, done, total = found[-1]
    return desc.strip() or step, int(done) / max(1, int(total)), int(done), int(total), "steps"


def _file_listener(path: Path, every_s: float = 0.2) -> _progress.Listener:
    """A progress listener for a child job: writes the latest report to ``path`` (a report that
    only updates the message, such as the loss of each training step, at most every ``every_s``
    seconds; a new count, unit or stage at once)."""
    last: list[Any] = [0.0, None]

    def listen(message: str, fraction: float | None, done: float | None, total: float | None, unit: str) -> None:
        now, count = time.time(), (done, total, unit)
        if now - last[0] < every_s and count == last[1]:
            return
        last[0], last[1] = now, count
        atomic_write_json(path, {"message": message, "fraction": fraction, "done": done, "total": total,
                                 "unit": unit})

    return listen


def _plain(value: Any) -> Any:
    """Parameters that are dataclasses (a ``FinetuneConfig``) are recorded as their fields."""
    from dataclasses import is_dataclass

    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else str(value)


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


def _child_main(folder: str) -> None:
    """The child process of ``InChildProcess``: reads ``call.pickle``, writes ``result.pickle``."""
    import importlib

    try:  # die with the parent (Linux): a killed server leaves no orphaned training behind
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    base = Path(folder)
    target, args, kwargs = pickle.loads((base / "call.pickle").read_bytes())
    try:
        module, _, name = target.partition(":")
        with _progress.reporting_to(_file_listener(base / PROGRESS_FILE)):
            result = getattr(importlib.import_module(module), name)(*args, **kwargs)
        data = result.to_dict() if hasattr(result, "to_dict") else result
        out = ("ok", json.loads(json.dumps(data, default=str)))
    except BaseException as e:  # noqa: BLE001 - sent to the parent, which raises it
        out = ("error", type(e).__name__, str(e), isinstance(e, UserError | ValueError))
    atomic_write_bytes(base / "result.pickle", pickle.dumps(out))


# ---- the job ---------------------------------------------------------------------------------
_LIVE: dict[str, Job] = {}  # the jobs of this process that have not ended, by id
_LIVE_LOCK = threading.Lock()
_PROCESS_STARTED = psutil.Process().create_time()


class Job:
    """One long step: state, progress, a cancel token, a result, and a record in ``folder``.

    ``start()`` runs it on a background thread (``start(background=False)`` in the caller's
    thread); ``wait()`` joins it; ``cancel()`` stops it. ``folder`` (the workspace's ``jobs/``)
    keeps the record, so a reloaded page or another process finds it (``job_records``); without
    a folder the job is not persisted.
    """

    def __init__(self, step: str, strategy: InThread | InChildProcess, *, label: str = "",
                 params: dict[str, Any] | None = None, folder: str | Path | None = None):
        self.id = f"{time.strftime('%Y%m%d-%H%M%S')}-{step}-{secrets.token_hex(3)}"
        self.step, self.label, self.params = step, label or step, dict(params or {})
        self.strategy = strategy
        self.folder = Path(folder) if folder is not None else None
        self.state = QUEUED
        self.progress = JobProgress()
        self.token = CancelToken()
        self.result: Any = None
        self.error = ""
        self.created, self.started, self.ended = time.time(), None, None
        self._done = threading.Event()
        self._cleanups: list[Callable[[], None]] = []
        self._listeners: list[Callable[[Job], None]] = []
        self._saved = 0.0
        self.thread: threading.Thread | None = None

    # ---- what interfaces read ----------------------------------------------------------------
    @property
    def message(self) -> str:
        """The progress message, with ``done/total unit`` when known."""
        p = self.progress
        if p.done is not None and p.total is not None:
            return f"{p.message}: {p.done:g}/{p.total:g} {p.unit}".rstrip()
        return p.message

    @property
    def fraction(self) -> float | None:
        """Progress as a fraction in [0, 1] (None: unknown)."""
        return self.progress.fraction

    @property
    def finished(self) -> bool:
        """True once the job reached a final state."""
        return self.state in FINAL_STATES

    @property
    def elapsed(self) -> float:
        """Seconds since the job started (until it ended)."""
        if self.started is None:
            return 0.0
        return (self.ended or time.time()) - self.started

    def record(self) -> dict[str, Any]:
        """The job as plain data (what ``jobs/<id>.json`` holds)."""
        rec = {"id": self.id, "step": self.step, "label": self.label, "strategy": self.strategy.name,
               "params": json.loads(json.dumps(self.params, default=_plain)), "state": self.state, "progress": asdict(self.progress),
               "message": self.message, "created": self.created, "started": self.started, "ended": self.ended,
               "error": self.error, "pid": os.getpid(), "process_started": _PROCESS_STARTED}
        if self.state == SUCCEEDED:
            try:
                text = json.dumps(self.result.to_dict() if hasattr(self.result, "to_dict") else self.result,
                                  default=str)
                if len(text) <= RESULT_LIMIT:
                    rec["result"] = json.loads(text)
            except (TypeError, ValueError):
                pass
        return rec

    def save(self) -> None:
        """Write the record atomically (no-op without a folder)."""
        self._saved = time.time()
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.folder / f"{self.id}.json", self.record())

    # ---- what the work calls -----------------------------------------------------------------
    def report(self, message: str, fraction: float | None = None, *, done: float | None = None,
               total: float | None = None, unit: str = "") -> None:
        """Progress from the work: a message, a fraction, and ``done``/``total`` ``unit``."""
        if fraction is None and done is not None and total:
            fraction = done / total
        self.progress = JobProgress(None if fraction is None else max(0.0, min(1.0, float(fraction))),
                                    message, done, total, unit)
        for fn in list(self._listeners):
            fn(self)
        if time.time() - self._saved > 1.0:
            self.save()

    def _heard(self, message: str, fraction: float | None, done: float | None, total: float | None,
               unit: str) -> None:
        self.report(message, fraction, done=done, total=total, unit=unit)

    def watch(self, fn: Callable[[Job], None]) -> None:
        """Call ``fn(job)`` on every progress report."""
        self._listeners.append(fn)

    def on_cancelled(self, fn: Callable[[], None]) -> None:
        """A clean-up run after the job ended "cancelled" (remove what a killed step left)."""
        self._cleanups.append(fn)

    # ---- control -----------------------------------------------------------------------------
    def start(self, background: bool = True) -> Job:
        """Run the job (on a daemon thread unless ``background`` is False); returns it."""
        with _LIVE_LOCK:
            _LIVE[self.id] = self
        self.save()
        if not background:
            self._execute()
            return self
        self.thread = threading.Thread(target=self._execute, name=f"visforge-job-{self.step}", daemon=True)
        self.thread.start()
        return self

    def cancel(self, reason: str = "cancelled by the user") -> None:
        """Stop the job: set its token (kill hooks run at once); it ends as "cancelled"."""
        if not self.finished:
            self.progress = JobProgress(self.progress.fraction, "cancelling ...")
            self.token.cancel(reason)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (True) or ``timeout`` seconds pass (False)."""
        return self._done.wait(timeout)

    def _execute(self) -> None:
        self.state, self.started = RUNNING, time.time()
        self.progress = JobProgress(0.0, "starting")
        self.save()
        try:
            self.token.raise_if_cancelled(self.label)
            with _progress.reporting_to(self._heard):  # ``progress.report`` in the work reaches the job
                self.result = self.strategy.execute(self)
            self.state, self.progress = SUCCEEDED, JobProgress(1.0, "done")
        except BaseException as e:  # noqa: BLE001 - every outcome becomes a state
            if isinstance(e, Cancelled) or self.token.cancelled:
                self.state = CANCELLED
                self.progress = JobProgress(self.progress.fraction, str(e) if isinstance(e, Cancelled)
                                            else f"{self.label} cancelled; nothing was saved")
            else:
                self.state = FAILED
                self.error = error_text(e, frames=6)
        if self.state == CANCELLED:
            for fn in self._cleanups:
                try:
                    fn()
                except Exception:  # noqa: BLE001 - every clean-up gets its chance
                    traceback.print_exc()
        self.ended = time.time()
        self.save()
        with _LIVE_LOCK:
            _LIVE.pop(self.id, None)
        self._done.set()


# ---- records -----------------------------------------------------------------------------------
def live_job(job_id: str) -> Job | None:
    """The job ``job_id`` if it runs in this process."""
    with _LIVE_LOCK:
        return _LIVE.get(job_id)


def _owner_alive(rec: dict[str, Any]) -> bool:
    """Whether the process that wrote a running record still runs it."""
    pid = rec.get("pid")
    if pid == os.getpid():
        return live_job(rec.get("id", "")) is not None
    try:
        return abs(psutil.Process(int(pid)).create_time() - float(rec.get("process_started", 0))) < 1.0
    except (psutil.Error, TypeError, ValueError):
        return False


def _checked(path: Path, rec: dict[str, Any]) -> dict[str, Any]:
    """A record that says queued/running but whose process is gone becomes "interrupted" (saved)."""
    if rec.get("state") in (QUEUED, RUNNING) and not _owner_alive(rec):
        rec = {**rec, "state": INTERRUPTED, "message": "interrupted: the process running it stopped"}
        atomic_write_json(path, rec)
    return rec


def load_job_record(folder: str | Path, job_id: str) -> dict[str, Any]:
    """The record of job ``job_id`` in ``folder`` (state checked, see ``job_records``)."""
    job = live_job(job_id)
    if job is not None:
        return job.record()
    path = Path(folder) / f"{job_id}.json"
    try:
        return _checked(path, json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise UserError(f"no job {job_id!r} in {folder}") from None


def job_records(folder: str | Path) -> list[dict[str, Any]]:
    """Every job recorded in ``folder``, oldest first; live jobs of this process as they are now,
    and records whose process is gone marked "interrupted"."""
    out = []
    for p in sorted(Path(folder).glob("*.json")):
        job = live_job(p.stem)
        if job is not None:
            out.append(job.record())
            continue
        try:
            out.append(_checked(p, json.loads(p.read_text(encoding="utf-8"))))
        except (OSError, json.JSONDecodeError):
            continue
    return sorted(out, key=lambda r: (r.get("created") or 0, r.get("id", "")))
