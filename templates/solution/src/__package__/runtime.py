"""The solution at run time: the accepted program, run through VisForge's sandbox.

This file is copied verbatim by ``visforge export``. The program source, the pinned engine
profile and the manifest are package data in ``assets/``; the program never runs in this
process: ``builder.executor.Sandbox`` runs it in a locked-down worker and a
``builder.tools.host.ToolHost`` serves its tool calls, exactly as in the builder.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from builder.executor import Limits as SandboxLimits
from builder.executor import Sandbox
from builder.run import ExampleInput, run_program
from builder.tools.cache import ToolCache
from builder.tools.host import Engines
from builder.tools.profile import build_engines, load_profile

ASSETS = Path(__file__).parent / "assets"
# Profile option values written as "asset:<relative path>" point at files shipped in assets/.
ASSET_PREFIX = "asset:"


def manifest() -> dict[str, Any]:
    """What was exported: name, version, program version, output kind, metric, limits of use."""
    return json.loads((ASSETS / "manifest.json").read_text(encoding="utf-8"))


def program_source() -> str:
    """The accepted program's source text."""
    return (ASSETS / "program.py").read_text(encoding="utf-8")


def engine_profile() -> dict[str, dict[str, Any]]:
    """The pinned engine profile, with shipped model files resolved to absolute paths."""
    profile = load_profile(ASSETS / "profile.yaml")
    for spec in profile.values():
        for key, value in spec.items():
            if isinstance(value, str) and value.startswith(ASSET_PREFIX):
                spec[key] = str(ASSETS / value[len(ASSET_PREFIX):])
    return profile


def _plain(value: Any) -> Any:
    """A program result as JSON-ready data (tuples -> lists, numpy scalars -> numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; a client must not choke on the answer
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


class Solution:
    """The exported solution: ``predict`` one input, ``predict_many`` several.

    ``workers`` sandbox processes run programs in parallel (``predict_many`` and concurrent
    server requests); ``cache_dir`` turns on the content-keyed tool-result cache; ``timeout_s``
    is each run's wall-clock deadline (a run past it is ``ok: false`` with ``error_kind: timeout``);
    ``engines`` are built from the pinned profile unless given (the server's workers share theirs).
    Use as a context manager, or call ``close`` to stop the sandbox workers.
    """

    def __init__(self, workers: int = 1, cache_dir: str | Path | None = None, timeout_s: float = 30.0,
                 engines: Engines | None = None):
        self.manifest = manifest()
        self.source = program_source()
        self.engines = engines if engines is not None else build_engines(engine_profile())
        self.workers = max(1, int(workers))
        self.sandbox = Sandbox(workers=self.workers, limits=SandboxLimits(timeout_s=float(timeout_s)))
        self.cache = ToolCache(cache_dir) if cache_dir else None
        self.multi_image = bool(self.manifest.get("multi_image"))

    def __enter__(self) -> Solution:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the sandbox workers."""
        self.sandbox.close()

    def predict(
        self,
        images: list[np.ndarray],
        query: str | None = None,
        choices: list[str] | None = None,
        id: str = "input",
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """Run the program on one input (one image, or several for multi-image solutions).

        ``images`` are (H, W, 3) uint8 RGB arrays or ``WorkingImage``s (``builder.core.images``).
        ``query``/``choices`` default to the task's own when every example shares them.
        Returns ``{"ok", "value", "error", "error_kind", "duration_ms", "tool_calls"}``;
        a program that fails on this input is ``ok: false``, never an exception. Past ``deadline``
        (``time.monotonic()``) the program is stopped and no engine is called.
        """
        if not images:
            raise ValueError("predict needs at least one image")
        if not self.multi_image and len(images) != 1:
            raise ValueError(f"this solution takes exactly one image per input, got {len(images)}")
        if query is None:
            query = self.manifest.get("default_query")
        if choices is None:
            choices = self.manifest.get("default_choices")
        example = ExampleInput(
            images=[f"{id}[{i}]" for i in range(len(images))],
            query=query or "",
            choices=list(choices) if choices else None,
            id=id,
            multi_image=self.multi_image,
        )
        result, _ = run_program(self.source, example, self.engines, self.sandbox, self.cache, images=images,
                                deadline=deadline)
        return {
            "ok": result.error is None,
            "value": _plain(result.value) if result.error is None else None,
            "error": result.error,
            "error_kind": result.error_kind,
            "duration_ms": round(result.duration_ms, 2),
            "tool_calls": result.tool_calls,
        }

    def predict_many(self, items: list[dict[str, Any]], deadline: float | None = None) -> list[dict[str, Any]]:
        """Run several inputs (each a dict of ``predict``'s keyword arguments), in order."""
        if len(items) <= 1 or self.workers == 1:
            return [self.predict(**item, deadline=deadline) for item in items]
        # One thread per sandbox worker: more threads would only queue inside the sandbox.
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda item: self.predict(**item, deadline=deadline), items))
