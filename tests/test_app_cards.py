"""The app's cards without a browser: progress in real units inside each card, results rebuilt
from the workspace after a reload, answers drawn on the pictures, examples edited with their query."""

from __future__ import annotations

import json
import re
import time

import pytest

pytest.importorskip("panel")


def _progress_seen(job) -> list[tuple]:
    """Every progress report the job gives from now on: (unit, done, total, message)."""
    seen: list[tuple] = []
    job.watch(lambda j: seen.append((j.progress.unit, j.progress.done, j.progress.total, j.progress.message)))
    return seen


def _views(app) -> dict[str, object]:
    """What the result cards show: their rendered views and the Fine-tune dataset choice."""
    return {"improve": app.improve.improve_view.object, "augment": app.augment.augment_view.object,
            "finetune": app.finetune.finetune_view.object, "export": app.export.export_view.object,
            "datasets": list(app.finetune.ft_dataset.options), "dataset": app.finetune.ft_dataset.value}


def test_steps_report_units_and_a_reload_shows_their_results(tmp_path):
    """Each step's job reports progress in its own units (rounds, images, epochs with the loss,
    stages); after each step a new session over the workspace (a reload, or a server restart)
    shows the same charts, thumbnails, loss curve, export result and Fine-tune dataset choice."""
    from test_jobs import COUNT, _tiny_vqa

    from builder import FinetuneConfig, step_report
    from builder.interfaces.app import VisForgeApp

    app = VisForgeApp(tmp_path / "ws")
    ws_dir = tmp_path / "ws"

    def reload_matches(step: str) -> dict:
        views = _views(app)
        again = VisForgeApp(ws_dir)
        try:
            assert _views(again) == views, f"a reload after {step} shows other results"
        finally:
            again.close()
        return views

    try:
        app.task.create_task("count", "red objects", n=4, seed=2)
        ws = app.workspace
        job = app.improve.start(rounds=2, k=2, steps=3, replay=0)
        seen = _progress_seen(job)
        assert app.jobs.wait(300) is job and job.state == "succeeded", job.error
        assert ("rounds", 2, 2) in [s[:3] for s in seen], seen
        views = reload_matches("Improve")
        assert "round 2" in views["improve"] and "n=" in views["improve"]

        job = app.augment.start(n_unlabelled=4, qgen_steps=5)
        seen = _progress_seen(job)
        assert app.jobs.wait(300) is job and job.state == "succeeded", job.error
        assert any(s[0] == "images" and s[2] == 4 for s in seen), seen
        assert app.finetune.ft_dataset.value == "seltda"  # the new dataset is chosen for the next fine-tune
        views = reload_matches("Augment")
        assert views["dataset"] == "seltda" and views["augment"].count("<img") >= 1

        init = _tiny_vqa(ws, tmp_path)
        job = app.finetune.start(dataset="real", model=str(init), run="app-real",
                                 config=FinetuneConfig(epochs=2, batch_size=16, patience=0, replay_fraction=0.0,
                                                       throttle_s=0.05))
        seen = _progress_seen(job)
        assert app.jobs.wait(300) is job and job.state == "succeeded", job.error
        epochs = [s for s in seen if s[0] == "epochs"]
        assert epochs and all(s[2] == 2 for s in epochs), seen
        assert any(re.search(r"loss \d+\.\d{3}", s[3]) for s in epochs), epochs
        views = reload_matches("Fine-tune")
        assert views["dataset"] == "real" and "polyline" in views["finetune"] and "trained on <b>real" in views["finetune"]
        assert step_report(ws, "finetune")["dataset"] == "real"

        app.program.save_version(COUNT)
        app.program.accept(app.program.version.value)
        job = app.export.start(build=False, out_dir=str(ws.root / "exports" / "sol"))
        seen = _progress_seen(job)
        assert app.jobs.wait(300) is job and job.state == "succeeded", job.error
        assert any(s[0] == "stages" and s[2] == 4 for s in seen), seen
        views = reload_matches("Export")
        assert "acceptance tests: 4/4" in views["export"]
    finally:
        app.close()


