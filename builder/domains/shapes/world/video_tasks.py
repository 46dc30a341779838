"""Video task kinds over shapes-world clips: queries, ground truth, reference programs and task cards.

The kinds (the seeds' mobility use case, in the shapes world), with their output kinds:

* ``collision_frame`` (``frame``, scored within 2 frames): when do two named objects collide?
* ``crossing_count`` (``count``): how many (named) objects cross the vertical centre line (a way)?
* ``leaves`` (``bool``): does any (named) object leave the frame (through an edge)?
* ``collision_summary`` (``summary``, scored field by field): which objects collide, at which
  frame, and which way each moved before and after.
* ``collides`` (``bool``): does a named object collide (with a second named one, or anything)?
* ``first_to_leave`` (``text``): which object (its name, or its colour when asked "which
  colour") leaves the frame first; "none" when none does.
* ``collision_count`` (``count``): how many collisions (of a named object; between two named ones)?
* ``collided_objects`` (``text``): which objects collide (with a named one)? "none" when none.
* ``first_to_collide`` (``text``): which (named) objects take part in the earliest collision?
* ``time_in_view`` (``count``): for how many frames (or seconds) is a named object in view?
  Scored within 2 frames (``video_truth.score_video``).
* ``box_at_frame`` (``boxes``, IoU >= 0.5): the box of a named object in the first or last frame,
  the collision frame, or a frame number.

Reference programs (``video_programs``) are written against ``builder.tools.api`` and see pixels
only (through the ``track`` tool); ground truth comes from the clip's events and scene graphs
(``video`` and ``video_truth``). What a request names is compiled into the program as constants.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from builder.domains.shapes.world import video_truth
from builder.domains.shapes.world.cards import fits_balance
from builder.domains.shapes.world.scene import COLORS
from builder.domains.shapes.world.video import (
    any_leaves,
    collides,
    collision_event,
    crossing_count,
    first_to_leave,
    leave_edge,
    sample_clip,
    write_clip,
)
from builder.domains.shapes.world.video_programs import (
    ANSWERS,
    ANY,
    COLLISION_KINDS,
    CROSS_DIRECTIONS,
    EDGES,
    FRAMES,
    VIDEO_KINDS,
    default_answer,
    reference_program,
)
from builder.domains.shapes.world.video_programs import named as _named

__all__ = ["ANSWERS", "ANY", "COLLISION_KINDS", "CROSS_DIRECTIONS", "EDGES", "FRAMES", "QUERIES", "VIDEO_KINDS",
           "filtered_query", "make_video_task_card", "random_filter", "reference_program", "video_example"]

# Clips drawn (at most) for one card before giving up on balancing its answers.
MAX_CLIP_DRAWS = 2000

QUERIES = {
    "collision_frame": "At which frame does the {a} collide with the {b}?",
    "crossing_count": "How many objects cross the vertical centre line?",
    "leaves": "Does any object leave the frame?",
    "collision_summary": "Summarise the collision: which objects, the frame, and how each moved before and after.",
    "collides": "Does the {a} collide with the {b}?",
    "first_to_leave": "Which object leaves the frame first?",
    "collision_count": "How many collisions are there?",
    "collided_objects": "Which objects collide?",
    "first_to_collide": "Which object collides first?",
    "time_in_view": "For how many frames is an object in view?",
    "box_at_frame": "Give the box of every object in the first frame.",
}
# the kinds over a list of named objects whose ground truth is in ``video_truth``
TRUTH_KINDS = ("collision_count", "collided_objects", "first_to_collide", "time_in_view", "box_at_frame")


def ground_truth(clip_json: dict, kind: str, a=None, b=None, objects=(), direction: str | None = None,
                 answer: str | None = None, frame=None):
    """The expected answer of a reading on a clip (the slots as for ``reference_program``), or
    None when the clip does not decide it (no collision for a collision's frame or summary; two
    objects leaving within 3 frames for first to leave)."""
    objects = [_named(o) for o in objects]
    answer = default_answer(kind) if answer is None else answer
    if kind in COLLISION_KINDS:
        if kind == "collides":
            return collides(clip_json, _named(a), None if b is None else _named(b))
        ev = collision_event(clip_json)
        if ev is None:
            return None
        return ev["frame"] if kind == "collision_frame" else clip_json["summary"]
    if kind == "crossing_count":
        return crossing_count(clip_json, objects, direction)
    if kind == "leaves":
        return any_leaves(clip_json, objects, direction)
    if kind == "first_to_leave":
        return first_to_leave(clip_json, objects, direction, answer)
    if kind == "collision_count":
        return video_truth.collision_count(clip_json, objects)
    if kind in ("collided_objects", "first_to_collide", "time_in_view"):
        return getattr(video_truth, kind)(clip_json, objects, answer)
    if kind == "box_at_frame":
        return video_truth.box_at_frame(clip_json, objects, "first" if frame is None else frame)
    raise ValueError(f"unknown video kind {kind!r}; kinds: {', '.join(VIDEO_KINDS)}")


def video_example(clip_json: dict, kind: str, objects=(), direction: str | None = None,
                  answer: str | None = None, frame=None) -> dict | None:
    """(query, expected, program) of ``kind`` for a clip, or None when the clip does not decide
    it (``ground_truth``). The kinds over named objects take ``objects``, ``direction``,
    ``answer`` and ``frame`` slots (``reference_program``); the query then names them. A
    collision frame names the clip's own pair; ``collides`` takes one or two ``objects``."""
    if kind == "collides":
        return _collides_example(clip_json, objects, direction)
    if kind in ("collision_frame", "collision_summary"):
        if objects or direction is not None or answer is not None or frame is not None:
            raise ValueError(f"{kind} examples take no filters")
        ev = collision_event(clip_json)
        if ev is None:
            return None
        if kind == "collision_summary":
            return {"query": QUERIES[kind], "expected": clip_json["summary"], "program": reference_program(kind)}
        a, b = (clip_json["objects"][i]["name"] for i in ev["objects"])
        return {"query": QUERIES[kind].format(a=a, b=b), "expected": ev["frame"],
                "program": reference_program(kind, a, b)}
    objects = [_named(o) for o in objects]
    if kind == "box_at_frame" and frame is None:
        frame = "first"
    program = reference_program(kind, objects=objects, direction=direction, answer=answer, frame=frame)
    expected = ground_truth(clip_json, kind, objects=objects, direction=direction, answer=answer, frame=frame)
    if expected is None:  # first to leave: two objects leave within 3 frames, too close to call
        return None
    return {"query": filtered_query(kind, objects, direction, answer, frame), "expected": expected,
            "program": program}


