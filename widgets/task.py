"""Step 1, Describe: the task card (name, description, output kind, metric, examples)."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path
from typing import Any

import ipywidgets as w
import traitlets
from ipywidgets import CallbackDispatcher

from builder import (
    META_FILE,
    SHAPES_KINDS,
    SHAPES_VIDEO_KINDS,
    Metric,
    OutputKind,
    TaskCard,
    TaskCardError,
    Workspace,
    card_from_data,
    format_expected,
    images_in_folder,
    parse_expected_text,
    read_labels,
    save_task,
    shapes_task_data,
    stage_image,
    validation_messages,
)
from builder.interfaces.views import safe_thumbnail
from widgets._base import THUMB_SIDE, StepWidget, button


class TaskWidget(StepWidget):
    """Describe the task and its examples; saves the card into the workspace at ``workspace_dir``.

    Public API (every button calls one of these): ``load()``, ``validate()``, ``save()``,
    ``add_example(image, query, expected)``, ``add_uploaded()``, ``add_folder(folder, query)``,
    ``set_expected(index, value)``, ``remove_example(index)``, ``generate_shapes(kind, target, n, seed)``.
    Callbacks: ``on_save(cb)`` -- ``cb(workspace)`` after every successful save.
    """

    title = "1 · Describe the task"
    messages = traitlets.List(traitlets.Unicode())  # current validation problems ([] = valid)

    def __init__(self, workspace_dir: str | Path, **kwargs: Any):
        super().__init__(**kwargs)
        self.workspace_dir = Path(workspace_dir)
        self._staging = Path(tempfile.mkdtemp(prefix="visforge-upload-"))
        self._save_callbacks = CallbackDispatcher()
        self.examples: list[dict[str, Any]] = []  # draft examples: image path(s), query, expected, id

        self.name = w.Text(description="name", placeholder="count-red-objects")
        self.description = w.Textarea(description="description", placeholder="What should the solution do?",
                                      layout=w.Layout(width="95%", height="56px"))
        self.output = w.Dropdown(description="output", options=[k.value for k in OutputKind], value="count")
        self.metric = w.Dropdown(description="metric", options=["auto"] + [m.value for m in Metric], value="auto")

        # Adding examples: upload, folder, or shapes-world generator.
        self.upload = w.FileUpload(accept="image/*", multiple=True, description="images")
        self.query = w.Text(description="query", placeholder="How many red objects are there?")
        self.expected = w.Text(description="expected", placeholder="3 / yes / [[x0,y0,x1,y1]]")
        self.folder = w.Text(description="folder", placeholder="/path/to/images (labels.json or labels.csv)")
        self.shapes_kind = w.Dropdown(description="kind", options=[*SHAPES_KINDS, *SHAPES_VIDEO_KINDS], value="count")
        self.shapes_target = w.Text(description="target", value="red objects")
        self.shapes_n = w.BoundedIntText(description="examples", value=8, min=1, max=200)
        self.shapes_seed = w.IntText(description="seed", value=0)

        # Editing one example.
        self.example_index = w.Dropdown(description="example", options=[])
        self.example_expected = w.Text(description="expected")
        self.table = w.HTML()
        self.messages_html = w.HTML()

        add_tabs = w.Tab(children=[
            w.VBox([w.HBox([self.upload, button("Add uploaded", self._on(self.add_uploaded), icon="plus")]),
                    self.query, self.expected]),
            w.VBox([self.folder, w.HBox([button("Add folder", self._on(self._add_folder_clicked), icon="folder")])]),
            w.VBox([w.HBox([self.shapes_kind, self.shapes_target]), w.HBox([self.shapes_n, self.shapes_seed]),
                    button("Generate shapes-world examples", self._on(self._generate_clicked), icon="magic")]),
        ])
        for i, t in enumerate(("Upload", "From a folder", "Shapes world")):
            add_tabs.set_title(i, t)
        edit = w.HBox([self.example_index, self.example_expected,
                       button("Set expected", self._on(self._set_expected_clicked)),
                       button("Remove", self._on(self._remove_clicked), style="warning")])
        self.example_index.observe(self._show_selected, "value")
        for field in (self.name, self.description, self.output, self.metric):
            field.observe(lambda _c: self.validate(), "value")

        self._compose(
            w.HBox([self.name, self.output, self.metric]), self.description,
            w.HTML("<b>Add examples</b>"), add_tabs,
            w.HTML("<b>Examples</b>"), self.table, edit,
            w.HBox([button("Save task", self._on(self.save), style="primary", icon="save"),
                    button("Reload", self._on(self.load), icon="refresh")]),
            self.messages_html,
        )
        if (self.workspace_dir / META_FILE).is_file():
            self.load()
        else:
            self._refresh()

    # ---- callbacks -------------------------------------------------------------------------
    def on_save(self, callback, remove: bool = False) -> None:
        """Register ``callback(workspace)`` to run after each successful ``save()``."""
        self._save_callbacks.register_callback(callback, remove=remove)

    # ---- state <-> card ----------------------------------------------------------------------
    @property
    def workspace(self) -> Workspace | None:
        """The workspace, once the task has been saved at least once."""
        return Workspace.open(self.workspace_dir) if (self.workspace_dir / META_FILE).is_file() else None

    def data(self) -> dict[str, Any]:
        """The draft card as plain data (what ``validate``/``save`` check)."""
        return {
            "name": self.name.value.strip(),
            "description": self.description.value.strip(),
            "output": self.output.value,
            "metric": self.metric.value,
            "examples": [dict(ex) for ex in self.examples],
        }

    def load(self) -> TaskCard:
        """Load the workspace's card into the form (image paths become absolute for display)."""
        ws = self.workspace
        if ws is None:
            raise FileNotFoundError(f"{self.workspace_dir}: no workspace yet; fill in the task and save it")
        card = self._run_guarded("Load task", ws.load_task)
        self.set_card(card, base=ws.root)
        return card

    def set_card(self, card: TaskCard | dict[str, Any], base: str | Path | None = None) -> None:
        """Fill the form from a card (or card data); relative image paths resolve against ``base``."""
        data = card.model_dump(mode="json", exclude_none=True) if isinstance(card, TaskCard) else dict(card)
        self.name.value = data.get("name", "")
        self.description.value = data.get("description", "")
        self.output.value = str(data.get("output", "count"))
        self.metric.value = str(data.get("metric") or "auto")
        self.examples = []
        for ex in data.get("examples", []):
            ex = dict(ex)
            if base is not None:
                paths = [ex["image"]] if isinstance(ex["image"], str) else ex["image"]
                paths = [p if Path(p).is_absolute() else str((Path(base) / p).resolve()) for p in paths]
                ex["image"] = paths[0] if isinstance(ex["image"], str) else paths
            self.examples.append(ex)
        self._refresh()

    def validate(self) -> list[str]:
        """Check the draft; returns (and shows) the problems, [] when the card is valid."""
        problems: list[str] = []
        try:
            card_from_data(self.data())
        except TaskCardError as e:
            problems = validation_messages(e)
        for i, ex in enumerate(self.examples):
            for p in [ex["image"]] if isinstance(ex["image"], str) else ex["image"]:
                if not Path(p).is_file():
                    problems.append(f"examples[{i}].image: {p} does not exist")
        self.messages = problems
        return problems

    @traitlets.observe("messages")
    def _show_messages(self, change) -> None:
        msgs = change["new"]
        if not msgs:
            n = len(self.examples)
            self.messages_html.value = f"<span class='vf-valid' style='color:#0a7d28'>✔ valid task card, {n} example(s)</span>"
            return
        items = "".join(f"<li>{html.escape(m)}</li>" for m in msgs)
        self.messages_html.value = (f"<div class='vf-invalid' style='color:#b00020'><b>{len(msgs)} problem(s):</b>"
                                    f"<ul style='margin:2px'>{items}</ul></div>")

    def save(self) -> Workspace:
        """Validate and save the card (creating the workspace on first save); returns the workspace."""
        problems = self.validate()
        if problems:
            raise TaskCardError("the task card is not valid: " + "; ".join(problems))
        card = card_from_data(self.data())
        ws = self._run_guarded("Save task", save_task, self.workspace_dir, card)
        self.set_card(ws.load_task(), base=ws.root)
        self.status = f"saved {ws.task_path} ({len(card.examples)} examples)"
        self._save_callbacks(ws)
        return ws

    # ---- examples ----------------------------------------------------------------------------
    def add_example(self, image: str | Path | bytes, query: str = "", expected: Any = None,
                    filename: str = "upload.png", example_id: str | None = None) -> dict[str, Any]:
        """Add one example: an image path or image bytes, the query, the expected output.

        ``expected`` may be typed text ("3", "yes", "[[1,2,3,4]]"); it is parsed as YAML.
        """
        if isinstance(image, bytes):
            path = stage_image(image, filename, self._staging)
        else:
            path = Path(image).resolve()
            if not path.is_file():
                raise FileNotFoundError(f"{image}: no such image file")
        if isinstance(expected, str):
            expected = parse_expected_text(expected)
        ex = {"id": example_id or self._next_id(), "image": str(path), "query": query, "expected": expected}
        self.examples.append(ex)
        self._refresh()
        return ex

    def _next_id(self) -> str:
        used = {ex.get("id") for ex in self.examples}
        i = len(self.examples)
        while f"ex{i:04d}" in used:
            i += 1
        return f"ex{i:04d}"

    def add_uploaded(self) -> int:
        """Add every file in the upload widget as an example (query/expected from the fields)."""
        files = self.upload.value
        if not files:
            raise ValueError("choose image files with the upload button first")
        for f in files:
            self.add_example(bytes(f["content"]), self.query.value, self.expected.value, filename=f["name"])
        self.upload.value = ()
        self.status = f"added {len(files)} uploaded image(s)"
        return len(files)

    def add_folder(self, folder: str | Path, query: str | None = None) -> int:
        """Add every image in ``folder``; expected outputs come from its labels.json/labels.csv
        (by file name), else from the expected field."""
        images = images_in_folder(folder)
        if not images:
            raise ValueError(f"{folder}: no image files in this folder")
        labels = read_labels(folder)
        q = self.query.value if query is None else query
        for p in images:
            self.add_example(p, q, labels.get(p.name, self.expected.value))
        self.status = f"added {len(images)} image(s) from {folder}"
        return len(images)

    def _add_folder_clicked(self) -> None:
        self.add_folder(self.folder.value.strip())

    def generate_shapes(self, kind: str = "count", target: str = "red objects", n: int = 8, seed: int = 0) -> None:
        """Replace the draft with a shapes-world task (name, description, output and examples)."""
        data = shapes_task_data(kind, target, n, seed, staging=self._staging / f"shapes-{kind}-{seed}")
        self.set_card(data)
        self.status = f"generated {n} shapes-world examples: {data['examples'][0]['query']}"

    def _generate_clicked(self) -> None:
        self.generate_shapes(self.shapes_kind.value, self.shapes_target.value, self.shapes_n.value,
                             self.shapes_seed.value)

    def set_expected(self, index: int, value: Any) -> None:
        """Set example ``index``'s expected output (typed text is parsed as YAML)."""
        if isinstance(value, str):
            value = parse_expected_text(value)
        self.examples[index]["expected"] = value
        self._refresh()

    def _set_expected_clicked(self) -> None:
        if self.example_index.value is None:
            raise ValueError("no example selected")
        self.set_expected(self.example_index.value, self.example_expected.value)

    def remove_example(self, index: int) -> None:
        """Remove example ``index`` from the draft."""
        del self.examples[index]
        self._refresh()

    def _remove_clicked(self) -> None:
        if self.example_index.value is None:
            raise ValueError("no example selected")
        self.remove_example(self.example_index.value)

    # ---- display -----------------------------------------------------------------------------
    def _show_selected(self, change) -> None:
        i = change["new"]
        if i is not None and 0 <= i < len(self.examples):
            self.example_expected.value = format_expected(self.examples[i].get("expected"))

    def _refresh(self, max_rows: int = 24) -> None:
        rows = []
        for i, ex in enumerate(self.examples[:max_rows]):
            paths = [ex["image"]] if isinstance(ex["image"], str) else ex["image"]
            thumbs = "".join(
                safe_thumbnail(p, THUMB_SIDE // 2) if Path(p).is_file() else "<i>missing</i>"
                for p in paths
            )
            rows.append(f"<tr><td>{i}</td><td>{html.escape(str(ex.get('id', '')))}</td><td>{thumbs}</td>"
                        f"<td>{html.escape(ex.get('query', ''))}</td>"
                        f"<td><code>{html.escape(format_expected(ex.get('expected')))}</code></td></tr>")
        more = (f"<tr><td colspan='5'>... and {len(self.examples) - max_rows} more</td></tr>"
                if len(self.examples) > max_rows else "")
        self.table.value = (
            "<table class='vf-examples' border='1' cellpadding='3' style='border-collapse:collapse;font-size:12px'>"
            "<tr><th>#</th><th>id</th><th>image</th><th>query</th><th>expected</th></tr>"
            + "".join(rows) + more + "</table>" if self.examples else "<i>no examples yet</i>"
        )
        self.example_index.options = [(f"{i}: {ex.get('id', '')}", i) for i, ex in enumerate(self.examples)]
        self.validate()