def test_card_progress_has_elapsed_eta_and_the_header_lists_the_job(tmp_path):
    """A running job shows in its card with units, elapsed time and an ETA, and in the page
    header; its outcome stays in its card, and clears when the task changes."""
    from builder import start_job
    from builder.interfaces.app import VisForgeApp
    from builder.interfaces.app.jobs import progress_text

    app = VisForgeApp(tmp_path / "ws")
    try:
        app.task.create_task("exists", "blue circle", n=3, seed=2)

        def work(job):
            job.report("scoring", done=1, total=4, unit="examples")
            job.token.wait(30)
            job.token.raise_if_cancelled("the test job")

        job = start_job("run", work, ws=app.workspace, label="Run on the examples")
        time.sleep(1.2)
        text = progress_text(job)
        assert "1/4 examples done" in text and "s elapsed" in text and re.search(r"about \d+ s left", text), text
        app.jobs.poll()
        assert "Run" in app.jobs.header.object and "1/4 examples done" in app.jobs.header.object
        assert "1/4 examples done" in app.run.job_view.status.object and app.run.job_view.cancel_button.visible
        app.run.job_view.cancel_button.clicks += 1
        assert job.wait(10) and job.state == "cancelled"
        app.jobs.poll()
        assert app.jobs.header.object == "" and "cancelled after" in app.run.job_view.status.object
        assert "cancel" not in app.state.message.object  # the outcome is the card's, not the page's
        app.task.edit_example(app.task.example_pick.value, "no")
        assert app.run.job_view.status.object == ""  # the task changed: the old outcome goes
    finally:
        app.close()


def test_failed_job_error_is_shown_once_in_a_box():
    """A 10,000-character error is shown once, in the card's bounded box."""
    from builder.interfaces.app.jobs import ERROR_BOX

    assert ERROR_BOX["max-height"] and ERROR_BOX["overflow"] == "auto" and ERROR_BOX["overflow-wrap"] == "anywhere"


def test_results_are_drawn_on_the_pictures(tmp_path):
    """Boxes are rectangles over the picture in image coordinates (expected dashed green,
    predicted blue or red when wrong), counts a badge; answers are short words, never JSON."""
    from PIL import Image

    from builder.interfaces.views import annotated_thumbnail, answer_text, results_table_html

    img = tmp_path / "a.png"
    Image.new("RGB", (200, 100), (200, 200, 200)).save(img)
    rows = [{"id": "e1", "expected": [[10, 20, 50, 60], [100, 10, 150, 90]], "value": [[12, 22, 48, 61]],
             "correct": False, "error": None},
            {"id": "e2", "expected": 3, "value": 2, "correct": False, "error": None}]
    table = results_table_html(rows, images={"e1": img, "e2": img})
    assert table.count("class='vf-box-expected'") == 2 and table.count("class='vf-box-predicted'") == 1
    assert "viewBox='0 0 200 100'" in table and "x='100.0' y='10.0' width='50.0' height='80.0'" in table
    assert "stroke='#d62728'" in table  # a wrong prediction is red
    assert "[[" not in table and "2 boxes" in table and "1 box<" in table
    assert "expected 3" in table and "got 2" in table
    assert answer_text(True) == "yes" and answer_text([]) == "0 boxes" and answer_text("x" * 100, 10).endswith("…")
    ok = annotated_thumbnail(img, 96, [[0, 0, 10, 10]], [[0, 0, 10, 10]], show_predicted=True, correct=True)
    assert "#2f6fdf" in ok and "width:96px;height:48px" in ok
    assert "vf-badimg" in annotated_thumbnail(tmp_path / "missing.png", 40, 3)


