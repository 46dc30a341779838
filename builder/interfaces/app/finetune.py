"""Card 6, Fine-tune: the VQA engine on a workspace dataset; before/after and the loss curve."""

from __future__ import annotations

import html
from typing import Any

import panel as pn

from builder import FinetuneConfig, examples_dataset
from builder.interfaces.app.jobs import StepCard
from builder.interfaces.app.state import AppState
from builder.interfaces.views import bars_svg, curve_svg


class FinetunePanel(StepCard):
    """The Fine-tune card (a job in a child process that Cancel kills)."""

    step, label = "finetune", "Fine-tune"

    def __init__(self, state: AppState):
        super().__init__(state)
        W = pn.widgets  # noqa: N806
        self.epochs = W.IntInput(label="Epochs", value=1, start=1, end=50, width=80)
        self.ft_dataset = W.Select(label="Dataset", options=["examples"], value="examples", width=140)
        self.finetune_button = W.Button(label="Fine-tune the engine", color="primary")
        self.finetune_view = pn.pane.HTML("", sizing_mode="stretch_width")
        self.finetune_button.on_click(state.action(self.start))
        state.buttons.append(self.finetune_button)

    def add_dataset(self, name: str) -> None:
        """Offer a new workspace dataset (besides the task's examples)."""
        self.ft_dataset.options = sorted({"examples", *self.ft_dataset.options, name})

    def inputs(self) -> dict[str, Any]:
        """The card's settings: the dataset to train on and the epochs."""
        return {"dataset": self.ft_dataset.value, "epochs": self.epochs.value}

    def job_params(self, dataset: str = "examples", epochs: int = 1, **options: Any) -> dict[str, Any]:
        """``options`` go to ``finetune_engine`` (``model``, ``run``, ``config``: a whole
        ``FinetuneConfig`` instead of the card's epochs)."""
        if dataset == "examples":
            examples_dataset(self.state.workspace, "examples")
        return {"dataset": dataset, "run": f"app-{dataset}", "config": FinetuneConfig(epochs=int(epochs)), **options}

    def finetune(self, dataset: str = "examples", epochs: int = 1, **options: Any) -> dict:
        """Fine-tune the VQA engine on a workspace dataset as a job; waits, shows before/after and the loss curve."""
        return self.execute(dataset=dataset, epochs=epochs, **options)

    def show(self, out: dict, params: dict[str, Any]) -> None:
        """Before/after accuracy (with its n) and the loss curves of a finished fine-tune."""
        before, after = out.get("before") or {}, out.get("after") or {}
        hist = out.get("history") or {}
        curve = curve_svg({"train loss": [(h["step"], h["loss"]) for h in hist.get("train", [])],
                           "val loss": [(h["step"], h["loss"]) for h in hist.get("val", [])]}, "loss")
        self.finetune_view.object = (
            bars_svg([("before", before.get("accuracy")), ("after", after.get("accuracy"))],
                     "VQA accuracy on held-out questions", n=after.get("n", before.get("n"))) +
            curve + f"<div><small>best checkpoint <code>{html.escape(str(out.get('best_checkpoint', '')))}"
                    "</code></small></div>")
        self.state.say("Fine-tune finished.")

    def layout(self, **card: Any) -> pn.Card:
        """The card's layout."""
        return pn.Card(pn.Row(self.ft_dataset, self.epochs), self.finetune_button, self.job_view.layout(),
                       self.finetune_view,
                       title="6 · Fine-tune the engine", css_classes=["vf-card"], **card)
