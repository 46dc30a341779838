"""Ray Data path for large example sets: an actor pool where each actor owns engines + a sandbox.

Examples and results cross process boundaries as JSON text, so any plain program output
survives Arrow's typing and nothing is unpickled from a program.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict

import numpy as np

from builder.batch import ExampleInput, ExampleResult, run_program


class _Runner:
    """One Ray actor: builds its engines and a one-worker sandbox once, then runs batches."""

    def __init__(self, source: str, profile):
        from builder.executor import Sandbox
        from builder.tools.profile import build_engines

        self.source = source
        self.engines = build_engines(profile)
        self.sandbox = Sandbox(workers=1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for text in batch["example"]:
            ex = ExampleInput(**json.loads(text))
            res, _ = run_program(self.source, ex, self.engines, self.sandbox)
            out.append(json.dumps(asdict(res)))
        return {"order": batch["order"], "result": np.array(out, dtype=object)}


def run_ray(source: str, examples: list[ExampleInput], profile, workers: int = 2, progress: bool = True,
            batch_size: int = 16) -> list[ExampleResult]:
    """Run ``source`` over ``examples`` on a local (or already connected) Ray cluster."""
    import ray

    if not isinstance(profile, (str, dict)):
        raise TypeError("the Ray path builds engines in each actor: pass a profile name, path or dict")
    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # Ray writes sockets and logs under its temp dir; keep it short (socket path limit) and private.
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 _temp_dir=tempfile.mkdtemp(prefix="vfray-", dir="/tmp"), configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    items = [{"order": i, "example": json.dumps(asdict(ex))} for i, ex in enumerate(examples)]
    ds = ray.data.from_items(items).map_batches(
        _Runner,
        fn_constructor_args=(source, profile),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
    )
    rows = sorted(ds.take_all(), key=lambda r: int(r["order"]))
    return [ExampleResult(**json.loads(r["result"])) for r in rows]
