"""Video task kinds over shapes-world clips: queries, ground truth, reference programs and task cards.

Four kinds (the seeds' mobility use case, in the shapes world):

* ``collision_frame`` (output ``frame``, scored within 2 frames): when do two named objects collide?
* ``crossing_count`` (output ``count``): how many objects cross the vertical centre line?
* ``leaves`` (output ``bool``): does any object leave the frame?
* ``collision_summary`` (output ``summary``, scored field by field): which objects collide, at
  which frame, and which way each moved before and after.

Reference programs are written against ``builder.tools.api`` and see pixels only (through the
``track`` tool); ground truth comes from the clip's events.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from builder.world.video import (
    AFTER_FRAMES,
    any_leaves,
    collision_event,
    crossing_count,
    sample_clip,
    write_clip,
)

VIDEO_KINDS = {"collision_frame": "frame", "crossing_count": "count", "leaves": "bool",
               "collision_summary": "summary"}

QUERIES = {
    "collision_frame": "At which frame does the {a} collide with the {b}?",
    "crossing_count": "How many objects cross the vertical centre line?",
    "leaves": "Does any object leave the frame?",
    "collision_summary": "Summarise the collision: which objects, the frame, and how each moved before and after.",
}

PROGRAMS = {
    "collision_frame": '''def execute(video, query):
    # The objects the query names, found by colour (colours are unique within a clip; a track
    # may break into pieces), and the first frame where a piece of one touches the other.
    words = query.lower().replace("?", " ").replace(",", " ").split()
    tracks = video.track("object")
    colors = [w for w in words if w in [t.color for t in tracks]]
    if len(colors) < 2:
        return 0
    frames = []
    for a in tracks:
        for b in tracks:
            if a.color == colors[0] and b.color == colors[1]:
                f = first_contact(a, b)
                if f is not None:
                    frames.append(f)
    return min(frames) if frames else 0
''',
    "crossing_count": '''def execute(video):
    # Objects (by colour: a track may break into pieces) whose centre crosses x = width / 2.
    line = video.width / 2
    crossed = set()
    for t in video.track("object"):
        if t.crossings(line):
            crossed.add(t.color)
    return len(crossed)
''',
    "leaves": '''def execute(video):
    # A track that ends early at the border is an object leaving the frame.
    last = video.stop - 1
    for t in video.track("object"):
        if t.last_frame < last - 2 and t.touches_border(t.last_frame, video.width, video.height):
            return True
    return False
''',
    "collision_summary": '''def execute(video):
    # Every pair's first contact (boxes within 2 pixels) is a candidate. A collision turns both
    # objects round (an elastic exchange); a near miss passes by without turning. So the pair
    # whose objects reverse their motion over AFTER frames around the contact wins, the
    # earliest among equals. Each object's motion is then read before and after (contact
    # frames themselves are left out: touching boxes blur).
    tracks = video.track("object")
    best = None
    for i in range(len(tracks)):
        for j in range(i + 1, len(tracks)):
            a, b = tracks[i], tracks[j]
            if a.color == b.color:
                continue
            f = first_contact(a, b)
            if f is None:
                continue
            turned = 0
            for t in (a, b):
                vx0, vy0 = t.velocity(f - AFTER, f - 1)
                vx1, vy1 = t.velocity(f + 1, f + AFTER)
                if vx0 * vx1 + vy0 * vy1 < 0:
                    turned += 1
            if best is None or turned > best[0] or (turned == best[0] and f < best[1]):
                best = (turned, f, a, b)
    if best is None:
        return {"objects": [], "frame": 0, "before": {}, "after": {}}
    f, a, b = best[1], best[2], best[3]
    return {
        "objects": sorted([a.label, b.label]),
        "frame": f,
        "before": {a.label: a.direction(f - AFTER, f - 1), b.label: b.direction(f - AFTER, f - 1)},
        "after": {a.label: a.direction(f + 1, f + AFTER), b.label: b.direction(f + 1, f + AFTER)},
    }
'''.replace("AFTER", str(AFTER_FRAMES)),
}


def reference_program(kind: str) -> str:
    """The reference program of a video kind."""
    if kind not in VIDEO_KINDS:
        raise ValueError(f"unknown video kind {kind!r}; kinds: {', '.join(VIDEO_KINDS)}")
    return PROGRAMS[kind]


def video_example(clip_json: dict, kind: str) -> dict | None:
    """(query, expected, program) of ``kind`` for a clip, or None when the clip does not fit the kind
    (no collision for the collision kinds)."""
    if kind in ("collision_frame", "collision_summary"):
        ev = collision_event(clip_json)
        if ev is None:
            return None
        if kind == "collision_summary":
            return {"query": QUERIES[kind], "expected": clip_json["summary"], "program": reference_program(kind)}
        a, b = (clip_json["objects"][i]["name"] for i in ev["objects"])
        return {"query": QUERIES[kind].format(a=a, b=b), "expected": ev["frame"],
                "program": reference_program(kind)}
    if kind == "crossing_count":
        return {"query": QUERIES[kind], "expected": crossing_count(clip_json), "program": reference_program(kind)}
    if kind == "leaves":
        return {"query": QUERIES[kind], "expected": any_leaves(clip_json), "program": reference_program(kind)}
    raise ValueError(f"unknown video kind {kind!r}; kinds: {', '.join(VIDEO_KINDS)}")


def make_video_task_card(out_dir: str | Path, kind: str = "crossing_count", n: int = 6, seed: int = 0,
                         domain: str = "clean", size: int = 128, n_frames: int = 60,
                         name: str | None = None) -> Path:
    """Write ``n`` clips and a task card of ``kind`` over them; returns the card path.

    For the collision kinds every clip has a collision; a collision_frame example's query names
    its own pair.
    """
    from builder.core.taskcard import parse_task_card, save_task_card

    if kind not in VIDEO_KINDS:
        raise ValueError(f"kind must be one of {', '.join(VIDEO_KINDS)}, got {kind!r}")
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 23])
    collide = True if kind in ("collision_frame", "collision_summary") else 0.5
    examples = []
    while len(examples) < n:
        clip = sample_clip(rng, domain, size, n_frames, collision=collide)
        ex = video_example(clip.to_json(), kind)
        if ex is None:
            continue
        rel = f"clips/{len(examples):04d}.mp4"
        write_clip(clip, out / rel)
        examples.append({"id": f"clip{len(examples)}", "image": rel, "query": ex["query"], "expected": ex["expected"]})
    card = parse_task_card({
        "name": name or kind.replace("_", "-"),
        "description": f"Shapes-world dashcam stand-in: {QUERIES[kind].format(a='first object', b='second object')}",
        "output": VIDEO_KINDS[kind],
        "examples": examples,
    }, str(out / "task.yaml"))
    return save_task_card(card, out / "task.yaml")
