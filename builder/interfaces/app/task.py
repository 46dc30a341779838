"""Card 1, Task: a shapes-world task or uploaded examples; edit, delete, replace and restore."""

from __future__ import annotations

import html
from typing import Any

import panel as pn

from builder import (
    SHAPES_KINDS,
    SHAPES_VIDEO_KINDS,
    UPLOADS_DIR,
    OutputKind,
    TaskCardError,
    Workspace,
    card_from_data,
    delete_example,
    format_expected,
    parse_expected_text,
    replace_task,
    restore_task,
    save_task,
    shapes_task_data,
    stage_image,
    task_history,
    task_problems,
    update_example,
    validate_image_upload,
)
from builder.interfaces.app.boxes import BoxDrawer
from builder.interfaces.app.state import AppState
from builder.interfaces.app.upload import MAX_UPLOAD_BYTES, UploadPicker, safe_name, staged_file
from builder.interfaces.views import (
    annotated_thumbnail,
    answer_text,
    as_boxes,
    frame_strip_html,
    is_video_path,
    safe_thumbnail,
)


class TaskPanel:
    """The task card. Nothing is lost: a task is only replaced explicitly and the old one stays
    restorable; uploads are decoded before anything is saved."""

    def __init__(self, state: AppState):
        self.state = state
        W = pn.widgets  # noqa: N806
        # Image kinds over a target, and video kinds over shapes-world clips (their queries name their objects).
        kinds = {k: k for k in SHAPES_KINDS} | {f"video: {k.replace('_', ' ')}": k for k in SHAPES_VIDEO_KINDS}
        self.kind = W.Select(label="Task kind", options=kinds, value="count", width=170)
        self.target = W.TextInput(label="Target objects", value="red objects", width=160)
        self.n = W.IntInput(label="Examples", value=8, start=1, end=60, width=90)
        self.seed = W.IntInput(label="Seed", value=0, width=80)
        self.create_button = W.Button(label="Create task", color="primary")
        self.replace_button = W.Button(label="Replace the current task", color="danger", visible=False)
        self.upload = UploadPicker(max_bytes=MAX_UPLOAD_BYTES, sizing_mode="stretch_width", margin=(5, 10))  # over HTTP
        self.query = W.TextInput(label="Query for uploaded images", placeholder="How many ...?")
        self.expected = W.TextInput(label="Expected output", placeholder="for all: 3 / yes / [[x0,y0,x1,y1]]")
        self.upload_button = W.Button(label="Add uploaded examples")
        # One answer field under each uploaded image (empty: the Expected output above is used).
        self.upload_grid = pn.FlexBox(sizing_mode="stretch_width", css_classes=["vf-upload-grid"])
        self.upload_answers: dict[str, pn.widgets.TextInput] = {}  # staged token -> its answer field
        self.task_view = pn.pane.HTML("<i>No task yet: create one from the shapes world or upload images.</i>",
                                      sizing_mode="stretch_width")
        # More examples than one page of thumbnails: choose the page (24 a page).
        self.thumb_page = W.Select(label="Examples shown", options={"1–24": 0}, value=0, width=130, visible=False)
        self.example_pick = W.Select(label="Example", options=[], width=130)
        self.example_query = W.TextInput(label="Its query", width=220)
        self.example_expected = W.TextInput(label="Its expected output", width=150)
        self.example_save = W.Button(label="Save example")
        self.example_delete = W.Button(label="Delete example", color="warning")
        # A grounding task's example is labelled by dragging boxes over its image.
        self.drawer = BoxDrawer(visible=False)
        self.draw_hint = pn.pane.Markdown("", visible=False)
        # A video example is shown as a strip of its frames, first to last.
        self.example_strip = pn.pane.HTML("", visible=False, sizing_mode="stretch_width",
                                          styles={"overflow-x": "auto"}, css_classes=["vf-example-strip"])
        self.history = W.Select(label="Earlier tasks", options={}, width=240)
        self.restore_button = W.Button(label="Restore task")
        self._connect()

    def _connect(self) -> None:
        act = self.state.action
        form = self._form
        self.create_button.on_click(act(lambda: self.create_task(*form())))
        self.replace_button.on_click(act(lambda: self.replace_task(*form())))
        self.upload_button.on_click(act(self._add_uploaded))
        self.example_save.on_click(act(lambda: self.edit_example(self.example_pick.value, self.example_expected.value,
                                                                 self.example_query.value)))
        self.example_delete.on_click(act(lambda: self.delete_example(self.example_pick.value)))
        self.restore_button.on_click(act(lambda: self.restore(self.history.value)))
        self.upload.param.watch(lambda e: self.state.guard(lambda: self._show_upload_grid(e.new)), "staged")
        self.upload.param.watch(lambda e: e.new and self.state.say(f"**Error:** {html.escape(e.new)}", "danger"),
                                "error")
        self.example_pick.param.watch(lambda e: e.new and self.state.guard(lambda: self._pick_example(e.new)),
                                      "value")
        self.drawer.param.watch(lambda e: self._boxes_drawn(e.new), "boxes")
        self.thumb_page.param.watch(lambda e: self.state.guard(self._show_task), "value")
        self.kind.param.watch(lambda e: setattr(self.target, "disabled", e.new in SHAPES_VIDEO_KINDS), "value")
        self.state.buttons += [self.create_button, self.replace_button, self.upload_button, self.example_save,
                               self.example_delete, self.restore_button]

    def _form(self) -> tuple[str, str, int, int]:
        return self.kind.value, self.target.value, self.n.value, self.seed.value

    # ---- actions -------------------------------------------------------------------------------
    def create_task(self, kind: str = "count", target: str = "red objects", n: int = 8, seed: int = 0) -> Workspace:
        """Make a shapes-world task the workspace's task, only when it has none yet: an existing
        task is never overwritten here (the user is asked to use ``replace_task``)."""
        if self.state.has_workspace():
            card = self.state.workspace.load_task()
            self.replace_button.visible = True
            self.state.say(f"This workspace already has the task **{html.escape(card.name)}** with "
                           f"{len(card.examples)} examples; nothing was changed. Press **Replace the current task** "
                           "to replace it (the old task is kept under Earlier tasks and can be restored).", "warning")
            return self.state.workspace
        card = card_from_data(shapes_task_data(kind, target, int(n), int(seed)))
        ws = save_task(self.state.root, card)
        self.state.task_changed()
        self.state.say(f"Task **{html.escape(card.name)}** with {len(card.examples)} examples: "
                       f"*{html.escape(card.examples[0].query or '')}*")
        return ws

    def replace_task(self, kind: str = "count", target: str = "red objects", n: int = 8, seed: int = 0) -> Workspace:
        """Replace the task explicitly: the old card is kept (restorable); old runs become stale."""
        card = card_from_data(shapes_task_data(kind, target, int(n), int(seed)))
        ws = replace_task(self.state.root, card, reason="replaced in the app")
        self.replace_button.visible = False
        self.state.task_changed()
        self.state.say(f"Task replaced by **{html.escape(card.name)}** ({len(card.examples)} examples). The "
                       "previous task is under Earlier tasks; runs and the accepted version from it are marked stale.")
        return ws

    def restore(self, number: int | None) -> None:
        """Make an earlier task card the task again (the current one is kept too)."""
        if number is None:
            raise ValueError("choose an earlier task first")
        card = restore_task(self.state.workspace, int(number))
        self.state.task_changed()
        self.state.say(f"Restored the earlier task **{html.escape(card.name)}** ({len(card.examples)} examples).")

    def add_examples(self, files: list[tuple[str, bytes]], query: str, expected: str,
                     answers: list[str] | None = None) -> Workspace:
        """Add uploaded images (name, bytes) with one query to the task, each with its own answer
        (``answers``, aligned with ``files``; an empty one takes ``expected``).

        Every file is decoded and size-checked before anything is saved; a bad one is named in
        the error and nothing changes. Without a workspace yet, a new task is started from them.
        """
        if answers is not None and len(answers) != len(files):
            raise ValueError(f"{len(answers)} answers for {len(files)} images: give one answer per image")
        if not files:
            raise ValueError("choose image files first")
        for name, data in files:
            if len(data) > MAX_UPLOAD_BYTES:
                raise ValueError(f"{name}: {len(data)} bytes is over the {MAX_UPLOAD_BYTES}-byte upload limit")
            validate_image_upload(data, name)
        values = [parse_expected_text(a if a and a.strip() else expected) for a in (answers or [""] * len(files))]
        staging = self.state.root.resolve() / UPLOADS_DIR  # where the upload route staged them too (same names)
        examples = [{"image": str(stage_image(data, name, staging=staging)), "query": query, "expected": value}
                    for (name, data), value in zip(files, values, strict=True)]
        data = self._with_examples(examples, query, values[0])
        ws = save_task(self.state.root, card_from_data(data), reason=f"added {len(files)} uploaded example(s)")
        self.state.task_changed()
        self.state.say(f"Added {len(files)} example(s).")
        return ws

    def _with_examples(self, examples: list[dict[str, Any]], query: str, value: Any) -> dict[str, Any]:
        """The task card's data with ``examples`` added under fresh ids (a new card without a task)."""
        if not self.state.has_workspace():
            kind = ("bool" if isinstance(value, bool) else "count" if isinstance(value, int) else
                    "boxes" if isinstance(value, list) else "text")
            return {"name": "uploaded-task", "description": query or "Uploaded examples", "output": kind,
                    "examples": [{"id": f"up{i:04d}", **ex} for i, ex in enumerate(examples)]}
        data = self.state.workspace.load_task().model_dump(mode="json", exclude_none=True)
        taken = {ex.get("id") for ex in data["examples"]}
        i = len(data["examples"])
        for ex in examples:
            while f"up{i:04d}" in taken:
                i += 1
            taken.add(f"up{i:04d}")
            data["examples"].append({"id": f"up{i:04d}", **ex})
        return data

    def _add_uploaded(self) -> None:
        """Add the files the picker staged (it sent them over HTTP; only their tokens came here)."""
        if self.upload.uploading:
            raise ValueError("the chosen files are still uploading: press Add uploaded examples when they are shown "
                             "as uploaded")
        staged = [s for s in (self.upload.staged if isinstance(self.upload.staged, list) else []) if isinstance(s, dict)]
        files = [(safe_name(s.get("name", "upload")), staged_file(self.state.root, s.get("token")).read_bytes())
                 for s in staged]
        answers = [self.upload_answers[s["token"]].value if s.get("token") in self.upload_answers else ""
                   for s in staged]
        self.add_examples(files, self.query.value, self.expected.value, answers=answers)
        self.upload.clear()

    def _show_upload_grid(self, staged: list) -> None:
        """Each staged image with its own answer field (a batch is rarely one answer for all)."""
        self.upload_answers, tiles = {}, []
        for s in staged if isinstance(staged, list) else []:
            if not isinstance(s, dict):
                continue
            box = pn.widgets.TextInput(value="", placeholder="its answer", width=110, css_classes=["vf-upload-answer"])
            self.upload_answers[s.get("token")] = box
            picture = safe_thumbnail(staged_file(self.state.root, s.get("token")), 72)
            tiles.append(pn.Column(pn.pane.HTML(f"{picture}<br><small>{html.escape(safe_name(s.get('name', '')))}"
                                                "</small>"), box, width=130, css_classes=["vf-upload-tile"]))
        self.upload_grid.objects = tiles

    def delete_example(self, example_id: str | None) -> None:
        """Delete one example (the previous card is kept in the task history)."""
        if not example_id:
            raise ValueError("choose an example first")
        delete_example(self.state.workspace, example_id)
        self.state.task_changed()
        self.state.say(f"Deleted example **{html.escape(example_id)}** (the previous task is under Earlier tasks).")

    def edit_example(self, example_id: str | None, expected: str, query: str | None = None) -> None:
        """Change one example's expected output (and its query, when given); the previous card
        stays restorable under Earlier tasks."""
        if not example_id:
            raise ValueError("choose an example first")
        if query is not None and not query.strip():
            raise ValueError(f"example {example_id}: the query is empty; type the question the program answers")
        update_example(self.state.workspace, example_id, expected=expected,
                       query=query.strip() if query is not None else None)
        self.state.task_changed()
        self.state.say(f"Saved example **{html.escape(example_id)}**.")

    def _pick_example(self, example_id: str) -> None:
        ws = self.state.workspace
        card = ws.load_task()
        match = [ex for ex in card.examples if ex.id == example_id]
        if not match:
            return
        self.example_expected.value = format_expected(match[0].expected)
        self.example_query.value = match[0].query or ""
        video = is_video_path(match[0].images[0])
        self.example_strip.visible = video
        self.example_strip.object = (f"<small>{html.escape(example_id)}, frames first to last:</small>"
                                     f"{frame_strip_html(ws.resolve_image(match[0].images[0]), 8, 72)}") if video else ""
        drawing = card.output == OutputKind.boxes and not video
        self.drawer.visible = self.draw_hint.visible = drawing
        if drawing:
            self.draw_hint.object = (f"Drag on the image to draw the boxes of **{html.escape(example_id)}**, "
                                     "then press **Save example**.")
            self.drawer.show(ws.resolve_image(match[0].images[0]), as_boxes(match[0].expected) or [])

    def _boxes_drawn(self, boxes: list) -> None:
        """Boxes drawn with the mouse become the picked example's expected output (saved with Save example)."""
        if self.drawer.visible:
            self.example_expected.value = format_expected([[int(v) for v in b] for b in boxes])

    # ---- display -------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Show the workspace's task: the card, its examples, the form and the history."""
        ws = self.state.workspace
        try:
            card = ws.load_task()
        except TaskCardError as e:
            self.task_view.object = f"<div class='vf-problems' style='color:#b00020'>{html.escape(str(e))}</div>"
            return
        pages = {f"{i + 1}–{min(i + PAGE, len(card.examples))}": i for i in range(0, len(card.examples), PAGE)}
        self.thumb_page.options = pages or {"1–24": 0}
        self.thumb_page.visible = len(pages) > 1
        if self.thumb_page.value not in self.thumb_page.options.values():
            self.thumb_page.value = 0  # the watcher shows the task
        self._show_task(ws, card)
        # The form shows the workspace's task (a reload never resets it to the defaults).
        kind, _, target = card.name.partition("-")
        if kind in SHAPES_KINDS and target:  # a shapes-world card is named <kind>-<target>
            self.kind.value = kind
            self.target.value = target.replace("-", " ")
        elif card.name.replace("-", "_") in SHAPES_VIDEO_KINDS:  # a video card is named after its kind
            self.kind.value = card.name.replace("-", "_")
        self.n.value = max(1, len(card.examples))
        ids = [ex.id for ex in card.examples if ex.id]
        self.example_pick.options = ids
        if ids and self.example_pick.value not in ids:
            self.example_pick.value = ids[0]
        elif ids:
            self._pick_example(self.example_pick.value)
        self.history.options = {f"#{h['number']} {h['name']} ({h['examples']} ex., {h['reason']})": h["number"]
                                for h in reversed(task_history(ws))}
        if self.history.options and self.history.value not in self.history.options.values():
            self.history.value = next(iter(self.history.options.values()))

    def _show_task(self, ws: Workspace | None = None, card=None) -> None:
        """The task card's view with the chosen page of example thumbnails."""
        ws = ws or self.state.workspace
        card = card or ws.load_task()
        self.task_view.object = _task_html(ws, card, task_problems(ws), start=int(self.thumb_page.value or 0))

    def layout(self, **card: Any) -> pn.Card:
        """The card's layout."""
        return pn.Card(
            pn.pane.Markdown("Choose a shapes-world task (images, or video clips), or upload your own images with a "
                             "query and the expected output. An existing task is only replaced when you confirm it, "
                             "and stays restorable."),
            pn.Row(self.kind, self.target, self.n, self.seed), pn.Row(self.create_button, self.replace_button),
            pn.layout.Divider(), self.upload, pn.Row(self.query, self.expected), self.upload_grid, self.upload_button,
            self.thumb_page, self.task_view,
            pn.Row(self.example_pick, self.example_query, self.example_expected,
                   pn.Column(self.example_save, self.example_delete)),
            self.example_strip, self.draw_hint, self.drawer,
            pn.Row(self.history, self.restore_button),
            title="1 · Task", css_classes=["vf-card"], **card)


