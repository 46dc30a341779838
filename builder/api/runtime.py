"""``Runtime``: the engines, sandbox and tool cache of one workspace, built once and shared."""

from __future__ import annotations

import threading

from builder.core.workspace import Workspace
from builder.executor import Sandbox
from builder.tools.cache import ToolCache
from builder.tools.host import Engines
from builder.tools.profile import build_engines


class Runtime:
    """Engines, sandbox and tool cache for one workspace, built on first use and shared.

    Building the engines and starting sandbox workers takes seconds, so one notebook (or one
    app session) builds them once. ``runner`` names the runner examples go through
    (``builder.run.registry``: "local" threads, or "ray" for a Ray Data actor pool that builds
    its own engines from ``profile``). ``close()`` stops the sandbox workers.
    """

    def __init__(self, workspace: Workspace, profile: str | dict = "shapes", workers: int = 1,
                 runner: str = "local"):
        self.workspace = workspace
        self.profile = profile
        self.workers = workers
        self.runner = runner
        self._engines: Engines | None = None
        self._sandbox: Sandbox | None = None
        self._cache: ToolCache | None = None
        self._lock = threading.Lock()

    @property
    def engines(self):
        """The profile's engines (built on first use)."""
        with self._lock:
            if self._engines is None:
                self._engines = build_engines(self.profile)
            return self._engines

    @property
    def sandbox(self) -> Sandbox:
        """The sandbox (workers started on first use; a fresh one after ``cancel``)."""
        with self._lock:
            if self._sandbox is None:
                self._sandbox = Sandbox(workers=self.workers)
            return self._sandbox

    @property
    def cache(self) -> ToolCache:
        """The workspace's tool cache (``cache/``)."""
        with self._lock:
            if self._cache is None:
                self._cache = ToolCache(self.workspace.dir("cache"))
            return self._cache

    def cancel(self) -> None:
        """Stop every program running in the sandbox now (their runs end as errors); the next
        run starts fresh workers. This is the sandbox strategy's kill hook (``builder.run.jobs``)."""
        with self._lock:
            sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            sandbox.close()

    def close(self) -> None:
        """Stop the sandbox workers (engines and cache need no cleanup)."""
        self.cancel()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
