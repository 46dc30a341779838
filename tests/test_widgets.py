"""Step widgets without a browser: construct, set values, click, assert on the workspace."""

from __future__ import annotations

import datetime
import io
import json

import ipywidgets as w
import pytest
from PIL import Image

from builder import latest_runs
from builder.core.workspace import Workspace
from widgets import (
    AugmentWidget,
    ExportWidget,
    FinetuneWidget,
    ImproveWidget,
    PlanWidget,
    Runtime,
    TaskWidget,
    ensure_shapes_workspace,
)


def find_button(root: w.Widget, description: str) -> w.Button:
    """The button labelled ``description`` anywhere inside ``root``."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, w.Button) and node.description == description:
            return node
        stack.extend(getattr(node, "children", ()))
    raise AssertionError(f"no button {description!r}")


def png_bytes(color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """A small shapes workspace and a runtime shared by the plan/export tests."""
    ws = ensure_shapes_workspace(tmp_path_factory.mktemp("plan") / "ws", "count", "red objects", n=3, seed=1)
    runtime = Runtime(ws)
    yield ws, runtime
    runtime.close()


def test_task_widget_validates_and_saves(tmp_path):
    root = tmp_path / "ws"
    task = TaskWidget(root)
    assert task.workspace is None
    assert any(m.startswith("name:") for m in task.messages)  # empty form: problems listed

    task.shapes_n.value = 3
    find_button(task, "Generate shapes-world examples").click()
    assert task.messages == [] and len(task.examples) == 3 and not task.error

    saved = []
    task.on_save(saved.append)
    # A wrong expected output is reported by the card's own validation and blocks the save.
    task.example_index.value = 1
    task.example_expected.value = "many"
    find_button(task, "Set expected").click()
    assert task.messages == ["examples[1].expected: expected a non-negative integer count, got 'many'"]
    assert "examples[1].expected" in task.messages_html.value
    find_button(task, "Save task").click()
    assert "not valid" in task.error and task.workspace is None and not saved

    task.example_expected.value = "2"
    find_button(task, "Set expected").click()
    find_button(task, "Save task").click()
    assert not task.error, task.error
    ws = Workspace.open(root)
    card = ws.load_task()
    assert len(card.examples) == 3 and card.examples[1].expected == 2
    assert all(ws.resolve_image(ex.images[0]).is_file() for ex in card.examples)
    assert saved and saved[0].root == ws.root


def test_task_widget_upload_and_folder_into_existing_workspace(tmp_path):
    ws = ensure_shapes_workspace(tmp_path / "ws", "exists", "blue circle", n=2, seed=0)
    task = TaskWidget(ws.root)
    assert task.output.value == "bool" and len(task.examples) == 2

    task.upload.value = ({"name": "mine.png", "type": "image/png", "size": 100, "content": png_bytes(),
                          "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)},)
    task.query.value = "Is there a blue circle?"
    task.expected.value = "no"
    find_button(task, "Add uploaded").click()
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes((0, 0, 255)))
    (folder / "b.png").write_bytes(png_bytes((0, 255, 0)))
    (folder / "labels.json").write_text(json.dumps({"a.png": "yes", "b.png": False}))
    task.folder.value = str(folder)
    find_button(task, "Add folder").click()
    assert not task.error, task.error
    assert [ex["expected"] for ex in task.examples[2:]] == [False, True, False]

    find_button(task, "Save task").click()
    assert not task.error, task.error
    card = Workspace.open(ws.root).load_task()
    assert len(card.examples) == 5
    # Uploaded/folder images were copied into the workspace (self-contained, relative paths).
    assert all(ex.images[0].startswith("images/") for ex in card.examples)

    task.folder.value = str(tmp_path / "nowhere")
    find_button(task, "Add folder").click()
    assert "no such folder" in task.error


def test_plan_widget_propose_run_edit_diff_accept(planned):
    ws, runtime = planned
    plan = PlanWidget(ws, runtime=runtime)
    runs, accepted = [], []
    plan.on_run(lambda v, res: runs.append((v, res.n)))
    plan.on_accept(accepted.append)

    plan.k.value = 2
    find_button(plan, "Propose programs").click()
    plan.wait(timeout=120, raise_errors=True)
    assert ws.programs() and plan.version == ws.programs()[0].version
    assert plan.candidates.children and plan.editor.value.startswith("def execute") and "highlight" in plan.preview.value

    find_button(plan, "Run on examples").click()
    plan.wait(timeout=120, raise_errors=True)
    assert runs and runs[-1] == (plan.version, 3)
    assert latest_runs(ws)[plan.version]["n"] == 3
    assert "vf-results" in plan.results.value and ("vf-pass" in plan.results.value or "vf-fail" in plan.results.value)
    assert "<img" in plan.trace.value and "find" in plan.trace.value  # the step trace with images

    parent = plan.version
    plan.editor.value = 'def execute(image):\n    return len(image.find("red object"))\n'
    plan.note.value = "count by find"
    find_button(plan, "Save as new version").click()
    edited = ws.programs()[-1]
    assert edited.parent == parent and edited.origin == "engineer" and edited.note == "count by find"
    assert "+    return len(image.find" in plan.diff(parent, edited.version)
    assert "vf-diff" in plan.diff_view.value and edited.tag in plan.history.value

    # A program the sandbox would refuse is not saved; the reason is shown in the widget.
    n = len(ws.programs())
    plan.editor.value = "import os\ndef execute(image):\n    return os.listdir('/')\n"
    find_button(plan, "Save as new version").click()
    assert len(ws.programs()) == n and "not allowed" in plan.error

    plan.select(edited.version)
    find_button(plan, "Accept this version").click()
    assert ws.accepted.version == edited.version and accepted == [edited.version] and plan.accepted == edited.version


def test_export_widget(planned, tmp_path):
    ws, runtime = planned
    if ws.accepted is None:
        pv = ws.add_program('def execute(image):\n    return image.count("red object")\n')
        ws.accept(pv.version)
    exp = ExportWidget(ws)
    done = []
    exp.on_export(done.append)
    exp.target.value = "project"
    exp.overwrite.value = True
    find_button(exp, "Build export").click()
    exp.wait(timeout=300, raise_errors=True)
    assert done and done[0].project_dir.is_dir() and done[0].wheel is None
    assert str(done[0].project_dir) in exp.out.value


def test_export_widget_shows_errors(tmp_path):
    ws = ensure_shapes_workspace(tmp_path / "ws", n=2)
    exp = ExportWidget(ws)
    assert "no accepted program" in exp.out.value
    find_button(exp, "Build export").click()
    exp.wait(timeout=60)
    assert "no accepted program version" in exp.error and exp.status.endswith("failed")
    with pytest.raises(Exception, match="no accepted program"):
        exp.wait(raise_errors=True)


def test_shell_steps_say_what_is_missing(planned):
    ws, _ = planned
    for cls in (ImproveWidget, AugmentWidget):
        step = cls(ws)
        reason = step.available()
        if reason is not None:  # no fake numbers: the button is off and the reason is shown
            assert "not available yet" in reason and step.run_button.disabled
            assert "vf-unavailable" in step.info.value
    fine = FinetuneWidget(ws)
    assert fine.available() is not None and fine.run_button.disabled  # no dataset yet
    fine.build_dataset_from_task("examples")
    assert fine.datasets() == ["examples"] and fine.available() is None and not fine.run_button.disabled
    assert (ws.dir("datasets", "examples") / "items.jsonl").is_file()


def test_augment_widget_takes_the_callers_options(planned):
    # The notebook demo calls augment.run(ratio=..., progress=False): an option the widget also
    # sets must not arrive twice (it once raised "got multiple values for keyword 'progress'").
    ws, _ = planned
    seen = {}
    AugmentWidget(ws)._call(lambda _ws, **kw: seen.update(kw), ratio=8.0, progress=True)
    assert seen["progress"] is True and seen["ratio"] == 8.0 and seen["labelled"] == "examples"
    AugmentWidget(ws)._call(lambda _ws, **kw: seen.update(kw))
    assert seen["progress"] is False


def test_background_errors_are_shown_not_swallowed(planned):
    ws, runtime = planned
    plan = PlanWidget(ws, runtime=runtime)

    def boom():
        raise RuntimeError("engine exploded")

    plan.start("Exploding", boom)
    plan.wait(timeout=10)
    assert plan.error.startswith("engine exploded") and "Traceback" in plan.error
    assert "engine exploded" in plan._error_html.value and not plan.busy


def test_widgets_take_a_video_task_and_offer_only_what_applies(tmp_path):
    """The task widget makes a shapes-world video task; the image-only steps say they do not
    apply to it (their buttons off, the reason shown)."""
    task = TaskWidget(tmp_path / "ws")
    task.generate_shapes("leaves", n=4, seed=1)
    assert all(str(ex["image"]).endswith(".mp4") for ex in task.data()["examples"])
    ws = task.save()
    for cls in (ImproveWidget, AugmentWidget, FinetuneWidget):
        step = cls(ws)
        assert "applies to image tasks" in (step.available() or "") and step.run_button.disabled, cls
        assert "vf-unavailable" in step.info.value
