"""Step 6, Export: build the accepted program into an installable, tested package."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import ipywidgets as w
from ipywidgets import CallbackDispatcher

from builder import Workspace, export_solution
from widgets._base import StepWidget, button

# Export targets: what ``export_solution`` is asked to produce.
TARGETS = {
    "package": "pip-installable package (project + wheel, CLI, HTTP server, acceptance tests)",
    "project": "project folder only (no wheel build: faster; build it later with pip)",
}


class ExportWidget(StepWidget):
    """Choose an export target, build it, show where it went and how to install it.

    Public API: ``export(target, name, version, verify, overwrite)`` -> ``ExportResult``;
    ``show_result(result)``.
    Callbacks: ``on_export(cb)`` -- ``cb(result)`` after each successful export.
    """

    title = "6 · Export the solution"

    def __init__(self, workspace: Workspace | str | Path, **kwargs: Any):
        super().__init__(**kwargs)
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
        self._callbacks = CallbackDispatcher()
        self.result = None
        self.target = w.Dropdown(description="target", options=[(v, k) for k, v in TARGETS.items()],
                                 value="package", layout=w.Layout(width="98%"))
        self.name = w.Text(description="name", placeholder="(task name)")
        self.version = w.Text(description="version", placeholder="(1.0.<program version>)")
        self.verify = w.Checkbox(description="run the examples first (verify)", value=True)
        self.overwrite = w.Checkbox(description="overwrite an existing export", value=False)
        self.out = w.HTML()
        self._compose(
            self.target, w.HBox([self.name, self.version]), w.HBox([self.verify, self.overwrite]),
            button("Build export", lambda: self.start("Exporting", self.export, self.target.value,
                                                      self.name.value.strip() or None,
                                                      self.version.value.strip() or None,
                                                      self.verify.value, self.overwrite.value),
                   style="primary", icon="cube"),
            self.out,
        )
        self._show_accepted()

    def on_export(self, callback, remove: bool = False) -> None:
        """Register ``callback(result)`` to run after each successful export."""
        self._callbacks.register_callback(callback, remove=remove)

    def _show_accepted(self) -> None:
        acc = self.ws.accepted
        self.out.value = (f"accepted program: <b>{acc.tag}</b>" if acc else
                          "<i>no accepted program yet: accept one in the Plan step</i>")

    def export(self, target: str = "package", name: str | None = None, version: str | None = None,
               verify: bool = True, overwrite: bool = False, out_dir: str | Path | None = None):
        """Export the accepted program; returns ``builder.ExportResult``."""
        if target not in TARGETS:
            raise ValueError(f"unknown export target {target!r}; one of {', '.join(TARGETS)}")
        self.set_progress(0, 1)
        result = export_solution(self.ws, out_dir=out_dir, name=name, version=version, verify=verify,
                                 overwrite=overwrite, build=(target == "package"))
        self.set_progress(1, 1)
        return self.show_result(result)

    def show_result(self, result):
        """Show an export (from ``export``, or from a notebook cell that called
        ``builder.export_solution`` itself) and tell the ``on_export`` callbacks; returns it."""
        self.result = result
        self.out.value = export_html(result)
        self._callbacks(result)
        return result


def export_html(result) -> str:
    """An export result as a short HTML summary (folder, wheel, install commands, verification)."""
    d = result.to_dict()
    checks = d.get("manifest", {}).get("verification") or d.get("manifest", {}).get("examples")
    cmds = "\n".join(d.get("install_commands") or [])
    parts = [
        f"<div class='vf-export'><b>{html.escape(d['name'])} {html.escape(d['version'])}</b> "
        f"(program v{d['program_version']:04d})",
        f"<br>project: <code>{html.escape(str(d['project_dir']))}</code>",
        f"<br>wheel: <code>{html.escape(str(d['wheel']))}</code>" if d.get("wheel") else "<br>wheel: not built",
    ]
    if cmds:
        parts.append(f"<br>install (inside the project folder):<pre>{html.escape(cmds)}</pre>")
    if checks:
        parts.append(f"<details><summary>verification</summary><pre>{html.escape(json.dumps(checks, indent=1)[:3000])}"
                     "</pre></details>")
    parts.append("</div>")
    return "".join(parts)
