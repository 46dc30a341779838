"""Video task kinds over shapes-world clips: queries, ground truth, reference programs and task cards.

Four kinds (the seeds' mobility use case, in the shapes world):

* ``collision_frame`` (output ``frame``, scored within 2 frames): when do two named objects collide?
* ``crossing_count`` (output ``count``): how many objects cross the vertical centre line?
* ``leaves`` (output ``bool``): does any object leave the frame?
* ``collision_summary`` (output ``summary``, scored field by field): which objects collide, at
  which frame, and which way each moved before and after.
* ``collides`` (output ``bool``): does a named object collide (with a second named one, or with
  anything)? "Did the purple star get bumped?"
* ``first_to_leave`` (output ``text``): which object (its name, or its colour when asked "which
  colour") leaves the frame first; "none" when none does.

Reference programs are written against ``builder.tools.api`` and see pixels only (through the
``track`` tool); ground truth comes from the clip's events. The collision programs never read
the query: the objects it names are compiled in as constants (``reference_program(kind, a, b)``;
none named: any pair).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from builder.domains.shapes.vocab import parse_phrase
from builder.domains.shapes.world.cards import fits_balance
from builder.domains.shapes.world.video import (
    AFTER_FRAMES,
    any_leaves,
    collides,
    collision_event,
    crossing_count,
    first_to_leave,
    leave_edge,
    sample_clip,
    write_clip,
)

# Clips drawn (at most) for one card before giving up on balancing its answers.
MAX_CLIP_DRAWS = 2000
VIDEO_KINDS = {"collision_frame": "frame", "crossing_count": "count", "leaves": "bool",
               "collision_summary": "summary", "collides": "bool", "first_to_leave": "text"}

QUERIES = {
    "collision_frame": "At which frame does the {a} collide with the {b}?",
    "crossing_count": "How many objects cross the vertical centre line?",
    "leaves": "Does any object leave the frame?",
    "collision_summary": "Summarise the collision: which objects, the frame, and how each moved before and after.",
    "collides": "Does the {a} collide with the {b}?",
    "first_to_leave": "Which object leaves the frame first?",
}

# The collision kinds share one program: the objects the request names are compiled in as
# constants (colour, shape, size; None matches any object), so the program never reads the query.
_COLLISION = """def execute(video):
    # The objects the request names, compiled in as (colour, shape, size); None matches any.
    A = NAMED_A
    B = NAMED_B
    tracks = video.track("object")

    def named(want):
        # Every track that fits (a track may break into pieces). Colours are unique within a
        # clip, so a named colour decides (shape names can be wrong on a cluttered frame);
        # shape and size pick the tracks when no colour is named.
        color, shape, size = want
        if color is not None:
            return [t for t in tracks if t.color == color]
        return [t for t in tracks if shape in (None, t.shape) and size in (None, t.size)]

    # Every first contact (boxes within 2 pixels) of a pair that fits is a candidate. A collision
    # turns both objects round (an elastic exchange); a near miss passes by without turning. So
    # the pair whose objects reverse their motion over AFTER frames around the contact wins, the
    # earliest among equals.
    best = None
    for a in named(A):
        for b in named(B):
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
"""

_RESULTS = {
    "collision_frame": """    return best[1] if best is not None else 0
""",
    "collision_summary": """    if best is None:
        return {"objects": [], "frame": 0, "before": {}, "after": {}}
    # each object's motion before and after (contact frames left out: touching boxes blur)
    f, a, b = best[1], best[2], best[3]
    return {
        "objects": sorted([a.label, b.label]),
        "frame": f,
        "before": {a.label: a.direction(f - AFTER, f - 1), b.label: b.direction(f - AFTER, f - 1)},
        "after": {a.label: a.direction(f + 1, f + AFTER), b.label: b.direction(f + 1, f + AFTER)},
    }
""",
    "collides": """    # A contact after which both objects turn round is a collision; a near miss is not.
    return best is not None and best[0] == 2
