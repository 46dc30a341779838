"""Card 7, Export: the accepted program as an installable solution, verified on the examples."""

from __future__ import annotations

import html
from typing import Any

import panel as pn

from builder.interfaces.app.jobs import StepCard
from builder.interfaces.app.state import AppState
from builder.interfaces.views import bars_svg


class ExportPanel(StepCard):
    """The Export card (a job in a child process that Cancel kills)."""

    step, label = "export", "Export"

    def __init__(self, state: AppState):
        super().__init__(state)
        self.build_wheel = pn.widgets.Checkbox(label="build the wheel (slower)", value=False)
        self.export_button = pn.widgets.Button(label="Export the solution", color="primary")
        self.export_view = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["vf-result", "vf-export-result"])
        self.export_button.on_click(state.action(self.start))
        state.buttons.append(self.export_button)

    def inputs(self) -> dict[str, Any]:
        """The card's settings: whether to build the wheels."""
        return {"build": self.build_wheel.value}

    def job_params(self, build: bool = False, **options: Any) -> dict[str, Any]:
        """``options`` go to ``export_solution`` (``out_dir``, ``name`` ...)."""
        if self.state.workspace.accepted is None:
            raise ValueError("no accepted program yet: accept a version in step 2 first")
        return {"build": bool(build), "overwrite": True, **options}

    def export(self, build: bool = False, **options: Any) -> dict:
        """Export the accepted program (verified on the examples) as a job; waits, shows the acceptance results."""
        return self.execute(build=build, **options)

    def show(self, out: dict, params: dict[str, Any]) -> None:
        """A finished export: its result, and how many acceptance examples pass."""
        self.render(out)
        ex = (out.get("manifest") or {}).get("examples") or {}
        self.say(f"Exported: {ex.get('passed', 0)}/{ex.get('n', 0)} acceptance examples pass.")

    def render(self, out: dict[str, Any]) -> None:
        """The export's acceptance-test result and the install command that matches what was built."""
        ex = (out.get("manifest") or {}).get("examples") or {}
        n, passed = ex.get("n", 0), ex.get("passed", 0)
        cmds = "\n".join(out.get("install_commands") or [])
        self.export_view.object = (
            bars_svg([("passed", passed / n if n else None)], f"acceptance tests: {passed}/{n} examples pass", n=n) +
            f"<div class='vf-export'><b>{html.escape(str(out.get('name')))} {html.escape(str(out.get('version')))}"
            f"</b> (program v{int(out.get('program_version', 0)):04d})<br>project: "
            f"<code>{html.escape(str(out.get('project_dir')))}</code><br>wheel: "
            f"<code>{html.escape(str(out.get('wheel') or 'not built'))}</code>"
            + (f"<pre>{html.escape(cmds)}</pre>" if cmds else "") + "</div>")

    def layout(self, **card: Any) -> pn.Card:
        """The card's layout."""
        return pn.Card(self.build_wheel, self.export_button, self.job_view.layout(), self.export_view,
                       title="7 · Export the solution", css_classes=["vf-card", f"vf-card-{self.step}"], **card)
