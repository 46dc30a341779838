"""Running programs over examples: one example with a trace, or a set through a named runner.

``local`` (threads in this process) and ``ray`` (a Ray Data actor pool) sit behind one
registry (``builder.run.registry``); ``run_batch`` scores the results with the task's metric.
"""

from builder.run.local import (
    BatchResult,
    ExampleInput,
    ExampleResult,
    RunnerOutput,
    examples_from_card,
    run_local,
    run_program,
    summarise,
)
from builder.run.registry import RUNNERS, get_runner, register_runner, run_batch

__all__ = [
    "RUNNERS",
    "BatchResult",
    "ExampleInput",
    "ExampleResult",
    "RunnerOutput",
    "examples_from_card",
    "get_runner",
    "register_runner",
    "run_batch",
    "run_local",
    "run_program",
    "summarise",
]
