"""Executor benchmarks (issue 3), printing JSON.

(i)   the same program over N shapes scenes through the sandboxed executor vs plain in-process
      Python calls of the same tool functions: ratio and overhead in ms per run;
(ii)  a cached re-run vs the first (uncached) run;
(iii) the Ray Data path vs the local thread path on 2 CPUs.

Usage: python bench/executor_bench.py [--n 1000] [--ray-n 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from builder.core.images import load_image  # noqa: E402
from builder.domains.shapes.world import generate_dataset  # noqa: E402
from builder.executor import Sandbox  # noqa: E402
from builder.run import ExampleInput, run_batch  # noqa: E402
from builder.tools import api  # noqa: E402
from builder.tools.cache import ToolCache  # noqa: E402
from builder.tools.host import ToolHost  # noqa: E402
from builder.tools.profile import build_engines  # noqa: E402

PROGRAM = '''def execute(image):
    circles = image.find("circle")
    red = [c for c in circles if c.verify("Is this object red?")]
    return len(red)
'''


def plain_run(source: str, host: ToolHost, image_size):
    """The same program called in-process with the tool API wired straight to the host."""
    namespace = dict(api.PROGRAM_API)
    exec(compile(source, "<program>", "exec"), namespace)  # trusted bench code, never user programs
    api._transport = host
    try:
        return namespace["execute"](api.ImagePatch(0, (0, 0, *image_size)))
    finally:
        api._transport = None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--ray-n", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="vf-bench-")
    data = generate_dataset(f"{tmp}/world", n=args.n, seed=0, families=("vqa",))
    paths = sorted(str(p) for p in (data / "images").glob("*.png"))
    images = [load_image(p) for p in paths]
    engines = build_engines("shapes")

    # (i) executor vs plain calls; tool results cached in memory first so both sides pay the
    # same (near-zero) tool cost and the difference is the executor's own overhead.
    warm = ToolCache(f"{tmp}/cache-warm")
    for img in images:
        plain_run(PROGRAM, ToolHost(engines, [img], cache=warm), (img.shape[1], img.shape[0]))
    plain_s, sandbox_s = [], []
    with Sandbox(workers=1) as sandbox:
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            plain_vals = [plain_run(PROGRAM, ToolHost(engines, [img], cache=warm), (img.shape[1], img.shape[0]))
                          for img in images]
            plain_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sb_vals = []
            for img in images:
                host = ToolHost(engines, [img], cache=warm)
                res = sandbox.run(PROGRAM, image_sizes=host.image_sizes(), dispatch=host)
                sb_vals.append(res.value if res.ok else res.error)
            sandbox_s.append(time.perf_counter() - t0)
    assert plain_vals == sb_vals, "the sandbox must compute what plain Python computes"
    plain_med, sb_med = statistics.median(plain_s), statistics.median(sandbox_s)

    # Uncached plain calls: what the tools themselves cost, for scale.
    t0 = time.perf_counter()
    for img in images[:200]:
        plain_run(PROGRAM, ToolHost(engines, [img]), (img.shape[1], img.shape[0]))
    tool_ms = (time.perf_counter() - t0) / min(200, len(images)) * 1000

    # (ii) cached re-run vs first run, through the whole batch path.
    examples = [ExampleInput([p], expected=None, id=str(i)) for i, p in enumerate(paths)]
    cache = ToolCache(f"{tmp}/cache")
    first = run_batch(PROGRAM, examples, "count", engines=engines, cache=cache, progress=False)
    again = run_batch(PROGRAM, examples, "count", engines=engines, cache=cache, progress=False)

    # (iii) Ray Data vs local threads, 2 CPUs, no cache on either side.
    sub = examples[: args.ray_n]
    local = run_batch(PROGRAM, sub, "count", engines=engines, progress=False, workers=2)
    ray_res = run_batch(PROGRAM, sub, "count", profile="shapes", engine="ray", progress=False, workers=2)
    same = [r.value for r in local.results] == [r.value for r in ray_res.results]

    print(json.dumps({
        "scenes": len(images),
        "executor_vs_plain": {
            "plain_s": round(plain_med, 3),
            "sandbox_s": round(sb_med, 3),
            "ratio": round(sb_med / plain_med, 3),
            "overhead_ms_per_run": round((sb_med - plain_med) / len(images) * 1000, 3),
            "tool_cost_ms_per_run_uncached": round(tool_ms, 3),
            "ratio_with_real_tool_cost": round((tool_ms + (sb_med - plain_med) / len(images) * 1000) / tool_ms, 3),
        },
        "cache": {
            "first_s": round(first.seconds, 3),
            "cached_s": round(again.seconds, 3),
            "speedup": round(first.seconds / again.seconds, 1),
            "hits": again.cache_hits,
            "misses_first": first.cache_misses,
        },
        "ray_vs_local": {
            "n": len(sub),
            "local_s": round(local.seconds, 3),
            "ray_s": round(ray_res.seconds, 3),
            "ratio": round(ray_res.seconds / local.seconds, 2),
            "same_outputs": same,
        },
    }, indent=2))


if __name__ == "__main__":
    main()
