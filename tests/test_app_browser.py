"""The Panel app: its API without a browser, and a real server driven by headless chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser_support import launch
from servers import free_port, stop_process

pytest.importorskip("panel")

REPO = Path(__file__).resolve().parents[1]


def test_app_api_without_browser(tmp_path):
    from builder.core.workspace import Workspace
    from builder.interfaces.app import VisForgeApp

    app = VisForgeApp(tmp_path / "ws")
    task, program, message = app.task, app.program, app.state.message
    assert app.state.guard(lambda: program.generate(1)) is None and "create one" in message.object  # shown, not raised
    try:
        task.create_task("exists", "blue circle", n=3, seed=2)
        assert "3 examples" in task.task_view.object
        versions = program.generate(1)
        assert versions and program.version.value == versions[0].version
        res = app.run.run(program.version.value)
        assert res.n == 3 and "passed" in app.run.summary.object and "<img" in app.run.trace.object
        program.code.value = 'def execute(image):\n    return image.count("blue circle") > 0\n'
        app.run.run(program.version.value)  # unsaved edits are saved as a new version first
        ws = app.workspace
        assert ws.programs()[-1].source == program.code.value and ws.programs()[-1].origin == "engineer"
        program.accept(program.version.value)
        assert Workspace.open(ws.root).accepted.version == ws.programs()[-1].version
        # a second create never replaces the task; an explicit replace keeps it restorable
        task.create_task("count", "red objects", n=4)
        assert len(Workspace.open(ws.root).load_task().examples) == 3 and message.alert_type == "warning"
        task.replace_task("count", "red objects", n=4)
        assert len(Workspace.open(ws.root).load_task().examples) == 4 and "(stale)" in str(program.version.options)
        task.restore(task.history.value)
        assert len(Workspace.open(ws.root).load_task().examples) == 3
        assert app.state.guard(lambda: task.add_examples([("fake.png", b"text")], "q", "yes")) is None
        assert "fake.png" in message.object and message.alert_type == "danger"
        task.delete_example(task.example_pick.value)
        assert len(Workspace.open(ws.root).load_task().examples) == 2
    finally:
        app.close()


def _cancel_from_app(app, card, job):
    """Cancel the app's job with its card's Cancel; it ends "cancelled" (engine record too)."""
    from builder import job_status

    assert card.job_view.cancel_button.visible and card.job_view.progress.visible
    card.job_view.cancel_button.clicks += 1  # what the browser's click does
    assert app.jobs.wait(60) is job and job.state == "cancelled", (job.state, job.error)
    assert job_status(app.workspace, job.id)["state"] == "cancelled"
    # the outcome belongs to the card, not to the page's message area (where it would outlive it)
    assert "cancelled after" in card.job_view.status.object and not app.state.message.visible
    assert not card.job_view.cancel_button.visible and not app.jobs.running()


def test_app_jobs_without_browser(tmp_path):
    """Steps started from the app run as jobs of the one engine: the run card shows the job's
    progress and its result; a reloaded page finds the running job; a cancelled run saves
    nothing; an interrupted job is resumed by its own card after a 'server restart'."""
    from test_jobs import LOOP, _wait_for

    from builder import list_jobs
    from builder.interfaces.app import VisForgeApp

    app = VisForgeApp(tmp_path / "ws")
    try:
        app.task.create_task("exists", "blue circle", n=3, seed=2)
        app.program.save_version('def execute(image):\n    return image.count("blue circle") > 0\n')
        job = app.run.start()
        assert app.jobs.wait(120) is job and job.state == "succeeded", job.error
        assert "3/3 passed" in app.run.summary.object and len(app.workspace.runs()) == 1
        assert "**Run** finished" in app.run.job_view.status.object
        app.program.save_version(LOOP)
        job = app.run.start()
        _wait_for(lambda: job.message.startswith("v0002"), job, what="the run's progress")
        app.jobs.poll()
        status = app.run.job_view.status.object
        assert "running" in status and "/3 examples" in status and "s elapsed" in status, status
        assert app.run.run_button.disabled and app.improve.improve_button.disabled
        reloaded = VisForgeApp(tmp_path / "ws")  # a new session finds the engine's running job
        try:
            assert reloaded.jobs.current() is job and reloaded.run.job_view.cancel_button.visible
            assert reloaded.run.run_button.disabled and not reloaded.improve.job_view.cancel_button.visible
        finally:
            reloaded.close()
        _cancel_from_app(app, app.run, job)
        assert len(app.workspace.runs()) == 1  # the cancelled run saved nothing
    finally:
        app.close()
    # a job left "running" by a process that is gone reads "interrupted"; its card offers Resume
    record = {**job.record(), "id": "20000101-000000-generate-abcdef", "step": "generate",
              "label": "Generate programs", "params": {"k": 1}, "state": "running", "created": time.time()}
    (tmp_path / "ws" / "jobs" / f"{record['id']}.json").write_text(json.dumps(record))
    again = VisForgeApp(tmp_path / "ws")
    try:
        assert again.program.job_view.resume_button.visible and not again.run.job_view.resume_button.visible
        assert "interrupted" in again.program.job_view.status.object
        n = len(again.workspace.programs())
        again.program.job_view.resume_button.clicks += 1
        resumed = again.jobs.wait(300)
        assert resumed is not None and resumed.state == "succeeded" and resumed.step == "generate", resumed.error
        assert len(again.workspace.programs()) > n and "finished" in again.program.job_view.status.object
        assert not again.program.job_view.resume_button.visible
        states = {r["id"]: r["state"] for r in list_jobs(again.workspace)}
        assert states[record["id"]] == "interrupted" and list(states.values()).count("succeeded") == 2
    finally:
        again.close()


def test_app_cancelled_jobs_save_nothing(tmp_path):
    """Cancel in the app ends each strategy's job "cancelled" with nothing saved: Improve (a
    thread: no planner), Fine-tune (a child process: no checkpoint), Export (a child process:
    no project, no temporary folder); the run (the sandbox) is in the test above."""
    from test_jobs import COUNT, _tiny_vqa, _wait_for

    from builder import FinetuneConfig
    from builder.interfaces.app import VisForgeApp

    app = VisForgeApp(tmp_path / "ws")
    try:
        app.task.create_task("count", "red objects", n=4, seed=2)
        ws = app.workspace
        job = app.improve.start(rounds=3, k=2, steps=400, replay=0)
        _wait_for(lambda: "round" in job.message, job, what="the first round")
        app.jobs.poll()
        _cancel_from_app(app, app.improve, job)
        assert "no planner was saved" in job.message
        assert not (ws.root / "checkpoints" / "planner").exists()
        assert not (ws.root / "checkpoints" / "planner_report.json").exists()

        init = _tiny_vqa(ws, tmp_path)
        run = ws.root / "checkpoints" / "cancelled"
        job = app.finetune.start(dataset="real", model=str(init), run="cancelled", config=FinetuneConfig(
            epochs=30, batch_size=16, patience=0, throttle_s=0.1, replay_fraction=0.0))
        _wait_for(lambda: (run / "run.json").is_file(), job, what="the fine-tune's first file")
        time.sleep(1.0)  # training, writing checkpoints
        app.jobs.poll()
        assert "Fine-tune" in app.finetune.job_view.status.object
        _cancel_from_app(app, app.finetune, job)
        assert not run.exists()

        app.program.save_version(COUNT)
        app.program.accept(app.program.version.value)
        out = ws.root / "exports" / "sol"
        job = app.export.start(build=True, out_dir=str(out))
        _wait_for(lambda: out.parent.is_dir() and any(p.name.startswith(".sol.tmp-") for p in out.parent.iterdir()),
                  job, what="the export's temporary folder")
        app.jobs.poll()
        _cancel_from_app(app, app.export, job)
        assert list(out.parent.iterdir()) == []
    finally:
        app.close()


STOP_SCRIPT = """
import sys
from builder import FinetuneConfig
from builder.interfaces.app import VisForgeApp, serve_app

