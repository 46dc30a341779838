"""The Search step: index a folder of images, search it by text, add results as task examples.

A thin shell over ``builder.api.index_images`` / ``search_images`` /
``add_search_results``; results show as thumbnails with their scores.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import ipywidgets as w

from builder import api as workflow
from builder.core.workspace import Workspace
from builder.interfaces.views import search_results_html


class SearchWidget(w.VBox):
    """Public API: ``index(folder)``, ``search(query, k, verify)``, ``add_results(expected)``."""

    def __init__(self, workspace: Workspace | str | Path, runtime: workflow.Runtime | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
        self.runtime = runtime
        self.hits: list = []
        self.folder = w.Text(description="Folder", placeholder="/data/photos")
        self.query = w.Text(description="Search", placeholder="a red circle left of a blue square")
        self.k = w.BoundedIntText(value=10, min=1, max=100, description="k")
        self.verify = w.Checkbox(value=True, description="verify with the matcher (hybrid)")
        self.expected = w.Text(description="Expected", placeholder="output for the chosen results")
        self.status = w.HTML()
        self.results = w.HTML()
        index_b = w.Button(description="Index new images")
        search_b = w.Button(description="Search", button_style="primary")
        add_b = w.Button(description="Add as task examples")
        index_b.on_click(lambda _b: self._safe(self.index, self.folder.value))
        search_b.on_click(lambda _b: self._safe(self.search, self.query.value, self.k.value, self.verify.value))
        add_b.on_click(lambda _b: self._safe(self.add_results, workflow.parse_expected_text(self.expected.value)))
        self.children = [w.HBox([self.folder, index_b]), w.HBox([self.query, self.k, self.verify, search_b]),
                         self.status, self.results, w.HBox([self.expected, add_b])]

    def _safe(self, fn, *args) -> None:
        try:
            fn(*args)
        except (workflow.UserError, ValueError, FileNotFoundError) as e:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"

    def index(self, folder: str | Path) -> workflow.IndexResult:
        """Index the images under ``folder`` (only new ones are embedded)."""
        res = workflow.index_images(self.ws, folder, progress=False, runtime=self.runtime)
        self.status.value = html.escape(res.summary())
        return res

    def search(self, query: str, k: int = 10, verify: bool = True) -> list:
        """Text->image search; shows thumbnails with scores."""
        self.hits = workflow.search_images(self.ws, query, k=k, verify=verify, runtime=self.runtime)
        self.results.value = search_results_html(self.hits)
        self.status.value = f"{len(self.hits)} result(s) for <i>{html.escape(query)}</i>"
        return self.hits

    def add_results(self, expected: Any, hits: list | None = None):
        """Add the shown results (or ``hits``) to the task as examples with ``expected``."""
        card = workflow.add_search_results(self.ws, self.hits if hits is None else hits, expected)
        self.status.value = f"the task now has {len(card.examples)} examples"
        return card