PAGE = 24  # example thumbnails shown at a time


def _task_html(ws: Workspace, card, problems: list[str], start: int = 0) -> str:
    """The task card as HTML: name, output, metric, query, problems and the example thumbnails
    ``start`` to ``start + PAGE``."""
    shown = card.examples[start:start + PAGE]
    cells = "".join(  # boxes drawn on the picture, every answer in short words under it
        f"<figure title='{html.escape(ex.query or '')}'>{annotated_thumbnail(ws.resolve_image(ex.images[0]), 72, ex.expected if as_boxes(ex.expected) is not None else None)}"
        f"<figcaption>{html.escape(ex.id or str(i))}: <b>{html.escape(answer_text(ex.expected, 24))}</b></figcaption></figure>"
        for i, ex in enumerate(shown, start))
    more = (f"<small class='vf-page-note'>examples {start + 1}–{start + len(shown)} of {len(card.examples)}: "
            "choose another page under Examples shown</small>") if len(card.examples) > PAGE else ""
    counts: dict[str, int] = {}
    for ex in card.examples:
        counts[ex.query or ""] = counts.get(ex.query or "", 0) + 1
    query = "; ".join(f"{html.escape(q) or '(none)'}" + (f" ({n})" if len(counts) > 1 else "") for q, n in counts.items())
    warn = ("<div class='vf-problems' style='color:#b00020'><b>Problems:</b><ul>" +
            "".join(f"<li>{html.escape(p)}</li>" for p in problems) + "</ul></div>") if problems else ""
    return (f"<div class='vf-task'><b>{html.escape(card.name)}</b>: {html.escape(card.description)}<br>"
            f"output <b>{card.output}</b> · metric <b>{card.metric}</b> · <b>{len(card.examples)} examples</b> · "
            f"{'queries' if len(counts) > 1 else 'query'} <i class='vf-queries'>{query}</i>{warn}<div class='vf-thumbs'>{cells}</div>{more}</div>")
