"""The Panel app: its API without a browser, and a real server driven by headless chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import free_port, stop_process

pytest.importorskip("panel")

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


def test_app_api_without_browser(tmp_path):
    from builder.core.workspace import Workspace
    from builder.interfaces.app import VisForgeApp

    app = VisForgeApp(tmp_path / "ws")
    assert app._guard(lambda: app.generate(1)) is None and "create one" in app.alert.object  # shown, not raised
    try:
        app.create_task("exists", "blue circle", n=3, seed=2)
        assert "3 examples" in app.task_view.object
        versions = app.generate(1)
        assert versions and app.version.value == versions[0].version
        res = app.run(app.version.value)
        assert res.n == 3 and "passed" in app.summary.object and "<img" in app.trace.object
        app.code.value = 'def execute(image):\n    return image.exists("blue circle")\n'
        app.run(app.version.value)  # unsaved edits are saved as a new version first
        ws = app.workspace
        assert ws.programs()[-1].source == app.code.value and ws.programs()[-1].origin == "engineer"
        app.accept(app.version.value)
        assert Workspace.open(ws.root).accepted.version == ws.programs()[-1].version
    finally:
        app.close()


@pytest.fixture(scope="session")
def browser_ready():
    """Install Debian chromium and the playwright package if missing (CI runs as root)."""
    proc = subprocess.run(["bash", str(REPO / "scripts" / "install_browser.sh")], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "VISFORGE_PYTHON": sys.executable})
    if proc.returncode != 0 or not Path(CHROMIUM).exists():
        pytest.skip(f"chromium could not be installed: {proc.stderr.strip()[-500:]}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the playwright package could not be installed: {e}")
    return CHROMIUM


@pytest.fixture
def app_server(tmp_path):
    """The app as a real server process on 127.0.0.1 (stopped after the test)."""
    port = free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BOKEH_RESOURCES": "server"}
    proc = subprocess.Popen([sys.executable, "-m", "builder.interfaces.cli", "app", "--workspace", str(tmp_path / "ws"),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {(tmp_path / 'server.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise AssertionError("server did not start in 60 s")
    yield f"http://127.0.0.1:{port}/", tmp_path / "ws"
    stop_process(proc)
    log.close()


def test_app_in_a_real_browser(browser_ready, app_server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, ws_dir = app_server
    shot = tmp_path / "app.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_ready, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url, wait_until="domcontentloaded")
            # 1 describe: a shapes-world task (kind/target typed like a user would)
            page.get_by_label("Target objects").fill("red objects")
            page.get_by_role("button", name="Create task").click(timeout=30_000)
            page.get_by_text("8 examples").first.wait_for(timeout=60_000)
            # 2 generate a program with the planner
            page.get_by_role("button", name="Generate program").click()
            page.get_by_text("planner proposed").or_(page.get_by_text("template")).first.wait_for(timeout=90_000)
            # 3 run it on the examples: pass/fail table and the trace
            page.get_by_role("button", name="Run on examples").click()
            page.get_by_text("passed").first.wait_for(timeout=90_000)
            page.locator(".vf-results").wait_for(timeout=30_000)
            page.locator(".vf-trace img").first.wait_for(timeout=30_000)
            # The engineer edits the program and runs it again: a new version, then accepts it.
            page.get_by_label("Program").fill('def execute(image):\n    return image.count("red object")\n')
            page.get_by_role("button", name="Run on examples").click()
            # Wait for the edited version's own run (earlier "saved"/"passed" texts are already on the page).
            page.locator("option", has_text="(engineer) · 8/8").first.wait_for(state="attached", timeout=90_000)
            page.get_by_text("8/8 passed").first.wait_for(timeout=90_000)
            page.get_by_role("button", name="Accept version").click(timeout=60_000)
            page.get_by_text("Accepted").first.wait_for(timeout=60_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    from builder.core.workspace import Workspace

    ws = Workspace.open(ws_dir)
    assert ws.programs() and ws.runs()  # what the browser did landed in the workspace
    edited = ws.programs()[-1]
    assert edited.origin == "engineer" and 'image.count("red object")' in edited.source
    assert ws.accepted is not None and ws.accepted.version == edited.version
    assert shot.stat().st_size > 10_000
    # Tests stay hermetic: refresh the README's screenshot only when asked to.
    if os.environ.get("VISFORGE_UPDATE_DOCS") == "1":
        shutil.copyfile(shot, REPO / "docs" / "app.png")
