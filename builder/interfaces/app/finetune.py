"""Card 6, Fine-tune: the VQA engine on a workspace dataset; before/after and the loss curve."""

from __future__ import annotations

import html
import json
from typing import Any

import panel as pn

from builder import FinetuneConfig, examples_dataset, finetune_engine, run_step_in_process
from builder.interfaces.app.jobs import Job, StepCard
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

    def params(self) -> dict[str, Any]:
        return {"dataset": self.ft_dataset.value, "epochs": self.epochs.value}

    def finetune(self, dataset: str = "examples", epochs: int = 1) -> dict:
        """Fine-tune the VQA engine on a workspace dataset; shows before/after and the loss curve."""
        out = self.compute(None, dataset, epochs)
        self.show(out)
        return out

    def compute(self, job: Job | None, dataset: str = "examples", epochs: int = 1) -> dict:
        ws = self.state.workspace
        if dataset == "examples":
            examples_dataset(ws, "examples")
        kwargs = {"dataset": dataset, "run": f"app-{dataset}", "config": FinetuneConfig(epochs=int(epochs)),
                  "progress": True}
        if job is None:
            res = finetune_engine(ws, **kwargs)
            return json.loads(json.dumps(res.to_dict() if hasattr(res, "to_dict") else res.__dict__, default=str))
        return run_step_in_process("finetune_engine", ws, on_progress=job.progress, should_stop=job.stop.is_set,
                                   **kwargs)

    def show(self, out: dict) -> None:
        before, after = out.get("before") or {}, out.get("after") or {}
        hist = out.get("history") or {}
        curve = curve_svg({"train loss": [(h["step"], h["loss"]) for h in hist.get("train", [])],
                           "val loss": [(h["step"], h["loss"]) for h in hist.get("val", [])]}, "loss")
        self.finetune_view.object = (
            bars_svg([("before", before.get("accuracy")), ("after", after.get("accuracy"))],
                     f"VQA accuracy ({after.get('n', before.get('n', '?'))} held-out questions)") +
            curve + f"<div><small>best checkpoint <code>{html.escape(str(out.get('best_checkpoint', '')))}"
                    "</code></small></div>")
        self.state.say("Fine-tune finished.")

    def layout(self, **card: Any) -> pn.Card:
        """The card's layout."""
        return pn.Card(pn.Row(self.ft_dataset, self.epochs), self.finetune_button, self.finetune_view,
                       title="6 · Fine-tune the engine", css_classes=["vf-card"], **card)
