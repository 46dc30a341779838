"""Video bench: reference-program accuracy per video kind, time per clip against plain decoding, cache speed-up.

For each domain (clean, shifted) it generates ``--n`` shapes-world clips, runs each kind's
reference program (``builder.domains.shapes.world.video_tasks``) through the sandbox with the shapes engines,
and scores it against the clips' events (collision frame within 2 frames; the summary field by
field). Timing: a ``--long-seconds`` 25 fps 256x256 clip is processed by the collision-summary
program (probe, lazy decode, tracking, sandbox) and compared with decoding all its frames to
RGB in the same run (median of ``--repeats``); the cache speed-up re-runs the kinds on a warm
tool cache. Crossing and leaving are also scored with an object / direction filter drawn per
clip (``crossing_count_filtered``, ``leaves_filtered``; ground truth from the clip's events). Prints JSON and writes ``bench/results/video_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from builder.core.metrics import summary_field_scores
from builder.core.video import decode_all
from builder.domains.shapes.world.video import sample_clip, write_clip
from builder.domains.shapes.world.video_tasks import VIDEO_KINDS, random_filter, video_example
from builder.domains.shapes.world.video_truth import score_video
from builder.executor import Sandbox
from builder.run.local import ExampleInput, run_program
from builder.tools.cache import ToolCache
from builder.tools.profile import build_engines

# Bench rows with a filter drawn per clip (``random_filter``: an object by colour, colour and shape,
# a shape or a size, and a direction or edge half the time; for collides one or two objects).
FILTERED = ("crossing_count_filtered", "leaves_filtered", "collides_filtered", "first_to_leave_filtered")


def _accuracy(n: int, domain: str, seed: int, engines, sandbox, cache) -> tuple[dict, float, float]:
    rng = np.random.default_rng([seed, 1])
    frng = np.random.default_rng([seed, 2])
    per_kind = {k: [] for k in [*VIDEO_KINDS, *FILTERED]}
    fields = {f: [] for f in ("objects", "frame", "before", "after")}
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        clips = []
        for i in range(n):
            clip = sample_clip(rng, domain)
            path = Path(tmp) / f"{i:04d}.mp4"
            write_clip(clip, path)
            gt = clip.to_json()
            filters = {k: random_filter(gt, k.removesuffix("_filtered"), frng) for k in FILTERED}
            clips.append((path, gt, filters))
        for warm in (False, True):
            t0 = time.perf_counter()
            for path, gt, filters in clips:
                for row in [*VIDEO_KINDS, *FILTERED]:
                    kind = row.removesuffix("_filtered")
                    ex = video_example(gt, kind, *filters[row]) if row in FILTERED else video_example(gt, kind)
                    if ex is None:
                        continue
                    t = time.perf_counter()
                    res, _ = run_program(ex["program"], ExampleInput([str(path)], ex["query"], expected=ex["expected"]),
                                         engines, sandbox, cache)
                    if warm:
                        continue
                    seconds.append(time.perf_counter() - t)
                    ok = res.error is None and score_video(kind, res.value, ex["expected"], None, gt["fps"])
                    per_kind[row].append(ok)
                    if row == "collision_summary":
                        for f, v in summary_field_scores(res.value if res.error is None else None,
                                                         ex["expected"]).items():
                            fields[f].append(v)
            if not warm:
                cold = time.perf_counter() - t0
            else:
                hot = time.perf_counter() - t0
    out = {k: {"accuracy": round(float(np.mean(v)), 4), "n": len(v)} for k, v in per_kind.items()}
    out["collision_summary"]["fields"] = {f: round(float(np.mean(v)), 4) for f, v in fields.items()}
    out["collision_summary"]["field_accuracy"] = round(float(np.mean([np.mean(v) for v in fields.values()])), 4)
    out["seconds_per_program_run"] = round(float(np.mean(seconds)), 4)
    return out, cold, hot


def _timing(seconds: float, repeats: int, engines, sandbox) -> dict:
    n_frames = int(seconds * 25)
    clip = sample_clip(np.random.default_rng(7), "shifted", size=256, n_frames=n_frames, collision=True)
    data = write_clip(clip)
    program = video_example(clip.to_json(), "collision_summary")["program"]
    decode, process = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.mp4"
        path.write_bytes(data)
        for _ in range(repeats):
            t = time.perf_counter()
            frames = decode_all(data)
            decode.append(time.perf_counter() - t)
            assert len(frames) == n_frames
            t = time.perf_counter()  # no cache: every frame decoded and tracked
            res, _ = run_program(program, ExampleInput([str(path)]), engines, sandbox, None)
            process.append(time.perf_counter() - t)
            assert res.error is None, res.error
    d, p = statistics.median(decode), statistics.median(process)
    return {"frames": n_frames, "size": 256, "fps": 25, "decode_s": round(d, 4), "process_s": round(p, 4),
            "ratio_to_decode": round(p / d, 3), "target_ratio": 3.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="clips per domain")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--long-seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-timing", action="store_true", help="skip the long-clip timing (a quick run)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "video_bench.json"))
    args = ap.parse_args()
    engines = build_engines("shapes")
    result: dict = {"n_clips_per_domain": args.n}
    with Sandbox(workers=1) as sandbox, tempfile.TemporaryDirectory() as cdir:
        if not args.no_timing:
            result["timing"] = _timing(args.long_seconds, args.repeats, engines, sandbox)
        cache = ToolCache(cdir)
        for domain in ("clean", "shifted"):
            acc, cold, hot = _accuracy(args.n, domain, args.seed, engines, sandbox, cache)
            result[domain] = acc
            result[domain]["cache"] = {"cold_s": round(cold, 3), "warm_s": round(hot, 3),
                                       "speedup": round(cold / max(hot, 1e-9), 2)}
        cache.close()
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
