"""Long steps as jobs: start, follow, cancel, reload (over ``builder.run.jobs``).

    job = start_step(ws, "run", version=3, runtime=rt)       # returns at once (background)
    job.fraction, job.message, job.state                     # poll (queued/running/succeeded/...)
    cancel_job(ws, job.id)                                   # ends "cancelled", nothing saved
    job_status(ws)                                           # the newest job's record (after a reload too)

Each step runs with the strategy that can stop it: a run in the sandbox (Cancel kills the
sandbox workers), Improve and Generate on a thread (cooperative, the token is polled), Augment,
Fine-tune and Export in a child process (Cancel kills it; clean-ups remove what it left, so a
cancelled fine-tune leaves no checkpoint and a cancelled export leaves the previous one intact).
Records live in ``<ws>/jobs/<id>.json``: another page, or another process, finds a running job,
and a job whose process died reads as "interrupted" (start it again with ``resume_job``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from builder.api import steps as _steps
from builder.api.programs import propose_programs
from builder.api.runs import run_examples
from builder.api.runtime import Runtime
from builder.core.atomic import remove_stale_exports
from builder.core.errors import Cancelled, UserError
from builder.core.workspace import Workspace
from builder.methods.finetune import FinetuneConfig
from builder.run.jobs import (
    FINAL_STATES,
    INTERRUPTED,
    STATES,
    CancelToken,
    InChildProcess,
    InSandbox,
    InThread,
    Job,
    job_records,
    live_job,
    load_job_record,
)

__all__ = ["FINAL_STATES", "JOB_STEPS", "STATES", "CancelToken", "Cancelled", "Job", "cancel_job", "job_status",
           "list_jobs", "resume_job", "running_job", "start_job", "start_step"]

# The steps that run as jobs, with the label interfaces show.
JOB_STEPS = {"generate": "Generate programs", "run": "Run on the examples", "improve": "Improve the planner",
             "augment": "Augment (SelTDA)", "finetune": "Fine-tune", "export": "Export"}
# Steps run in a child process: the public step function each calls.
_CHILD_ENTRIES = {"augment": "augment_data", "finetune": "finetune_engine", "export": "export_solution"}


def _folder(ws: Workspace) -> Path:
    return ws.dir("jobs")


def start_step(ws: Workspace, step: str, *, runtime: Runtime | None = None, background: bool = True,
               **params: Any) -> Job:
    """Start ``step`` (one of ``JOB_STEPS``) on the workspace as a job and return it.

    ``params`` go to the step's function (``run``: ``version``; ``improve``: ``improve_planner``'s
    options; ``finetune``: ``finetune_engine``'s; ``export``: ``export_solution``'s; ...).
    ``runtime`` is the shared ``Runtime`` (``run``, ``improve``; a private one otherwise).
    Only one job runs per workspace at a time (``UserError`` otherwise). With
    ``background=False`` the job runs in the calling thread and has ended on return.
    """
    if step not in JOB_STEPS:
        raise ValueError(f"unknown step {step!r}; one of {', '.join(JOB_STEPS)}")
    busy = running_job(ws)
    if busy is not None:
        raise UserError(f"busy with {busy.label}: wait for it or cancel it")
    job = Job(step, _strategy(ws, step, runtime, params), label=JOB_STEPS[step], params=params,
              folder=_folder(ws))
    for undo in _cleanups(ws, step, params):
        job.on_cancelled(undo)
    return job.start(background=background)


def start_job(step: str, work: Callable[[Job], Any], *, ws: Workspace | None = None,
              kill: Callable[[], None] | None = None, label: str = "", params: dict[str, Any] | None = None,
              background: bool = True) -> Job:
    """Run ``work(job)`` as a job: on a thread, polling ``job.token`` to stop; with ``kill`` (e.g.
    ``Runtime.cancel``) Cancel also calls it at once (the sandbox strategy). Recorded in the
    workspace's ``jobs/`` when ``ws`` is given. For work that is not one of ``JOB_STEPS``."""
    strategy = InSandbox(work, kill) if kill is not None else InThread(work)
    job = Job(step, strategy, label=label or step, params=params, folder=_folder(ws) if ws is not None else None)
    return job.start(background=background)


def _strategy(ws: Workspace, step: str, runtime: Runtime | None, params: dict[str, Any]):
    if step in _CHILD_ENTRIES:
        kwargs = {"progress": True, **params} if step != "export" else dict(params)
        return InChildProcess("builder.api.jobs:_step_in_child", (_CHILD_ENTRIES[step], str(ws.root)), kwargs)
    if step == "run":
        rt = runtime or Runtime(ws)
        version = int(params["version"])

        def run(job: Job):
            try:
                return run_examples(ws, version, rt, cancel=job.token, progress=lambda done, total: job.report(
                    f"v{version:04d}", done=done, total=total, unit="examples"))
            finally:
                if runtime is None:
                    rt.close()

        return InSandbox(run, kill=rt.cancel)
    if step == "improve":
        # self-training reports its rounds through ``builder.core.progress``, which reaches the job
        return InThread(lambda job: _steps.improve_planner(ws, runtime=runtime, cancel=job.token, **params))

    def generate(job: Job):
        job.report("the planner is writing programs")
        versions, note = propose_programs(ws, **params)
        job.token.raise_if_cancelled("Generate")
        return {"versions": [v.version for v in versions], "note": note}

    return InThread(generate)


