"""The app's Search section: index a folder of images, search it, add results as task examples.

Kept out of ``app.py`` so the app's layout code stays small: ``search_card(app)`` builds the
section for a ``VisForgeApp`` and calls only the workflow API (``index_images``,
``search_images``, ``add_search_results``).
"""

from __future__ import annotations

import html

import panel as pn

from builder import api as workflow
from builder.interfaces.views import search_results_html


def search_card(app) -> pn.Card:
    """A Panel card searching the app's workspace index (text->image, hybrid by default)."""
    folder = pn.widgets.TextInput(name="Image folder to index", placeholder="/data/photos")
    index_button = pn.widgets.Button(name="Index (new images only)", button_type="default")
    query = pn.widgets.TextInput(name="Search", placeholder="a red circle left of a blue square")
    k = pn.widgets.IntInput(name="Results", value=10, start=1, end=100, width=90)
    verify = pn.widgets.Checkbox(name="Verify with the matcher (hybrid)", value=True)
    search_button = pn.widgets.Button(name="Search", button_type="primary")
    expected = pn.widgets.TextInput(name="Expected output for the results", placeholder="e.g. 2, yes")
    add_button = pn.widgets.Button(name="Add these results as task examples", button_type="default")
    status = pn.pane.HTML("")
    results = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["vf-search"])
    state: dict = {"hits": []}

    def do_index(_event=None) -> None:
        res = app._guard(lambda: workflow.index_images(app.workspace, folder.value.strip(), progress=False,
                                                       runtime=app.runtime))
        if res is not None:
            status.object = html.escape(res.summary())

    def do_search(_event=None) -> None:
        hits = app._guard(lambda: workflow.search_images(app.workspace, query.value, k=int(k.value),
                                                         verify=bool(verify.value), runtime=app.runtime))
        if hits is not None:
            state["hits"] = hits
            results.object = search_results_html(hits)
            status.object = f"{len(hits)} result(s) for <i>{html.escape(query.value)}</i>"

    def do_add(_event=None) -> None:
        card = app._guard(lambda: workflow.add_search_results(
            app.workspace, state["hits"], workflow.parse_expected_text(expected.value)))
        if card is not None:
            status.object = f"the task now has {len(card.examples)} examples"
            app._refresh_all()

    index_button.on_click(do_index)
    search_button.on_click(do_search)
    add_button.on_click(do_add)
    card = pn.Card(pn.Row(folder, index_button), pn.Row(query, k, verify, search_button), status, results,
                   pn.Row(expected, add_button), title="Search a collection", sizing_mode="stretch_width",
                   collapsible=True)
    card.search_actions = {"index": do_index, "search": do_search, "add": do_add,
                           "widgets": {"folder": folder, "query": query, "k": k, "verify": verify,
                                       "expected": expected}, "status": status, "results": results}
    return card