def _collides_example(clip_json: dict, objects, direction) -> dict:
    """A collides example: ``objects`` names one or two objects (default: the colliding pair, or
    the first two objects when nothing collides)."""
    if direction is not None:
        raise ValueError("collides examples take no direction")
    objs = clip_json["objects"]
    if not objects:
        ev = collision_event(clip_json)
        pair = ev["objects"] if ev else [0, 1]
        objects = [(objs[i]["color"], objs[i]["shape"], None) for i in pair]
    if not 1 <= len(objects) <= 2:
        raise ValueError(f"collides examples name one or two objects, got {len(objects)}")
    a, b = (_named(o) for o in [*objects, None][:2])
    query = (QUERIES["collides"].format(a=_phrase(a, False), b=_phrase(b, False)) if objects[1:] else
             f"Does the {_phrase(a, False)} collide with anything?")
    return {"query": query, "expected": collides(clip_json, a, None if b == ANY else b),
            "program": reference_program("collides", a, None if b == ANY else b)}


def _phrase(obj: tuple, plural: bool) -> str:
    color, shape, size = obj
    noun = (shape + "s" if plural else shape) if shape else ("objects" if plural else "object")
    return " ".join(w for w in (size, color, noun) if w)


def filtered_query(kind: str, objects=(), direction: str | None = None, answer: str | None = None,
                   frame=None) -> str:
    """The plain request of an example with its slots ("How many blue objects cross the vertical
    centre line from left to right?", "For how many seconds is the red circle in view?"); the
    kind's ``QUERIES`` without any."""
    answer = default_answer(kind) if answer is None else answer
    if not objects and direction is None and answer == default_answer(kind) and frame in (None, "first"):
        return QUERIES[kind]
    if kind == "crossing_count":
        names = " or ".join(_phrase(o, True) for o in objects) or "objects"
        way = {None: "", "right": " from left to right", "left": " from right to left"}[direction]
        return f"How many {names} cross the vertical centre line{way}?"
    edge = "" if direction is None else f" through the {direction} edge"
    which = "Which colour" if answer == "color" else "Which object"
    if kind == "first_to_leave":
        among = f" of the {' and '.join(_phrase(o, True) for o in objects)}" if objects else ""
        return f"{which}{among} leaves the frame first{edge}?"
    if kind == "leaves":
        names = " or the ".join(_phrase(o, False) for o in objects)
        return f"Does {'the ' + names if names else 'any object'} leave the frame{edge}?"
    names = " and the ".join(_phrase(o, False) for o in objects)
    if kind == "collision_count":
        between = " between the " if len(objects) > 1 else " involving the "
        return f"How many collisions are there{between + names if names else ''}?"
    if kind == "collided_objects":
        return f"{which} collides with the {names}?" if names else f"{which}s collide?"
    if kind == "first_to_collide":
        among = f" of the {' and the '.join(_phrase(o, False) for o in objects)}" if objects else ""
        return f"{which}{among} collides first?"
    if kind == "time_in_view":
        return f"For how many {answer} is the {names or 'any object'} in view?"
    if kind == "box_at_frame":
        when = {"first": "in the first frame", "last": "in the last frame", "collision": "at the collision"}
        return f"Give the box of the {names or 'objects'} {when.get(frame, f'at frame {frame}')}."
    raise ValueError(f"{kind} examples take no filters")


