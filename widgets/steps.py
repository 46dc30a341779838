"""Steps 3-5 (Improve the planner, Augment, Fine-tune) as thin shells over the workflow API.

Each shell names the ``builder`` API function it calls. When that function cannot run
here (a dataset is missing, say) the shell says so plainly and runs nothing: no placeholder
numbers are ever shown. Otherwise the shell runs it on a background thread and shows what it
returned.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w
from ipywidgets import CallbackDispatcher

from builder import (
    FinetuneConfig,
    Workspace,
    augment_data,
    examples_dataset,
    finetune_engine,
    improve_planner,
    load_qa_dataset,
    shapes_unlabelled,
    step_not_applicable,
)
from widgets._base import NotAvailable, StepWidget, button


class ApiShell(StepWidget):
    """A step whose work is one API call: the function ``entry()`` returns (each step names its own).

    Public API: ``available()`` (None, or why not), ``run(**params)`` -> the API's result,
    ``show_result(result)`` (a result a notebook cell got from the API itself).
    Callbacks: ``on_done(cb)`` -- ``cb(result)``.
    """

    WHAT = ""

    def __init__(self, workspace: Workspace | str | Path, **kwargs: Any):
        super().__init__(**kwargs)
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
        self._callbacks = CallbackDispatcher()
        self.result = None
        self.info = w.HTML()
        self.out = w.HTML()
        self.controls = self._controls()
        self.run_button = button(f"Run {self.title.split('·')[-1].strip().lower()}",
                                 lambda: self.start("Running", self.run, **self.params()), style="primary",
                                 icon="play")
        self._compose(self.info, *self.controls, self.run_button, self.out)
        self._show_availability()

    # Subclasses add parameter widgets and map them to keyword arguments.
    def _controls(self) -> list[w.Widget]:
        return []

    def params(self) -> dict[str, Any]:
        """The API call's keyword arguments, read from the controls."""
        return {}

    def on_done(self, callback, remove: bool = False) -> None:
        """Register ``callback(result)`` to run after each successful ``run``."""
        self._callbacks.register_callback(callback, remove=remove)

    def entry(self) -> Callable[..., Any]:
        """The API function this step calls (each step overrides it)."""
        raise NotImplementedError

    def available(self) -> str | None:
        """None when the step can run, else the reason it cannot (shown in the widget)."""
        try:
            self.entry()
        except NotAvailable as e:
            return str(e)
        return None

    def _show_availability(self) -> None:
        reason = self.available()
        what = f"<p style='margin:2px'>{html.escape(self.WHAT)}</p>"
        if reason:
            self.info.value = what + (f"<div class='vf-unavailable' style='color:#8a6d00;background:#fff8e1;"
                                      f"padding:6px;border-radius:4px'>{html.escape(reason)}</div>")
            self.run_button.disabled = True
        else:
            self.info.value = what + f"<small>calls <code>builder.{self.entry().__name__}</code></small>"
            self.run_button.disabled = False

    def run(self, **params: Any) -> Any:
        """Call the step's API on the workspace; returns (and shows) its result."""
        return self.show_result(self._call(self.entry(), **params))

    def show_result(self, result: Any) -> Any:
        """Show a result of the step's API (from ``run``, or from a notebook cell that called the
        API itself) and tell the ``on_done`` callbacks; returns it."""
        self.result = result
        data = result.to_dict() if hasattr(result, "to_dict") else result
        self.out.value = f"<pre class='vf-result' style='font-size:11px'>{html.escape(json.dumps(data, indent=1, default=str)[:4000])}</pre>"
        self._callbacks(result)
        return result

    def _call(self, fn, **params: Any) -> Any:
        return fn(self.ws, **params)


class ImproveWidget(ApiShell):
    """Step 3: reinforced self-training of the planner on the workspace's annotated examples."""

    title = "3 · Improve the planner"
    WHAT = ("Reinforced self-training: sample programs for the annotated examples, keep the ones the "
            "examples reward, fine-tune the planner on them, repeat; reports accuracy per round.")

    def entry(self) -> Callable[..., Any]:
        return improve_planner

    def available(self) -> str | None:
        return super().available() or step_not_applicable(self.ws, "improve")

    def _controls(self) -> list[w.Widget]:
        self.rounds = w.BoundedIntText(description="rounds", value=1, min=1, max=5)
        self.k = w.BoundedIntText(description="k", value=4, min=1, max=16)
        return [w.HBox([self.rounds, self.k])]

    def params(self) -> dict[str, Any]:
        return {"rounds": self.rounds.value, "k": self.k.value}


