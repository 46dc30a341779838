"""The Search card: index a folder of images, search it, add results as task examples
(``index_images``, ``search_images``, ``add_search_results``)."""

from __future__ import annotations

import html
from typing import Any

import panel as pn

from builder import Hit, add_search_results, index_images, parse_expected_text, search_images
from builder.interfaces.app.state import AppState
from builder.interfaces.views import search_results_html


class SearchPanel:
    """Searches the workspace's image index (text->image, hybrid by default)."""

    def __init__(self, state: AppState):
        self.state = state
        W = pn.widgets  # noqa: N806
        self.folder = W.TextInput(label="Image folder to index", placeholder="/data/photos")
        self.index_button = W.Button(label="Index (new images only)", color="default")
        self.query = W.TextInput(label="Search", placeholder="a red circle left of a blue square")
        self.k = W.IntInput(label="Results", value=10, start=1, end=100, width=90)
        self.verify = W.Checkbox(label="Verify with the matcher (hybrid)", value=True)
        self.search_button = W.Button(label="Search", color="primary")
        self.expected = W.TextInput(label="Expected output for the results", placeholder="e.g. 2, yes")
        self.add_button = W.Button(label="Add these results as task examples", color="default")
        self.status = pn.pane.HTML("")
        self.results = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["vf-search"])
        self.hits: list[Hit] = []
        self.index_button.on_click(lambda _e: state.guard(lambda: self.index(self.folder.value)))
        self.search_button.on_click(lambda _e: state.guard(
            lambda: self.search(self.query.value, int(self.k.value), bool(self.verify.value))))
        self.add_button.on_click(lambda _e: state.guard(lambda: self.add(self.expected.value)))

    def index(self, folder: str) -> Any:
        """Index the images under ``folder`` (only new ones are embedded)."""
        res = index_images(self.state.workspace, folder.strip(), progress=False, runtime=self.state.runtime)
        self.status.object = html.escape(res.summary())
        return res

    def search(self, query: str, k: int = 10, verify: bool = True) -> list[Hit]:
        """Text->image search; shows thumbnails with scores."""
        self.hits = search_images(self.state.workspace, query, k=k, verify=verify, runtime=self.state.runtime)
        self.results.object = search_results_html(self.hits)
        self.status.object = f"{len(self.hits)} result(s) for <i>{html.escape(query)}</i>"
        return self.hits

    def add(self, expected: str) -> Any:
        """Add the shown results to the task as examples with ``expected`` (text as typed)."""
        card = add_search_results(self.state.workspace, self.hits, parse_expected_text(expected))
        self.status.object = f"the task now has {len(card.examples)} examples"
        self.state.task_changed()
        return card

    def layout(self) -> pn.Card:
        """The card's layout."""
        return pn.Card(pn.Row(self.folder, self.index_button),
                       pn.Row(self.query, self.k, self.verify, self.search_button), self.status, self.results,
                       pn.Row(self.expected, self.add_button), title="Search a collection",
                       sizing_mode="stretch_width", collapsible=True)
