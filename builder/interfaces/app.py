"""The VisForge Panel app for workshops: describe a task, generate a program, run it, save/accept.

    visforge app --workspace ws/ --port 5006          # serve on 127.0.0.1:5006
    serve_app(5006, "ws/")                                      # the same from Python
    create_app("ws/")                                           # the Panel viewable (notebooks: display it)

The app composes the same workflow functions as the notebook widgets (``widgets.core``) and
reads and writes only through the ``Workspace`` at ``workspace_dir``. Every button calls a public
method of ``VisForgeApp`` (``create_task``, ``add_examples``, ``generate``, ``save_version``,
``run``, ``accept``), so scripts and tests drive it without a browser. Long work runs on
Panel's thread pool (``nthreads``) with the button showing a spinner, and every error appears in
the app's alert box.
"""

from __future__ import annotations

import html
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import panel as pn

from builder import (
    Runtime,
    card_from_data,
    format_expected,
    latest_runs,
    parse_expected_text,
    propose_programs,
    run_examples,
    save_task,
    shapes_task_data,
    stage_image,
)
from builder.core.taskcard import TaskCardError
from builder.core.workspace import META_FILE, ProgramVersion, Workspace, WorkspaceError
from builder.interfaces.app_search import search_card
from builder.interfaces.views import results_table_html, thumbnail_uri, trace_html
from builder.world.cards import KINDS as SHAPES_KINDS

CSS = """
.vf-code textarea {font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px;}
"""


