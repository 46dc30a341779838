"""What every card of the app shares: the workspace folder and its runtime, the one message
area, click handling (one action at a time, errors shown) and the "task changed" listeners."""

from __future__ import annotations

import atexit
import html
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import panel as pn

from builder import META_FILE, Runtime, Workspace, WorkspaceError, error_text

if TYPE_CHECKING:
    from builder.interfaces.app.jobs import JobWatcher

# One runtime (engines, sandbox, cache) per workspace, shared by all its browser sessions.
_LOCK = threading.Lock()
_RUNTIMES: dict[str, Runtime] = {}


def workspace_key(root: str | Path) -> str:
    """The server-wide key of a workspace folder (its resolved path)."""
    return str(Path(root).resolve())


def shared_runtime(ws: Workspace) -> Runtime:
    """The workspace's runtime, built on first use and shared by its sessions."""
    with _LOCK:
        rt = _RUNTIMES.get(workspace_key(ws.root))
        if rt is None:
            rt = _RUNTIMES[workspace_key(ws.root)] = Runtime(ws)
        return rt


def release_runtime(root: str | Path) -> None:
    """Close the workspace's runtime (the next use builds a new one)."""
    with _LOCK:
        rt = _RUNTIMES.pop(workspace_key(root), None)
    if rt is not None:
        rt.close()


@atexit.register
def _close_runtimes() -> None:
    for rt in list(_RUNTIMES.values()):
        rt.close()


def user_text(e: BaseException) -> str:
    """An error as the user sees it: the message alone for input errors, else type and traceback."""
    return error_text(e, frames=4)


# A long message (a 10,000-character error) wraps and scrolls inside its box, never past the page.
MESSAGE_CSS = ":host {max-height: 12em; overflow-y: auto; overflow-wrap: anywhere;} :host * {overflow-wrap: anywhere;}"


class AppState:
    """The state one app session's cards share (the cards hold only their own widgets)."""

    def __init__(self, workspace_dir: str | Path):
        self.root = Path(workspace_dir)
        self.message = pn.pane.Alert("", alert_type="success", visible=False, sizing_mode="stretch_width",
                                     stylesheets=[MESSAGE_CSS], css_classes=["vf-message"])
        self.buttons: list[pn.widgets.Button] = []  # disabled while an action or a job runs
        self.inapplicable: set[int] = set()  # ids of the buttons of steps that do not apply to the task
        self.task_listeners: list[Callable[[], None]] = []  # called after the task card changes
        self.jobs: JobWatcher | None = None  # set by the JobWatcher built over this state
        self._action_lock = threading.Lock()

    def has_workspace(self) -> bool:
        """Whether the folder holds a workspace yet (the first task creates it)."""
        return (self.root / META_FILE).is_file()

    @property
    def workspace(self) -> Workspace:
        """The app's workspace (an error tells the user to create a task first)."""
        if not self.has_workspace():
            raise WorkspaceError("no task yet: create one in step 1 first")
        return Workspace.open(self.root)

    @property
    def runtime(self) -> Runtime:
        """The workspace's shared runtime."""
        return shared_runtime(self.workspace)

    def task_changed(self) -> None:
        """Tell every card that shows the task (or depends on it) to refresh; the cards' last job
        outcomes no longer describe the task, so they go."""
        self.refresh()
        if self.jobs is not None:
            self.jobs.clear_outcomes()

    def refresh(self) -> None:
        """Show the workspace again in every card that shows the task (or depends on it)."""
        for listener in self.task_listeners:
            listener()

    def say(self, text: str, kind: str = "success") -> None:
        """Show one message (it replaces the previous one, success or error)."""
        self.message.alert_type = kind
        self.message.object = text
        self.message.visible = bool(text)

    def guard(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn``; show any error as the message (never swallowed) and return None then."""
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - shown to the user
            self.say(f"**Error:** {html.escape(user_text(e))}", "danger")
            return None

    def busy(self) -> bool:
        """An action is running in this session, or a job in the workspace."""
        return self._action_lock.locked() or (self.jobs is not None and self.jobs.running())

    def set_disabled(self, disabled: bool) -> None:
        """Disable (or enable) every action button (a step that does not apply keeps its button off)."""
        for b in self.buttons:
            want = disabled or id(b) in self.inapplicable
            if b.disabled != want:
                b.disabled = want

    def action(self, fn: Callable[[], Any]) -> Callable[[Any], None]:
        """A click handler: ignored while another action or a job runs (double clicks do nothing
        twice); every button is disabled meanwhile; errors become the message."""

        def handler(_event) -> None:
            if self.busy() or not self._action_lock.acquire(blocking=False):
                return
            try:
                self.set_disabled(True)
                self.say("")  # the last action's message does not outlive it
                self.guard(fn)
            finally:
                self._action_lock.release()
                self.set_disabled(self.busy())

        return handler