def random_filter(clip_json: dict, kind: str, rng: np.random.Generator) -> tuple[list, str | None]:
    """A filter for a crossing or leaving example, drawn from the clip's own objects: one object
    by colour (with its shape half the time), every object of a shape or a size, and a direction
    half the time (a third of crossing filters have no object, only a direction). Half the time the
    object is one the event happens to (and then half the directions are the event's own). For
    ``collides``: one or two objects (half the time of the colliding pair), no direction."""
    objs = clip_json["objects"]
    if kind == "collides":  # the colliding pair or one of it half the time, else any one or two objects
        ev = collision_event(clip_json)
        ids = list(ev["objects"]) if ev and rng.random() < 0.5 else [int(i) for i in rng.permutation(len(objs))[:2]]
        ids = ids[:1] if rng.random() < 0.3 else ids
        return [(objs[i]["color"], objs[i]["shape"] if rng.random() < 0.5 else None, None) for i in ids], None
    if kind == "first_to_leave":  # every object of a shape or a size, or none; an edge a third of the time
        o = objs[int(rng.integers(len(objs)))]
        pick = int(rng.integers(3))
        objects = [[(None, o["shape"], None)], [(None, None, o["size"])], []][pick]
        return objects, (str(rng.choice(EDGES)) if rng.random() < 1 / 3 else None)
    event = "cross" if kind == "crossing_count" else "leave"
    movers = [e for e in clip_json["events"] if e["type"] == event]
    # half the time an object the event happens to, so that "yes" and non-zero answers are common
    ev = movers[int(rng.integers(len(movers)))] if movers and rng.random() < 0.5 else None
    o = objs[ev["object"] if ev else int(rng.integers(len(objs)))]
    pick = int(rng.integers(4))
    if pick == 0:
        objects = [(o["color"], None, None)]
    elif pick == 1:
        objects = [(o["color"], o["shape"], None)]
    elif pick == 2:
        objects = [(None, o["shape"], None)]
    else:
        objects = [(None, None, o["size"])]
    ways = CROSS_DIRECTIONS if kind == "crossing_count" else EDGES
    direction = str(rng.choice(ways)) if rng.random() < 0.5 else None
    if direction is not None and ev is not None and rng.random() < 0.5:  # the event's own way
        direction = ev["direction"] if kind == "crossing_count" else leave_edge(clip_json, ev)
    if kind == "crossing_count" and rng.random() < 1 / 3:
        objects, direction = [], str(rng.choice(ways))
    return objects, direction


def make_video_task_card(out_dir: str | Path, kind: str = "crossing_count", n: int = 6, seed: int = 0,
                         domain: str = "clean", size: int = 128, n_frames: int = 60,
                         name: str | None = None) -> Path:
    """Write ``n`` clips and a task card of ``kind`` over them; returns the card path.

    For the collision kinds every clip has a collision; a collision_frame example's query names
    its own pair. The answers are balanced (``cards.fits_balance``): no constant answer (0, no,
    frame 20) passes more than half the examples.
    """
    from builder.core.taskcard import parse_task_card, save_task_card

    if kind not in VIDEO_KINDS:
        raise ValueError(f"kind must be one of {', '.join(VIDEO_KINDS)}, got {kind!r}")
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 23])
    collide = True if kind in ("collision_frame", "collision_summary") else 0.5  # collides: half do
    # Time in view and boxes name one object for the whole card (one program answers every
    # example): a colour, drawn per card; boxes in the last frame (absent when it left).
    slots: dict = {}
    if kind in ("time_in_view", "box_at_frame"):
        slots["objects"] = [(str(rng.choice(sorted(COLORS))), None, None)]
        slots["frame"] = "last" if kind == "box_at_frame" else None
    # Balanced as: time in view within 2 frames (its metric), a collision count as yes / no (the
    # world plans at most one collision), a box by its value (a constant box fits few clips;
    # no box, when the object is gone, at most half).
    balance_as = {"time_in_view": "frame", "collision_count": "bool", "box_at_frame": "text"}.get(kind, VIDEO_KINDS[kind])
    examples = []
    draws = 0
    while len(examples) < n:
        draws += 1
        if draws > MAX_CLIP_DRAWS:
            raise ValueError(f"no balanced {kind} card of {n} clips in {MAX_CLIP_DRAWS} draws; ask for fewer clips")
        clip = sample_clip(rng, domain, size, n_frames, collision=collide)
        ex = video_example(clip.to_json(), kind, **slots)
        # Balanced answers: no constant answer passes more than half the examples.
        if ex is None or not fits_balance(balance_as, [e["expected"] for e in examples], ex["expected"], n):
            continue
        rel = f"clips/{len(examples):04d}.mp4"
        write_clip(clip, out / rel)
        examples.append({"id": f"clip{len(examples)}", "image": rel, "query": ex["query"], "expected": ex["expected"]})
    query = examples[0]["query"] if slots else QUERIES[kind].format(a="first object", b="second object")
    card = parse_task_card({
        "name": name or kind.replace("_", "-"),
        "description": f"Shapes-world dashcam stand-in: {query}",
        "output": VIDEO_KINDS[kind],
        "metric": "frame_within_2" if kind == "time_in_view" else None,
        "examples": examples,
    }, str(out / "task.yaml"))
    return save_task_card(card, out / "task.yaml")