def test_run_card_trace_is_not_cut_off_and_zooms(tmp_path):
    """The trace is shown at full size in the page, not in a box of its own that scrolls, and
    its images can be enlarged."""
    from builder.interfaces.app import VisForgeApp

    app = VisForgeApp(tmp_path / "ws")
    try:
        assert app.run.trace.max_height is None and "max-height" not in (app.run.trace.styles or {})
        app.task.create_task("count", "red objects", n=2, seed=1)
        app.program.save_version('def execute(image):\n    return image.count("red object")\n')
        app.run.run()
        assert "<img" in app.run.trace.object and "zoom" not in app.run.trace.object
        app.run.trace_zoom.value = 3
        assert "zoom: 3" in app.run.trace.object and "<img" in app.run.trace.object
    finally:
        app.close()


def test_examples_show_their_queries_and_are_edited_with_history(tmp_path):
    """Every distinct query is shown; an example's query is edited (kept restorable); an empty
    query is refused naming the example."""
    from builder import task_history
    from builder.interfaces.app import VisForgeApp

    app = VisForgeApp(tmp_path / "ws")
    try:
        app.task.create_task("count", "red objects", n=3, seed=1)
        first = app.task.example_pick.value
        assert app.task.example_query.value  # the picked example's query is in the form
        n = len(task_history(app.workspace))
        app.task.edit_example(first, "2", "How many red things are there?")
        card = app.workspace.load_task()
        assert [ex.query for ex in card.examples if ex.id == first] == ["How many red things are there?"]
        assert len(task_history(app.workspace)) == n + 1
        assert "queries" in app.task.task_view.object and "How many red things are there? (1)" in app.task.task_view.object
        assert app.state.guard(lambda: app.task.edit_example(first, "2", "  ")) is None
        assert f"example {first}: the query is empty" in app.state.message.object
    finally:
        app.close()


def test_locate_example_is_labelled_by_drawing(tmp_path):
    """In a grounding task the picked example's image is shown for drawing; boxes drawn there
    (image pixels) become its expected output, saved with Save example."""
    from builder.interfaces.app import VisForgeApp

    app = VisForgeApp(tmp_path / "ws")
    try:
        app.task.create_task("locate", "red objects", n=2, seed=3)
        drawer = app.task.drawer
        assert drawer.visible and drawer.src.startswith("data:image/png") and drawer.natural_width > 1
        drawer.boxes = [[5, 6, 40, 50]]  # what the browser sets after a drag
        assert app.task.example_expected.value.replace(" ", "") == "[[5,6,40,50]]"
        app.task.edit_example(app.task.example_pick.value, app.task.example_expected.value)
        ex = [e for e in app.workspace.load_task().examples if e.id == app.task.example_pick.value][0]
        assert ex.expected == [[5, 6, 40, 50]]
        app.task.replace_task("count", "red objects", n=2)
        assert not app.task.drawer.visible  # only a boxes task draws
    finally:
        app.close()


def test_upload_batch_gets_one_answer_per_image(tmp_path):
    """Uploaded images each show with their own answer field; an empty one takes the common
    expected output; the examples are saved with their own answers."""
    import io

    from PIL import Image

    from builder.interfaces.app import VisForgeApp
    from builder.interfaces.app.upload import stage_uploads

    def png(shade: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), (shade, 90, 160)).save(buf, format="PNG")
        return buf.getvalue()

    app = VisForgeApp(tmp_path / "ws")
    try:
        app.task.create_task("count", "red objects", n=2, seed=1)
        staged = stage_uploads(tmp_path / "ws", [("a.png", png(10)), ("b.png", png(200)), ("c.png", png(90))])
        app.task.upload.staged = staged  # what the browser's picker sets after the upload route staged them
        assert len(app.task.upload_grid.objects) == 3 and len(app.task.upload_answers) == 3
        boxes = [app.task.upload_answers[s["token"]] for s in staged]
        boxes[0].value, boxes[2].value = "1", "4"
        app.task.query.value, app.task.expected.value = "How many red objects are there?", "2"
        app.task._add_uploaded()
        card = app.workspace.load_task()
        assert [ex.expected for ex in card.examples[2:]] == [1, 2, 4]
        assert app.task.upload_grid.objects == []  # the batch is done: the grid empties with the picker
    finally:
        app.close()