ws, init, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = VisForgeApp(ws)
job = app.finetune.start(dataset="real", model=init, run="stopped", config=FinetuneConfig(
    epochs=50, batch_size=16, patience=0, throttle_s=0.1, replay_fraction=0.0))
print(job.id, flush=True)
serve_app(port, ws)
"""


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stopping_the_server_stops_its_jobs(tmp_path, how):
    """A server stopped with SIGTERM cancels its fine-tune (child killed, nothing saved); one
    killed outright leaves no child either (it dies with the server) and the job reads
    "interrupted": the next session's Fine-tune card offers Resume, which starts it again."""
    import signal

    import psutil
    from test_jobs import _tiny_vqa

    from builder import ensure_shapes_workspace, job_status
    from builder.interfaces.app import VisForgeApp

    ws = ensure_shapes_workspace(tmp_path / "ws", n=4, seed=2)
    init = _tiny_vqa(ws, tmp_path)
    run = ws.root / "checkpoints" / "stopped"
    proc = subprocess.Popen([sys.executable, "-c", STOP_SCRIPT, str(ws.root), str(init), str(free_port())],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        job_id = proc.stdout.readline().strip()
        deadline = time.time() + 120
        while not list(run.glob("epoch-*")):
            assert proc.poll() is None and time.time() < deadline, "the fine-tune wrote no checkpoint"
            time.sleep(0.1)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the fine-tune runs in a child process"
        proc.send_signal(getattr(signal, how))
        proc.wait(60)
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"orphaned job processes: {alive}"
    finally:
        stop_process(proc)
    rec = job_status(ws, job_id)
    if how == "SIGTERM":
        assert rec["state"] == "cancelled" and not run.exists()
        return
    assert rec["state"] == "interrupted"
    again = VisForgeApp(ws.root)
    try:
        assert again.finetune.job_view.resume_button.visible
        again.finetune.job_view.resume_button.clicks += 1
        resumed = again.jobs.current()
        assert resumed is not None and resumed.id != job_id and resumed.params["config"].epochs == 50
        again.jobs.poll()
        _cancel_from_app(again, again.finetune, resumed)
    finally:
        again.close()


def _png(seed: int = 0) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (seed * 40 % 255, 90, 160)).save(buf, format="PNG")
    return buf.getvalue()