class VisForgeApp:
    """One app session over the workspace at ``workspace_dir`` (created by ``create_task``)."""

    def __init__(self, workspace_dir: str | Path):
        self.root = Path(workspace_dir)
        self.runtime: Runtime | None = None
        self.last_result = None

        # 1 describe
        self.kind = pn.widgets.Select(label="Task kind", options=list(SHAPES_KINDS), value="count", width=140)
        self.target = pn.widgets.TextInput(label="Target objects", value="red objects", width=180)
        self.n = pn.widgets.IntInput(label="Examples", value=8, start=1, end=60, width=90)
        self.seed = pn.widgets.IntInput(label="Seed", value=0, width=80)
        self.create_button = pn.widgets.Button(label="Create task", color="primary")
        self.upload = pn.widgets.FileInput(accept="image/*", multiple=True)
        self.query = pn.widgets.TextInput(label="Query for uploaded images", placeholder="How many ...?")
        self.expected = pn.widgets.TextInput(label="Expected output", placeholder="3 / yes / [[x0,y0,x1,y1]]")
        self.upload_button = pn.widgets.Button(label="Add uploaded examples")
        self.task_view = pn.pane.HTML("<i>No task yet: create one from the shapes world or upload images.</i>",
                                      sizing_mode="stretch_width")
        # 2 program
        self.generate_button = pn.widgets.Button(label="Generate program", color="primary")
        self.k = pn.widgets.IntInput(label="Candidates", value=3, start=1, end=8, width=100)
        self.version = pn.widgets.Select(label="Version", options={}, width=220)
        self.code = pn.widgets.TextAreaInput(label="Program", height=170, sizing_mode="stretch_width",
                                             css_classes=["vf-code"], placeholder="def execute(image):\n    ...")
        self.save_button = pn.widgets.Button(label="Save version")
        self.accept_button = pn.widgets.Button(label="Accept version", color="success")
        self.program_note = pn.pane.Markdown("", sizing_mode="stretch_width")
        # 3 run
        self.run_button = pn.widgets.Button(label="Run on examples", color="primary")
        self.summary = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.results = pn.pane.HTML("", sizing_mode="stretch_width")
        self.trace_example = pn.widgets.Select(label="Trace of example", options=[], width=200)
        self.trace = pn.pane.HTML("", sizing_mode="stretch_width")
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self.info = pn.pane.Alert("", alert_type="success", visible=False, sizing_mode="stretch_width")

        self.create_button.on_click(self._handler(self.create_button, lambda: self.create_task(
            self.kind.value, self.target.value, self.n.value, self.seed.value)))
        self.upload_button.on_click(self._handler(self.upload_button, self._add_uploaded))
        self.generate_button.on_click(self._handler(self.generate_button, lambda: self.generate(self.k.value)))
        self.save_button.on_click(self._handler(self.save_button, lambda: self.save_version(self.code.value)))
        self.accept_button.on_click(self._handler(self.accept_button, lambda: self.accept(self.version.value)))
        self.run_button.on_click(self._handler(self.run_button, lambda: self.run(self.version.value)))
        self.version.param.watch(lambda e: e.new is not None and self._guard(lambda: self.select(e.new)), "value")
        self.trace_example.param.watch(lambda e: e.new and self._guard(lambda: self.show_trace(e.new)), "value")
        if (self.root / META_FILE).is_file():
            self._guard(self._refresh_all)

    # ---- plumbing ----------------------------------------------------------------------------
    @property
    def workspace(self) -> Workspace:
        """The app's workspace (an error tells the user to create a task first)."""
        if not (self.root / META_FILE).is_file():
            raise WorkspaceError("no task yet: create one in step 1 first")
        return Workspace.open(self.root)

    def _runtime(self) -> Runtime:
        if self.runtime is None:
            self.runtime = Runtime(self.workspace)
        return self.runtime

    def close(self) -> None:
        """Stop the sandbox workers of this session."""
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None

    def _guard(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn``; show any error in the alert box (never swallowed) and return None then."""
        self.alert.visible = False
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - shown to the user
            user = isinstance(e, (TaskCardError, WorkspaceError, ValueError, FileNotFoundError))
            text = str(e) if user else f"{type(e).__name__}: {e}\n\n{traceback.format_exc(limit=4)}"
            self.alert.object = f"**Error:** {html.escape(text)}"
            self.alert.visible = True
            return None

    def _handler(self, btn: pn.widgets.Button, fn: Callable[[], Any]) -> Callable[[Any], None]:
        """A click handler: spinner on the button while ``fn`` runs (on Panel's thread pool)."""

        def handler(_event) -> None:
            btn.loading = True
            try:
                self._guard(fn)
            finally:
                btn.loading = False

        return handler

    def _say(self, text: str) -> None:
        self.info.object = text
        self.info.visible = True

    # ---- public API: one method per button -----------------------------------------------------
    def create_task(self, kind: str = "count", target: str = "red objects", n: int = 8, seed: int = 0) -> Workspace:
        """Make a shapes-world task (kind/target, n examples) the workspace's task (created if missing)."""
        card = card_from_data(shapes_task_data(kind, target, int(n), int(seed)))
        ws = save_task(self.root, card)
        self.close()  # engines/cache follow the workspace
        self._refresh_all()
        self._say(f"Task **{card.name}** with {len(card.examples)} examples: *{card.examples[0].query}*")
        return ws

    def add_examples(self, files: list[tuple[str, bytes]], query: str, expected: str) -> Workspace:
        """Add uploaded images (name, bytes) with one query and expected output to the task.

        Without a workspace yet, a new task is started from them (output kind guessed from the
        expected value: a number -> count, yes/no -> bool, a box list -> boxes, else text).
        """
        if not files:
            raise ValueError("choose image files first")
        value = parse_expected_text(expected)
        examples = [{"image": str(stage_image(data, name)), "query": query, "expected": value}
                    for name, data in files]
        if (self.root / META_FILE).is_file():
            ws = self.workspace
            data = ws.load_task().model_dump(mode="json", exclude_none=True)
            start = len(data["examples"])
            data["examples"] += [{"id": f"up{start + i:04d}", **ex} for i, ex in enumerate(examples)]
        else:
            kind = ("bool" if isinstance(value, bool) else "count" if isinstance(value, int) else
                    "boxes" if isinstance(value, list) else "text")
            data = {"name": "uploaded-task", "description": query or "Uploaded examples", "output": kind,
                    "examples": [{"id": f"up{i:04d}", **ex} for i, ex in enumerate(examples)]}
        ws = save_task(self.root, card_from_data(data))
        self._refresh_all()
        self._say(f"Added {len(files)} example(s).")
        return ws

    def _add_uploaded(self) -> None:
        names = self.upload.filename or []
        values = self.upload.value or []
        if isinstance(names, str):
            names, values = [names], [values]
        self.add_examples(list(zip(names, values, strict=False)), self.query.value, self.expected.value)

    def generate(self, k: int = 3) -> list[ProgramVersion]:
        """Planner candidates (or the template when no planner) saved as versions; selects the first."""
        versions, note = propose_programs(self.workspace, k=int(k))
        self._refresh_versions(select=versions[0].version if versions else None)
        self.program_note.object = html.escape(note)
        return versions

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

    def run(self, version: int | None = None):
        """Run a version (default: the selected one) on every example; returns the ``BatchResult``.

        Unsaved edits in the editor are saved as a new version first, so what runs is what is kept.
        """
        ws = self.workspace
        if version is None:
            raise ValueError("no program yet: generate one (step 2) first")
        if self.code.value.strip() and self.code.value != ws.program(int(version)).source:
            version = self.save_version(self.code.value).version
        res = run_examples(ws, int(version), self._runtime())
        self.last_result = res
        self._refresh_versions(select=int(version))
        return res

    def accept(self, version: int | None) -> ProgramVersion:
        """Accept a version (the one exports use)."""
        if version is None:
            raise ValueError("no program version selected")
        ws = self.workspace
        ws.accept(int(version))
        self._refresh_versions(select=int(version))
        self._say(f"Accepted **v{int(version):04d}**: export it with `visforge export` or the Export notebook.")
        return ws.program(int(version))

    def show_trace(self, example_id: str) -> str:
        """Show the step-by-step trace of one example from the selected version's last run."""
        run = latest_runs(self.workspace).get(self.version.value)
        if run is None:
            return ""
        match = [r for r in run["results"] if r["id"] == example_id]
        if match:
            self.trace.object = trace_html(self.workspace, match[0],
                                                title=f"v{self.version.value:04d} on {example_id}")
        return self.trace.object

    # ---- display -----------------------------------------------------------------------------
    def _refresh_all(self) -> None:
        ws = self.workspace
        card = ws.load_task()
        rows = "".join(
            f"<td style='text-align:center;padding:2px'><img src='{thumbnail_uri(ws.resolve_image(ex.images[0]), 72)}'>"
            f"<br><small>{html.escape(ex.id or str(i))}: <b>{html.escape(format_expected(ex.expected))}</b></small></td>"
            for i, ex in enumerate(card.examples[:12])
        )
        more = f"<small>... and {len(card.examples) - 12} more</small>" if len(card.examples) > 12 else ""
        query = card.examples[0].query if card.examples else ""
        self.task_view.object = (
            f"<div class='vf-task'><b>{html.escape(card.name)}</b>: {html.escape(card.description)}<br>"
            f"output <b>{card.output}</b> · metric <b>{card.metric}</b> · <b>{len(card.examples)} examples</b> · "
            f"query <i>{html.escape(query)}</i><table><tr>{rows}</tr></table>{more}</div>"
        )
        self._refresh_versions()

    def _refresh_versions(self, select: int | None = None) -> None:
        ws = self.workspace
        runs = latest_runs(ws)
        acc = ws.accepted
        options = {}
        for p in ws.programs():
            score = f" · {runs[p.version]['correct']}/{runs[p.version]['n']}" if p.version in runs else ""
            star = " ★" if acc and acc.version == p.version else ""
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

    def _show_run(self, run: dict | None, version: int) -> None:
        if run is None:
            self.summary.object = f"v{version:04d} has not been run on the examples yet."
            self.results.object = ""
            self.trace_example.options = []
            self.trace.object = ""
            return
        self.summary.object = (f"**v{version:04d}: {run['correct']}/{run['n']} passed** "
                               f"(accuracy {run['accuracy']:.2f}, {run['errors']} errors, {run['seconds']:.1f} s)")
        self.results.object = results_table_html(run["results"])
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
        """The app's layout."""
        describe = pn.Card(
            pn.pane.Markdown("Choose a shapes-world task, or upload your own images with a query and the "
                             "expected output."),
            pn.Row(self.kind, self.target, self.n, self.seed), self.create_button,
            pn.layout.Divider(), self.upload, pn.Row(self.query, self.expected), self.upload_button,
            self.task_view, title="1 · Describe the task", sizing_mode="stretch_width", collapsible=False,
        )
        program = pn.Card(
            pn.Row(self.k, self.generate_button), self.program_note, self.version, self.code,
            pn.Row(self.save_button, self.accept_button),
            title="2 · Program", sizing_mode="stretch_width", collapsible=False,
        )
        run = pn.Card(
            self.run_button, self.summary, pn.Row(self.results, pn.Column(self.trace_example, self.trace)),
            title="3 · Run on the examples", sizing_mode="stretch_width", collapsible=False,
        )
        return pn.Column(
            pn.pane.Markdown("# VisForge\nDescribe a vision task with examples, let the planner write a program, "
                             "run it on the examples with a step-by-step trace, then save and accept it."),
            self.alert, self.info, pn.Row(describe, program, sizing_mode="stretch_width"), run, search_card(self),
            sizing_mode="stretch_width", styles={"max-width": "1400px", "margin": "auto"},
        )


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
