"""The runner registry: how a program is run over a set of examples (``local`` threads or ``ray``).

A runner is a callable ``runner(source, examples, *, engines, profile, cache, workers,
progress, inspect, sandbox[, cancel]) -> RunnerOutput`` (``cancel`` is passed only when given:
a callable polled while it runs; a cancelled runner raises ``Cancelled``). ``run_batch`` picks one by name, runs it and
scores the results. Adding a backend (a job queue, a cluster) is one ``register_runner`` call.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from builder.core.taskcard import Metric, OutputKind
from builder.executor import Sandbox
from builder.run.local import BatchResult, ExampleInput, RunnerOutput, run_local, summarise
from builder.run.ray import run_ray
from builder.tools.cache import ToolCache
from builder.tools.host import Engines

Runner = Callable[..., RunnerOutput]

RUNNERS: dict[str, Runner] = {"local": run_local, "ray": run_ray}


def register_runner(name: str, runner: Runner) -> None:
    """Make ``runner`` available as ``run_batch(..., engine=name)``."""
    RUNNERS[name] = runner


def get_runner(name: str) -> Runner:
    """The runner registered as ``name``; a ``ValueError`` lists the known ones."""
    try:
        return RUNNERS[name]
    except KeyError:
        known = ", ".join(repr(k) for k in RUNNERS)
        raise ValueError(f"unknown batch engine {name!r}; use one of {known}") from None


def run_batch(
    source: str,
    examples: list[ExampleInput],
    output: OutputKind | str,
    metric: Metric | str | None = None,
    engines: Engines | None = None,
    profile: str | dict = "shapes",
    cache: ToolCache | None = None,
    workers: int = 2,
    engine: str = "local",
    progress: bool | Callable[[int, int], None] = True,
    inspect: bool = False,
    sandbox: Sandbox | None = None,
    cancel: Callable[[], bool] | None = None,
) -> BatchResult:
    """Run ``source`` on every example with the runner ``engine`` and score it against the expected outputs.

    ``progress``: True (a bar), False, or ``progress(done, total)``; ``cancel``: a
    ``CancelToken`` (or callable) that stops the run with ``Cancelled``."""
    runner = get_runner(engine)
    t0 = time.perf_counter()
    extra = {"cancel": cancel} if cancel is not None else {}
    out = runner(source, examples, engines=engines, profile=profile, cache=cache, workers=workers,
                 progress=progress, inspect=inspect, sandbox=sandbox, **extra)
    return summarise(out.results, output, metric, time.perf_counter() - t0, out.cache_hits, out.cache_misses)