""",
}

# Crossing and leaving programs take the objects the request names (a list of (colour, shape,
# size); empty: every object) and a direction (crossings: "right" is left to right; leaving: the
# edge), compiled in as constants like the collision kinds' objects.
_WANTED = """def execute(video):
    # The objects the request names, compiled in as (colour, shape, size); None matches any.
    # No names: every object.
    WANT = NAMED_LIST
    DIRECTION = NAMED_DIRECTION

    def wanted(t):
        # A named colour decides (colours are unique within a clip; shape names can be wrong on
        # a cluttered frame); shape and size decide when no colour is named.
        if not WANT:
            return True
        for color, shape, size in WANT:
            if color is not None and t.color == color:
                return True
            if color is None and shape in (None, t.shape) and size in (None, t.size):
                return True
        return False

"""

PROGRAMS = {
    "crossing_count": _WANTED + """    # Objects (by colour: a track may break into pieces) whose centre crosses x = width / 2
    # (DIRECTION "right": left to right, "left": right to left, None: either way).
    line = video.width / 2
    crossed = set()
    for t in video.track("object"):
        if wanted(t) and t.crossings(line, DIRECTION):
            crossed.add(t.color)
    return len(crossed)
""",
    "leaves": _WANTED + """    # A track that ends early at the border is an object leaving the frame (DIRECTION: the edge
    # it leaves through, None: any).
    last = video.stop - 1
    for t in video.track("object"):
        if not wanted(t) or t.last_frame >= last - 2:
            continue
        if t.touches_border(t.last_frame, video.width, video.height):
            if DIRECTION is None or t.exit_edge(video.width, video.height) == DIRECTION:
                return True
    return False
""",
    "first_to_leave": _WANTED + """    ANSWER = NAMED_ANSWER  # "name" ("red circle") or "color" ("red")
    # Of the tracks that end early at the border (through the DIRECTION edge, None: any), the one
    # that ends first; "none" when no object leaves.
    last = video.stop - 1
    first = None
    for t in video.track("object"):
        if not wanted(t) or t.last_frame >= last - 2:
            continue
        if not t.touches_border(t.last_frame, video.width, video.height):
            continue
        if DIRECTION is not None and t.exit_edge(video.width, video.height) != DIRECTION:
            continue
        if first is None or t.last_frame < first.last_frame:
            first = t
    if first is None:
        return "none"
    return first.color if ANSWER == "color" else first.label
