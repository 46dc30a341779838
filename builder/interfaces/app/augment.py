"""Card 5, Augment: SelTDA pseudo-labels on unlabeled images, saved as a workspace dataset."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import panel as pn

from builder import UserError, examples_dataset, shapes_unlabelled, step_not_applicable
from builder.interfaces.app.jobs import StepCard
from builder.interfaces.app.state import AppState
from builder.interfaces.views import bars_svg, safe_thumbnail


class AugmentPanel(StepCard):
    """The Augment card (a job in a child process that Cancel kills); ``on_dataset(name)`` hears
    the name of each dataset it writes (the Fine-tune card offers it)."""

    step, label = "augment", "Augment"

    def __init__(self, state: AppState, on_dataset: Callable[[str], None]):
        super().__init__(state)
        self.on_dataset = on_dataset
        W = pn.widgets  # noqa: N806
        self.n_unlabelled = W.IntInput(label="Unlabeled images", value=8, start=1, end=500, width=130)
        self.qgen_steps = W.IntInput(label="Teacher steps", value=60, start=5, end=5000, width=110)
        self.augment_button = W.Button(label="Augment the data", color="primary")
        self.augment_view = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["vf-result", "vf-augment-result"])
        self.augment_button.on_click(state.action(self.start))
        state.buttons.append(self.augment_button)

    def inputs(self) -> dict[str, Any]:
        """The card's settings: unlabelled images to make and question-generator steps."""
        return {"n_unlabelled": self.n_unlabelled.value, "qgen_steps": self.qgen_steps.value}

    def job_params(self, n_unlabelled: int = 8, qgen_steps: int = 60, **options: Any) -> dict[str, Any]:
        """Writes the examples dataset and the unlabeled images; ``options`` go to ``augment_data``."""
        ws = self.state.workspace
        reason = step_not_applicable(ws, "augment")  # a boxes task: say so before writing anything
        if reason:
            raise UserError(reason)
        examples_dataset(ws, "examples")
        folder = shapes_unlabelled(ws, n=int(n_unlabelled))
        return {"labelled": "examples", "unlabelled": str(folder), "qgen_steps": int(qgen_steps), **options}

    def augment(self, n_unlabelled: int = 8, qgen_steps: int = 60, **options: Any) -> dict:
        """SelTDA on shapes-world unlabeled images (the Augment step) as a job; waits, shows sample pseudo-labels."""
        return self.execute(n_unlabelled=n_unlabelled, qgen_steps=qgen_steps, **options)

    def show(self, out: dict, params: dict[str, Any]) -> None:
        """A finished Augment: its result, and the new dataset offered (and chosen) for Fine-tune."""
        self.render(out)
        self.on_dataset(Path(str(out.get("dataset", "seltda"))).name)
        self.say("Augment finished: fine-tune on the new dataset in step 6.")

    def render(self, out: dict[str, Any]) -> None:
        """Pseudo-labelled thumbnails and the real/synthetic dataset sizes of an Augment."""
        folder = Path(out.get("unlabelled_dir") or self.state.workspace.root / "datasets" / "unlabelled")
        cells = "".join(
            f"<figure>{safe_thumbnail(folder / ex['image'], 72)}<figcaption>{html.escape(ex['question'])} → "
            f"<b>{html.escape(str(ex['answer']))}</b></figcaption></figure>" for ex in out.get("examples", [])[:8])
        filt = out.get("filter", {})
        real, synthetic = out.get("real", 0), out.get("synthetic", 0)
        self.augment_view.object = (
            bars_svg([("real", real), ("synthetic", synthetic)], "dataset (question/answer pairs)",
                     maximum=max(1, real, synthetic), fmt="{:.0f}") +
            f"<div class='vf-augment-summary'><small>dataset <b>{html.escape(Path(str(out.get('dataset', ''))).name)}"
            f"</b>: {out.get('unlabelled_images', 0)} unlabeled images; kept {filt.get('kept', '?')} of "
            f"{filt.get('total', '?')} pseudo-labels</small></div><div class='vf-thumbs'>{cells}</div>")

    def buttons(self) -> list[pn.widgets.Button]:
        """The button that starts the step."""
        return [self.augment_button]

    def views(self) -> list[pn.viewable.Viewable]:
        """The step's result views."""
        return [self.augment_view]

    def layout(self, **card: Any) -> pn.Card:
        """The card's layout."""
        return pn.Card(pn.Row(self.n_unlabelled, self.qgen_steps), self.augment_button, self.job_view.layout(), self.augment_view,
                       title="5 · Augment the data", css_classes=["vf-card", f"vf-card-{self.step}"], **card)