def test_query_encoding_stops_on_cancel():
    """Self-training encodes thousands of replayed phrasings before it trains: that loop stops
    at a Cancel too (it ran 40 s past one), raising ``Cancelled``."""
    import secrets

    from builder import Cancelled
    from builder.planner.semantic import encode

    calls = []

    def stop() -> bool:
        calls.append(1)
        return True

    with pytest.raises(Cancelled, match="cancelled while encoding"):
        encode([["never", "seen", secrets.token_hex(4)]], should_stop=stop)
    assert calls


def test_finetune_card_draws_the_loss_while_it_trains(tmp_path):
    """While a fine-tune runs its card draws the training loss so far, step by step; a reload
    mid-run draws the finished epochs' steps again (from the run's history.json) and goes on;
    when the job ends the live curve goes (the result's curves, or nothing after a Cancel)."""
    from test_jobs import _tiny_vqa

    from builder import FinetuneConfig, ensure_shapes_workspace
    from builder.interfaces.app import VisForgeApp

    ws = ensure_shapes_workspace(tmp_path / "ws", n=4, seed=2)
    init = _tiny_vqa(ws, tmp_path)
    app = VisForgeApp(ws.root)
    try:
        job = app.finetune.start(dataset="real", model=str(init), run="live", config=FinetuneConfig(
            epochs=8, batch_size=16, patience=0, throttle_s=0.2, replay_fraction=0.0))
        history = ws.root / "checkpoints" / "live" / "history.json"
        steps_seen = set()
        deadline = time.time() + 300  # each epoch ends with a held-out evaluation (slow on a loaded machine)
        while len(steps_seen) < 3 or not history.is_file():  # a few polls, and an epoch written
            assert time.time() < deadline and not job.finished, (steps_seen, job.state, job.error)
            app.jobs.poll()
            found = re.search(r"step (\d+)/", job.progress.message or "")
            if found:
                steps_seen.add(int(found[1]))
            time.sleep(0.1)
        app.jobs.poll()
        live = app.finetune.live_view
        assert live.visible and "loss while training" in live.object and "<polyline" in live.object, live.object
        reloaded = VisForgeApp(ws.root)
        try:
            reloaded.jobs.poll()
            again = reloaded.finetune.live_view
            assert again.visible and "<polyline" in again.object
            written = len(json.loads(history.read_text())["train"])
            assert len(reloaded.finetune._live[1]) >= written >= 2  # the finished epochs' steps, at once
        finally:
            reloaded.close()
        app.finetune.job_view.cancel_button.clicks += 1
        assert job.wait(60)
        app.jobs.poll()
        assert not app.finetune.live_view.visible and job.state == "cancelled"
    finally:
        app.close()


def test_task_card_pages_its_thumbnails(tmp_path):
    """More than 24 examples: the task card shows them 24 at a time, every page reachable."""
    from builder.interfaces.app import VisForgeApp

    app = VisForgeApp(tmp_path / "ws")
    try:
        app.task.create_task("exists", "blue circle", n=30, seed=1)
        task = app.task
        assert task.thumb_page.visible and list(task.thumb_page.options) == ["1–24", "25–30"]
        assert task.task_view.object.count("<figure") == 24 and "examples 1–24 of 30" in task.task_view.object
        task.thumb_page.value = 24
        ids = re.findall(r"<figcaption>([^:]+):", task.task_view.object)
        assert ids == [ex.id for ex in app.workspace.load_task().examples[24:]] and len(ids) == 6
        task.delete_example(ids[-1])  # the page stays while it exists
        assert task.thumb_page.value == 24 and task.task_view.object.count("<figure") == 5
    finally:
        app.close()
