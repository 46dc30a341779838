"""The app's messages in a real browser: a huge error is shown once, inside its box; a step that
does not apply to the task says so by name."""

from __future__ import annotations

import pytest
from browser_support import launch

pytest.importorskip("panel")


def test_error_text_names_the_message_once():
    from builder import UserError, error_text

    try:
        raise RuntimeError("y" * 10_000)
    except RuntimeError as e:
        text = error_text(e)
    assert text.count("y" * 10_000) == 1 and text.startswith("RuntimeError: ") and "Traceback" in text
    assert error_text(UserError("plain")) == "plain"


def test_a_huge_error_is_shown_once_and_stays_in_its_box(browser_ready, app_server):
    from playwright.sync_api import sync_playwright

    url, _ws_dir = app_server
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_label("Examples", exact=True).fill("2")
            page.get_by_role("button", name="Create task").click(timeout=60_000)
            page.get_by_text("2 examples").first.wait_for(timeout=60_000)
            page.wait_for_timeout(1000)  # the example pick fills in its answer first
            field = page.get_by_label("Its expected output")
            field.fill("z" * 10_000)  # a pasted page as the expected count
            field.press("Tab")  # the edit reaches the server before the click
            page.wait_for_timeout(500)
            page.get_by_role("button", name="Save example").click()
            alert = page.locator(".vf-message.alert-danger")
            alert.wait_for(timeout=60_000)
            page.wait_for_timeout(500)
            assert page.get_by_text("expected a non-negative integer count").count() == 1  # shown once
            box = alert.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 1280, box
            assert box["height"] < 300, box  # wraps, and scrolls inside its box
            assert alert.evaluate("e => e.scrollHeight > e.clientHeight")  # the rest is a scroll away
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280  # nothing runs off the page
        finally:
            browser.close()


def test_augment_on_a_boxes_task_names_the_step():
    """The API, and so the app and the CLI, refuse Augment on a grounding task by naming SelTDA."""
    import tempfile

    from builder import UserError, augment_data, ensure_shapes_workspace, step_not_applicable

    with tempfile.TemporaryDirectory() as tmp:
        ws = ensure_shapes_workspace(f"{tmp}/ws", kind="locate", target="square", n=2)
        reason = step_not_applicable(ws, "augment")
        assert reason.startswith("Augment (SelTDA) applies to VQA tasks") and "boxes (grounding)" in reason
        assert "fine-tun" not in reason
        with pytest.raises(UserError, match=r"Augment \(SelTDA\) applies to VQA tasks"):
            augment_data(ws, unlabelled=f"{tmp}/none")
        counting = ensure_shapes_workspace(f"{tmp}/count", kind="count", n=2)
        assert step_not_applicable(counting, "augment") is None
