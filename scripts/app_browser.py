"""The app in a real browser: one place that starts the app server and headless chromium.

Used by the browser tests (``tests/browser_support.py``, their pytest fixtures) and by
``scripts/screenshots.py``. The browser is Debian's chromium driven by the ``playwright``
package (``scripts/install_browser.sh`` installs both; playwright's own browser download
cannot reach its host here).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


def install_browser(python: str = sys.executable) -> str | None:
    """Install Debian chromium and the playwright package when missing; returns why they could
    not be installed (None when both are there)."""
    proc = subprocess.run(["bash", str(REPO / "scripts" / "install_browser.sh")], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "VISFORGE_PYTHON": python})
    if proc.returncode != 0 or not Path(CHROMIUM).exists():
        return f"chromium could not be installed: {proc.stderr.strip()[-500:]}"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        return f"the playwright package could not be installed: {e}"
    return None


def launch(playwright):
    """Headless Debian chromium from a started ``sync_playwright()``."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


# Copied from tests/servers.py (free_port): scripts cannot import the test helpers.
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(workspace: Path, port: int, log: Path, timeout: float = 60) -> subprocess.Popen:
    """The app (``visforge app``) as a server process on 127.0.0.1:``port`` over ``workspace``,
    its output in ``log``; returns once it accepts connections. A server that exits or does not
    listen within ``timeout`` seconds raises ``RuntimeError`` with the end of its log."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "BOKEH_RESOURCES": "server"}
    with log.open("w") as out:  # the child keeps its own copy of the file
        proc = subprocess.Popen([sys.executable, "-m", "builder.interfaces.cli", "app", "--workspace", str(workspace),
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=workspace.parent)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app server exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the app server did not start in {timeout:.0f} s: {log.read_text()[-2000:]}")


# Copied from tests/servers.py (stop_process), for the same reason.
def stop_app(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Terminate a server process (its jobs are cancelled), killing it if it does not exit in
    ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