class AugmentWidget(ApiShell):
    """Step 4: SelTDA pseudo-labels on the customer's unlabeled images, into a workspace dataset."""

    title = "4 · Augment the data"
    WHAT = ("SelTDA: a teacher writes question/answer pairs for unlabeled images; filtered pairs become a "
            "synthetic dataset under the workspace's datasets/ for fine-tuning.")

    def entry(self) -> Callable[..., Any]:
        return augment_data

    def _controls(self) -> list[w.Widget]:
        self.images = w.Text(description="images", placeholder="folder of unlabeled images (empty: shapes-world)")
        self.per_image = w.BoundedIntText(description="per image", value=2, min=1, max=4)
        self.qgen_steps = w.BoundedIntText(description="teacher steps", value=400, min=5, max=5000)
        return [w.HBox([self.images, self.per_image, self.qgen_steps])]

    def available(self) -> str | None:
        return super().available() or step_not_applicable(self.ws, "augment")

    def params(self) -> dict[str, Any]:
        return {"unlabelled": self.images.value.strip(), "n_per_image": self.per_image.value,
                "qgen_steps": self.qgen_steps.value}

    def _call(self, fn, unlabelled: str = "", **options: Any) -> Any:
        # The teacher learns from the task's examples; without a folder, shapes-world stand-ins.
        examples_dataset(self.ws, "examples")
        folder = unlabelled or str(shapes_unlabelled(self.ws))
        return fn(self.ws, labelled="examples", unlabelled=folder, **{"progress": False, **options})


class FinetuneWidget(ApiShell):
    """Step 5: fine-tune the VQA engine on a workspace dataset; before/after figures from the API."""

    title = "5 · Fine-tune the engines"
    WHAT = "Fine-tune the VQA engine on a dataset in the workspace (real and/or synthetic QA); before/after scores."

    def entry(self) -> Callable[..., Any]:
        return finetune_engine

    def _controls(self) -> list[w.Widget]:
        self.dataset = w.Dropdown(description="dataset", options=self.datasets())
        self.backend = w.Dropdown(description="engine", options=["shapes", "hf"], value="shapes")
        self.epochs = w.BoundedIntText(description="epochs", value=1, min=1, max=50)
        self.run_name = w.Text(description="run", value="finetune")
        make = button("Dataset from the task's examples", self._on(self.build_dataset_from_task), icon="table")
        return [w.HBox([self.dataset, make]), w.HBox([self.backend, self.epochs, self.run_name])]

    def build_dataset_from_task(self, name: str = "examples") -> Path:
        """Save the task's examples as a QA dataset ``datasets/<name>`` and make it selectable."""
        path = dataset_from_task(self.ws, name)
        self.dataset.options = self.datasets()
        self.dataset.value = name
        self._show_availability()
        self.status = f"dataset {name}: {path}"
        return path

    def datasets(self) -> list[str]:
        """Dataset folders in the workspace that hold a QA dataset (``items.jsonl``)."""
        root = self.ws.dir("datasets")
        return sorted(p.name for p in root.iterdir() if (p / "items.jsonl").is_file())

    def available(self) -> str | None:
        reason = super().available() or step_not_applicable(self.ws, "finetune")
        if reason is None and not self.datasets():
            return (f"no QA dataset in {self.ws.dir('datasets')} yet: build one in the Augment step "
                    "(or save the task's examples as one with builder.examples_dataset)")
        return reason

    def params(self) -> dict[str, Any]:
        return {"dataset": self.dataset.value, "backend": self.backend.value, "epochs": self.epochs.value,
                "run": self.run_name.value.strip() or "finetune"}

    def _call(self, fn, dataset: str | None = None, backend: str = "shapes", epochs: int = 1,
              run: str = "finetune", model: str | None = None, heldout: Any = None) -> Any:
        """``heldout``: labelled items (or a workspace dataset name) never trained on, scored
        before and after (the default: the run's validation split)."""
        if not dataset:
            raise NotAvailable(self.available() or "choose a dataset")
        if isinstance(heldout, str):
            heldout = load_qa_dataset(self.ws.dir("datasets", heldout))
        return fn(self.ws, dataset, backend=backend, model=model, run=run,
                  config=FinetuneConfig(epochs=epochs), heldout=heldout)


def dataset_from_task(ws: Workspace, name: str = "examples", overwrite: bool = True) -> Path:
    """The task card's examples as a VQA dataset under ``datasets/<name>`` (``builder.examples_dataset``)."""
    return examples_dataset(ws, name, overwrite=overwrite)
