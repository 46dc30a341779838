"""The page: one card per step over a shared ``AppState``, the job row, and serving."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import panel as pn

from builder import Workspace
from builder.interfaces.app.augment import AugmentPanel
from builder.interfaces.app.export import ExportPanel
from builder.interfaces.app.finetune import FinetunePanel
from builder.interfaces.app.improve import ImprovePanel
from builder.interfaces.app.jobs import JobWatcher, stop_jobs, stop_on_sigterm
from builder.interfaces.app.program import ProgramPanel
from builder.interfaces.app.run import RunPanel
from builder.interfaces.app.search import SearchPanel
from builder.interfaces.app.state import AppState, release_runtime
from builder.interfaces.app.task import TaskPanel
from builder.interfaces.app.upload import upload_route

CSS = """
.vf-code textarea {font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px;}
.vf-thumbs {display:flex; flex-wrap:wrap; gap:4px; max-width:100%;}
.vf-thumbs figure {margin:0; text-align:center; font-size:11px; width:78px; overflow:hidden;}
"""


class VisForgeApp:
    """One app session over the workspace at ``workspace_dir`` (created by the first task).

    Its cards are attributes, each with the public methods its buttons call: ``task``
    (``create_task``, ``replace_task``, ``restore``, ``add_examples``, ``edit_example``,
    ``delete_example``), ``program`` (``generate``, ``select``, ``save_version``, ``accept``),
    ``run`` (``run``, ``show_trace``), ``improve``, ``augment``, ``finetune``, ``export`` and
    ``search``; ``state`` holds the message area, ``jobs`` follows the workspace's job (the job
    engine's; each step card shows it). The card methods start their step as a job and wait for
    it; ``card.start()`` returns the job at once (what a button does).
    """

    def __init__(self, workspace_dir: str | Path):
        self.state = state = AppState(workspace_dir)
        self.jobs = JobWatcher(state)
        self.task = TaskPanel(state)
        self.program = ProgramPanel(state)
        self.run = RunPanel(state, self.program)
        self.improve = ImprovePanel(state)
        self.finetune = FinetunePanel(state)
        self.augment = AugmentPanel(state, on_dataset=self.finetune.add_dataset)
        self.export = ExportPanel(state)
        self.search = SearchPanel(state)
        state.task_listeners += [self.task.refresh, self.program.refresh_versions, self.jobs.show_applicable]
        self.jobs.register(self.program, self.run, self.improve, self.augment, self.finetune, self.export)
        if state.has_workspace():
            state.guard(state.task_changed)
            for card in (self.improve, self.augment, self.finetune, self.export):  # the last results, from the workspace
                state.guard(card.load_saved)
            state.guard(self.finetune.refresh_datasets)
            state.say("")
            state.guard(self.jobs.find_interrupted)
        self.jobs.poll()

    @property
    def workspace(self) -> Workspace:
        """The app's workspace (an error tells the user to create a task first)."""
        return self.state.workspace

    def close(self) -> None:
        """End this session (a running job keeps running for the next page load)."""
        self.jobs.close()
        if not self.jobs.running():
            release_runtime(self.state.root)

    def view(self) -> pn.viewable.Viewable:
        """The app's layout: one card per step, in workflow order, stacked in a grid that never overlaps."""
        card = dict(sizing_mode="stretch_width", collapsible=False, margin=(6, 6))
        return pn.Column(
            pn.pane.Markdown("# VisForge\nTask → Program → Run → Improve → Augment → Fine-tune → Export, "
                             "all saved in the workspace."),
            self.jobs.header,
            self.state.message,
            pn.GridBox(self.task.layout(**card), self.program.layout(**card), ncols=2, sizing_mode="stretch_width"),
            self.run.layout(**card),
            pn.GridBox(self.improve.layout(**card), self.augment.layout(**card), self.finetune.layout(**card),
                       self.export.layout(**card), ncols=2, sizing_mode="stretch_width"),
            self.search.layout(),
            sizing_mode="stretch_width", styles={"max-width": "1800px", "margin": "auto"},
        )


def create_app(workspace_dir: str | Path) -> pn.viewable.Viewable:
    """The app for the workspace at ``workspace_dir`` (a Panel viewable; one per browser session)."""
    pn.extension(raw_css=[CSS], notifications=False)
    app = VisForgeApp(workspace_dir)
    app.jobs.start_polling()
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        pn.state.on_session_destroyed(lambda _ctx: app.close())
    view = app.view()
    view.visforge_app = app  # reach the session object from tests and notebooks
    return view


def serve_app(port: int = 5006, workspace_dir: str | Path = "visforge-ws", show: bool = False,
              address: str = "127.0.0.1", threaded: bool = False, **kwargs: Any):
    """Serve the app on ``address:port`` (blocking unless ``threaded``); returns Panel's server.

    Beside the page, ``POST /upload`` takes the Task card's image files over HTTP (see ``upload``).

    When a blocking server stops (Ctrl-C, SIGTERM) its running jobs are cancelled (child
    processes killed, nothing half-done saved) before the process ends; a threaded server's
    jobs are cancelled when the process exits.
    """
    # Sync callbacks run on a thread pool: a long run in one session does not freeze the others.
    pn.config.nthreads = max(2, pn.config.nthreads or 0)
    origins = [f"{address}:{port}", f"localhost:{port}"]
    # Files come over HTTP (/upload), not the websocket, whose message cap would close the session.
    routes = [upload_route(workspace_dir, origins), *kwargs.pop("extra_patterns", [])]
    serve = functools.partial(
        pn.serve, {"/": lambda: create_app(workspace_dir)}, port=port, address=address, show=show,
        threaded=threaded, title="VisForge", websocket_origin=origins, extra_patterns=routes, **kwargs)
    if threaded:
        return serve()
    stop_on_sigterm()
    try:
        return serve()
    finally:
        stop_jobs()
