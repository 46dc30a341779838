"""Card 6, Fine-tune: the VQA engine on a workspace dataset; before/after and the loss curve."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import panel as pn

from builder import FinetuneConfig, examples_dataset, step_report, workspace_datasets
from builder.interfaces.app.jobs import StepCard
from builder.interfaces.app.state import AppState
from builder.interfaces.views import bars_svg, curve_svg

# The fine-tune's progress message: "epoch 2, step 14/40, loss 0.4132" (builder.methods.finetune.loop).
LIVE_LOSS = re.compile(r"step (?P<step>\d+)/(?P<total>\d+), loss (?P<loss>[-+0-9.eE]+|nan|inf)")


class FinetunePanel(StepCard):
    """The Fine-tune card (a job in a child process that Cancel kills)."""

    step, label = "finetune", "Fine-tune"

    def __init__(self, state: AppState):
        super().__init__(state)
        W = pn.widgets  # noqa: N806
        self.epochs = W.IntInput(label="Epochs", value=1, start=1, end=50, width=80)
        self.ft_dataset = W.Select(label="Dataset", options=["examples"], value="examples", width=140)
        self.finetune_button = W.Button(label="Fine-tune the engine", color="primary")
        self.finetune_view = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["vf-result", "vf-finetune-result"])
        # The training loss while a fine-tune runs: the steps of its finished epochs (history.json),
        # then each step the job reports; the finished result's curves replace it.
        self.live_view = pn.pane.HTML("", visible=False, sizing_mode="stretch_width", css_classes=["vf-live-loss"])
        self._live: tuple[str, dict[int, float]] | None = None  # (job id, step -> loss)
        self.finetune_button.on_click(state.action(self.start))
        state.buttons.append(self.finetune_button)

    def add_dataset(self, name: str) -> None:
        """Offer a new workspace dataset (besides the task's examples) and choose it."""
        self.ft_dataset.options = sorted({"examples", *self.ft_dataset.options, name})
        self.ft_dataset.value = name

    def refresh_datasets(self) -> None:
        """Offer the workspace's datasets and choose the one the last step chose: the dataset the
        last Augment wrote when it finished after the last fine-tune, else the one the last
        fine-tune trained on. A reload never drops the choice back to ``examples``."""
        ws = self.state.workspace
        self.ft_dataset.options = sorted({"examples", *workspace_datasets(ws)})
        chosen = []
        augmented, tuned = step_report(ws, "augment"), step_report(ws, "finetune")
        if augmented and augmented.get("dataset"):
            chosen.append((augmented.get("finished", 0), Path(str(augmented["dataset"])).name))
        if tuned and isinstance(tuned.get("dataset"), str):
            chosen.append((tuned.get("finished", 0), tuned["dataset"]))
        if chosen:
            name = max(chosen)[1]
            if name in self.ft_dataset.options:
                self.ft_dataset.value = name

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

    def show_progress(self, job) -> None:
        """The loss curve so far of the running fine-tune (after a reload too: the finished epochs'
        steps come from its run folder's ``history.json``)."""
        if self._live is None or self._live[0] != job.id:
            self._live = (job.id, {})
            history = self.state.workspace.root / "checkpoints" / str(job.params.get("run", "")) / "history.json"
            if job.params.get("run") and history.is_file():
                self._live[1].update({h["step"]: h["loss"] for h in json.loads(history.read_text()).get("train", [])})
        found = LIVE_LOSS.search(job.progress.message or "")
        points = self._live[1]
        if found is not None:
            points[int(found["step"])] = float(found["loss"])
        if points:
            total = int(found["total"]) if found is not None else max(points)
            self.live_view.object = curve_svg({"train loss": sorted(points.items())},
                                              f"loss while training (step {max(points)} of {total})")
        self.live_view.visible = bool(points)

    def hide_progress(self) -> None:
        """No fine-tune runs: the live curve goes (a finished one's curves are in its result)."""
        if self.live_view.visible or self._live is not None:
            self.live_view.visible, self._live = False, None

    def show(self, out: dict, params: dict[str, Any]) -> None:
        """A finished fine-tune: before/after and the loss curves."""
        self.render({**out, "dataset": params.get("dataset", out.get("dataset"))})
        self.refresh_datasets()  # as a reload would show them: the dataset just trained on stays chosen
        self.say("Fine-tune finished.")

    def render(self, out: dict[str, Any]) -> None:
        """Before/after accuracy (with its n), the loss curves and the best checkpoint of a fine-tune."""
        before, after = out.get("before") or {}, out.get("after") or {}
        hist = out.get("history") or {}
        curve = curve_svg({"train loss": [(h["step"], h["loss"]) for h in hist.get("train", [])],
                           "val loss": [(h["step"], h["loss"]) for h in hist.get("val", [])]}, "loss")
        data = out.get("dataset")
        data = ", ".join(data) if isinstance(data, list) else str(data or "?")
        self.finetune_view.object = (
            bars_svg([("before", before.get("accuracy")),
                      *([("normalised", norm)] if (norm := (out.get("baselines") or {}).get("start_normalised"))
                        is not None else []), ("after", after.get("accuracy"))],
                     "VQA accuracy on held-out questions", n=after.get("n", before.get("n"))) +
            curve + f"<div class='vf-finetune-summary'><small>trained on <b>{html.escape(data)}</b>; best checkpoint "
                    f"<code>{html.escape(str(out.get('best_checkpoint', '')))}</code></small></div>")

    def buttons(self) -> list[pn.widgets.Button]:
        """The button that starts the step."""
        return [self.finetune_button]

    def views(self) -> list[pn.viewable.Viewable]:
        """The step's result views."""
        return [self.finetune_view]

    def layout(self, **card: Any) -> pn.Card:
        """The card's layout."""
        return pn.Card(pn.Row(self.ft_dataset, self.epochs), self.finetune_button, self.job_view.layout(),
                       self.live_view, self.finetune_view,
                       title="6 · Fine-tune the engine", css_classes=["vf-card", f"vf-card-{self.step}"], **card)
