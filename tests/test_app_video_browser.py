"""A video task in the app, in a real browser: from its card through plan and run (clips shown as
thumbnails and frame strips) to export; the image-only steps say they do not apply."""

from __future__ import annotations

import json

import pytest
from browser_support import launch

pytest.importorskip("panel")


def test_app_api_takes_a_video_task_to_export(tmp_path):
    """The same without a browser: the card's methods plan, run and export a video task."""
    from builder import UserError, propose_programs
    from builder.interfaces.app import VisForgeApp

    app = VisForgeApp(tmp_path / "ws")
    try:
        app.task.create_task("leaves", n=4, seed=1)
        card = app.workspace.load_task()
        assert card.output.value == "bool" and all(ex.images[0].endswith(".mp4") for ex in card.examples)
        assert app.task.kind.value == "leaves" and app.task.target.disabled
        assert "vf-strip" in app.task.example_strip.object and app.task.example_strip.visible
        versions, note = propose_programs(app.workspace, k=2)  # the workflow API plans a video card
        assert versions and "def execute(video)" in versions[0].source, note
        result = app.run.run(versions[0].version)
        assert result.n == 4 and result.errors == 0, result
        assert app.run.results.object.count("class='vf-strip'") == 4  # each clip's frames, first to last
        for card_view in (app.improve, app.augment, app.finetune):  # said in the card, its button off
            assert "applies to image tasks" in card_view.job_view.not_applicable.object
            assert all(b.disabled for b in card_view.buttons()) and not any(v.visible for v in card_view.views())
        assert not app.run.run_button.disabled and not app.export.export_button.disabled
        assert not app.export.job_view.not_applicable.visible and not app.run.job_view.not_applicable.visible
        with pytest.raises(UserError, match=r"Fine-tune \(the image VQA engine\) applies to image tasks"):
            app.finetune.start()
        app.program.accept(versions[0].version)
        out = app.export.export()
        assert out["manifest"]["examples"]["n"] == 4
    finally:
        app.close()


def test_browser_video_task_from_card_to_export(browser_ready, app_server, tmp_path):
    """Task (a shapes-world video kind) -> Generate -> Run -> Accept -> Export in the browser; the
    clips show as thumbnails and frame strips; a reload shows the video task and the export."""
    from playwright.sync_api import sync_playwright

    from builder.core.workspace import Workspace

    url, ws_dir = app_server
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(120_000)  # clicks and page loads on a loaded machine
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_label("Task kind").select_option(label="video: crossing count")
            page.get_by_label("Examples", exact=True).fill("4")
            page.get_by_label("Examples", exact=True).press("Tab")  # the values reach the server before the click
            page.wait_for_timeout(500)
            assert page.get_by_label("Target objects").is_disabled()  # the clips' queries name their objects
            page.get_by_role("button", name="Create task").click(timeout=30_000)
            page.get_by_text("4 examples").first.wait_for(timeout=60_000)
            assert page.locator(".vf-task img.vf-video").count() == 4  # each clip's thumbnail, marked as a video
            page.locator(".vf-example-strip img.vf-strip").wait_for(timeout=30_000)  # the picked clip's frames
            for step, button in [("improve", "Improve the planner"), ("augment", "Augment the data"),
                                 ("finetune", "Fine-tune the engine")]:  # each says so in its card, its button off
                card = page.locator(f".vf-card-{step}")
                card.get_by_text("applies to image tasks").wait_for(timeout=10_000)
                assert card.get_by_role("button", name=button).is_disabled(), step
            assert page.locator(".vf-card-export").get_by_text("applies to image tasks").count() == 0
            page.get_by_role("button", name="Generate program").click()
            page.locator(".vf-card-generate").get_by_text("finished in").first.wait_for(timeout=600_000)  # loaded CI
            assert "def execute(video)" in page.get_by_label("Program").input_value()
            page.get_by_role("button", name="Run on examples").click()
            page.get_by_text("4/4 passed").first.wait_for(timeout=120_000)
            strips = page.locator(".vf-results img.vf-strip")
            strips.first.wait_for(timeout=30_000)
            assert strips.count() == 4 and strips.first.evaluate("e => e.naturalWidth > 150")
            page.locator(".vf-trace img").first.wait_for(timeout=30_000)
            page.get_by_role("button", name="Accept version").click()
            page.get_by_text("Accepted").first.wait_for(timeout=30_000)
            page.get_by_role("button", name="Export the solution").click()
            page.get_by_text("Exported: 4/4 acceptance examples pass").first.wait_for(timeout=600_000)
            page.reload(wait_until="domcontentloaded")
            page.get_by_text("acceptance tests: 4/4").first.wait_for(timeout=60_000)  # rebuilt from the workspace
            assert page.get_by_label("Task kind").input_value() == "video: crossing count"
        except Exception:
            page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)  # what the page showed
            raise
        finally:
            browser.close()
    ws = Workspace.open(ws_dir)
    summary = ws.summary()
    assert summary["accepted"] and summary["exports"]
    export = ws_dir / "exports"
    manifests = [json.loads(m.read_text()) for m in export.rglob("manifest.json")]
    assert manifests and manifests[0]["examples"]["passed"] == 4, manifests
