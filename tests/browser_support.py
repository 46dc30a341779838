"""Fixtures of the browser tests: headless Debian chromium and the app as a real server
(registered for every test file by ``tests/conftest.py``).

    from browser_support import launch

    def test_x(browser_ready, app_server):
        url, ws_dir = app_server
        with sync_playwright() as p:
            browser = launch(p)

The server and browser setup is ``scripts/app_browser.py``'s, shared with ``scripts/screenshots.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "app_browser", Path(__file__).resolve().parents[1] / "scripts" / "app_browser.py")
app_browser = importlib.util.module_from_spec(_SPEC)
sys.modules["app_browser"] = app_browser
_SPEC.loader.exec_module(app_browser)

CHROMIUM, CHROMIUM_ARGS, launch = app_browser.CHROMIUM, app_browser.CHROMIUM_ARGS, app_browser.launch


@pytest.fixture(scope="session")
def browser_ready() -> str:
    """Install Debian chromium and the playwright package if missing (CI runs as root); skips
    the test with the reason when they cannot be installed. Returns chromium's path."""
    reason = app_browser.install_browser()
    if reason is not None:
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
def app_server(tmp_path):
    """The app as a real server process on 127.0.0.1 over ``tmp_path/ws`` (stopped after the
    test): yields (url, workspace folder)."""
    port = app_browser.free_port()
    try:
        proc = app_browser.start_app(tmp_path / "ws", port, tmp_path / "server.log", timeout=120)
    except RuntimeError as e:
        raise AssertionError(str(e)) from None
    yield f"http://127.0.0.1:{port}/", tmp_path / "ws"
    app_browser.stop_app(proc)
