"""The ``ray`` runner: large example sets on a Ray Data actor pool (each actor owns engines + a sandbox).

Examples and results cross process boundaries as JSON text, so any plain program output
survives Arrow's typing and nothing is unpickled from a program. ``ray_session`` is the one
place VisForge starts Ray (SelTDA's pseudo-labelling uses it too).

``ray`` (the ``scale`` extra) is imported inside the functions that need it: importing this
module costs nothing where Ray is not installed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from builder.core.errors import Cancelled
from builder.executor import Sandbox
from builder.run.local import ExampleInput, ExampleResult, RunnerOutput, run_program
from builder.tools.profile import build_engines


def ray_session(num_cpus: int, progress: bool = True):
    """The ``ray`` module, connected: joins a running session or starts a local one.

    A new local session gets ``num_cpus`` CPUs, no dashboard, and a short private temp folder
    (Ray's socket paths have a length limit). ``progress`` switches Ray Data's progress bars.
    """
    import ray  # optional dependency (the "scale" extra)

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 _temp_dir=tempfile.mkdtemp(prefix="vfray-", dir="/tmp"), configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = progress
    return ray


class _Runner:
    """One Ray actor: builds its engines and a one-worker sandbox once, then runs batches."""

    def __init__(self, source: str, profile):
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


def run_ray(source: str, examples: list[ExampleInput], *, profile: str | dict = "shapes", workers: int = 2,
            progress: bool | Callable[[int, int], None] = True, batch_size: int = 16,
            cancel: Callable[[], bool] | None = None, **_local_only) -> RunnerOutput:
    """The ``ray`` runner: ``source`` over ``examples`` on a local (or already connected) Ray cluster.

    Each actor builds its engines from ``profile`` (a name, path or dict: engine objects do not
    travel). Options only the local runner has (``engines``, ``cache``, ``sandbox``,
    ``inspect``) are ignored. ``progress(done, total)`` and ``cancel()`` are called as results
    stream back; a cancel stops reading and raises ``Cancelled`` (Ray stops the pipeline).
    """
    if not isinstance(profile, (str, dict)):
        raise TypeError("the Ray path builds engines in each actor: pass a profile name, path or dict")
    ray = ray_session(workers, progress is True)
    items = [{"order": i, "example": json.dumps(asdict(ex))} for i, ex in enumerate(examples)]
    ds = ray.data.from_items(items).map_batches(
        _Runner,
        fn_constructor_args=(source, profile),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
    )
    rows = []
    for row in ds.iter_rows():
        rows.append(row)
        if callable(progress):
            progress(len(rows), len(items))
        if cancel is not None and cancel():
            raise Cancelled(f"run cancelled after {len(rows)}/{len(items)} examples; nothing was saved")
    rows.sort(key=lambda r: int(r["order"]))
    return RunnerOutput([ExampleResult(**json.loads(r["result"])) for r in rows])


class _Embedder:
    """One Ray actor: builds the profile's embedder (and detector) once, then embeds batches of image
    files (and detects their objects)."""

    def __init__(self, profile, detect: bool = False):
        engines = build_engines(profile)
        self.embedder, self.detector = engines.embedder, engines.detector if detect else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from builder.core.images import ImageError, load_image
        from builder.tools.detections import detect_objects

        images, ok = [], []
        for path in batch["path"]:
            try:
                images.append(load_image(str(path)))
                ok.append(True)
            except (ImageError, OSError, ValueError):
                ok.append(False)
        vecs = self.embedder.embed_images(images) if images else np.zeros((0, 1), np.float32)
        rows, objects, k = [], [], 0
        for good in ok:
            rows.append(json.dumps(vecs[k].tolist()) if good else "")
            found = detect_objects(self.detector, images[k]) if good and self.detector is not None else None
            objects.append(json.dumps({"width": images[k].shape[1], **{a: v.tolist() for a, v in found.items()}})
                           if found is not None else "")
            k += int(good)
        return {"order": batch["order"], "vector": np.array(rows, dtype=object),
                "objects": np.array(objects, dtype=object)}


def embed_images_ray(paths: list[str], profile: str | dict = "shapes", workers: int = 2, batch_size: int = 64,
                     progress: bool = True, detect: bool = False):
    """Embed image files on a Ray Data actor pool: (indices embedded, vectors, their detected
    objects as an ``ObjectTable`` or None without ``detect``, unreadable paths).

    Each actor builds the profile's ``embedder`` (and ``detector`` with ``detect``); files are
    read inside the actors (only paths, vectors and objects cross process boundaries).
    """
    from builder.tools.detections import ObjectTable

    if not isinstance(profile, (str, dict)):
        raise TypeError("the Ray path builds engines in each actor: pass a profile name, path or dict")
    if not paths:
        return [], np.zeros((0, 0), np.float32), ObjectTable.empty() if detect else None, []
    ray = ray_session(workers, progress)
    ds = ray.data.from_items([{"order": i, "path": p} for i, p in enumerate(paths)]).map_batches(
        _Embedder, fn_constructor_args=(profile, detect), batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers))
    rows = sorted(ds.take_all(), key=lambda r: int(r["order"]))
    ok = [int(r["order"]) for r in rows if r["vector"]]
    bad = [paths[int(r["order"])] for r in rows if not r["vector"]]
    vecs = np.array([json.loads(r["vector"]) for r in rows if r["vector"]], np.float32)
    objects = None
    if detect:
        found = [json.loads(r["objects"]) for r in rows if r["vector"]]
        objects = ObjectTable.from_images([{k: np.asarray(v) for k, v in f.items() if k != "width"} for f in found],
                                          [f["width"] for f in found])
    return ok, vecs, objects, bad
