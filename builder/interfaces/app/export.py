"""Card 7, Export: the accepted program as an installable solution, verified on the examples."""

from __future__ import annotations

import html
from typing import Any

import panel as pn

from builder import export_solution, run_step_in_process
from builder.interfaces.app.jobs import Job, StepCard
from builder.interfaces.app.state import AppState
from builder.interfaces.views import bars_svg


class ExportPanel(StepCard):
    """The Export card (a job in a child process that Cancel kills)."""

    step, label = "export", "Export"

    def __init__(self, state: AppState):
        super().__init__(state)
        self.build_wheel = pn.widgets.Checkbox(label="build the wheel (slower)", value=False)
        self.export_button = pn.widgets.Button(label="Export the solution", color="primary")
        self.export_view = pn.pane.HTML("", sizing_mode="stretch_width")
        self.export_button.on_click(state.action(self.start))
        state.buttons.append(self.export_button)

    def params(self) -> dict[str, Any]:
        return {"build": self.build_wheel.value}

    def export(self, build: bool = False) -> dict:
        """Export the accepted program (verified on the examples); shows the acceptance results."""
        out = self.compute(None, build)
        self.show(out)
        return out

    def compute(self, job: Job | None, build: bool = False) -> dict:
        ws = self.state.workspace
        if ws.accepted is None:
            raise ValueError("no accepted program yet: accept a version in step 2 first")
        if job is None:
            return export_solution(ws, build=bool(build), overwrite=True).to_dict()
        job.progress("verifying on the examples and writing the project", None)
        return run_step_in_process("export_solution", ws, on_progress=job.progress, should_stop=job.stop.is_set,
                                   build=bool(build), overwrite=True)

    def show(self, out: dict) -> None:
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
        self.state.say(f"Exported: {passed}/{n} acceptance examples pass.")

    def layout(self, **card: Any) -> pn.Card:
        """The card's layout."""
        return pn.Card(self.build_wheel, self.export_button, self.export_view,
                       title="7 · Export the solution", css_classes=["vf-card"], **card)
