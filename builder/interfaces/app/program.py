"""Card 2, Program: generate candidates, pick a version, edit it, save it, accept it."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import panel as pn

from builder import (
    ProgramVersion,
    ValidationError,
    accept_program,
    accepted_status,
    add_program,
    latest_runs,
    run_is_stale,
    task_fingerprint,
    validate_program,
)
from builder.interfaces.app.jobs import StepCard
from builder.interfaces.app.state import AppState


class ProgramPanel(StepCard):
    """The program card; Generate runs as a job. ``select_listeners`` hear ``(run, version)``
    when a version is selected (``(None, None)`` when there is none)."""

    step, label = "generate", "Generate"

    def __init__(self, state: AppState):
        super().__init__(state)
        W = pn.widgets  # noqa: N806
        self.generate_button = W.Button(label="Generate program", color="primary")
        self.k = W.IntInput(label="Candidates", value=3, start=1, end=8, width=100)
        self.version = W.Select(label="Version", options={}, width=260)
        self.code = W.TextAreaInput(label="Program", height=170, sizing_mode="stretch_width",
                                    css_classes=["vf-code"], placeholder="def execute(image):\n    ...")
        self.save_button = W.Button(label="Save version")
        self.accept_button = W.Button(label="Accept version", color="success")
        self.program_note = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.select_listeners: list[Callable[[dict | None, int | None], None]] = []
        act = state.action
        self.generate_button.on_click(act(self.start))
        self.save_button.on_click(act(lambda: self.save_version(self.code.value)))
        self.accept_button.on_click(act(lambda: self.accept(self.version.value)))
        self.version.param.watch(lambda e: e.new is not None and state.guard(lambda: self.select(e.new)), "value")
        state.buttons += [self.generate_button, self.save_button, self.accept_button]

    # ---- the Generate step ---------------------------------------------------------------------
    def inputs(self) -> dict[str, Any]:
        """The card's settings: how many candidates to generate."""
        return {"k": self.k.value}

    def job_params(self, k: int = 3) -> dict[str, Any]:
        """The generate step's parameters."""
        return {"k": int(k)}

    def generate(self, k: int = 3) -> list[ProgramVersion]:
        """Planner candidates (or the template when no planner) saved as versions, as a job; waits
        and selects the first."""
        out = self.execute(k=k)
        return [self.state.workspace.program(v) for v in out["versions"]]

    def show(self, result: dict, params: dict[str, Any]) -> None:
        """List the new versions and the planner's note (its reason, when it refused)."""
        versions = result.get("versions") or []
        self.refresh_versions(select=versions[0] if versions else None)
        self.program_note.object = html.escape(result.get("note") or "")

    def clear_outcome(self) -> None:
        """The task changed: the last Generate's note no longer describes it."""
        self.program_note.object = ""

    # ---- versions ------------------------------------------------------------------------------
    def select(self, version: int) -> ProgramVersion:
        """Load a version into the editor and show its last run."""
        ws = self.state.workspace
        pv = ws.program(int(version))
        self.code.value = pv.source
        run = latest_runs(ws).get(pv.version)
        for listener in self.select_listeners:
            listener(run, pv.version)
        return pv

    def save_version(self, source: str, note: str = "edited in the app") -> ProgramVersion:
        """Save edited source as a new version (validated first); selects it."""
        try:
            validate_program(source)
        except ValidationError as e:
            raise ValueError(f"program not saved: {e}") from None
        pv = add_program(self.state.workspace, source, origin="engineer", note=note, parent=self.version.value)
        self.refresh_versions(select=pv.version)
        self.program_note.object = f"saved {pv.tag}"
        return pv

    def accept(self, version: int | None) -> ProgramVersion:
        """Accept a version (the one exports use)."""
        if version is None:
            raise ValueError("no program version selected")
        pv = accept_program(self.state.workspace, int(version))
        self.refresh_versions(select=int(version))
        self.state.say(f"Accepted **{pv.tag}**: export it in step 7.")
        return pv

    def refresh_versions(self, select: int | None = None) -> None:
        """List the versions with their last score and the accepted star; select one."""
        options = self._version_options()
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
            for listener in self.select_listeners:
                listener(None, None)

    def _version_options(self) -> dict[str, int]:
        ws = self.state.workspace
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
        return options

    def layout(self, **card: Any) -> pn.Card:
        """The card's layout."""
        return pn.Card(
            pn.Row(self.k, self.generate_button), self.job_view.layout(), self.program_note, self.version, self.code,
            pn.Row(self.save_button, self.accept_button),
            title="2 · Program", css_classes=["vf-card", f"vf-card-{self.step}"], **card)
