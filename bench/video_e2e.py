"""End-to-end scoring of video requests: the planner's top-1 program run on generated clips.

Used by ``bench/video_planner_bench.py`` on ``bench/data/video_new_kinds_blind.jsonl`` (written
blind: fields ``id``, ``kind``, ``query`` and the gold reading ``objects`` ([colour, shape, size]
with nulls), ``direction`` ("left_to_right"/"right_to_left" or an edge), ``answer`` ("name" /
"color", "frames" / "seconds") and ``frame`` ("first", "last", "collision" or a number)).

A pool of shapes-world clips is generated once and kept in a cache folder (clips as MP4 with
their scene graphs; the tool cache beside them, so tracks are computed once per clip). Each
request is scored on ``clips`` clips of the pool: first those holding every object the request
names, in pool order, then the others. A clip that cannot decide the answer is skipped: two
objects leaving within 3 frames for first to leave, or a named colour worn by an object of
another shape or size (is "the cyan circle" the cyan square, misnamed, or absent?). On each clip the program's answer is compared with the
ground truth of the gold reading (``video_tasks.ground_truth``; metric ``video_truth.score_video``);
a request is solved when at least ``SOLVED_SHARE`` of its clips are right. A refused request is
unsolved. No request text is printed: the set is blind.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from builder.domains import vocabulary
from builder.domains.shapes.world.video import fits, sample_clip, write_clip
from builder.domains.shapes.world.video_tasks import COLLISION_KINDS, ground_truth
from builder.domains.shapes.world.video_truth import score_video

SOLVED_SHARE = 0.9
BLIND_KINDS = {"crossing_count_filtered": "crossing_count", "leaves_filtered": "leaves"}
WAYS = {"left_to_right": "right", "right_to_left": "left"}
POOL_VERSION = "1"


def _canonical(field: str, value):
    """A gold attribute in the world's words ("grey" -> "gray"), or None."""
    if value is None:
        return None
    found = vocabulary("shapes").lookup(str(value).lower(), frozenset())
    return found[1] if found is not None and found[0] == field else str(value).lower()


def gold_reading(row: dict) -> dict:
    """The reading a blind row labels: kind and the slots ``ground_truth`` takes."""
    kind = BLIND_KINDS.get(row["kind"], row["kind"])
    objects = [tuple(_canonical(f, v) for f, v in zip(("color", "shape", "size"), o, strict=True))
               for o in row.get("objects") or []]
    slots = {"direction": WAYS.get(row.get("direction"), row.get("direction")), "answer": row.get("answer"),
             "frame": row.get("frame")}
    if kind in COLLISION_KINDS:
        return {"kind": kind, "a": objects[0] if objects else None, "b": objects[1] if len(objects) > 1 else None}
    return {"kind": kind, "objects": objects, **slots}


def clip_pool(folder: Path, n: int, seed: int) -> list[tuple[Path, dict]]:
    """``n`` clips (clean domain, a collision in 70% of them) in ``folder``: written once, then read back."""
    folder.mkdir(parents=True, exist_ok=True)
    index = folder / f"pool-v{POOL_VERSION}-{seed}.jsonl"
    pool = [json.loads(line) for line in index.read_text().splitlines()] if index.exists() else []
    rng = np.random.default_rng([seed, 31])
    for i in range(n):
        clip = sample_clip(rng, "clean")  # drawn in order, so the first clips match any pool size
        if i < len(pool):
            continue
        path = folder / f"clip-{seed}-{i:04d}.mp4"
        write_clip(clip, path)
        pool.append({"path": path.name, "gt": clip.to_json()})
        with index.open("a") as f:
            f.write(json.dumps(pool[-1]) + "\n")
    return [(folder / p["path"], p["gt"]) for p in pool[:n]]