def _shot(page, name: str, tmp_path: Path) -> None:
    """A screenshot of the current step (copied into docs/ when VISFORGE_UPDATE_DOCS=1)."""
    path = tmp_path / f"app-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("VISFORGE_UPDATE_DOCS") == "1":
        shutil.copyfile(path, REPO / "docs" / f"app-{name}.png")


def _no_overlap(page) -> None:
    boxes = page.locator(".vf-card").evaluate_all(
        "els => els.map(e => {const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]})")
    assert len(boxes) == 7, boxes
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            ox = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
            oy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
            assert ox <= 1 or oy <= 1, f"cards overlap: {a} {b}"
    # children stay inside their card (thumbnails do not spill under the next card)
    spill = page.locator(".vf-card").evaluate_all("""els => els.flatMap(card => {
        const c = card.getBoundingClientRect();
        return Array.from(card.querySelectorAll('img, button')).map(e => e.getBoundingClientRect())
            .filter(r => r.width > 0 && (r.right > c.right + 2 || r.bottom > c.bottom + 2))
            .map(r => [c.right, c.bottom, r.right, r.bottom]); })""")
    assert not spill, spill


def test_browser_never_loses_work(browser_ready, app_server, tmp_path):
    """Create-task on an existing task, a fake image upload, double clicks, delete an example, layout."""
    from playwright.sync_api import sync_playwright

    from builder import task_history
    from builder.core.workspace import Workspace

    url, ws_dir = app_server
    fake = tmp_path / "fake.png"
    fake.write_text("this is not an image")
    good = tmp_path / "good.png"
    good.write_bytes(_png(1))
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_role("button", name="Create task").click(timeout=30_000)
            page.get_by_text("8 examples").first.wait_for(timeout=60_000)
            before = (ws_dir / "task.yaml").read_text()
            # create again on the existing task: a warning, nothing changed on disk
            page.get_by_label("Target objects").fill("blue circles")
            page.get_by_role("button", name="Create task").click()
            page.get_by_text("already has the task").wait_for(timeout=30_000)
            assert (ws_dir / "task.yaml").read_text() == before
            # a fake image: a clear error naming the file as soon as it is chosen (the upload route
            # decodes it), nothing saved, no stale success banner; Add then has nothing to add
            page.locator("input[type=file]").set_input_files(str(fake))
            page.get_by_text("fake.png: not a recognised image format").first.wait_for(timeout=30_000)
            page.get_by_label("Expected output", exact=True).fill("2")
            page.get_by_role("button", name="Add uploaded examples").click()
            page.get_by_text("choose image files first").wait_for(timeout=30_000)
            assert page.locator(".alert-success").count() == 0
            assert (ws_dir / "task.yaml").read_text() == before
            assert not list((ws_dir / "images").glob("*")) or all(
                f.read_bytes() != fake.read_bytes() for f in (ws_dir / "images").iterdir())
            # a real image, double-clicked: added once
            page.locator("input[type=file]").set_input_files(str(good))
            page.get_by_text("Uploaded good.png").wait_for(timeout=30_000)
            page.get_by_role("button", name="Add uploaded examples").dblclick()
            page.get_by_text("9 examples").first.wait_for(timeout=30_000)
            page.wait_for_timeout(1500)
            assert len(Workspace.open(ws_dir).load_task().examples) == 9
            # delete an example: gone from the task, the earlier card kept in the history
            page.get_by_role("button", name="Delete example").click()
            page.get_by_text("8 examples").first.wait_for(timeout=30_000)
            ws = Workspace.open(ws_dir)
            assert len(ws.load_task().examples) == 8 and len(task_history(ws)) >= 2
            _no_overlap(page)
            page.set_viewport_size({"width": 1920, "height": 1080})
            page.wait_for_timeout(800)
            _no_overlap(page)
            _shot(page, "1-task", tmp_path)
            # explicit replace keeps the old task restorable (the form shows the workspace's task again)
            page.get_by_label("Target objects").fill("blue circles")
            page.get_by_label("Target objects").press("Tab")  # the edit reaches the server before the click
            page.wait_for_timeout(500)
            page.get_by_role("button", name="Create task").click()
            page.get_by_role("button", name="Replace the current task").click(timeout=30_000)
            page.get_by_text("Task replaced").wait_for(timeout=60_000)
        finally:
            browser.close()
    ws = Workspace.open(ws_dir)
    assert "blue" in ws.load_task().name and any(h["examples"] == 8 for h in task_history(ws))


