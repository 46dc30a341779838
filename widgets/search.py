"""The Search step: index a folder of images, search it by text, add hits as task examples.

A thin shell over ``builder.index_images`` / ``search_images`` / ``add_search_results``: each
hit shows its thumbnail and score over its own (empty) answer field; "Add" adds the hits that
have an answer, each with its own, and names the ones left out.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import ipywidgets as w

from builder import (
    IndexResult,
    Runtime,
    TaskCard,
    UserError,
    Workspace,
    add_search_results,
    index_images,
    search_hits_in_task,
    search_images,
)
from builder.interfaces.views import hit_name, search_hit_html, search_status


class SearchWidget(w.VBox):
    """Public API: ``index(folder)``, ``search(query, k, verify)``, ``add_answered()`` (the hits
    with an answer typed under them), ``add_results(answers=[...])`` (one answer per hit)."""

    def __init__(self, workspace: Workspace | str | Path, runtime: Runtime | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
        self.runtime = runtime
        self.hits: list = []
        self.answers: list[w.Text | None] = []  # aligned with hits; None where already an example
        self.folder = w.Text(description="Folder", placeholder="/data/photos")
        self.query = w.Text(description="Search", placeholder="a red circle left of a blue square")
        self.k = w.BoundedIntText(value=10, min=1, max=100, description="k")
        self.verify = w.Checkbox(value=True, description="read the query (hybrid)")
        self.example_query = w.Text(description="Question", placeholder="empty: the task's question")
        self.status = w.HTML()
        self.results = w.Box(layout=w.Layout(display="flex", flex_flow="row wrap"))
        index_b = w.Button(description="Index new images")
        search_b = w.Button(description="Search", button_style="primary")
        add_b = w.Button(description="Add answered results", button_style="primary")
        index_b.on_click(lambda _b: self._safe(self.index, self.folder.value))
        search_b.on_click(lambda _b: self._safe(self.search, self.query.value, self.k.value, self.verify.value))
        add_b.on_click(lambda _b: self._safe(self.add_answered))
        self.children = [w.HBox([self.folder, index_b]), w.HBox([self.query, self.k, self.verify, search_b]),
                         self.status, self.results, w.HBox([self.example_query, add_b])]

    def _safe(self, fn, *args) -> None:
        try:
            fn(*args)
        except (UserError, ValueError, FileNotFoundError) as e:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"

    def index(self, folder: str | Path) -> IndexResult:
        """Index the images under ``folder`` (only new ones are embedded)."""
        res = index_images(self.ws, folder, progress=False, runtime=self.runtime)
        self.status.value = html.escape(res.summary())
        return res

    def search(self, query: str, k: int = 10, verify: bool = True) -> list:
        """Text->image search; shows each hit's thumbnail and score over an empty answer field."""
        self.hits = search_images(self.ws, query, k=k, verify=verify, runtime=self.runtime)
        self._show_hits()
        self.status.value = search_status(query, self.hits)
        return self.hits

    def _show_hits(self) -> None:
        in_task = search_hits_in_task(self.ws, self.hits)
        self.answers, tiles = [], []
        for hit in self.hits:
            example = in_task.get(hit.item)
            box = None if example is not None else w.Text(placeholder="answer", layout=w.Layout(width="110px"))
            self.answers.append(box)
            note = w.HTML(f"<small>example <b>{html.escape(example or '(no id)')}</b></small>")
            tiles.append(w.VBox([w.HTML(search_hit_html(hit)), box if box is not None else note],
                                layout=w.Layout(width="130px")))
        self.results.children = tiles if tiles else [w.HTML("<i>no results</i>")]

    def add_answered(self) -> TaskCard:
        """Add the shown hits that have an answer typed under them, each with its own answer;
        the status names the hits left out (no answer, or already examples)."""
        todo = [(h, b.value) for h, b in zip(self.hits, self.answers, strict=True) if b is not None and b.value.strip()]
        unanswered = [hit_name(h) for h, b in zip(self.hits, self.answers, strict=True)
                      if b is not None and not b.value.strip()]
        if not todo:
            raise ValueError("no result has an answer yet: type the expected answer under each image to add")
        before = {ex.id for ex in self.ws.load_task().examples}
        card = self.add_results(hits=[h for h, _ in todo], answers=[a for _, a in todo])
        in_task = search_hits_in_task(self.ws, [h for h, _ in todo])
        added = [f"{hit_name(h)} as {in_task.get(h.item)}" for h, _ in todo if in_task.get(h.item) not in before]
        text = f"Added {len(added)} example(s): {', '.join(added)}." if added else "Added no example."
        if unanswered:
            text += f" Not added (no answer): {', '.join(unanswered)}."
        self.status.value = html.escape(text) + f" The task has {len(card.examples)} examples."
        return card

    def add_results(self, expected: Any = None, hits: list | None = None, answers: list | dict | None = None):
        """Add ``hits`` (default: the shown ones) to the task: ``answers`` gives each its own
        expected output (a list aligned with the hits, or {image path: answer}); ``expected``
        gives all of them the same one (only when it truly holds for each)."""
        card = add_search_results(self.ws, self.hits if hits is None else hits, expected,
                                  query=self.example_query.value.strip(), answers=answers)
        self.status.value = f"the task now has {len(card.examples)} examples"
        self._show_hits()
        return card
