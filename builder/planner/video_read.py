"""What a video request says besides its kind: the objects that count, a direction, and the words
the video planner cannot read.

* **Objects** (``filter_objects``): the named objects of ``builder.planner.video.named_objects``,
  plus a size over a generic noun ("large objects", "the small shapes"), which names every
  object of that size. Crossing and leaving programs count only these (none: every object).
* **Direction** (``read_direction``): for crossings, which way ("left to right", "from the right",
  "rightwards" -> ``"right"``); for leaving, the edge ("through the left edge", "off the top" ->
  ``"left"``, ``"top"``). "left" as the verb ("has anything left the frame") is not a direction: a
  direction word follows a preposition or article, or precedes edge/side/border/to.
* **Unread words** (``unread_words``): content words that are neither stop words, nor object or
  direction words, nor (by a light stem) words of the planner's training phrasings. The planner
  refuses a request its scope head doubts when two or more words are unread, and names them.
* **Off-topic words** (``off_topic_words``): words of what no kind expresses (speed, spinning,
  bouncing off walls, changing colour, entering, editing the clip...). The planner refuses a
  request using one unless its scope head is sure of it.
* **Answer and frame** (``read_answer``, ``read_frame``): name or colour for the which-object
  kinds, frames or seconds for time in view; the frame a box is asked at (first, last, the
  collision's, a number).
"""

from __future__ import annotations

import re

from builder.planner.compose.parse import STOPWORDS
from builder.planner.video_phrasings import PHRASINGS

GENERIC_NOUNS = frozenset({"object", "objects", "shape", "shapes", "thing", "things", "one", "ones", "item", "items"})
FILLER = frozenset({"coloured", "colored", "colour", "color", "shaped", "sized"})  # "the red coloured circle"
EDGE_WORDS = {"left": "left", "right": "right", "top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
_BEFORE_DIRECTION = frozenset({"the", "to", "from", "on", "at", "via", "through", "towards", "toward", "its", "far",
                               "off", "out"})
_AFTER_DIRECTION = frozenset({"edge", "edges", "side", "sides", "border", "hand", "to", "half", "boundary"})
_SUFFIXES = ("ing", "ed", "es", "s", "ly")


def stem(word: str) -> str:
    """A light stem ("crossing", "crossed", "crosses" -> "cross") for matching training words."""
    w = word.lower()
    for suf in _SUFFIXES:
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            return w[: -len(suf)]
    return w


def _direction_words(words: list[str]) -> list[tuple[int, str]]:
    """(index, direction) of each word used as a direction: rightward(s)/leftward(s), or
    left/right/top/bottom/upper/lower after a preposition or article or before edge/side/to."""
    out = []
    for i, w in enumerate(words):
        low = w.lower()
        if low in ("rightward", "rightwards", "eastward", "eastwards"):
            out.append((i, "right"))
        elif low in ("leftward", "leftwards", "westward", "westwards"):
            out.append((i, "left"))
        elif low in EDGE_WORDS:
            prev = words[i - 1].lower() if i else ""
            nxt = words[i + 1].lower() if i + 1 < len(words) else ""
            if prev in _BEFORE_DIRECTION or nxt in _AFTER_DIRECTION or low != "left":
                out.append((i, EDGE_WORDS[low]))
    return out


def read_direction(words: list[str], kind: str) -> tuple[str | None, set[int]]:
    """The direction a crossing (``"left"``/``"right"``: the way it goes) or leaving request (the
    edge) asks for, and the indices of the words read for it; (None, set()) for other kinds."""
    found = _direction_words(words)
    if kind == "crossing_count":
        found = [(i, d) for i, d in found if d in ("left", "right")]
        if not found:
            return None, set()
        i, d = found[-1]  # "from left to right": the later word is where it goes
        if len(found) == 1 and i > 0 and words[i - 1].lower() == "from":
            d = "left" if d == "right" else "right"  # "from the right" alone: it goes left
        elif len(found) == 1 and i > 1 and words[i - 2].lower() == "from" and words[i - 1].lower() == "the":
            d = "left" if d == "right" else "right"
        return d, {j for j, _ in found}
    if kind in ("leaves", "first_to_leave") and found:
        return found[-1][1], {j for j, _ in found}
    return None, set()


COLOUR_ANSWER = frozenset({"colour", "color", "colours", "colors"})
SECONDS = frozenset({"second", "seconds", "sec", "secs"})
NAME_ANSWER_KINDS = ("first_to_leave", "first_to_collide", "collided_objects")


def read_answer(words: list[str], kind: str = "first_to_leave") -> str | None:
    """The answer slot: for a which-object kind, "color" when it asks for a colour ("which colour
    exits first?", not "the red coloured circle"), else "name"; for time in view, "seconds" when
    it names seconds, else "frames"; None for other kinds."""
    low = [w.lower() for w in words]
    if kind == "time_in_view":
        return "seconds" if any(w in SECONDS for w in low) else "frames"
    if kind not in NAME_ANSWER_KINDS:
        return None
    return "color" if any(w in COLOUR_ANSWER for w in low) else "name"


_FIRST = frozenset({"first", "start", "beginning", "opening", "initial", "begin", "starts"})
_LAST = frozenset({"last", "final", "end", "ending", "closing", "ends"})
_COLLISION = frozenset({"collision", "collisions", "collide", "collides", "collided", "colliding", "crash",
                        "crashes", "crashed", "impact", "hit", "hits", "contact", "bump", "bumps", "touch",
                        "touches", "smash", "smashes", "accident"})
_ORDINAL = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
            "eighth": 8, "ninth": 9, "tenth": 10}
_NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                 "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
                 "thirty": 30, "forty": 40, "fifty": 50}


def read_frame(words: list[str]) -> tuple[str | int | None, set[int]]:
    """Which frame a box request means and the indices of the words read for it: a frame number
    ("frame 12", "frame #12", "the 12th frame", "frame number twelve"), "collision" (at the
    crash, when they collide), "last" (the end, final frame), "first" (the start, opening frame);
    None when it names none."""
    low = [w.lower() for w in words]
    for i, w in enumerate(low):
        if w not in ("frame", "frames"):
            continue
        j = i + 1
        while j < len(low) and low[j] in ("#", "number", "no", "index", "nr"):
            j += 1
        if j < len(low) and (low[j].isdigit() or low[j] in _NUMBER_WORDS):
            value = int(low[j]) if low[j].isdigit() else _NUMBER_WORDS[low[j]]
            return value, set(range(i, j + 1))
        if i and re.fullmatch(r"\d+(st|nd|rd|th)", low[i - 1]):  # the 12th frame: frame index 12
            return int(re.match(r"\d+", low[i - 1]).group()), {i - 1, i}
        if i > 1 and low[i - 1] in ("st", "nd", "rd", "th") and low[i - 2].isdigit():  # split "12", "th"
            return int(low[i - 2]), {i - 2, i - 1, i}
        if i and low[i - 1] in _ORDINAL and low[i - 1] != "first":
            return _ORDINAL[low[i - 1]], {i - 1, i}
    for i, w in enumerate(low[:-1]):  # "the last frame", "the opening frame"
        if low[i + 1] in ("frame", "frames", "shot", "image", "moment") and (w in _FIRST or w in _LAST):
            return ("first" if w in _FIRST else "last"), {i, i + 1}
    for group, value in ((_COLLISION, "collision"), (_LAST, "last"), (_FIRST, "first")):
        hits = {i for i, w in enumerate(low) if w in group}
        if hits:
            return value, hits
    return None, set()


# Words of what no video kind expresses (speed, turning, walls, changes of size or look,
# entering, distances, the clip's format and editing, other domains): a request using one is
# refused unless the scope head is sure of it (``builder.planner.video.OFF_TOPIC_SCOPE``). Words
# a kind's request may use are left out: objects "bounce" off each other in a collision, and a
# summary says how their motion "changed".
OFF_TOPIC = frozenset("""
speed speeds fast faster fastest slow slower slowest slowly quickly velocity accelerate accelerates
accelerating acceleration decelerate decelerates deceleration brake brakes braking rotate rotates rotating
rotation rotated spin spins spinning spun clockwise anticlockwise counterclockwise tilt tilts wall walls
grow grows growing shrink shrinks shrinking morph morphs fade fades fading blink blinks flash flashes
enter enters entering entered arrive arrives arrival trajectory distance far farthest
closest angle resolution fps framerate crop trim convert export gif png stabilise stabilize zoom pan
music audio sound transcribe speaker weather face faces people person helmet licence license plate
predict why blame damage occluded occlusion overlap overlaps overlapping hide hides hidden background
quadrant quadrants chronological chronologically
""".split())


_BOUNCE = frozenset({"bounce", "bounces", "bouncing", "bounced", "rebound", "rebounds", "reflect", "reflects",
                     "ricochet", "ricochets"})
_BORDER = frozenset({"edge", "edges", "side", "sides", "border", "borders", "boundary", "top", "bottom", "frame",
                     "screen", "wall", "walls"})
_CHANGE = frozenset({"change", "changes", "changing", "changed", "turn", "turns", "turning", "become", "becomes"})
_LOOK = frozenset({"colour", "color", "size", "shape", "appearance", "form", "darker", "lighter", "smaller",
                   "bigger", "larger", "transparent"})


# Asks no kind answers although every word is a video word: a later event than the first ("the
# second collision", "which object leaves last"), the time of an event other than a collision
# ("at what frame does it leave", "when does it first appear"), and counting what the clip shows
# rather than what happens in it ("how many distinct colours appear").
_EVENT = _COLLISION | frozenset({"crossing", "crossings", "exit", "exits", "leave", "leaves", "leaving", "event",
                                 "events", "cross", "crosses", "disappear", "disappears"})
