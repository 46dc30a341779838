"""The Search card: index a folder of images, search it, and add hits to the task as examples,
each with its own answer (``index_images``, ``search_images``, ``add_search_results``)."""

from __future__ import annotations

import html
from typing import Any

import panel as pn

from builder import Hit, TaskCard, add_search_results, index_images, search_hits_in_task, search_images
from builder.interfaces.app.state import AppState
from builder.interfaces.views import hit_name, search_hit_html, search_status


class SearchPanel:
    """Searches the workspace's image index (text->image, hybrid by default); each hit shows its
    thumbnail over its own answer field, and "Add" adds the hits that have an answer."""

    def __init__(self, state: AppState):
        self.state = state
        W = pn.widgets  # noqa: N806
        self.folder = W.TextInput(label="Image folder to index", placeholder="/data/photos")
        self.index_button = W.Button(label="Index (new images only)", color="default")
        self.query = W.TextInput(label="Search", placeholder="a red circle left of a blue square")
        self.k = W.IntInput(label="Results", value=10, start=1, end=100, width=90)
        self.verify = W.Checkbox(label="Read the query (hybrid)", value=True)
        self.search_button = W.Button(label="Search", color="primary")
        self.example_query = W.TextInput(label="Question for the added examples",
                                         placeholder="empty: the task's question")
        self.add_button = W.Button(label="Add answered results as task examples", color="primary")
        self.status = pn.pane.HTML("", css_classes=["vf-search-status"])
        self.results = pn.FlexBox(sizing_mode="stretch_width", css_classes=["vf-search"])
        self.hits: list[Hit] = []
        # One answer field per hit (aligned with ``hits``); None where the hit is already an example.
        self.answers: list[pn.widgets.TextInput | None] = []
        self.index_button.on_click(lambda _e: state.guard(lambda: self.index(self.folder.value)))
        self.search_button.on_click(lambda _e: state.guard(
            lambda: self.search(self.query.value, int(self.k.value), bool(self.verify.value))))
        self.add_button.on_click(state.action(self.add))  # not while a job runs on the task
        state.buttons.append(self.add_button)

    def index(self, folder: str) -> Any:
        """Index the images under ``folder`` (only new ones are embedded)."""
        res = index_images(self.state.workspace, folder.strip(), progress=False, runtime=self.state.runtime)
        self.status.object = html.escape(res.summary())
        return res

    def search(self, query: str, k: int = 10, verify: bool = True) -> list[Hit]:
        """Text->image search; shows each hit's thumbnail and score over an empty answer field."""
        self.hits = search_images(self.state.workspace, query, k=k, verify=verify, runtime=self.state.runtime)
        self._show_hits()
        self.status.object = search_status(query, self.hits)
        return self.hits

    def _show_hits(self) -> None:
        """One tile per hit: thumbnail, score, and an empty answer field (or the example it became)."""
        in_task = search_hits_in_task(self.state.workspace, self.hits)
        self.answers, tiles = [], []
        for hit in self.hits:
            example = in_task.get(hit.item)
            box = None if example is not None else pn.widgets.TextInput(
                value="", placeholder="answer", width=110, css_classes=["vf-hit-answer"])
            self.answers.append(box)
            note = pn.pane.HTML(f"<small>example <b>{html.escape(example or '(no id)')}</b></small>",
                                css_classes=["vf-hit-added"])
            tiles.append(pn.Column(pn.pane.HTML(search_hit_html(hit)), box if box is not None else note,
                                   width=130, css_classes=["vf-hit-tile"]))
        self.results.objects = tiles if tiles else [pn.pane.HTML("<i>no results</i>")]

    def add(self) -> TaskCard:
        """Add every shown hit that has an answer typed under it, each with its own answer; hits
        without one are not added, and the status names them. Raises (nothing saved) when an
        answer does not fit the task's output kind, naming the hit."""
        ws = self.state.workspace
        todo = [(hit, box.value) for hit, box in zip(self.hits, self.answers, strict=True)
                if box is not None and box.value.strip()]
        unanswered = [hit_name(hit) for hit, box in zip(self.hits, self.answers, strict=True)
                      if box is not None and not box.value.strip()]
        if not todo:
            raise ValueError("no result has an answer yet: type the expected answer under each image to add")
        before = {ex.id for ex in ws.load_task().examples}
        card = add_search_results(ws, [h for h, _ in todo], answers=[a for _, a in todo],
                                  query=self.example_query.value.strip())
        in_task = search_hits_in_task(ws, [h for h, _ in todo])
        added = [f"{hit_name(h)} as {in_task.get(h.item)}" for h, _ in todo if in_task.get(h.item) not in before]
        skipped = [hit_name(h) for h, _ in todo if in_task.get(h.item) in before]
        parts = [f"Added {len(added)} example(s): {', '.join(added)}." if added else "Added no example."]
        if skipped:
            parts.append(f"Already examples: {', '.join(skipped)}.")
        if unanswered:
            parts.append(f"Not added (no answer): {', '.join(unanswered)}.")
        self._show_hits()
        self.status.object = html.escape(" ".join(parts)) + f" The task has {len(card.examples)} examples."
        self.state.task_changed()
        return card

    def layout(self, **card: Any) -> pn.Card:
        """The card's layout."""
        options = {"title": "Search a collection", "sizing_mode": "stretch_width", "collapsible": True, **card}
        return pn.Card(pn.Row(self.folder, self.index_button),
                       pn.Row(self.query, self.k, self.verify, self.search_button), self.status, self.results,
                       pn.Row(self.example_query, self.add_button), **options)