def clips_for(reading: dict, pool: list, clips: int) -> list[tuple[Path, dict, object]]:
    """(path, scene graphs, expected) of up to ``clips`` clips for a reading: those holding every
    named object first, then the rest; clips whose answer is undecided are skipped."""
    named = [o for o in (reading.get("objects") or [reading.get("a"), reading.get("b")]) if o is not None]

    def present(gt):
        return all(any(fits(o, w) for o in gt["objects"]) for w in named)

    def misnamed(gt):  # a named colour worn by an object of another shape or size
        return any(w[0] is not None and o["color"] == w[0] and not fits(o, w) for w in named for o in gt["objects"])

    ordered = [c for c in pool if present(c[1])] + [c for c in pool if not present(c[1])]
    out = []
    for path, gt in ordered:
        if misnamed(gt):
            continue
        slots = {k: v for k, v in reading.items() if k != "kind"}
        expected = ground_truth(gt, reading["kind"], **slots)
        if expected is not None:
            out.append((path, gt, expected))
        if len(out) == clips:
            break
    return out


def score_end_to_end(rows: list[dict], pool: list, clips: int, cache_dir: Path) -> dict:
    """Per kind and overall: the share of requests solved end to end, the share whose top-1
    kind is the gold one (``kind_ok``) and whose top reading is the gold one, every slot included
    (``reading_ok``), refusals, and the mean share of clips right."""
    from builder.executor import Sandbox
    from builder.planner.video import VideoPlanner, readings
    from builder.run.local import ExampleInput, run_program
    from builder.tools.cache import ToolCache
    from builder.tools.profile import build_engines

    t0 = time.perf_counter()
    proposals = VideoPlanner().plan_many([str(r["query"]) for r in rows], k=1)
    plan_s = time.perf_counter() - t0
    engines = build_engines("shapes")
    per_kind: dict[str, dict[str, list]] = {}
    cache = ToolCache(cache_dir / "tools")
    try:
        with Sandbox(workers=1) as sandbox:
            for row, proposal in zip(rows, proposals, strict=True):
                reading = gold_reading(row)
                s = per_kind.setdefault(row["kind"], {"solved": [], "clip_share": [], "refused": [], "kind_ok": [],
                                                       "reading_ok": []})
                s["refused"].append(proposal.refusal is not None)
                program = proposal.programs[0] if proposal.programs else None
                top = readings(str(row["query"]))[0]  # the reading the top-1 program compiles
                s["kind_ok"].append(top.kind == reading["kind"])
                s["reading_ok"].append(_same_reading(top, reading))
                right = []
                for path, gt, expected in clips_for(reading, pool, clips):
                    if program is None:
                        right.append(False)
                        continue
                    res, _ = run_program(program, ExampleInput([str(path)], str(row["query"])), engines, sandbox, cache)
                    right.append(res.error is None and score_video(reading["kind"], res.value, expected,
                                                                   reading.get("answer"), gt["fps"]))
                share = float(np.mean(right)) if right else 0.0
                s["clip_share"].append(share)
                s["solved"].append(bool(right) and share >= SOLVED_SHARE)
    finally:
        cache.close()

    def agg(vals):
        return round(float(np.mean(vals)), 4) if vals else None

    out = {k: {"n": len(v["solved"]), **{m: agg(vals) for m, vals in v.items()}} for k, v in per_kind.items()}
    every = {m: [x for v in per_kind.values() for x in v[m]] for m in ("solved", "clip_share", "refused", "kind_ok", "reading_ok")}
    return {"n": len(rows), "clips_per_request": clips, "pool": len(pool), "solved_share": SOLVED_SHARE,
            "overall": {m: agg(v) for m, v in every.items()}, "per_kind": out,
            "seconds": {"plan": round(plan_s, 2), "total": round(time.perf_counter() - t0, 2)}}



def _same_reading(top, gold: dict) -> bool:
    """Whether the planner's top reading is the gold one: kind and every slot (objects as a set)."""
    from builder.domains.shapes.world.video_programs import default_answer

    if top.kind != gold["kind"]:
        return False
    if top.kind in COLLISION_KINDS:
        pair = {o.as_tuple() for o in (top.a, top.b) if o is not None}
        return pair == {o for o in (gold["a"], gold["b"]) if o is not None}
    answer = gold["answer"] or default_answer(top.kind)
    frame = gold["frame"] if gold["frame"] is not None or top.kind != "box_at_frame" else "first"
    top_frame = top.frame if top.frame is not None or top.kind != "box_at_frame" else "first"
    return ({o.as_tuple() for o in top.objects} == set(gold["objects"]) and top.direction == gold["direction"]
            and (top.answer or default_answer(top.kind)) == answer and top_frame == frame)