_LATER = (frozenset(_ORDINAL) - {"first"}) | {"2nd", "3rd", "4th", "5th", "last", "final", "next", "latest"}
_WHEN = frozenset({"when", "time", "moment", "timestamp"})
_MOVES = frozenset({"leave", "leaves", "exit", "exits", "appear", "appears", "disappear", "disappears", "cross",
                    "crosses", "stop", "stops", "reach", "reaches", "vanish", "vanishes"})
_CONTACT = _COLLISION | frozenset({"touching", "meet", "meets", "meeting", "bumping", "hitting", "crashing", "smashing",
                                   "run", "runs", "knock", "knocks", "clash", "clashes", "strike", "strikes"})
_COUNTED = frozenset({"colours", "colors", "shapes", "objects", "kinds", "types", "sizes", "things", "items",
                      "circles", "squares", "triangles", "stars", "hexagons"})
# any verb of motion or contact: a count with one counts what happens, not what the clip shows
_HAPPENS = _EVENT | _CONTACT | frozenset({
    "frames", "seconds", "times", "collided", "crossed", "left", "exited", "bumped", "touched", "line", "pass", "passes",
    "passed", "go", "goes", "went", "travel", "travels", "move", "moves", "moved", "moving", "switch", "switches",
    "side", "sides", "middle", "centre", "center", "midline", "halfway", "half", "over", "through", "out", "off"})


def unsupported_asks(words: list[str]) -> list[str]:
    """The words of an ask no video kind answers though each word is a video word (``_LATER``,
    ``_WHEN``, ``_COUNTED`` above): a later event than the first, the time of an event other than a
    collision, or a count of what the clip shows rather than of what happens in it."""
    low = [w.lower() for w in words]
    out = []
    for i, w in enumerate(low):
        if w in _LATER and (_EVENT & set(low[i + 1:i + 3]) or (low[i - 3:i] and _EVENT & set(low[i - 3:i])
                                                                and w in ("last", "final"))):
            out.append(words[i])
    asks_when = bool(_WHEN & set(low)) or any(a in ("what", "which") and b in ("frame", "second", "point")
                                              for a, b in zip(low, low[1:], strict=False))
    if asks_when and _MOVES & set(low) and not _CONTACT & set(low):
        out += [words[i] for i, w in enumerate(low) if w in _MOVES]
    for i, w in enumerate(low):
        nxt = [x for x in low[i + 1:i + 5] if x not in ("is", "the", "whole", "entire", "of", "this", "full")]
        if w in ("what", "which") and low[i + 1:i + 2] in (["direction"], ["way"], ["heading"]):
            out.append(words[i + 1])  # the direction as the answer ("which way does it go")
        elif w == "after" and nxt[:1] in (["video"], ["clip"], ["end"], ["ends"]):
            out.append(words[i])  # what happens after the clip: a prediction
        elif w in ("long", "length", "duration") and nxt[:1] in (["clip"], ["video"], ["footage"], ["recording"]):
            out.append(words[i])  # the clip's own length, not an object's time in view
    counts = any(w == "count" or (w == "how" and low[i + 1:i + 2] == ["many"]) or (w == "number" and "of" in low[i + 1:i + 2])
                 for i, w in enumerate(low))
    if counts and _COUNTED & set(low) and not _HAPPENS & set(low):
        out += [words[i] for i, w in enumerate(low) if w in _COUNTED]
    return out


def off_topic_words(words: list[str], value_word) -> list[str]:
    """The words of ``words`` in ``OFF_TOPIC`` that are not value words (colour, shape, size), and
    two ambiguous ones in their off-topic use: bouncing off an edge (objects that bounce off each
    other collide), and changing colour, size or shape (a summary says how motion changed)."""
    low = [w.lower() for w in words]
    out = [w for w in words if w.lower() in OFF_TOPIC and not value_word(w)]
    for i, w in enumerate(low):
        after = low[i + 1:i + 5]
        if w in _BOUNCE and "off" in after[:2] and _BORDER & set(after) and "other" not in after:
            out.append(words[i])
        if w in _CHANGE and (_LOOK & set(after[:3]) or (w.startswith(("turn", "becom")) and after[:1]
                                                         and value_word(words[i + 1]))):
            out.append(words[i])
    return out


def training_vocabulary() -> frozenset[str]:
    """The stems of every word of the planner's training phrasings."""
    return frozenset(stem(w) for qs in PHRASINGS.values() for q in qs for w in _alpha_words(q))


def _alpha_words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+", text)


def unread_words(words: list[str], value_word, read: set[int], vocabulary: frozenset[str]) -> list[str]:
    """Content words of ``words`` the planner cannot read: not stop words, not filler or generic
    nouns, not value words (``value_word(w)`` true), not read as a direction (indices in ``read``),
    and not (by stem) in ``vocabulary``."""
    out = []
    for i, w in enumerate(words):
        low = w.lower()
        if not w.isalpha() or i in read or low in STOPWORDS or low in FILLER or low in GENERIC_NOUNS:
            continue
        if value_word(w) or stem(low) in vocabulary:
            continue
        out.append(w)
    return out
