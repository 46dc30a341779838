"""The VisForge Panel app for workshops: the whole workflow, Task → Program → Run → Improve →
Augment → Fine-tune → Export, over one workspace.

    visforge app --workspace ws/ --port 5006          # serve on 127.0.0.1:5006
    serve_app(5006, "ws/")                             # the same from Python
    create_app("ws/")                                  # the Panel viewable (notebooks: display it)

Every button calls a public method of ``VisForgeApp`` (``create_task``, ``replace_task``,
``add_examples``, ``delete_example``, ``generate``, ``save_version``, ``run``, ``accept``,
``improve``, ``augment``, ``finetune``, ``export``) that does the work synchronously, so scripts
and tests drive it without a browser. In the browser, long steps run as a *job* on a background
thread: one per workspace at a time, with a progress bar, elapsed time and a Cancel that stops
the work (sandboxed programs are killed; Augment, Fine-tune and Export run in a child process
that is killed). Jobs live in the server process and are recorded under ``<ws>/jobs/``, so a
reloaded page shows the running job (or, after a server restart, an interrupted one to resume).
Nothing is lost: a task is only replaced explicitly and the old one stays restorable; uploads are
decoded before anything is saved; runs on an earlier task card are marked stale.
"""

from __future__ import annotations

import atexit
import html
import json
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import panel as pn

from builder import (
    Cancelled,
    FinetuneConfig,
    Runtime,
    UserError,
    accept_program,
    accepted_status,
    augment_data,
    card_from_data,
    delete_example,
    examples_dataset,
    export_solution,
    finetune_engine,
    format_expected,
    improve_planner,
    latest_runs,
    parse_expected_text,
    propose_programs,
    replace_task,
    restore_task,
    run_examples,
    run_is_stale,
    run_step_in_process,
    save_task,
    shapes_task_data,
    shapes_unlabelled,
    stage_image,
    task_fingerprint,
    task_history,
    task_problems,
    update_example,
    validate_image_upload,
)
from builder.core.atomic import atomic_write_json
from builder.core.taskcard import TaskCardError
from builder.core.workspace import META_FILE, ProgramVersion, Workspace, WorkspaceError
from builder.domains.shapes.world.cards import KINDS as SHAPES_KINDS
from builder.interfaces.app_search import search_card
from builder.interfaces.views import bars_svg, curve_svg, results_table_html, safe_thumbnail, trace_html

CSS = """
.vf-code textarea {font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px;}
.vf-thumbs {display:flex; flex-wrap:wrap; gap:4px; max-width:100%;}
.vf-thumbs figure {margin:0; text-align:center; font-size:11px; width:78px; overflow:hidden;}
"""
STEPS = ("generate", "run", "improve", "augment", "finetune", "export")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024

# ---- server-wide state: one job and one runtime per workspace, shared by its sessions ----------
_LOCK = threading.Lock()
_JOBS: dict[str, Job] = {}
_RUNTIMES: dict[str, Runtime] = {}


def _key(root: Path) -> str:
    return str(Path(root).resolve())


def _shared_runtime(ws: Workspace) -> Runtime:
    with _LOCK:
        rt = _RUNTIMES.get(_key(ws.root))
        if rt is None:
            rt = _RUNTIMES[_key(ws.root)] = Runtime(ws)
        return rt


@atexit.register
def _close_runtimes() -> None:
    for rt in list(_RUNTIMES.values()):
        rt.close()


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
        self._saved = 0.0

    @property
    def elapsed(self) -> float:
        return (self.ended or time.time()) - self.started

    def progress(self, message: str, fraction: float | None) -> None:
        self.message, self.fraction = message, fraction
        if time.time() - self._saved > 2:
            self.save()

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "step": self.step, "label": self.label, "params": self.params, "state": self.state,
                "started": self.started, "ended": self.ended, "message": self.message, "error": self.error}

    def save(self) -> None:
        self._saved = time.time()
        folder = self.root / "jobs"
        if (self.root / META_FILE).is_file():
            folder.mkdir(exist_ok=True)
            atomic_write_json(folder / f"{self.id}.json", self.record())