""",
}
ANSWERS = ("name", "color")  # what first_to_leave answers with
CROSS_DIRECTIONS = ("left", "right")  # which way a crossing goes
EDGES = ("left", "right", "top", "bottom")  # which edge an object leaves through

COLLISION_KINDS = ("collision_frame", "collision_summary", "collides")
ANY = (None, None, None)


def _named(obj) -> tuple:
    """(colour, shape, size) of a named object: a tuple, a dict with those keys, a colour word or
    a name such as "red circle"; None is any object."""
    if obj is None:
        return ANY
    if isinstance(obj, str):
        spec = parse_phrase(obj)
        obj = (spec.color, spec.shape, spec.size)
    elif isinstance(obj, dict):
        obj = (obj.get("color"), obj.get("shape"), obj.get("size"))
    obj = tuple(None if v is None else str(v) for v in obj)
    if len(obj) != 3:
        raise ValueError(f"a named object is (colour, shape, size), got {obj!r}")
    return obj


def reference_program(kind: str, a=None, b=None, objects=(), direction: str | None = None,
                      answer: str = "name") -> str:
    """The reference program of a video kind. For the collision kinds, ``a`` and ``b`` are the
    objects the request names (colour, shape, size; a name such as "red circle"; None: any
    object), compiled into the program as constants ``A`` and ``B``. For crossings and leaving,
    ``objects`` lists the objects that count (empty: every object) and ``direction`` is the
    crossing's direction ("right": left to right, "left") or the edge left through ("left",
    "right", "top", "bottom"); None is either. ``first_to_leave`` takes the same filters as leaving
    and ``answer`` ("name" or "color")."""
    if kind not in VIDEO_KINDS:
        raise ValueError(f"unknown video kind {kind!r}; kinds: {', '.join(VIDEO_KINDS)}")
    if kind not in COLLISION_KINDS:
        if a is not None or b is not None:
            raise ValueError(f"{kind} programs take objects as objects=[...], not a and b")
        allowed = CROSS_DIRECTIONS if kind == "crossing_count" else EDGES  # leaving, first to leave
        if direction not in (None, *allowed):
            raise ValueError(f"{kind} direction must be one of {', '.join(allowed)} or None, got {direction!r}")
        if answer not in ANSWERS or (answer != "name" and kind != "first_to_leave"):
            raise ValueError(f"answer must be one of {', '.join(ANSWERS)} (first_to_leave only), got {answer!r}")
        named = "[" + ", ".join(_literal(_named(o)) for o in objects) + "]"
        return (PROGRAMS[kind].replace("NAMED_LIST", named).replace("NAMED_ANSWER", json.dumps(answer))
                .replace("NAMED_DIRECTION", "None" if direction is None else json.dumps(direction)))
    if objects or direction is not None:
        raise ValueError(f"{kind} programs take named objects as a and b")
    return ((_COLLISION + _RESULTS[kind]).replace("AFTER", str(AFTER_FRAMES))
            .replace("NAMED_A", _literal(_named(a))).replace("NAMED_B", _literal(_named(b))))


def _literal(obj: tuple) -> str:
    return "(" + ", ".join("None" if v is None else json.dumps(v) for v in obj) + ")"


def video_example(clip_json: dict, kind: str, objects=(), direction: str | None = None) -> dict | None:
    """(query, expected, program) of ``kind`` for a clip, or None when the clip does not fit the kind
    (no collision for the collision kinds). Crossings and leaving take ``objects`` and
    ``direction`` filters (``reference_program``); the query then names them."""
    if kind == "collides":
        return _collides_example(clip_json, objects, direction)
    if kind in ("collision_frame", "collision_summary"):
        if objects or direction is not None:
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
    program = reference_program(kind, objects=objects, direction=direction)
    if kind == "crossing_count":
        return {"query": filtered_query(kind, objects, direction),
                "expected": crossing_count(clip_json, objects, direction), "program": program}
    if kind == "leaves":
        return {"query": filtered_query(kind, objects, direction),
                "expected": any_leaves(clip_json, objects, direction), "program": program}
    if kind == "first_to_leave":
        expected = first_to_leave(clip_json, objects, direction)
        if expected is None:  # two objects leave within 3 frames: too close to call
            return None
        return {"query": filtered_query(kind, objects, direction), "expected": expected, "program": program}
    raise ValueError(f"unknown video kind {kind!r}; kinds: {', '.join(VIDEO_KINDS)}")


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


def filtered_query(kind: str, objects=(), direction: str | None = None) -> str:
    """The plain request of a crossing or leaving example with its filters ("How many blue objects
    cross the vertical centre line from left to right?"); the unfiltered kinds' ``QUERIES``."""
    if not objects and direction is None:
        return QUERIES[kind]
    if kind == "crossing_count":
        names = " or ".join(_phrase(o, True) for o in objects) or "objects"
        way = {None: "", "right": " from left to right", "left": " from right to left"}[direction]
        return f"How many {names} cross the vertical centre line{way}?"
    if kind == "first_to_leave":
        among = f" of the {' and '.join(_phrase(o, True) for o in objects)}" if objects else ""
        edge = "" if direction is None else f" through the {direction} edge"
        return f"Which object{among} leaves the frame first{edge}?"
    names = " or the ".join(_phrase(o, False) for o in objects)
    edge = "" if direction is None else f" through the {direction} edge"
    return f"Does {'the ' + names if names else 'any object'} leave the frame{edge}?"


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
    examples = []
    draws = 0
    while len(examples) < n:
        draws += 1
        if draws > MAX_CLIP_DRAWS:
            raise ValueError(f"no balanced {kind} card of {n} clips in {MAX_CLIP_DRAWS} draws; ask for fewer clips")
        clip = sample_clip(rng, domain, size, n_frames, collision=collide)
        ex = video_example(clip.to_json(), kind)
        # Balanced answers: no constant answer passes more than half the examples.
        if ex is None or not fits_balance(VIDEO_KINDS[kind], [e["expected"] for e in examples], ex["expected"], n):
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