def _step_in_child(entry: str, root: str, **kwargs: Any) -> Any:
    """In the job's child process: the public step ``entry`` on the workspace at ``root``."""
    if entry not in _CHILD_ENTRIES.values():
        raise ValueError(f"{entry!r} is not a step that runs in a child process")
    threads = int(os.environ.get("VISFORGE_TORCH_THREADS", "0") or 0)
    if threads:  # the parent's torch thread count (results depend on it): set before any training
        import torch

        torch.set_num_threads(threads)
    return getattr(_steps, entry)(Workspace.open(root), **kwargs)


# ---- clean-ups after a cancel: what a killed child left goes ------------------------------------
def _cleanups(ws: Workspace, step: str, params: dict[str, Any]) -> list[Callable[[], None]]:
    if step == "finetune":
        return [_undo_new_entries(ws.root / "checkpoints" / str(params.get("run", "finetune")))]
    if step == "augment":
        return [_undo_new_entries(ws.root / "datasets" / str(params.get("name", "seltda")))]
    if step == "export":
        out = params.get("out_dir")
        folder = Path(out).parent if out else ws.dir("exports")
        return [_undo_export(folder, Path(out).name if out else None)]
    return []


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _undo_new_entries(path: Path) -> Callable[[], None]:
    """A clean-up that removes ``path`` if it is new, else the entries added inside it."""
    existed = path.exists()
    before = set(os.listdir(path)) if path.is_dir() else set()

    def undo() -> None:
        if not existed:
            _remove(path)
        elif path.is_dir():
            for name in set(os.listdir(path)) - before:
                _remove(path / name)

    return undo


_OLD_EXPORT = re.compile(r"^\.(.+)\.old-\d+-[0-9a-f]+$")


def _undo_export(folder: Path, only: str | None) -> Callable[[], None]:
    """A clean-up for a killed export in ``folder``: an export it had moved aside goes back, what
    it added goes (only the ``only`` project when given), hidden temporary folders go."""
    before = set(os.listdir(folder)) if folder.is_dir() else set()

    def undo() -> None:
        if not folder.is_dir():
            return
        for old in folder.iterdir():
            m = _OLD_EXPORT.match(old.name)
            if m and (only is None or m.group(1) == only) and not (folder / m.group(1)).exists():
                old.rename(folder / m.group(1))  # killed between its two renames: the previous export returns
        for name in set(os.listdir(folder)) - before:
            if only is None or name == only:
                _remove(folder / name)
        remove_stale_exports(folder)

    return undo


# ---- following and cancelling --------------------------------------------------------------------
def running_job(ws: Workspace) -> Job | None:
    """The workspace's job running in this process, if any."""
    for rec in reversed(job_records(_folder(ws))):
        job = live_job(rec["id"])
        if job is not None and not job.finished:
            return job
    return None


def list_jobs(ws: Workspace) -> list[dict[str, Any]]:
    """Every job recorded in the workspace, oldest first (a running record whose process is gone
    reads as "interrupted")."""
    return job_records(_folder(ws))


def job_status(ws: Workspace, job_id: str | None = None) -> dict[str, Any] | None:
    """The record of job ``job_id`` (default: the newest job), None when there is none:
    ``state``, ``progress`` (fraction, message, done, total, unit), ``message``, ``error``,
    ``result`` (plain data, when small), ``started``/``ended``."""
    if job_id is not None:
        return load_job_record(_folder(ws), job_id)
    records = list_jobs(ws)
    return records[-1] if records else None


def cancel_job(ws: Workspace, job_id: str | None = None, wait: float | None = 30.0) -> dict[str, Any]:
    """Cancel job ``job_id`` (default: the running one) and wait up to ``wait`` seconds for it to
    end; returns its record (state "cancelled" once it has stopped)."""
    job = live_job(job_id) if job_id is not None else running_job(ws)
    if job is None:
        rec = job_status(ws, job_id)
        if rec is None or rec["state"] in FINAL_STATES:
            raise UserError("no running job to cancel")
        raise UserError(f"job {rec['id']} runs in another process (pid {rec.get('pid')}); cancel it there")
    job.cancel()
    job.wait(wait)
    return job.record()


def resume_job(ws: Workspace, job_id: str, runtime: Runtime | None = None, background: bool = True) -> Job:
    """Start an interrupted job again with its parameters (a new job)."""
    rec = job_status(ws, job_id)
    if rec is None or rec["state"] != INTERRUPTED:
        raise UserError(f"job {job_id} was not interrupted")
    params = dict(rec.get("params", {}))
    if rec["step"] == "finetune" and isinstance(params.get("config"), dict):
        params["config"] = FinetuneConfig(**params["config"])  # the record holds the config's fields
    return start_step(ws, rec["step"], runtime=runtime, background=background, **params)
