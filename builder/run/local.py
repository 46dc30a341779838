"""Running a program on examples in this process: one at a time with a trace, or a set on threads.

``run_program`` runs one example through the sandbox with a ``ToolHost`` serving the tool
calls (cached, traced). ``run_local`` is the ``local`` runner of ``builder.run.registry``: it
runs a whole example set on a thread pool with a progress bar, keeping per-example errors.
``summarise`` scores the results against the expected outputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from builder.core.errors import Cancelled
from builder.core.images import ImageError, decode_working, read_image_bytes
from builder.core.metrics import score
from builder.core.video import VideoError, is_video_path, load_video
from builder.executor import Sandbox
from builder.tools.cache import ToolCache
from builder.tools.host import Engines, ToolHost
from builder.tools.profile import build_engines
from builder.tools.trace import Trace


@dataclass
class ExampleInput:
    """One example to run: image paths (resolved), query, choices and the expected output."""

    images: list[str]
    query: str = ""
    choices: list[str] | None = None
    expected: Any = None
    id: str = ""
    multi_image: bool = False  # the program receives a list of patches


@dataclass
class ExampleResult:
    """The outcome of one example: value or error, correctness, time and tool calls."""

    id: str
    value: Any = None
    error: str | None = None
    error_kind: str | None = None
    correct: bool = False
    expected: Any = None
    duration_ms: float = 0.0
    tool_calls: int = 0
    trace: dict | None = None


@dataclass
class RunnerOutput:
    """What a runner returns: per-example results (in input order) and tool-cache counts."""

    results: list[ExampleResult]
    cache_hits: int = 0
    cache_misses: int = 0


@dataclass
class BatchResult:
    """Scores and per-example results of a batch run."""

    accuracy: float
    n: int
    correct: int
    errors: int
    seconds: float
    results: list[ExampleResult] = field(default_factory=list)
    cache_hits: int = 0
    cache_misses: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the per-example results included) for JSON reports."""
        return asdict(self)


def examples_from_card(card, base: str | Path) -> list[ExampleInput]:
    """The task card's examples with image paths resolved against ``base`` (the card's folder)."""
    base = Path(base)
    out = []
    for i, ex in enumerate(card.examples):
        paths = [str(p if Path(p).is_absolute() else base / p) for p in ex.images]
        out.append(ExampleInput(paths, ex.query, ex.choices, ex.expected, ex.id or f"ex{i}",
                                multi_image=not isinstance(ex.image, str)))
    return out


def run_program(
    source: str,
    example: ExampleInput,
    engines: Engines,
    sandbox: Sandbox,
    cache: ToolCache | None = None,
    inspect: bool = False,
    images: list | None = None,
    deadline: float | None = None,
) -> tuple[ExampleResult, Trace | None]:
    """Run ``source`` on one example; with ``inspect`` also return the step-by-step trace.

    With a ``cache``, whole runs are memoised too: a program sees nothing but its inputs and
    tool results (no clock, randomness or I/O), so the same source on the same image files,
    query, choices and engine versions gives the same outcome. Timeouts and crashes are not
    memoised; ``inspect`` runs always execute so their trace is real.
    """
    t0 = time.perf_counter()
    trace = Trace(source=source) if inspect else None
    memo_key = None
    try:
        if images is None:
            # Each file is read once: its bytes key the run memo and are decoded on a miss.
            encoded = [read_image_bytes(p) for p in example.images]
            if cache is not None and not inspect:
                memo_key = _run_key(source, example, engines, encoded)
                hit = cache.get(memo_key)
                if hit is not ToolCache.MISSING:
                    return ExampleResult(example.id, expected=example.expected,
                                         duration_ms=(time.perf_counter() - t0) * 1000, **hit), trace
            # videos are only probed here (limits); their frames are decoded when a tool asks
            side = engines.working_side()  # engines see a bounded image; programs the original's size
            images = [load_video(data, str(p)) if is_video_path(p) else decode_working(data, side, str(p))
                      for data, p in zip(encoded, example.images, strict=True)]
    except (ImageError, VideoError) as e:
        return ExampleResult(example.id, error=str(e), error_kind="image", expected=example.expected), trace
    limits = None
    if deadline is not None:  # the program and its tool calls stop at the caller's deadline
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return ExampleResult(example.id, error="the request passed its deadline before the program started",
                                 error_kind="timeout", expected=example.expected), trace
        limits = dataclasses.replace(sandbox.limits, timeout_s=min(sandbox.limits.timeout_s, remaining))
    host = ToolHost(engines, images, cache=cache, trace=trace, deadline=deadline)
    run = sandbox.run(
        source,
        image_sizes=host.image_sizes(),
        dispatch=host,
        multi_image=example.multi_image,
        query=example.query or None,
        choices=example.choices,
        videos=host.video_infos(),
        limits=limits,
    )
    res = ExampleResult(
        example.id,
        value=run.value if run.ok else None,
        error=None if run.ok else str(run.error),
        error_kind=None if run.ok else run.error.kind,
        expected=example.expected,
        duration_ms=(time.perf_counter() - t0) * 1000,
        tool_calls=host.calls,
    )
    if trace is not None:
        trace.value, trace.error, trace.stdout = res.value, res.error, run.stdout or ""
        res.trace = trace.to_dict()
    if memo_key and res.error_kind not in ("timeout", "crash", "memory"):
        cache.set(memo_key, {"value": res.value, "error": res.error, "error_kind": res.error_kind,
                             "tool_calls": res.tool_calls})
    return res, trace