def _noise_png(path: Path, side: int) -> Path:
    """A PNG of random pixels (PNG cannot compress them: about 3 bytes a pixel)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(side)
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path, compress_level=1)
    return path


def test_upload_route(tmp_path):
    """POST /upload beside a threaded app server: an image is staged under the workspace (name
    sanitised, content-hash token); a text file is a 400 naming it; a file over the limit is a
    413 naming it and the limit; an over-large request a 413; another site's page a 403."""
    import httpx

    from builder.interfaces.app import VisForgeApp, serve_app
    from builder.interfaces.app.upload import MAX_UPLOAD_BYTES, staged_file

    port, ws = free_port(), tmp_path / "ws"
    server = serve_app(port, ws, threaded=True)
    try:
        url = f"http://127.0.0.1:{port}/upload"
        deadline = time.time() + 30
        while True:
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                assert time.time() < deadline, "the server did not start"
                time.sleep(0.2)
        good = _png(2)
        r = httpx.post(url, files=[("files", ("../../a b?.png", good, "image/png")),
                                   ("files", ("two.png", _png(3), "image/png"))], timeout=30)
        assert r.status_code == 200, r.text
        staged = r.json()["files"]
        assert [s["name"] for s in staged] == ["a b_.png", "two.png"] and staged[0]["bytes"] == len(good)
        assert staged_file(ws, staged[0]["token"]).read_bytes() == good
        assert sorted(p.name for p in ws.iterdir()) == [".uploads"]  # nothing else is written
        r = httpx.post(url, files={"files": ("notes.txt", b"hello", "text/plain")}, timeout=30)
        assert r.status_code == 400 and "notes.txt" in r.json()["error"], r.text
        r = httpx.post(url, files={"files": ("fake.png", b"hello", "image/png")}, timeout=30)
        assert r.status_code == 400 and "fake.png: not a recognised image format" in r.json()["error"], r.text
        r = httpx.post(url, files={"files": ("big.png", b"x" * (MAX_UPLOAD_BYTES + 1), "image/png")}, timeout=60)
        body = r.json()
        assert r.status_code == 413 and body["file"] == "big.png" and body["limit"] == MAX_UPLOAD_BYTES, r.text
        assert "big.png" in body["error"] and str(MAX_UPLOAD_BYTES) in body["error"]
        r = httpx.post(url, content=b"y" * (110 * 1024 * 1024), timeout=60,
                       headers={"Content-Type": "multipart/form-data; boundary=x"})
        assert r.status_code == 413 and "limit" in r.json()["error"], r.text  # answered, not cut off
        r = httpx.post(url, files={"files": ("a.png", good, "image/png")}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403, r.text
        assert len(list((ws / ".uploads").iterdir())) == 2  # only the two good images were staged
        for token in ["../task.yaml", "/etc/passwd", staged[0]["token"] + "/x"]:
            with pytest.raises(ValueError):
                staged_file(ws, token)
    finally:
        server.stop()
    # the Task card adds what the picker staged (the staging folder does not block a new workspace);
    # a reference the browser made up is an error in the card, never a path read
    app = VisForgeApp(ws)
    try:
        task = app.task
        task.upload.staged = [{"name": "x.png", "token": "../../etc/passwd"}]
        task.upload_button.clicks += 1
        assert "not a reference to an uploaded file" in app.state.message.object and not app.state.has_workspace()
        task.upload.staged, task.expected.value = staged, "yes"
        task.upload_button.clicks += 1
        assert [ex.expected for ex in app.workspace.load_task().examples] == [True, True], app.state.message.object
        assert task.upload.staged == [] and "Added 2 example(s)" in app.state.message.object
    finally:
        app.close()


def test_browser_uploads_up_to_the_limit(browser_ready, app_server, tmp_path):
    """A 19 MB image goes over HTTP (not the websocket) and becomes the first example of a new
    task; a 21 MB one gets the limit message naming it, and the session keeps working."""
    from playwright.sync_api import sync_playwright

    from builder.core.workspace import Workspace
    from builder.interfaces.app.upload import MAX_UPLOAD_BYTES

    url, ws_dir = app_server
    ok = _noise_png(tmp_path / "photo19.png", 2600)
    big = _noise_png(tmp_path / "photo21.png", 2700)
    assert 19_000_000 < ok.stat().st_size < MAX_UPLOAD_BYTES < big.stat().st_size, (ok.stat(), big.stat())
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_label("Query for uploaded images").fill("How many red objects?")
            page.get_by_label("Expected output", exact=True).fill("3")
            page.get_by_label("Expected output", exact=True).press("Tab")
            page.locator("input[type=file]").set_input_files(str(ok))
            page.get_by_text("Uploaded photo19.png").wait_for(timeout=60_000)
            page.get_by_role("button", name="Add uploaded examples").click()
            page.get_by_text("1 examples").first.wait_for(timeout=60_000)
            card = Workspace.open(ws_dir).load_task()
            assert len(card.examples) == 1 and card.examples[0].expected == 3
            assert Workspace.open(ws_dir).resolve_image(card.examples[0].images[0]).read_bytes() == ok.read_bytes()
            # over the limit: refused in the browser, naming the file; the websocket stays open
            page.locator("input[type=file]").set_input_files(str(big))
            limit = re.compile(rf"photo21\.png: \d+ bytes .* over the {MAX_UPLOAD_BYTES}-byte upload limit")
            page.locator(".vf-upload-note").get_by_text(limit).wait_for(timeout=30_000)
            page.locator(".alert-danger").get_by_text(limit).wait_for(timeout=30_000)  # came back over the websocket
            page.get_by_role("button", name="Create task").click()
            page.get_by_text("already has the task").wait_for(timeout=30_000)  # a button still works
            page.get_by_role("button", name="Add uploaded examples").click()
            page.get_by_text("choose image files first").wait_for(timeout=30_000)  # nothing of photo21 is kept
        finally:
            browser.close()
    assert len(Workspace.open(ws_dir).load_task().examples) == 1


def test_browser_cancel_reload_and_double_run(browser_ready, app_server, tmp_path):
    """An infinite loop is cancelled within 2 s (after a reload mid-run); a double-clicked Run records one run."""
    from playwright.sync_api import sync_playwright

    from builder.core.workspace import Workspace

    url, ws_dir = app_server
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_label("Target objects").fill("blue circles")
            page.get_by_label("Task kind").select_option("count")
            page.get_by_label("Examples", exact=True).fill("3")
            page.get_by_role("button", name="Create task").click(timeout=30_000)
            page.get_by_text("3 examples").first.wait_for(timeout=60_000)
            page.get_by_label("Program").fill('def execute(image):\n    return image.count("blue circle")\n')
            page.get_by_role("button", name="Save version").click()
            page.get_by_text("saved v0001").wait_for(timeout=30_000)
            page.get_by_role("button", name="Run on examples").dblclick()
            page.get_by_text("3/3 passed").first.wait_for(timeout=90_000)
            page.wait_for_timeout(1000)
            assert len(Workspace.open(ws_dir).runs()) == 1
            # an infinite loop, then a reload mid-run: the page shows it running, with Cancel
            page.get_by_label("Program").fill("def execute(image):\n    while True:\n        pass\n")
            page.get_by_label("Program").press("Tab")  # the edit reaches the server before the click
            page.wait_for_timeout(500)
            page.get_by_role("button", name="Run on examples").click()
            page.get_by_text("Run** running").or_(page.get_by_text("running ·")).first.wait_for(timeout=30_000)
            page.reload(wait_until="domcontentloaded")
            page.get_by_text("running ·").first.wait_for(timeout=30_000)
            assert page.get_by_label("Target objects").input_value() == "blue circles"  # the form shows the task
            assert page.get_by_role("button", name="Run on examples").is_disabled()
            t0 = time.time()
            page.get_by_role("button", name="Cancel").click()
            page.get_by_text("cancelled after").first.wait_for(timeout=10_000)
            took = time.time() - t0
            assert took < 2.0, f"cancel took {took:.1f} s"
            assert page.get_by_role("button", name="Run on examples").is_enabled()
        finally:
            browser.close()
    ws = Workspace.open(ws_dir)
    assert len(ws.runs()) == 1 and len(ws.programs()) == 2  # the cancelled run saved nothing; the edit is kept
    records = [json.loads(p.read_text()) for p in (ws_dir / "jobs").glob("*.json")]
    assert sorted(r["state"] for r in records if r["step"] == "run") == ["cancelled", "succeeded"]


def _results_shown(page) -> dict:
    """What the Improve, Augment, Fine-tune and Export cards show: their result views' text (charts,
    summaries), how many thumbnails, and the Fine-tune dataset chosen."""
    texts = page.locator(".vf-result").evaluate_all("""els => els.map(e => Array.from(
        (e.shadowRoot || e).querySelectorAll('svg, small, figcaption, .vf-export'))
        .map(x => x.textContent.replace(/\\s+/g, ' ').trim()).join(' | '))""")
    return {"texts": texts, "images": page.locator(".vf-result img").count(),
            "curves": page.locator(".vf-result polyline").count(),
            "dataset": page.get_by_label("Dataset", exact=True).input_value()}


def test_browser_task_to_export(browser_ready, app_server, tmp_path):
    """The whole workflow in the app: Task → Program → Run → Improve → Augment → Fine-tune → Export."""
    from playwright.sync_api import sync_playwright

    from builder.core.workspace import Workspace

    url, ws_dir = app_server
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_label("Examples", exact=True).fill("4")
            page.get_by_role("button", name="Create task").click(timeout=30_000)
            page.get_by_text("4 examples").first.wait_for(timeout=60_000)
            page.get_by_role("button", name="Generate program").click()
            page.get_by_text("Generate** finished").or_(page.get_by_text("Generate finished")).first.wait_for(
                timeout=120_000)
            _shot(page, "2-program", tmp_path)
            page.get_by_role("button", name="Run on examples").click()
            page.get_by_text("passed").first.wait_for(timeout=90_000)
            page.locator(".vf-results img").first.wait_for(timeout=30_000)
            page.locator(".vf-trace img").first.wait_for(timeout=30_000)
            _shot(page, "3-run", tmp_path)
            page.get_by_role("button", name="Accept version").click()
            page.get_by_text("Accepted").first.wait_for(timeout=30_000)
            page.get_by_label("Steps", exact=True).fill("5")
            for button, done, name in [("Improve the planner", "Improve finished", "4-improve"),
                                       ("Augment the data", "Augment finished", "5-augment"),
                                       ("Fine-tune the engine", "Fine-tune finished", "6-finetune"),
                                       ("Export the solution", "Exported:", "7-export")]:
                if name == "5-augment":
                    page.get_by_label("Teacher steps").fill("5")
                    page.get_by_label("Unlabeled images").fill("4")
                page.get_by_role("button", name=button).click()
                page.get_by_text(done).first.wait_for(timeout=240_000)
                page.wait_for_timeout(300)
                _shot(page, name, tmp_path)
            assert page.locator(".vf-chart").count() >= 4  # before/after charts and the acceptance result
            page.get_by_text("acceptance tests: 4/4").or_(page.get_by_text("acceptance tests:")).first.wait_for()
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
            # a reload rebuilds every card's results from the workspace: the same charts, thumbnails,
            # loss curve, export result and Fine-tune dataset choice
            shown = _results_shown(page)
            assert len(shown["texts"]) == 4 and all(shown["texts"]) and shown["images"] >= 1, shown
            page.reload(wait_until="domcontentloaded")
            page.get_by_text("acceptance tests:").first.wait_for(timeout=60_000)
            page.wait_for_timeout(500)
            assert _results_shown(page) == shown
        finally:
            browser.close()
    ws = Workspace.open(ws_dir)
    summary = ws.summary()
    assert summary["accepted"] and summary["exports"] and summary["runs"] >= 1
    assert "seltda" in summary["datasets"] and (ws_dir / "checkpoints" / "planner" / "config.json").is_file()
    if os.environ.get("VISFORGE_UPDATE_DOCS") == "1":
        shutil.copyfile(tmp_path / "app.png", REPO / "docs" / "app.png")




def test_browser_search_hits_with_their_own_answers(browser_ready, app_server, tmp_path):
    """Search in the app: each hit gets its own answer (two of four answered), only those are
    added, under ids; the task card edits and deletes them, and restores the earlier task."""
    pytest.importorskip("faiss")
    from playwright.sync_api import sync_playwright

    from builder.core.workspace import Workspace
    from builder.domains.shapes.world.scene import render_scene, sample_scene

    url, ws_dir = app_server
    folder = tmp_path / "photos"
    folder.mkdir()
    for s in range(4):
        render_scene(sample_scene(s)).save(folder / f"scene{s:03d}.png")
    red = {f"scene{s:03d}.png": sum(o.color == "red" for o in sample_scene(s).objects) for s in range(4)}
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_label("Examples", exact=True).fill("3")
            page.get_by_role("button", name="Create task").click(timeout=30_000)
            page.get_by_text("3 examples").first.wait_for(timeout=60_000)
            original = Workspace.open(ws_dir).load_task()
            page.get_by_label("Image folder to index").fill(str(folder))
            page.get_by_label("Image folder to index").press("Tab")  # the value reaches the server before the click
            page.wait_for_timeout(500)
            page.get_by_role("button", name="Index (new images only)").click()
            page.get_by_text("4 new image(s) embedded").wait_for(timeout=120_000)
            page.get_by_label("Search", exact=True).fill("There is a red circle.")
            page.get_by_label("Results", exact=True).fill("4")
            page.get_by_label("Results", exact=True).press("Tab")
            page.wait_for_timeout(500)
            page.get_by_role("button", name="Search", exact=True).click()
            page.get_by_text("4 result(s)").wait_for(timeout=120_000)
            answers = page.get_by_placeholder("answer")
            assert answers.count() == 4 and all(answers.nth(i).input_value() == "" for i in range(4))
            names = [Path(page.locator(".vf-hit img").nth(i).get_attribute("title")).name for i in range(4)]
            for i in (0, 2):
                answers.nth(i).fill(str(red[names[i]]))
                answers.nth(i).press("Tab")  # the value reaches the server before the click
            page.wait_for_timeout(500)
            page.get_by_role("button", name="Add answered results as task examples").click()
            added = page.get_by_text("Added 2 example(s)")
            added.wait_for(timeout=60_000)
            status = added.inner_text()
            assert "Not added (no answer)" in status and names[1] in status and names[3] in status, status
            page.get_by_text("example sr0004").wait_for(timeout=30_000)  # the added hits show their ids
            assert page.get_by_placeholder("answer").count() == 2
            card = Workspace.open(ws_dir).load_task()
            assert [(ex.id, ex.expected) for ex in card.examples[3:]] == [
                ("sr0003", red[names[0]]), ("sr0004", red[names[2]])]
            assert (ws_dir / card.examples[3].images[0]).read_bytes() == (folder / names[0]).read_bytes()
            page.get_by_text("5 examples").first.wait_for(timeout=30_000)
            _shot(page, "8-search", tmp_path)
            # an added hit is edited and deleted in the task card like any example
            page.get_by_label("Example", exact=True).select_option("sr0003")
            for _ in range(50):  # the pick fills in the example's answer first: wait, then type over it
                if page.get_by_label("Its expected output").input_value() == str(red[names[0]]):
                    break
                page.wait_for_timeout(100)
            page.get_by_label("Its expected output").fill("7")
            page.get_by_label("Its expected output").press("Tab")
            page.wait_for_timeout(500)
            page.get_by_role("button", name="Save example").click()
            page.get_by_text("Saved example").first.wait_for(timeout=30_000)
            assert [ex.expected for ex in Workspace.open(ws_dir).load_task().examples if ex.id == "sr0003"] == [7]
            page.get_by_label("Example", exact=True).select_option("sr0004")
            page.wait_for_timeout(500)
            page.get_by_role("button", name="Delete example").click()
            page.get_by_text("Deleted example").first.wait_for(timeout=30_000)
            assert [ex.id for ex in Workspace.open(ws_dir).load_task().examples][3:] == ["sr0003"]
            # and the task before the search is restorable
            first = page.get_by_label("Earlier tasks").locator("option", has_text="#1 ").text_content()
            page.get_by_label("Earlier tasks").select_option(label=first)
            page.wait_for_timeout(500)
            page.get_by_role("button", name="Restore task").click()
            page.get_by_text("3 examples").first.wait_for(timeout=30_000)
            page.wait_for_timeout(500)
            # a negation, read over every indexed image's stored objects: the matching images come first
            no_blue = {n for n in red if not any(o.color == "blue" for o in sample_scene(int(n[5:8])).objects)}
            page.get_by_label("Search", exact=True).fill("no blue objects")
            page.get_by_label("Search", exact=True).press("Tab")
            page.wait_for_timeout(500)
            page.get_by_role("button", name="Search", exact=True).click()
            page.get_by_text(f"{len(no_blue)} indexed image(s) match").wait_for(timeout=120_000)
            page.get_by_text("it is not true that there are blue objects").wait_for(timeout=10_000)  # the reading
            tiles = page.locator(".vf-hit")
            top = {Path(tiles.nth(i).locator("img").get_attribute("title")).name for i in range(len(no_blue))}
            assert top == no_blue
            _shot(page, "9-search-negation", tmp_path)
        finally:
            browser.close()
    assert Workspace.open(ws_dir).load_task() == original


def test_browser_draw_a_box_to_label_a_grounding_example(browser_ready, app_server, tmp_path):
    """A "locate" example is labelled by dragging a box over its image: the box is saved in the
    image's own pixels and drawn on the example's thumbnail; the layout holds at both sizes."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from builder.core.workspace import Workspace

    url, ws_dir = app_server
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_label("Task kind").select_option("locate")
            page.get_by_label("Examples", exact=True).fill("2")
            page.get_by_label("Examples", exact=True).press("Tab")  # the values reach the server before the click
            page.wait_for_timeout(500)
            page.get_by_role("button", name="Create task").click(timeout=30_000)
            page.get_by_text("2 examples").first.wait_for(timeout=60_000)
            layer = page.locator(".vf-draw-layer")
            layer.wait_for(timeout=30_000)
            page.wait_for_timeout(500)
            ws = Workspace.open(ws_dir)
            example_id = page.get_by_label("Example", exact=True).input_value()
            example = [ex for ex in ws.load_task().examples if ex.id == example_id][0]
            width, height = Image.open(ws.resolve_image(example.images[0])).size
            assert json.loads(page.get_by_label("Its expected output").input_value()) == example.expected
            page.locator(".vf-draw-clear").click()  # the generated box goes; draw a new one
            for _ in range(50):
                if page.get_by_label("Its expected output").input_value() == "[]":
                    break
                page.wait_for_timeout(100)
            layer.scroll_into_view_if_needed()
            box = layer.bounding_box()
            start, end = (0.2, 0.3), (0.6, 0.7)
            page.mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
            page.mouse.down()
            page.mouse.move(box["x"] + 0.4 * box["width"], box["y"] + 0.5 * box["height"], steps=5)
            page.mouse.move(box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"], steps=5)
            page.mouse.up()
            want = [start[0] * width, start[1] * height, end[0] * width, end[1] * height]
            field = page.get_by_label("Its expected output")
            for _ in range(100):  # the drawn box comes back from the server as the example's answer
                drawn = json.loads(field.input_value() or "null")
                if drawn and len(drawn) == 1:
                    break
                page.wait_for_timeout(100)
            assert drawn and len(drawn) == 1 and all(abs(a - b) <= 2 for a, b in zip(drawn[0], want, strict=True)), (
                drawn, want)
            assert page.locator(".vf-drawn").count() == 1  # drawn over the image
            page.get_by_role("button", name="Save example").click()
            page.get_by_text("Saved example").first.wait_for(timeout=30_000)
            saved = [ex for ex in Workspace.open(ws_dir).load_task().examples if ex.id == example_id][0]
            assert saved.expected == drawn
            page.locator(".vf-task .vf-box-expected").first.wait_for(timeout=30_000)  # on its thumbnail too
            _no_overlap(page)
            page.set_viewport_size({"width": 1920, "height": 1080})
            page.wait_for_timeout(800)
            _no_overlap(page)
            _shot(page, "1-task-draw", tmp_path)
        finally:
            browser.close()


def test_browser_each_card_shows_its_job_and_cancels_it(browser_ready, app_server, tmp_path):
    """Improve, Augment, Fine-tune and Export: the job shows in its own card with progress in its
    units, elapsed time and Cancel, and in the page header; Cancel in the card stops it, the
    outcome stays in that card (not at the top of the page) and nothing is saved."""
    from playwright.sync_api import sync_playwright

    from builder.core.workspace import Workspace

    url, ws_dir = app_server
    steps = [("improve", "Improve the planner", {"Rounds": "5", "Steps": "1000"}, "rounds"),
             ("augment", "Augment the data", {"Unlabeled images": "500"}, "images"),
             ("finetune", "Fine-tune the engine", {"Epochs": "50"}, "epochs"),
             ("export", "Export the solution", {}, "stages")]
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_label("Examples", exact=True).fill("4")
            page.get_by_label("Examples", exact=True).press("Tab")
            page.wait_for_timeout(500)
            page.get_by_role("button", name="Create task").click(timeout=30_000)
            page.get_by_text("4 examples").first.wait_for(timeout=60_000)
            page.get_by_label("Program").fill('def execute(image):\n    return image.count("red object")\n')
            page.get_by_label("Program").press("Tab")
            page.wait_for_timeout(500)
            page.get_by_role("button", name="Save version").click()
            page.get_by_text("saved v0001").wait_for(timeout=30_000)
            page.get_by_role("button", name="Accept version").click()
            page.get_by_text("Accepted").first.wait_for(timeout=30_000)
            page.locator(".vf-card-export input[type=checkbox]").check()  # build the wheel: a longer export
            for step, button, fields, unit in steps:
                card = page.locator(f".vf-card-{step}")
                for label, value in fields.items():
                    card.get_by_label(label, exact=True).fill(value)
                    card.get_by_label(label, exact=True).press("Tab")
                page.wait_for_timeout(500)
                card.get_by_role("button", name=button).click()
                card.get_by_text(re.compile(rf"/\d+ {unit} done")).first.wait_for(timeout=300_000)
                status = card.get_by_text(re.compile(rf"/\d+ {unit} done")).first.inner_text()
                assert "running" in status and "s elapsed" in status, status
                header = page.locator(".vf-running").inner_text()
                assert "Running:" in header and unit in header, header
                card.get_by_role("button", name="Cancel").click()
                card.get_by_text("cancelled after").first.wait_for(timeout=30_000)
                assert page.locator(".vf-running").count() == 0  # the header no longer lists it
                assert page.locator(".alert", has_text="cancelled").count() == 0  # the outcome is the card's
                assert page.get_by_role("button", name=button).is_enabled()
            for step, *_ in steps:  # each card keeps its own outcome through the later steps
                page.locator(f".vf-card-{step}").get_by_text("cancelled after").first.wait_for(timeout=5_000)
            _shot(page, "cancelled-in-cards", tmp_path)
        finally:
            browser.close()
    ws = Workspace.open(ws_dir)
    assert not (ws_dir / "checkpoints" / "planner").exists() and "seltda" not in ws.summary()["datasets"]
    assert not list((ws_dir / "exports").iterdir()) and not (ws_dir / "checkpoints" / "app-examples").exists()
