"""Reference programs of the shapes-world video kinds, as program source.

Every program is written against ``builder.tools.api`` and sees pixels only (through the
``track`` tool). What a request names is compiled in as constants, so a program never reads the
query:

* the collision kinds with a named pair (``collision_frame``, ``collision_summary``,
  ``collides``) take ``A`` and ``B``, each (colour, shape, size) with None matching anything;
* every other kind takes ``WANT``, a list of named objects (empty: every object), and where the
  kind has one, ``DIRECTION`` (a crossing's way or the edge left through), ``ANSWER`` (a name or
  a colour; frames or seconds) and ``FRAME`` (first, last, the collision's, or a frame number).

``reference_program`` builds the source; ``builder.domains.shapes.world.video_tasks`` pairs it
with queries and ground truth.
"""

from __future__ import annotations

import json

from builder.domains.shapes.vocab import parse_phrase
from builder.domains.shapes.world.video import AFTER_FRAMES

VIDEO_KINDS = {"collision_frame": "frame", "crossing_count": "count", "leaves": "bool",
               "collision_summary": "summary", "collides": "bool", "first_to_leave": "text",
               "collision_count": "count", "collided_objects": "text", "first_to_collide": "text",
               "time_in_view": "count", "box_at_frame": "boxes"}
COLLISION_KINDS = ("collision_frame", "collision_summary", "collides")  # a named pair A, B
# The answer slot: what a which-object kind names objects by, and the unit of time in view
# (the first value is the default).
ANSWERS = {"first_to_leave": ("name", "color"), "first_to_collide": ("name", "color"),
           "collided_objects": ("name", "color"), "time_in_view": ("frames", "seconds")}
FRAMES = ("first", "last", "collision")  # box_at_frame's named frames (or a frame number)
CROSS_DIRECTIONS = ("left", "right")  # which way a crossing goes
EDGES = ("left", "right", "top", "bottom")  # which edge an object leaves through
DIRECTED = {"crossing_count": CROSS_DIRECTIONS, "leaves": EDGES, "first_to_leave": EDGES}
ANY = (None, None, None)

# ---- the collision kinds with a named pair ---------------------------------------------------
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

# ---- the kinds over a list of named objects ---------------------------------------------------
_WANTED = """def execute(video):
    # The objects the request names, compiled in as (colour, shape, size); None matches any.
    # No names: every object.
    WANT = NAMED_LIST
    DIRECTION = NAMED_DIRECTION
    ANSWER = NAMED_ANSWER
    FRAME = NAMED_FRAME

    def fits(t, want):
        # A named colour decides (colours are unique within a clip; shape names can be wrong on
        # a cluttered frame); shape and size decide when no colour is named.
        color, shape, size = want
        if color is not None:
            return t.color == color
        return shape in (None, t.shape) and size in (None, t.size)

    def wanted(t):
        return not WANT or any(fits(t, w) for w in WANT)

"""

# Every collision in the clip: a first contact (boxes within 2 pixels) of two objects (by colour:
# a track may break into pieces) after which both turn round. A near miss passes by unturned.
_COLLISIONS = """    tracks = video.track("object")

    def turned_round(a, b, near, touch):
        # motion before the boxes come near (within 2 pixels) against motion from 2 frames after
        # they touch: slow objects come near a few frames before they meet
        turned = 0
        for t in (a, b):
            vx0, vy0 = t.velocity(near - AFTER, near - 1)
            vx1, vy1 = t.velocity(touch + 2, touch + 1 + AFTER)
            if vx0 * vx1 + vy0 * vy1 < 0:
                turned += 1
        return turned == 2

    contacts = {}  # (colour, colour) -> (frame, track, track), the earliest contact that turns both
    for i, a in enumerate(tracks):
        for b in tracks[i + 1:]:
            if a.color == b.color:
                continue
            near = first_contact(a, b)
            if near is None:
                continue
            f = first_contact(a, b, 0)  # the frame the boxes meet
            f = near if f is None else f
            if not turned_round(a, b, near, f):
                continue
            pair = tuple(sorted([a.color, b.color]))
            if pair not in contacts or f < contacts[pair][0]:
                contacts[pair] = (f, a, b) if a.color == pair[0] else (f, b, a)
    collisions = sorted(contacts.values(), key=lambda c: c[0])

    def say(t):
        return t.color if ANSWER == "color" else t.label

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
    "first_to_leave": _WANTED + """    # Of the tracks that end early at the border (through the DIRECTION edge, None: any), the one
    # that ends first, named by ANSWER ("name": "red circle", "color": "red"); "none" when no
    # object leaves.
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
    "collision_count": _WANTED + _COLLISIONS + """    # One named object: the collisions it takes part in; two or more: those between two of
    # them; none: every collision.
    count = 0
    for f, a, b in collisions:
        if len(WANT) < 2:
            count += wanted(a) or wanted(b)
        else:
            count += any(fits(a, x) and fits(b, y) for x in WANT for y in WANT if x != y)
    return count
""",
    "collided_objects": _WANTED + _COLLISIONS + """    # The objects that collide (with a named one when the request names objects: what the named
    # objects hit), named by ANSWER and joined with "and" in alphabetical order; "none" when none.
    names = set()
    for f, a, b in collisions:
        for x, y in ((a, b), (b, a)):
            if not WANT or wanted(y):
                names.add(say(x))
    return " and ".join(sorted(names)) if names else "none"
""",
    "first_to_collide": _WANTED + _COLLISIONS + """    # The earliest collision a wanted object takes part in: the wanted objects in it, named by
    # ANSWER and joined with "and" in alphabetical order; "none" when no wanted object collides.
    for f, a, b in collisions:
        names = sorted(say(t) for t in (a, b) if wanted(t))
        if names:
            return " and ".join(names)
    return "none"
""",
    "time_in_view": _WANTED + """    # Frames in which a wanted object is seen (any object when none is named); ANSWER
    # "seconds" divides by the frame rate.
    seen = set()
    for t in video.track("object"):
        if wanted(t):
            seen.update(t.frames)
    if ANSWER == "seconds":
        return round(len(seen) / video.fps, 2)
    return len(seen)
""",
    "box_at_frame": _WANTED + _COLLISIONS + """    # The box of each wanted object (every object when none is named) in the FRAME: "first" or
    # "last" of the clip, "collision" (the first collision's contact frame), or a frame number;
    # none when no such frame or the object is not in view then.
    if FRAME == "first":
        f = video.start
    elif FRAME == "last":
        f = video.stop - 1
    elif FRAME == "collision":
        f = collisions[0][0] if collisions else None
    else:
        f = FRAME
    boxes = {}
    for t in tracks:
        box = t.box_at(f) if f is not None else None
        if box is not None and wanted(t):
            boxes.setdefault(t.color, box)  # one box per object
    return list(boxes.values())
""",
}