def job_records(root: Path) -> list[dict[str, Any]]:
    """The jobs recorded in the workspace, oldest first."""
    out = []
    for p in sorted((Path(root) / "jobs").glob("*.json")):
        try:
            out.append(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def _user_text(e: BaseException) -> str:
    user = isinstance(e, (UserError, TaskCardError, WorkspaceError, ValueError, FileNotFoundError))
    return str(e) if user else f"{type(e).__name__}: {e}\n\n{traceback.format_exc(limit=4)}"


class VisForgeApp:
    """One app session over the workspace at ``workspace_dir`` (created by ``create_task``)."""

    def __init__(self, workspace_dir: str | Path):
        self.root = Path(workspace_dir)
        self.last_result = None
        self._action_lock = threading.Lock()
        self._shown_job: str | None = None
        self._callback = None
        W = pn.widgets  # noqa: N806

        # 1 task
        self.kind = W.Select(label="Task kind", options=list(SHAPES_KINDS), value="count", width=120)
        self.target = W.TextInput(label="Target objects", value="red objects", width=160)
        self.n = W.IntInput(label="Examples", value=8, start=1, end=60, width=90)
        self.seed = W.IntInput(label="Seed", value=0, width=80)
        self.create_button = W.Button(label="Create task", color="primary")
        self.replace_button = W.Button(label="Replace the current task", color="danger", visible=False)
        self.upload = W.FileInput(accept="image/*", multiple=True)
        self.query = W.TextInput(label="Query for uploaded images", placeholder="How many ...?")
        self.expected = W.TextInput(label="Expected output", placeholder="3 / yes / [[x0,y0,x1,y1]]")
        self.upload_button = W.Button(label="Add uploaded examples")
        self.task_view = pn.pane.HTML("<i>No task yet: create one from the shapes world or upload images.</i>",
                                      sizing_mode="stretch_width")
        self.example_pick = W.Select(label="Example", options=[], width=130)
        self.example_expected = W.TextInput(label="Its expected output", width=150)
        self.example_save = W.Button(label="Save example")
        self.example_delete = W.Button(label="Delete example", color="warning")
        self.history = W.Select(label="Earlier tasks", options={}, width=240)
        self.restore_button = W.Button(label="Restore task")
        # 2 program
        self.generate_button = W.Button(label="Generate program", color="primary")
        self.k = W.IntInput(label="Candidates", value=3, start=1, end=8, width=100)
        self.version = W.Select(label="Version", options={}, width=260)
        self.code = W.TextAreaInput(label="Program", height=170, sizing_mode="stretch_width",
                                    css_classes=["vf-code"], placeholder="def execute(image):\n    ...")
        self.save_button = W.Button(label="Save version")
        self.accept_button = W.Button(label="Accept version", color="success")
        self.program_note = pn.pane.Markdown("", sizing_mode="stretch_width")
        # 3 run
        self.run_button = W.Button(label="Run on examples", color="primary")
        self.summary = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.results = pn.pane.HTML("", sizing_mode="stretch_width", max_height=420, styles={"overflow": "auto"})
        self.trace_example = W.Select(label="Trace of example", options=[], width=200)
        self.trace = pn.pane.HTML("", sizing_mode="stretch_width", max_height=420, styles={"overflow": "auto"})
        # 4-7 adapt and export
        self.rounds = W.IntInput(label="Rounds", value=1, start=1, end=5, width=80)
        self.improve_k = W.IntInput(label="Readings per query", value=4, start=1, end=16, width=130)
        self.improve_steps = W.IntInput(label="Steps", value=30, start=1, end=1000, width=90)
        self.improve_button = W.Button(label="Improve the planner", color="primary")
        self.improve_view = pn.pane.HTML("", sizing_mode="stretch_width")
        self.n_unlabelled = W.IntInput(label="Unlabeled images", value=8, start=1, end=500, width=130)
        self.qgen_steps = W.IntInput(label="Teacher steps", value=60, start=5, end=5000, width=110)
        self.augment_button = W.Button(label="Augment the data", color="primary")
        self.augment_view = pn.pane.HTML("", sizing_mode="stretch_width")
        self.epochs = W.IntInput(label="Epochs", value=1, start=1, end=50, width=80)
        self.ft_dataset = W.Select(label="Dataset", options=["examples"], value="examples", width=140)
        self.finetune_button = W.Button(label="Fine-tune the engine", color="primary")
        self.finetune_view = pn.pane.HTML("", sizing_mode="stretch_width")
        self.build_wheel = W.Checkbox(label="build the wheel (slower)", value=False)
        self.export_button = W.Button(label="Export the solution", color="primary")
        self.export_view = pn.pane.HTML("", sizing_mode="stretch_width")
        # jobs and messages
        self.progress = pn.indicators.Progress(value=0, max=100, visible=False, width=260, bar_color="primary")
        self.job_status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.cancel_button = W.Button(label="Cancel", color="danger", visible=False)
        self.resume_button = W.Button(label="Resume", visible=False)
        self.message = pn.pane.Alert("", alert_type="success", visible=False, sizing_mode="stretch_width")
        self.alert = self.message  # one message area: a new message replaces the last one
        self._interrupted: dict[str, Any] | None = None

        act = self._action
        self.create_button.on_click(act(lambda: self.create_task(self.kind.value, self.target.value,
                                                                 self.n.value, self.seed.value)))
        self.replace_button.on_click(act(lambda: self.replace_task(self.kind.value, self.target.value,
                                                                   self.n.value, self.seed.value)))
        self.upload_button.on_click(act(self._add_uploaded))
        self.example_save.on_click(act(lambda: self.edit_example(self.example_pick.value, self.example_expected.value)))
        self.example_delete.on_click(act(lambda: self.delete_example(self.example_pick.value)))
        self.restore_button.on_click(act(lambda: self.restore(self.history.value)))
        self.save_button.on_click(act(lambda: self.save_version(self.code.value)))
        self.accept_button.on_click(act(lambda: self.accept(self.version.value)))
        self.generate_button.on_click(act(lambda: self.start("generate", k=self.k.value)))
        self.run_button.on_click(act(self._start_run))
        self.improve_button.on_click(act(lambda: self.start("improve", rounds=self.rounds.value,
                                                            k=self.improve_k.value, steps=self.improve_steps.value)))
        self.augment_button.on_click(act(lambda: self.start("augment", n_unlabelled=self.n_unlabelled.value,
                                                            qgen_steps=self.qgen_steps.value)))
        self.finetune_button.on_click(act(lambda: self.start("finetune", dataset=self.ft_dataset.value,
                                                             epochs=self.epochs.value)))
        self.export_button.on_click(act(lambda: self.start("export", build=self.build_wheel.value)))
        self.cancel_button.on_click(lambda _e: self.cancel())
        self.resume_button.on_click(act(self.resume))
        self.version.param.watch(lambda e: e.new is not None and self._guard(lambda: self.select(e.new)), "value")
        self.trace_example.param.watch(lambda e: e.new and self._guard(lambda: self.show_trace(e.new)), "value")
        self.example_pick.param.watch(lambda e: e.new and self._guard(lambda: self._pick_example(e.new)), "value")
        if (self.root / META_FILE).is_file():
            self._guard(self._refresh_all)
            self._guard(self._load_results)
            self._guard(self._find_interrupted)
        self._poll()

    # ---- plumbing ----------------------------------------------------------------------------
    @property
    def workspace(self) -> Workspace:
        """The app's workspace (an error tells the user to create a task first)."""
        if not (self.root / META_FILE).is_file():
            raise WorkspaceError("no task yet: create one in step 1 first")
        return Workspace.open(self.root)

    @property
    def runtime(self) -> Runtime:
        return _shared_runtime(self.workspace)

    def close(self) -> None:
        """End this session (a running job keeps running for the next page load)."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        job = self.job
        if job is None or job.state != "running":
            with _LOCK:
                rt = _RUNTIMES.pop(_key(self.root), None)
            if rt is not None:
                rt.close()

    @property
    def job(self) -> Job | None:
        """The workspace's current (or last) job in this server process."""
        return _JOBS.get(_key(self.root))

    def busy(self) -> bool:
        job = self.job
        return self._action_lock.locked() or (job is not None and job.state == "running")

    def say(self, text: str, kind: str = "success") -> None:
        """Show one message (it replaces the previous one, success or error)."""
        self.message.alert_type = kind
        self.message.object = text
        self.message.visible = bool(text)

    _say = say

    def _guard(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn``; show any error as the message (never swallowed) and return None then."""
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - shown to the user
            self.say(f"**Error:** {html.escape(_user_text(e))}", "danger")
            return None

    def _buttons(self) -> list:
        return [self.create_button, self.replace_button, self.upload_button, self.example_save,
                self.example_delete, self.restore_button, self.generate_button, self.save_button,
                self.accept_button, self.run_button, self.improve_button, self.augment_button,
                self.finetune_button, self.export_button, self.resume_button]

    def _set_disabled(self, disabled: bool) -> None:
        for b in self._buttons():
            if b.disabled != disabled:
                b.disabled = disabled

    def _action(self, fn: Callable[[], Any]) -> Callable[[Any], None]:
        """A click handler: ignored while another action or a job runs (double clicks do nothing
        twice); every button is disabled meanwhile; errors become the message."""

        def handler(_event) -> None:
            if self.busy() or not self._action_lock.acquire(blocking=False):
                return
            try:
                self._set_disabled(True)
                self._guard(fn)
            finally:
                self._action_lock.release()
                self._set_disabled(self.busy())

        return handler

    # ---- jobs --------------------------------------------------------------------------------
    def start(self, step: str, wait: bool = False, **params: Any) -> Job:
        """Start a long step as the workspace's job (one at a time); ``wait`` joins it."""
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}")
        ws = self.workspace
        with _LOCK:
            current = _JOBS.get(_key(self.root))
            if current is not None and current.state == "running":
                raise UserError(f"busy with {current.label}: wait for it or cancel it")
            job = Job(ws.root, step, _LABELS[step], params)
            _JOBS[_key(self.root)] = job
        job.save()
        self.say("")
        thread = threading.Thread(target=self._work, args=(job,), name=f"visforge-{step}", daemon=True)
        job.thread = thread
        thread.start()
        self._poll()
        if wait:
            thread.join()
            self._poll()
        return job

    def _work(self, job: Job) -> None:
        try:
            job.result = getattr(self, f"_compute_{job.step}")(job, **job.params)
            job.state, job.message = "done", "done"
        except Cancelled as e:
            job.state, job.message = "cancelled", str(e)
        except Exception as e:  # noqa: BLE001 - shown to the user
            job.state, job.error = "failed", _user_text(e)
        job.ended = time.time()
        job.save()

    def cancel(self) -> None:
        """Cancel the running job: its work stops (sandboxed programs and child processes are killed)."""
        job = self.job
        if job is not None and job.state == "running":
            job.stop.set()
            job.message = "cancelling ..."
            if job.step == "run":
                self.runtime.cancel()

    def wait(self, timeout: float | None = None) -> Job | None:
        """Block until the current job ends (tests); returns it."""
        job = self.job
        if job is not None and getattr(job, "thread", None) is not None:
            job.thread.join(timeout)
        self._poll()
        return job

    def _find_interrupted(self) -> None:
        live = self.job
        for rec in job_records(self.root):
            if rec.get("state") == "running" and (live is None or live.id != rec["id"]):
                rec["state"] = "interrupted"
                atomic_write_json(self.root / "jobs" / f"{rec['id']}.json", rec)
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
        return self.start(rec["step"], **rec.get("params", {}))

    def _poll(self) -> None:
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
        self._set_disabled(self.busy())
        if job is not None and not running and job.id != self._shown_job:
            self._shown_job = job.id
            if job.state == "done":
                self.job_status.object = f"**{job.label}** finished in {job.elapsed:.1f} s"
                show = "_show_run_result" if job.step == "run" else f"_show_{job.step}"
                self._guard(lambda: getattr(self, show)(job.result))
            elif job.state == "cancelled":
                self.job_status.object = f"**{job.label}** cancelled after {job.elapsed:.1f} s"
                self.say(f"{job.label} cancelled: {html.escape(job.message)}", "warning")
                self._guard(self._refresh_all)
            else:
                self.job_status.object = f"**{job.label}** failed after {job.elapsed:.1f} s"
                self.say(f"**Error:** {html.escape(job.error)}", "danger")

    # ---- 1 task ------------------------------------------------------------------------------
    def create_task(self, kind: str = "count", target: str = "red objects", n: int = 8, seed: int = 0) -> Workspace:
        """Make a shapes-world task the workspace's task, only when it has none yet: an existing
        task is never overwritten here (the user is asked to use ``replace_task``)."""
        if (self.root / META_FILE).is_file():
            card = self.workspace.load_task()
            self.replace_button.visible = True
            self.say(f"This workspace already has the task **{html.escape(card.name)}** with "
                     f"{len(card.examples)} examples; nothing was changed. Press **Replace the current task** "
                     "to replace it (the old task is kept under Earlier tasks and can be restored).", "warning")
            return self.workspace
        card = card_from_data(shapes_task_data(kind, target, int(n), int(seed)))
        ws = save_task(self.root, card)
        self._refresh_all()
        self.say(f"Task **{html.escape(card.name)}** with {len(card.examples)} examples: "
                 f"*{html.escape(card.examples[0].query or '')}*")
        return ws

    def replace_task(self, kind: str = "count", target: str = "red objects", n: int = 8, seed: int = 0) -> Workspace:
        """Replace the task explicitly: the old card is kept (restorable); old runs become stale."""
        card = card_from_data(shapes_task_data(kind, target, int(n), int(seed)))
        ws = replace_task(self.root, card, reason="replaced in the app")
        self.replace_button.visible = False
        self._refresh_all()
        self.say(f"Task replaced by **{html.escape(card.name)}** ({len(card.examples)} examples). The previous "
                 "task is under Earlier tasks; runs and the accepted version from it are marked stale.")
        return ws

    def restore(self, number: int | None) -> None:
        """Make an earlier task card the task again (the current one is kept too)."""
        if number is None:
            raise ValueError("choose an earlier task first")
        card = restore_task(self.workspace, int(number))
        self._refresh_all()
        self.say(f"Restored the earlier task **{html.escape(card.name)}** ({len(card.examples)} examples).")

    def add_examples(self, files: list[tuple[str, bytes]], query: str, expected: str) -> Workspace:
        """Add uploaded images (name, bytes) with one query and expected output to the task.

        Every file is decoded and size-checked before anything is saved; a bad one is named in
        the error and nothing changes. Without a workspace yet, a new task is started from them.
        """
        if not files:
            raise ValueError("choose image files first")
        for name, data in files:
            if len(data) > MAX_UPLOAD_BYTES:
                raise ValueError(f"{name}: {len(data)} bytes is over the {MAX_UPLOAD_BYTES}-byte upload limit")
            validate_image_upload(data, name)
        value = parse_expected_text(expected)
        examples = [{"image": str(stage_image(data, name)), "query": query, "expected": value}
                    for name, data in files]
        if (self.root / META_FILE).is_file():
            data = self.workspace.load_task().model_dump(mode="json", exclude_none=True)
            taken = {ex.get("id") for ex in data["examples"]}
            i = len(data["examples"])
            for ex in examples:
                while f"up{i:04d}" in taken:
                    i += 1
                taken.add(f"up{i:04d}")
                data["examples"].append({"id": f"up{i:04d}", **ex})
        else:
            kind = ("bool" if isinstance(value, bool) else "count" if isinstance(value, int) else
                    "boxes" if isinstance(value, list) else "text")
            data = {"name": "uploaded-task", "description": query or "Uploaded examples", "output": kind,
                    "examples": [{"id": f"up{i:04d}", **ex} for i, ex in enumerate(examples)]}
        ws = save_task(self.root, card_from_data(data), reason=f"added {len(files)} uploaded example(s)")
        self._refresh_all()
        self.say(f"Added {len(files)} example(s).")
        return ws

    def _add_uploaded(self) -> None:
        names = self.upload.filename or []
        values = self.upload.value or []
        if isinstance(names, str):
            names, values = [names], [values]
        self.add_examples(list(zip(names, values, strict=False)), self.query.value, self.expected.value)
        if hasattr(self.upload, "clear"):
            self.upload.clear()

    def delete_example(self, example_id: str | None) -> None:
        """Delete one example (the previous card is kept in the task history)."""
        if not example_id:
            raise ValueError("choose an example first")
        delete_example(self.workspace, example_id)
        self._refresh_all()
        self.say(f"Deleted example **{html.escape(example_id)}** (the previous task is under Earlier tasks).")

    def edit_example(self, example_id: str | None, expected: str) -> None:
        """Change one example's expected output."""
        if not example_id:
            raise ValueError("choose an example first")
        update_example(self.workspace, example_id, expected=expected)
        self._refresh_all()
        self.say(f"Saved example **{html.escape(example_id)}**.")

    def _pick_example(self, example_id: str) -> None:
        card = self.workspace.load_task()
        match = [ex for ex in card.examples if ex.id == example_id]
        if match:
            self.example_expected.value = format_expected(match[0].expected)

    # ---- 2 program ---------------------------------------------------------------------------
    def generate(self, k: int = 3) -> list[ProgramVersion]:
        """Planner candidates (or the template when no planner) saved as versions; selects the first."""
        versions, note = self._compute_generate(None, k)
        self._show_generate((versions, note))
        return versions

    def _compute_generate(self, job: Job | None, k: int = 3):
        if job is not None:
            job.progress("the planner is writing programs", None)
        return propose_programs(self.workspace, k=int(k))

    def _show_generate(self, result) -> None:
        versions, note = result
        self._refresh_versions(select=versions[0].version if versions else None)
        self.program_note.object = html.escape(note)

    def select(self, version: int) -> ProgramVersion:
        """Load a version into the editor and show its last run."""
        pv = self.workspace.program(int(version))
        self.code.value = pv.source
        self._show_run(latest_runs(self.workspace).get(pv.version), pv.version)
        return pv

    def save_version(self, source: str, note: str = "edited in the app") -> ProgramVersion:
        """Save edited source as a new version (validated first); selects it."""
        from builder.executor import ValidationError, validate

        try:
            validate(source)
        except ValidationError as e:
            raise ValueError(f"program not saved: {e}") from None
        parent = self.version.value
        pv = self.workspace.add_program(source, origin="engineer", note=note, parent=parent)
        self._refresh_versions(select=pv.version)
        self.program_note.object = f"saved {pv.tag}"
        return pv

    def accept(self, version: int | None) -> ProgramVersion:
        """Accept a version (the one exports use)."""
        if version is None:
            raise ValueError("no program version selected")
        pv = accept_program(self.workspace, int(version))
        self._refresh_versions(select=int(version))
        self.say(f"Accepted **{pv.tag}**: export it in step 7.")
        return pv

    # ---- 3 run -------------------------------------------------------------------------------
    def _prepare_run(self, version: int | None) -> int:
        ws = self.workspace
        if version is None:
            raise ValueError("no program yet: generate one (step 2) first")
        if self.code.value.strip() and self.code.value != ws.program(int(version)).source:
            version = self.save_version(self.code.value).version
        return int(version)

    def _start_run(self) -> Job:
        return self.start("run", version=self._prepare_run(self.version.value))

    def run(self, version: int | None = None):
        """Run a version (default: the selected one) on every example; returns the ``BatchResult``.

        Unsaved edits in the editor are saved as a new version first, so what runs is what is kept.
        """
        version = self._prepare_run(version if version is not None else self.version.value)
        res = self._compute_run(None, version)
        self._show_run_result(res)
        return res[1]

    def _compute_run(self, job: Job | None, version: int):
        def progress(done: int, total: int) -> None:
            if job is not None:
                job.progress(f"v{version:04d}: {done}/{total} examples", done / max(1, total))

        res = run_examples(self.workspace, version, self.runtime, progress=progress,
                           should_stop=job.stop.is_set if job is not None else None)
        return version, res

    def _show_run_result(self, result) -> None:
        version, res = result
        self.last_result = res
        self._refresh_versions(select=version)
        self.say(f"v{version:04d}: {res.correct}/{res.n} passed.")

    def show_trace(self, example_id: str) -> str:
        """Show the step-by-step trace of one example from the selected version's last run."""
        run = latest_runs(self.workspace).get(self.version.value)
        if run is None:
            return ""
        match = [r for r in run["results"] if r["id"] == example_id]
        if match:
            self.trace.object = trace_html(self.workspace, match[0], title=f"v{self.version.value:04d} on {example_id}")
        return self.trace.object

    # ---- 4-7 improve, augment, fine-tune, export ------------------------------------------------
    def improve(self, rounds: int = 1, k: int = 4, steps: int = 30, **options: Any) -> dict:
        """Self-train the planner on the examples (the Improve step); shows before/after."""
        report = self._compute_improve(None, rounds, k, steps, **options)
        self._show_improve(report)
        return report

    def _compute_improve(self, job: Job | None, rounds: int = 1, k: int = 4, steps: int = 30, **options: Any):
        return improve_planner(self.workspace, rounds=int(rounds), k=int(k), steps=int(steps), eval_fraction=0.5,
                               progress=job.progress if job is not None else False,
                               should_stop=job.stop.is_set if job is not None else None,
                               runtime=self.runtime, **options)

    def _show_improve(self, report: dict) -> None:
        bars = [("before", (report.get("before") or {}).get("accuracy"))]
        bars += [(f"round {r.get('round', i + 1)}", (r.get("eval") or {}).get("accuracy"))
                 for i, r in enumerate(report.get("rounds", []))]
        kept = sum(r.get("kept_total", 0) or 0 for r in report.get("rounds", []))
        self.improve_view.object = (
            bars_svg(bars, f"planner accuracy on {report.get('eval_examples', '?')} held-out examples") +
            f"<div><small>{kept} kept reading(s); adapted planner saved to "
            f"<code>{html.escape(str(report.get('planner', '')))}</code>; later proposals use it.</small></div>")
        self.say("Improve finished: the adapted planner is used by Generate from now on.")

    def augment(self, n_unlabelled: int = 8, qgen_steps: int = 60) -> dict:
        """SelTDA on shapes-world unlabeled images (the Augment step); shows sample pseudo-labels."""
        out = self._compute_augment(None, n_unlabelled, qgen_steps)
        self._show_augment(out)
        return out

    def _compute_augment(self, job: Job | None, n_unlabelled: int = 8, qgen_steps: int = 60):
        ws = self.workspace
        examples_dataset(ws, "examples")
        folder = shapes_unlabelled(ws, n=int(n_unlabelled))
        kwargs = {"labelled": "examples", "unlabelled": str(folder), "qgen_steps": int(qgen_steps)}
        if job is None:
            return augment_data(ws, progress=False, **kwargs)
        return run_step_in_process("augment_data", ws, on_progress=job.progress, should_stop=job.stop.is_set, **kwargs)

    def _show_augment(self, out: dict) -> None:
        folder = self.workspace.root / "datasets" / "unlabelled"
        cells = "".join(
            f"<figure>{safe_thumbnail(folder / ex['image'], 72)}<figcaption>{html.escape(ex['question'])} → "
            f"<b>{html.escape(str(ex['answer']))}</b></figcaption></figure>" for ex in out.get("examples", [])[:8])
        filt = out.get("filter", {})
        self.augment_view.object = (
            bars_svg([("real", out.get("real", 0)), ("synthetic", out.get("synthetic", 0))],
                     "dataset (question/answer pairs)", maximum=max(1, out.get("real", 0), out.get("synthetic", 0)),
                     fmt="{:.0f}") +
            f"<div><small>{out.get('unlabelled_images', 0)} unlabeled images; kept {filt.get('kept', '?')} of "
            f"{filt.get('total', '?')} pseudo-labels</small></div><div class='vf-thumbs'>{cells}</div>")
        self.ft_dataset.options = sorted({"examples", Path(str(out.get("dataset", "seltda"))).name})
        self.say("Augment finished: fine-tune on the new dataset in step 6.")

    def finetune(self, dataset: str = "examples", epochs: int = 1) -> dict:
        """Fine-tune the VQA engine on a workspace dataset; shows before/after and the loss curve."""
        out = self._compute_finetune(None, dataset, epochs)
        self._show_finetune(out)
        return out

    def _compute_finetune(self, job: Job | None, dataset: str = "examples", epochs: int = 1):
        ws = self.workspace
        if dataset == "examples":
            examples_dataset(ws, "examples")
        kwargs = {"dataset": dataset, "run": f"app-{dataset}", "config": FinetuneConfig(epochs=int(epochs)),
                  "progress": True}
        if job is None:
            res = finetune_engine(ws, **kwargs)
            return json.loads(json.dumps(res.to_dict() if hasattr(res, "to_dict") else res.__dict__, default=str))
        return run_step_in_process("finetune_engine", ws, on_progress=job.progress, should_stop=job.stop.is_set,
                                   **kwargs)

    def _show_finetune(self, out: dict) -> None:
        before, after = out.get("before") or {}, out.get("after") or {}
        hist = out.get("history") or {}
        curve = curve_svg({"train loss": [(h["step"], h["loss"]) for h in hist.get("train", [])],
                           "val loss": [(h["step"], h["loss"]) for h in hist.get("val", [])]}, "loss")
        self.finetune_view.object = (
            bars_svg([("before", before.get("accuracy")), ("after", after.get("accuracy"))],
                     f"VQA accuracy ({after.get('n', before.get('n', '?'))} held-out questions)") +
            curve + f"<div><small>best checkpoint <code>{html.escape(str(out.get('best_checkpoint', '')))}"
                    "</code></small></div>")
        self.say("Fine-tune finished.")

    def export(self, build: bool = False) -> dict:
        """Export the accepted program (verified on the examples); shows the acceptance results."""
        out = self._compute_export(None, build)
        self._show_export(out)
        return out

    def _compute_export(self, job: Job | None, build: bool = False):
        ws = self.workspace
        if ws.accepted is None:
            raise ValueError("no accepted program yet: accept a version in step 2 first")
        if job is None:
            return export_solution(ws, build=bool(build), overwrite=True).to_dict()
        job.progress("verifying on the examples and writing the project", None)
        return run_step_in_process("export_solution", ws, on_progress=job.progress, should_stop=job.stop.is_set,
                                   build=bool(build), overwrite=True)

    def _show_export(self, out: dict) -> None:
        ex = (out.get("manifest") or {}).get("examples") or {}
        n, passed = ex.get("n", 0), ex.get("passed", 0)
        cmds = "\n".join(out.get("install_commands") or [])
        self.export_view.object = (
            bars_svg([("passed", passed / n if n else None)], f"acceptance tests: {passed}/{n} examples pass") +
            f"<div class='vf-export'><b>{html.escape(str(out.get('name')))} {html.escape(str(out.get('version')))}"
            f"</b> (program v{int(out.get('program_version', 0)):04d})<br>project: "
            f"<code>{html.escape(str(out.get('project_dir')))}</code><br>wheel: "
            f"<code>{html.escape(str(out.get('wheel') or 'not built'))}</code>"
            + (f"<pre>{html.escape(cmds)}</pre>" if cmds else "") + "</div>")
        self.say(f"Exported: {passed}/{n} acceptance examples pass.")

    # ---- display -----------------------------------------------------------------------------
    def _refresh_all(self) -> None:
        ws = self.workspace
        problems = task_problems(ws)
        try:
            card = ws.load_task()
        except TaskCardError as e:
            self.task_view.object = f"<div class='vf-problems' style='color:#b00020'>{html.escape(str(e))}</div>"
            return
        cells = "".join(
            f"<figure>{safe_thumbnail(ws.resolve_image(ex.images[0]), 72)}<figcaption>"
            f"{html.escape(ex.id or str(i))}: <b>{html.escape(format_expected(ex.expected))}</b></figcaption></figure>"
            for i, ex in enumerate(card.examples[:24]))
        more = f"<small>... and {len(card.examples) - 24} more</small>" if len(card.examples) > 24 else ""
        query = card.examples[0].query if card.examples else ""
        warn = ("<div class='vf-problems' style='color:#b00020'><b>Problems:</b><ul>" +
                "".join(f"<li>{html.escape(p)}</li>" for p in problems) + "</ul></div>") if problems else ""
        self.task_view.object = (
            f"<div class='vf-task'><b>{html.escape(card.name)}</b>: {html.escape(card.description)}<br>"
            f"output <b>{card.output}</b> · metric <b>{card.metric}</b> · <b>{len(card.examples)} examples</b> · "
            f"query <i>{html.escape(query or '')}</i>{warn}<div class='vf-thumbs'>{cells}</div>{more}</div>")
        # The form shows the workspace's task (a reload never resets it to the defaults).
        kind, _, target = card.name.partition("-")
        if kind in SHAPES_KINDS and target:  # a shapes-world card is named <kind>-<target>
            self.kind.value = kind
            self.target.value = target.replace("-", " ")
        self.n.value = max(1, len(card.examples))
        ids = [ex.id for ex in card.examples if ex.id]
        self.example_pick.options = ids
        if ids and self.example_pick.value not in ids:
            self.example_pick.value = ids[0]
        elif ids:
            self._pick_example(self.example_pick.value)
        self.history.options = {f"#{h['number']} {h['name']} ({h['examples']} ex., {h['reason']})": h["number"]
                                for h in reversed(task_history(ws))}
        if self.history.options and self.history.value not in self.history.options.values():
            self.history.value = next(iter(self.history.options.values()))
        self._refresh_versions()

    def _load_results(self) -> None:
        """Show saved results of earlier steps (after a reload)."""
        ws = self.workspace
        report = ws.root / "checkpoints" / "planner_report.json"
        if report.is_file():
            self._show_improve(json.loads(report.read_text()))
        self.say("")

    def _refresh_versions(self, select: int | None = None) -> None:
        ws = self.workspace
        runs = latest_runs(ws)
        fp = task_fingerprint(ws.load_task())
        status = accepted_status(ws)
        options = {}
        for p in ws.programs():
            run = runs.get(p.version)
            score = ""
            if run is not None:
                score = f" · {run['correct']}/{run['n']}" + (" (stale)" if run_is_stale(ws, run, fp) else "")
            star = ""
            if status and status["version"] == p.version:
                star = " ★ (stale)" if status["stale"] else " ★"
            options[f"{p.tag} ({p.origin}){score}{star}"] = p.version
        current = select if select is not None else self.version.value
        self.version.options = options
        if current in options.values():
            if self.version.value == current:
                self.select(current)
            else:
                self.version.value = current  # the watcher loads it
        elif options:
            self.version.value = list(options.values())[-1]
        else:
            self.code.value = ""
            self._show_run(None, None)

    def _show_run(self, run: dict | None, version: int | None) -> None:
        if run is None:
            self.summary.object = f"v{version:04d} has not been run on the examples yet." if version else ""
            self.results.object = ""
            self.trace_example.options = []
            self.trace.object = ""
            return
        ws = self.workspace
        card = ws.load_task()
        stale = run_is_stale(ws, run)
        note = (f" — **stale**: scored on an earlier task card ({run['n']} examples; the task now has "
                f"{len(card.examples)}); run it again") if stale else ""
        self.summary.object = (f"**v{version:04d}: {run['correct']}/{run['n']} passed** "
                               f"(accuracy {run['accuracy']:.2f}, {run['errors']} errors, {run['seconds']:.1f} s){note}")
        images = {ex.id: ws.resolve_image(ex.images[0]) for ex in card.examples if ex.id}
        self.results.object = results_table_html(run["results"], images=images)
        ids = [r["id"] for r in run["results"]]
        failing = [r["id"] for r in run["results"] if not r["correct"]]
        self.trace_example.options = ids
        first = failing[0] if failing else (ids[0] if ids else None)
        if first is not None:
            if self.trace_example.value == first:
                self.show_trace(first)
            else:
                self.trace_example.value = first

    def view(self) -> pn.viewable.Viewable:
        """The app's layout: one card per step, in workflow order, stacked in a grid that never overlaps."""
        card = dict(sizing_mode="stretch_width", collapsible=False, margin=(6, 6))
        task = pn.Card(
            pn.pane.Markdown("Choose a shapes-world task, or upload your own images with a query and the expected "
                             "output. An existing task is only replaced when you confirm it, and stays restorable."),
            pn.Row(self.kind, self.target, self.n, self.seed), pn.Row(self.create_button, self.replace_button),
            pn.layout.Divider(), self.upload, pn.Row(self.query, self.expected), self.upload_button,
            self.task_view,
            pn.Row(self.example_pick, self.example_expected, pn.Column(self.example_save, self.example_delete)),
            pn.Row(self.history, self.restore_button),
            title="1 · Task", css_classes=["vf-card"], **card)
        program = pn.Card(
            pn.Row(self.k, self.generate_button), self.program_note, self.version, self.code,
            pn.Row(self.save_button, self.accept_button),
            title="2 · Program", css_classes=["vf-card"], **card)
        run = pn.Card(
            self.run_button, self.summary,
            pn.Row(pn.Column(self.results, sizing_mode="stretch_width"),
                   pn.Column(self.trace_example, self.trace, sizing_mode="stretch_width"), sizing_mode="stretch_width"),
            title="3 · Run on the examples", css_classes=["vf-card"], **card)
        improve = pn.Card(pn.Row(self.rounds, self.improve_k, self.improve_steps), self.improve_button,
                          self.improve_view, title="4 · Improve the planner", css_classes=["vf-card"], **card)
        augment = pn.Card(pn.Row(self.n_unlabelled, self.qgen_steps), self.augment_button, self.augment_view,
                          title="5 · Augment the data", css_classes=["vf-card"], **card)
        finetune = pn.Card(pn.Row(self.ft_dataset, self.epochs), self.finetune_button, self.finetune_view,
                           title="6 · Fine-tune the engine", css_classes=["vf-card"], **card)
        export = pn.Card(self.build_wheel, self.export_button, self.export_view,
                         title="7 · Export the solution", css_classes=["vf-card"], **card)
        jobs = pn.Row(self.progress, self.cancel_button, self.resume_button, self.job_status,
                      sizing_mode="stretch_width", css_classes=["vf-job"])
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None and self._callback is None:
            self._callback = pn.state.add_periodic_callback(self._poll, period=250)
        return pn.Column(
            pn.pane.Markdown("# VisForge\nTask → Program → Run → Improve → Augment → Fine-tune → Export, "
                             "all saved in the workspace."),
            self.message, jobs,
            pn.GridBox(task, program, ncols=2, sizing_mode="stretch_width"), run,
            pn.GridBox(improve, augment, finetune, export, ncols=2, sizing_mode="stretch_width"),
            search_card(self),
            sizing_mode="stretch_width", styles={"max-width": "1800px", "margin": "auto"},
        )


_LABELS = {"generate": "Generate", "run": "Run", "improve": "Improve", "augment": "Augment",
           "finetune": "Fine-tune", "export": "Export"}


def create_app(workspace_dir: str | Path) -> pn.viewable.Viewable:
    """The app for the workspace at ``workspace_dir`` (a Panel viewable; one per browser session)."""
    pn.extension(raw_css=[CSS], notifications=False)
    app = VisForgeApp(workspace_dir)
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        pn.state.on_session_destroyed(lambda _ctx: app.close())
    view = app.view()
    view.visforge_app = app  # reach the session object from tests and notebooks
    return view


def serve_app(port: int = 5006, workspace_dir: str | Path = "visforge-ws", show: bool = False,
              address: str = "127.0.0.1", threaded: bool = False, **kwargs: Any):
    """Serve the app on ``address:port`` (blocking unless ``threaded``); returns Panel's server."""
    # Sync callbacks run on a thread pool: a long run in one session does not freeze the others.
    pn.config.nthreads = max(2, pn.config.nthreads or 0)
    return pn.serve(
        {"/": lambda: create_app(workspace_dir)}, port=port, address=address, show=show, threaded=threaded,
        title="VisForge", websocket_origin=[f"{address}:{port}", f"localhost:{port}"], **kwargs,
    )
