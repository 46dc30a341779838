"""Running a program version on the task's examples, and reading the saved runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from builder.api.runtime import Runtime
from builder.core.errors import Cancelled
from builder.core.workspace import Workspace, WorkspaceError, task_fingerprint
from builder.run import BatchResult, examples_from_card, run_batch

__all__ = ["accepted_status", "best_version", "latest_runs", "run_examples", "run_is_stale", "run_label"]

def run_label(run_id: str) -> str:
    """The label part of a run id (``<date>-<time>-<label>-<hex>``)."""
    parts = run_id.split("-")
    return "-".join(parts[2:-1]) if len(parts) >= 4 else ""


def latest_runs(ws: Workspace) -> dict[int, dict[str, Any]]:
    """The newest saved run of each program version (loaded lazily by label)."""
    newest: dict[str, str] = {}
    for run_id in ws.runs():  # oldest first: later ones overwrite
        label = run_label(run_id)
        if label.startswith("v") and label[1:].isdigit():
            newest[label] = run_id
    out = {}
    for label, run_id in newest.items():
        try:
            out[int(label[1:])] = ws.load_run(run_id)
        except (WorkspaceError, json.JSONDecodeError):
            continue
    return out



def run_examples(ws: Workspace, version: int, runtime: Runtime,
                 progress: Callable[[int, int], None] | None = None, save: bool = True,
                 should_stop: Callable[[], bool] | None = None,
                 cancel: Callable[[], bool] | None = None) -> BatchResult:
    """Run a program version on every example with traces; save the run; return ``BatchResult``.

    The examples go through the runtime's runner (``builder.run.registry``: local threads on the
    runtime's sandbox, or Ray). ``cancel`` (a ``CancelToken``; ``should_stop`` is the older
    name for a plain callable) is polled while programs run: once it is set the sandbox's
    running programs are killed (``Runtime.cancel``), nothing is saved and ``Cancelled`` is
    raised. The saved run records the task card's fingerprint (``run_is_stale``).
    """
    card = ws.load_task()
    if not card.examples:
        raise ValueError("the task has no examples yet: add some in the Task step")
    pv = ws.program(version)
    stop = cancel if cancel is not None else should_stop
    killed: list[bool] = []

    def stopped() -> bool:
        if stop is None or not stop():
            return False
        if not killed:  # kill the running programs once; the runner then raises Cancelled
            killed.append(True)
            runtime.cancel()
        return True

    examples = examples_from_card(card, ws.root)
    if progress:
        progress(0, len(examples))
    local = runtime.runner == "local"
    res = run_batch(pv.source, examples, card.output, card.metric,
                    engines=runtime.engines if local else None, profile=runtime.profile,
                    cache=runtime.cache if local else None, sandbox=runtime.sandbox if local else None,
                    workers=max(1, runtime.workers), engine=runtime.runner, progress=progress or False,
                    inspect=True, cancel=stopped)
    if stopped():  # set after the last example finished: still nothing is saved
        raise Cancelled(f"run of {pv.tag} cancelled; nothing was saved")
    if save:
        ws.save_run({"program": pv.version, "task": task_fingerprint(card), **res.to_dict()}, label=pv.tag)
    return res


def best_version(ws: Workspace) -> tuple[int, float] | None:
    """The program version with the best latest run (ties: the shorter program); None if no runs."""
    runs = latest_runs(ws)
    if not runs:
        return None
    scored = [(run["accuracy"], -len(ws.program(v).source), v) for v, run in runs.items()]
    acc, _, v = max(scored)
    return v, acc



def run_is_stale(ws: Workspace, run: dict[str, Any], fingerprint: str | None = None) -> bool:
    """True when ``run`` was scored on another task card than the workspace's current one."""
    return ws.run_is_stale(run, fingerprint)


def accepted_status(ws: Workspace) -> dict[str, Any] | None:
    """The accepted version and whether it is stale (its newest run is on another task card, or
    it has no run on the current one); None when nothing is accepted."""
    acc = ws.accepted
    if acc is None:
        return None
    run = latest_runs(ws).get(acc.version)
    stale = run is None or run_is_stale(ws, run)
    return {"version": acc.version, "tag": acc.tag, "stale": stale,
            "accuracy": None if run is None else run.get("accuracy")}