def _run_key(source: str, example: ExampleInput, engines: Engines, encoded: list[bytes]) -> str:
    """The memo key of a whole run: program, image file contents, inputs, engine and tracker versions."""
    from builder.tools.tracking import TRACKER_VERSION

    h = hashlib.sha256()
    for data in encoded:
        h.update(hashlib.sha256(data).digest())
    versions = [[e.backend_id, e.version] if e is not None else None
                for e in (engines.detector, engines.vqa, engines.captioner, engines.matcher, engines.ocr)]
    desc = json.dumps(["run", source, h.hexdigest(), example.query, example.choices, example.multi_image, versions,
                       TRACKER_VERSION])
    return hashlib.sha256(desc.encode()).hexdigest()


def run_local(
    source: str,
    examples: list[ExampleInput],
    *,
    engines: Engines | None = None,
    profile: str | dict = "shapes",
    cache: ToolCache | None = None,
    workers: int = 2,
    progress: bool | Callable[[int, int], None] = True,
    inspect: bool = False,
    sandbox: Sandbox | None = None,
    cancel: Callable[[], bool] | None = None,
) -> RunnerOutput:
    """The ``local`` runner: every example on a thread pool sharing one sandbox and one cache.

    ``progress`` is True (a tqdm bar), False, or ``progress(done, total)``. ``cancel()`` (a
    ``CancelToken`` or any callable) is polled while examples run; when it returns True the
    examples not started are dropped, the runner's own sandbox is closed (a shared one is the
    caller's to stop: ``Runtime.cancel``) and ``Cancelled`` is raised: nothing is returned.
    """
    engines = engines if engines is not None else build_engines(profile)
    own_sandbox = sandbox is None
    sandbox = sandbox if sandbox is not None else Sandbox(workers=workers)
    h0, m0 = (cache.hits, cache.misses) if cache is not None else (0, 0)
    results: list = [None] * len(examples)
    try:
        def one(ex: ExampleInput) -> ExampleResult:
            return run_program(source, ex, engines, sandbox, cache, inspect=inspect)[0]

        with tqdm(total=len(examples), disable=progress is not True, desc="examples") as bar, \
                ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = {pool.submit(one, ex): i for i, ex in enumerate(examples)}
            pending, done = set(futures), 0
            while pending:
                finished, pending = wait_futures(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                for fut in finished:
                    results[futures[fut]] = fut.result()
                    done += 1
                    bar.update(1)
                    if callable(progress):
                        progress(done, len(examples))
                if cancel is not None and cancel():
                    for fut in pending:
                        fut.cancel()
                    if own_sandbox:
                        sandbox.close()  # the programs still running end at once
                    raise Cancelled(f"run cancelled after {done}/{len(examples)} examples; nothing was saved")
    finally:
        if own_sandbox:
            sandbox.close()
    hits = (cache.hits - h0) if cache is not None else 0
    misses = (cache.misses - m0) if cache is not None else 0
    return RunnerOutput(results, hits, misses)


def summarise(results: list[ExampleResult], output, metric, seconds: float, hits: int = 0,
              misses: int = 0) -> BatchResult:
    """Score each result against its expected output and total them up."""
    for r in results:
        r.correct = r.error is None and score(output, r.value, r.expected, metric)
    n = len(results)
    correct = sum(r.correct for r in results)
    return BatchResult(
        accuracy=correct / n if n else 0.0,
        n=n,
        correct=correct,
        errors=sum(r.error is not None for r in results),
        seconds=seconds,
        results=results,
        cache_hits=hits,
        cache_misses=misses,
    )