def named(obj) -> tuple:
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


def default_answer(kind: str) -> str:
    """The answer slot's default for a kind ("name", or "frames" for time in view)."""
    return ANSWERS.get(kind, ("name",))[0]


def check_slots(kind: str, direction=None, answer: str | None = None, frame=None) -> str:
    """Validate a reading's slots for ``kind``; returns the answer (its default when None)."""
    allowed = DIRECTED.get(kind, ())
    if direction not in (None, *allowed):
        ways = ", ".join(allowed) or "no direction"
        raise ValueError(f"{kind} direction must be one of {ways} or None, got {direction!r}")
    answers = ANSWERS.get(kind, ("name",))
    answer = answers[0] if answer is None else answer
    if answer not in answers:
        raise ValueError(f"{kind} answer must be one of {', '.join(answers)}, got {answer!r}")
    if kind == "box_at_frame":
        if frame not in FRAMES and not (isinstance(frame, int) and not isinstance(frame, bool) and frame >= 0):
            raise ValueError(f"box_at_frame frame must be one of {', '.join(FRAMES)} or a frame number, got {frame!r}")
    elif frame is not None:
        raise ValueError(f"{kind} programs take no frame")
    return answer


def reference_program(kind: str, a=None, b=None, objects=(), direction: str | None = None,
                      answer: str | None = None, frame=None) -> str:
    """The reference program of a video kind. For the collision kinds with a named pair, ``a`` and
    ``b`` are the objects the request names (colour, shape, size; a name such as "red circle";
    None: any object), compiled in as ``A`` and ``B``. Every other kind takes ``objects``, the
    objects that count (empty: every object); crossings take a ``direction`` ("right": left to
    right, "left"), leaving the edge left through ("left", "right", "top", "bottom"), None
    either; the which-object kinds an ``answer`` ("name" or "color"), time in view its unit
    ("frames" or "seconds"), and ``box_at_frame`` a ``frame`` ("first", "last", "collision" or a
    frame number; default "first")."""
    if kind not in VIDEO_KINDS:
        raise ValueError(f"unknown video kind {kind!r}; kinds: {', '.join(VIDEO_KINDS)}")
    if kind in COLLISION_KINDS:
        if objects or direction is not None or frame is not None or answer not in (None, "name"):
            raise ValueError(f"{kind} programs take named objects as a and b, and no other slot")
        return ((_COLLISION + _RESULTS[kind]).replace("AFTER", str(AFTER_FRAMES))
                .replace("NAMED_A", _literal(named(a))).replace("NAMED_B", _literal(named(b))))
    if a is not None or b is not None:
        raise ValueError(f"{kind} programs take objects as objects=[...], not a and b")
    if kind == "box_at_frame" and frame is None:
        frame = "first"
    answer = check_slots(kind, direction, answer, frame)
    objects = "[" + ", ".join(_literal(named(o)) for o in objects) + "]"
    return (PROGRAMS[kind].replace("AFTER", str(AFTER_FRAMES)).replace("NAMED_LIST", objects)
            .replace("NAMED_ANSWER", json.dumps(answer)).replace("NAMED_FRAME", _frame_literal(frame))
            .replace("NAMED_DIRECTION", "None" if direction is None else json.dumps(direction)))


def _frame_literal(frame) -> str:
    return "None" if frame is None else json.dumps(frame)


def _literal(obj: tuple) -> str:
    return "(" + ", ".join("None" if v is None else json.dumps(v) for v in obj) + ")"
