"""Card 3, Run: run the selected version on every example; results, scores and traces."""

from __future__ import annotations

from typing import Any

import panel as pn

from builder import BatchResult, latest_runs, run_is_stale
from builder.interfaces.app.jobs import StepCard
from builder.interfaces.app.program import ProgramPanel
from builder.interfaces.app.state import AppState
from builder.interfaces.views import results_table_html, trace_html

ZOOMS = {"1×": 1, "2×": 2, "3×": 3}  # the trace's image sizes


class RunPanel(StepCard):
    """The run card (a job in the sandbox; Cancel kills the sandboxed programs). It shows the
    last run of the version the program card selects."""

    step, label, uses_runtime = "run", "Run", True

    def __init__(self, state: AppState, program: ProgramPanel):
        super().__init__(state)
        self.program = program
        self.last_result: BatchResult | None = None
        self.run_button = pn.widgets.Button(label="Run on examples", color="primary")
        self.summary = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.results = pn.pane.HTML("", sizing_mode="stretch_width", max_height=560, styles={"overflow": "auto"})
        self.trace_example = pn.widgets.Select(label="Trace of example", options=[], width=200)
        self.trace_zoom = pn.widgets.RadioButtonGroup(label="Zoom", options=ZOOMS, value=1, width=150)
        # The trace at full size in the page (no box of its own that scrolls and cuts its images off).
        self.trace = pn.pane.HTML("", sizing_mode="stretch_width", styles={"overflow-x": "auto"})
        self.run_button.on_click(state.action(self.start))
        self.trace_example.param.watch(lambda e: e.new and state.guard(lambda: self.show_trace(e.new)), "value")
        self.trace_zoom.param.watch(lambda e: self.trace_example.value and state.guard(
            lambda: self.show_trace(self.trace_example.value)), "value")
        state.buttons.append(self.run_button)
        program.select_listeners.append(self.show_run)

    def prepare(self, version: int | None) -> int:
        """The version to run: unsaved edits in the editor are saved as a new version first."""
        if version is None:
            raise ValueError("no program yet: generate one (step 2) first")
        code = self.program.code.value
        if code.strip() and code != self.state.workspace.program(int(version)).source:
            version = self.program.save_version(code).version
        return int(version)

    def inputs(self) -> dict[str, Any]:
        """The card's settings: the selected version."""
        return {"version": self.program.version.value}

    def job_params(self, version: int | None = None) -> dict[str, Any]:
        """The version to run, saved first if the editor holds unsaved edits."""
        return {"version": self.prepare(version)}

    def run(self, version: int | None = None) -> BatchResult:
        """Run a version (default: the selected one) on every example as a job; waits for it and
        returns the ``BatchResult``.

        Unsaved edits in the editor are saved as a new version first, so what runs is what is kept.
        """
        return self.execute(**({} if version is None else {"version": version}))

    def show(self, result: BatchResult, params: dict[str, Any]) -> None:
        """Select the run's version and report how many examples passed."""
        version = int(params["version"])
        self.last_result = result
        self.program.refresh_versions(select=version)
        self.say(f"v{version:04d}: {result.correct}/{result.n} passed.")

    def show_run(self, run: dict | None, version: int | None) -> None:
        """Show a version's recorded run (scores, results table, the first failing trace)."""
        if run is None:
            self.summary.object = f"v{version:04d} has not been run on the examples yet." if version else ""
            self.results.object = ""
            self.trace_example.options = []
            self.trace.object = ""
            return
        ws = self.state.workspace
        card = ws.load_task()
        note = (f" — **stale**: scored on an earlier task card ({run['n']} examples; the task now has "
                f"{len(card.examples)}); run it again") if run_is_stale(ws, run) else ""
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

    def show_trace(self, example_id: str) -> str:
        """Show the step-by-step trace of one example from the selected version's last run."""
        version = self.program.version.value
        run = latest_runs(self.state.workspace).get(version)
        if run is None:
            return ""
        match = [r for r in run["results"] if r["id"] == example_id]
        if match:
            zoom = int(self.trace_zoom.value or 1)
            page = trace_html(self.state.workspace, match[0], title=f"v{version:04d} on {example_id}")
            # the trace's images at their own size, or enlarged (pixels kept sharp) to read small objects
            self.trace.object = (f"<style>.vf-zoom img {{zoom: {zoom}; image-rendering: pixelated}}</style>"
                                 f"<div class='vf-zoom'>{page}</div>") if zoom > 1 else page
        return self.trace.object

    def layout(self, **card: Any) -> pn.Card:
        """The card's layout."""
        return pn.Card(
            self.run_button, self.job_view.layout(), self.summary,
            pn.Row(pn.Column(self.results, sizing_mode="stretch_width"),
                   pn.Column(pn.Row(self.trace_example, self.trace_zoom), self.trace, sizing_mode="stretch_width"),
                   sizing_mode="stretch_width"),
            title="3 · Run on the examples", css_classes=["vf-card", f"vf-card-{self.step}"], **card)
