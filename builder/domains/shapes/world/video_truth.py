"""Ground truth of the newer video kinds, from a clip's scene graphs (``Clip.to_json``): its
objects, per-frame visible boxes and events. Named objects are (colour, shape, size) with None
matching anything (``video.fits``); an empty list of objects means every object.

* ``collision_count``: collision events involving the one named object, between two of several
  named objects, or all of them when none is named;
* ``collided_objects``: the objects that collide (with a named object, when objects are named);
* ``first_to_collide``: the named objects taking part in the earliest collision any of them takes
  part in;
* ``time_in_view``: frames (or seconds) in which a named object is visible;
* ``box_at_frame``: the visible box of each named object in a frame (first, last, the collision's,
  or a number).

Text answers name objects ("red circle") or colours ("red"), several joined with " and " in
alphabetical order; "none" when there is none. ``score_video`` scores them.
"""

from __future__ import annotations

from builder.core.metrics import FRAME_TOLERANCE, score
from builder.domains.shapes.world.video import fits


def _wanted(obj: dict, objects) -> bool:
    return not objects or any(fits(obj, w) for w in objects)


def _collisions(clip_json: dict) -> list[tuple[int, dict, dict]]:
    """(frame, object, object) of every collision event, earliest first."""
    objs = clip_json["objects"]
    return sorted((e["frame"], objs[e["objects"][0]], objs[e["objects"][1]])
                  for e in clip_json["events"] if e["type"] == "collision")


def _say(obj: dict, answer: str) -> str:
    return obj["color"] if answer == "color" else obj["name"]


def _join(names) -> str:
    return " and ".join(sorted(names)) if names else "none"


def collision_count(clip_json: dict, objects=()) -> int:
    """Collisions the one named object takes part in; with two or more named objects, those
    between two of them; with none, every collision."""
    count = 0
    for _, a, b in _collisions(clip_json):
        if len(objects) < 2:
            count += _wanted(a, objects) or _wanted(b, objects)
        else:
            count += any(fits(a, x) and fits(b, y) for x in objects for y in objects if x != y)
    return count


def collided_objects(clip_json: dict, objects=(), answer: str = "name") -> str:
    """The objects that collide with a named object (every object that collides when none is
    named), by name or colour, joined with " and "; "none"."""
    names = set()
    for _, a, b in _collisions(clip_json):
        for x, y in ((a, b), (b, a)):
            if not objects or _wanted(y, objects):
                names.add(_say(x, answer))
    return _join(names)


def first_to_collide(clip_json: dict, objects=(), answer: str = "name") -> str:
    """The named objects (every object when none is named) in the earliest collision any of them
    takes part in, by name or colour, joined with " and "; "none"."""
    for _, a, b in _collisions(clip_json):
        names = [_say(o, answer) for o in (a, b) if _wanted(o, objects)]
        if names:
            return _join(names)
    return "none"


def time_in_view(clip_json: dict, objects=(), answer: str = "frames") -> int | float:
    """Frames in which a named object (any object when none is named) is visible; with
    ``answer`` "seconds", that divided by the frame rate (2 decimals)."""
    objs = clip_json["objects"]
    frames = sum(any(_wanted(objs[o["id"]], objects) for o in graph) for graph in clip_json["frames"])
    return round(frames / clip_json["fps"], 2) if answer == "seconds" else frames


def frame_index(clip_json: dict, frame) -> int | None:
    """The frame a box request means: "first" / "last" of the clip, "collision" (the first
    collision's frame; None without one) or a frame number (None past the clip's end)."""
    n = clip_json["n_frames"]
    if frame == "first":
        return 0
    if frame == "last":
        return n - 1
    if frame == "collision":
        found = _collisions(clip_json)
        return found[0][0] if found else None
    return int(frame) if 0 <= int(frame) < n else None


def box_at_frame(clip_json: dict, objects=(), frame="first") -> list[list[int]]:
    """The visible box of each named object (every object when none is named) in ``frame``;
    an empty list when none is in view then."""
    f = frame_index(clip_json, frame)
    if f is None:
        return []
    objs = clip_json["objects"]
    return [list(o["box"]) for o in clip_json["frames"][f] if _wanted(objs[o["id"]], objects)]


def score_video(kind: str, value, expected, answer: str | None = None, fps: float = 25.0) -> bool:
    """Whether a program's ``value`` is right for ``expected`` under the kind's metric: the
    output kind's (``builder.core.metrics.score``), except time in view, scored within
    ``FRAME_TOLERANCE`` frames (in seconds: that many frame durations)."""
    from builder.domains.shapes.world.video_programs import VIDEO_KINDS

    if kind != "time_in_view":
        return score(VIDEO_KINDS[kind], value, expected)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if answer == "seconds":
        return abs(value - expected) * fps <= FRAME_TOLERANCE + 1e-6
    return value == int(value) and abs(value - expected) <= FRAME_TOLERANCE
