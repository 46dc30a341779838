"""Step 2, Plan: candidate programs side by side, edit, run on the examples, trace, versions, accept."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import ipywidgets as w
import traitlets
from ipywidgets import CallbackDispatcher

from builder import (
    ProgramVersion,
    Runtime,
    ValidationError,
    Workspace,
    add_program,
    best_version,
    diff_text,
    latest_runs,
    propose_programs,
    run_examples,
    validate_program,
)
from builder.interfaces.views import diff_html, highlight, results_table_html, trace_html
from widgets._base import StepWidget, button


class PlanWidget(StepWidget):
    """Programs for the workspace's task: propose, compare, edit, run, trace, diff and accept.

    Public API (every button calls one of these): ``propose(k)``, ``select(version)``,
    ``save_version(source, note)``, ``run(version)``, ``run_all()``, ``show_trace(example_id)``,
    ``diff(a, b)``, ``accept(version)``, ``refresh()``.
    Callbacks: ``on_run(cb)`` -- ``cb(version, batch_result)``; ``on_accept(cb)`` -- ``cb(version)``.
    Traitlets: ``version`` (the version in the editor), ``accepted`` (the accepted version or None).
    """

    title = "2 · Plan: programs, runs and traces"
    version = traitlets.Int(None, allow_none=True)
    accepted = traitlets.Int(None, allow_none=True)

    def __init__(self, workspace: Workspace | str | Path, runtime: Runtime | None = None,
                 compare: int = 3, **kwargs: Any):
        super().__init__(**kwargs)
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
        self.runtime = runtime or Runtime(self.ws)
        self.compare_n = compare
        self._run_callbacks = CallbackDispatcher()
        self._accept_callbacks = CallbackDispatcher()
        self.last_result = None  # the BatchResult of the last run, for notebooks

        self.k = w.BoundedIntText(description="k", value=4, min=1, max=16, layout=w.Layout(width="140px"))
        self.candidates = w.HBox(layout=w.Layout(overflow="auto"))
        self.version_select = w.Dropdown(description="version", options=[])
        self.editor = w.Textarea(layout=w.Layout(width="98%", height="150px"),
                                 placeholder="def execute(image):\n    ...")
        self.note = w.Text(description="note", placeholder="what changed")
        self.preview = w.HTML()
        self.results = w.HTML()
        self.example_select = w.Dropdown(description="trace of", options=[])
        self.trace = w.HTML()
        self.history = w.HTML()
        self.diff_a = w.Dropdown(description="diff", options=[])
        self.diff_b = w.Dropdown(description="against", options=[])
        self.diff_view = w.HTML()

        self.version_select.observe(lambda c: c["new"] is not None and self.select(c["new"]), "value")
        self.editor.observe(lambda c: setattr(self.preview, "value", highlight(c["new"] or "")), "value")
        self.example_select.observe(lambda c: c["new"] and self._on(lambda: self.show_trace(c["new"]))(), "value")

        tabs = w.Tab(children=[
            w.VBox([self.results, self.example_select, self.trace]),
            self.history,
            w.VBox([w.HBox([self.diff_a, self.diff_b, button("Show diff", self._on(self._diff_clicked))]),
                    self.diff_view]),
        ])
        for i, t in enumerate(("Run on examples", "Version history", "Diff")):
            tabs.set_title(i, t)
        self._compose(
            w.HBox([self.k, button("Propose programs", lambda: self.start("Proposing", self.propose, self.k.value),
                                   style="primary", icon="lightbulb-o"),
                    button("Run all versions", lambda: self.start("Running every version", self.run_all))]),
            w.HTML("<b>Candidates</b> (latest versions, with their last score)"), self.candidates,
            w.HTML("<b>Edit</b>"), self.version_select, self.editor, self.preview,
            w.HBox([self.note, button("Save as new version", self._on(self._save_clicked), icon="save"),
                    button("Run on examples", lambda: self.start("Running", self.run, self.version),
                           style="info", icon="play"),
                    button("Accept this version", self._on(lambda: self.accept(self.version)),
                           style="success", icon="check")]),
            tabs,
        )
        self.refresh()

    # ---- callbacks -------------------------------------------------------------------------
    def on_run(self, callback, remove: bool = False) -> None:
        """Register ``callback(version, batch_result)`` to run after each ``run``."""
        self._run_callbacks.register_callback(callback, remove=remove)

    def on_accept(self, callback, remove: bool = False) -> None:
        """Register ``callback(version)`` to run after each ``accept``."""
        self._accept_callbacks.register_callback(callback, remove=remove)

    # ---- public API --------------------------------------------------------------------------
    def propose(self, k: int = 4) -> list[ProgramVersion]:
        """Ask the planner for ``k`` candidates (the template when no planner); returns new versions."""
        self.status = "asking the planner ..."
        versions, note = propose_programs(self.ws, k=k)
        self.refresh()
        if versions:
            self.select(versions[0].version)
        self.status = note
        return versions

    def select(self, version: int) -> ProgramVersion:
        """Load a version into the editor (and its last run, if any)."""
        pv = self.ws.program(version)
        self.version = pv.version
        if self.version_select.value != pv.version:
            self.version_select.value = pv.version
        self.editor.value = pv.source
        self.preview.value = highlight(pv.source)
        run = latest_runs(self.ws).get(pv.version)
        self._show_run(run)
        return pv

    def save_version(self, source: str | None = None, note: str = "") -> ProgramVersion:
        """Save ``source`` (default: the editor's text) as a new version; the parent is the selected one.

        The program is validated first (syntax and the sandbox's AST policy); a refused program
        is not saved and the reason is shown.
        """
        source = self.editor.value if source is None else source
        try:
            validate_program(source)
        except ValidationError as e:
            self.set_error(f"program not saved: {e}")
            raise ValueError(f"program not saved: {e}") from None
        pv = add_program(self.ws, source, origin="engineer", note=note, parent=self.version)
        self.refresh()
        self.select(pv.version)
        self.status = f"saved {pv.tag}"
        return pv

    def _save_clicked(self) -> None:
        self.save_version(note=self.note.value)
        self.note.value = ""

    def run(self, version: int | None = None):
        """Run a version (default: the selected one) on every example; returns the ``BatchResult``."""
        version = self.version if version is None else version
        if version is None:
            raise ValueError("no program version yet: propose programs or save one first")
        res = run_examples(self.ws, version, self.runtime, progress=self.set_progress)
        self.last_result = res
        self.status = f"v{version:04d}: {res.correct}/{res.n} passed, {res.errors} error(s) in {res.seconds:.1f} s"
        self.refresh()
        if self.version == version:
            self._show_run(res.to_dict())
        self._run_callbacks(version, res)
        return res

    def run_all(self) -> dict[int, float]:
        """Run every version that has no saved run yet; returns {version: accuracy} for all."""
        done = latest_runs(self.ws)
        for pv in self.ws.programs():
            if pv.version not in done:
                self.run(pv.version)
        return {v: r["accuracy"] for v, r in latest_runs(self.ws).items()}

    def show_trace(self, example_id: str) -> str:
        """Show (and return) the trace HTML of one example in the selected version's last run."""
        run = latest_runs(self.ws).get(self.version)
        if run is None:
            raise ValueError("run the program on the examples first")
        match = [r for r in run["results"] if r["id"] == example_id]
        if not match:
            raise ValueError(f"no example {example_id!r} in the last run")
        self.trace.value = trace_html(self.ws, match[0], title=f"v{self.version:04d} on {example_id}")
        return self.trace.value

    def diff(self, a: int, b: int) -> str:
        """Show (and return) the unified diff between two versions."""
        pa, pb = self.ws.program(a), self.ws.program(b)
        self.diff_view.value = diff_html(pa.source, pb.source, pa.tag, pb.tag)
        return diff_text(pa.source, pb.source, pa.tag, pb.tag)

    def _diff_clicked(self) -> None:
        if self.diff_a.value is None or self.diff_b.value is None:
            raise ValueError("choose two versions")
        self.diff(self.diff_a.value, self.diff_b.value)

    def accept(self, version: int | None = None) -> ProgramVersion:
        """Mark a version (default: the selected one) as the accepted program."""
        version = self.version if version is None else version
        if version is None:
            raise ValueError("no program version selected")
        self.ws.accept(version)
        self.accepted = version
        self.refresh()
        self.status = f"accepted v{version:04d}"
        self._accept_callbacks(version)
        return self.ws.program(version)

    def accept_best(self) -> ProgramVersion:
        """Accept the version with the best latest run (ties: the shorter program)."""
        best = best_version(self.ws)
        if best is None:
            raise ValueError("no runs yet: run the programs on the examples first")
        return self.accept(best[0])

    # ---- display -----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read versions, runs and the accepted version from the workspace."""
        programs = self.ws.programs()
        runs = latest_runs(self.ws)
        acc = self.ws.accepted
        self.accepted = acc.version if acc else None
        options = [(f"{p.tag} ({p.origin})", p.version) for p in programs]
        for sel in (self.version_select, self.diff_a, self.diff_b):
            keep = sel.value
            sel.options = options
            if keep in {v for _, v in options}:
                sel.value = keep
        if len(programs) >= 2 and self.diff_a.value == self.diff_b.value:
            self.diff_a.value, self.diff_b.value = programs[-2].version, programs[-1].version
        if self.version is None and programs:
            self.select(programs[-1].version)
        self.candidates.children = [self._card(p, runs.get(p.version)) for p in programs[-self.compare_n:]]
        self.history.value = self._history_html(programs, runs)

    def _card(self, pv: ProgramVersion, run: dict | None) -> w.Widget:
        score = (f"{run['correct']}/{run['n']} passed" + (f", {run['errors']} errors" if run["errors"] else "")
                 if run else "not run yet")
        star = " ★ accepted" if pv.version == self.accepted else ""
        head = w.HTML(f"<b>{pv.tag}</b> <small>{html.escape(pv.origin)}</small> · {score}{star}")
        code = w.HTML(highlight(pv.source), layout=w.Layout(max_height="180px", overflow="auto"))
        return w.VBox([head, code, button("Edit", self._on(lambda: self.select(pv.version)), icon="pencil")],
                      layout=w.Layout(border="1px solid #ddd", padding="4px", margin="2px", width="32%",
                                      min_width="260px"))

    def _history_html(self, programs: list[ProgramVersion], runs: dict[int, dict]) -> str:
        rows = []
        for p in reversed(programs):
            run = runs.get(p.version)
            score = f"{run['accuracy']:.2f} ({run['correct']}/{run['n']})" if run else "—"
            parent = f"v{p.parent:04d}" if p.parent else ""
            star = "★" if p.version == self.accepted else ""
            rows.append(f"<tr><td>{star}{p.tag}</td><td>{html.escape(p.origin)}</td><td>{parent}</td>"
                        f"<td>{score}</td><td>{html.escape(p.note)}</td></tr>")
        return ("<table class='vf-history' border='1' cellpadding='3' style='border-collapse:collapse;font-size:12px'>"
                "<tr><th>version</th><th>origin</th><th>parent</th><th>accuracy</th><th>note</th></tr>"
                + "".join(rows) + "</table>") if rows else "<i>no versions yet</i>"

    def _show_run(self, run: dict | None) -> None:
        if run is None:
            self.results.value = "<i>not run on the examples yet</i>"
            self.example_select.options = []
            self.trace.value = ""
            return
        head = (f"<p><b>{run['correct']}/{run['n']} passed</b> · accuracy {run['accuracy']:.2f} · "
                f"{run['errors']} error(s) · {run['seconds']:.1f} s</p>")
        self.results.value = head + results_table_html(run["results"])
        ids = [r["id"] for r in run["results"]]
        self.example_select.options = ids
        # Show the first failing example's trace first: that's the one the engineer wants to see.
        failing = [r["id"] for r in run["results"] if not r["correct"]]
        first = failing[0] if failing else (ids[0] if ids else None)
        if first is not None:
            if self.example_select.value == first:
                self.trace.value = trace_html(self.ws, run["results"][ids.index(first)],
                                                   title=f"v{self.version:04d} on {first}")
            else:
                self.example_select.value = first
