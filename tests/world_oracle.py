"""Test-only ground-truth tool host for shapes-world programs.

``GroundTruthTransport`` answers every host tool from object ground truth (dicts with shape,
colour, size, box, text), considering the objects whose box centre lies inside the queried
patch. Its parsing of names, questions and captions is written here, independently of
``builder.domains.shapes.world``, so that reference programs are checked against a second reading of the
language. ``run_program`` executes program source with plain ``exec`` (tests only: the real
sandbox lives elsewhere).
"""

from __future__ import annotations

import builtins
import colorsys
import re

import numpy as np
from scipy import ndimage

from builder.domains.shapes.world.scene import BACKGROUND_GRAY, COLORS
from builder.tools import api

COLOR_WORDS = set(COLORS)
SHAPE_WORDS = {"circle", "square", "triangle", "star", "hexagon"}
SIZE_WORDS = {"small", "large"}
ANY_WORDS = {"object", "thing"}
REL_WORDS = ("left of", "right of", "above", "below")


def _words(text: str) -> list[str]:
    out = []
    for w in re.findall(r"[a-z]+", text.lower()):
        if w.endswith("s") and (w[:-1] in SHAPE_WORDS or w[:-1] in ANY_WORDS):
            w = w[:-1]
        out.append(w)
    return out


def name_filter(text: str):
    """A predicate over object dicts for the attribute words found in ``text``."""
    words = _words(text)
    want = {"color": [w for w in words if w in COLOR_WORDS], "shape": [w for w in words if w in SHAPE_WORDS],
            "size": [w for w in words if w in SIZE_WORDS]}
    for key, vals in want.items():
        if len(vals) > 1:
            raise ValueError(f"oracle: two {key} words in {text!r}")
    return lambda o: all(not vals or o[key] == vals[0] for key, vals in want.items())


def _center(o):
    x0, y0, x1, y1 = o["box"]
    return (x0 + x1) / 2, (y0 + y1) / 2


def _inside(o, box) -> bool:
    cx, cy = _center(o)
    return box[0] <= cx < box[2] and box[1] <= cy < box[3]


def _related(a, b, rel) -> bool:
    (ax, ay), (bx, by) = _center(a), _center(b)
    return {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[rel]


def caption_true(objects, caption: str) -> bool:
    """Truth of a shapes-world caption: a count ("... 3 red circles."), a relation
    ("... a red circle left of a blue square.") or existence ("... a red circle.")."""
    text = caption.lower()
    number = re.search(r"\b(\d+)\b", text)
    if number:
        return sum(name_filter(text[number.end():])(o) for o in objects) == int(number.group(1))
    for rel in REL_WORDS:
        if f" {rel} " in text:
            left, right = text.split(f" {rel} ", 1)
            fa, fb = name_filter(left), name_filter(right)
            return any(fa(a) and fb(b) and _related(a, b, rel) for a in objects for b in objects if a is not b)
    return any(name_filter(text)(o) for o in objects)


class GroundTruthTransport:
    """Callable (tool, ref, args) -> plain data, served from per-image object lists."""

    def __init__(self, images: list[list[dict]]):
        self.images = images
        self.calls: list[str] = []

    def _objects(self, ref) -> list[dict]:
        return [o for o in self.images[ref["image"]] if _inside(o, ref["box"])]

    def _single(self, ref) -> dict:
        objs = self._objects(ref)
        if len(objs) != 1:
            raise ValueError(f"oracle: {len(objs)} objects in patch {ref['box']}, expected one")
        return objs[0]

    def __call__(self, tool, ref, args):
        self.calls.append(tool)
        if tool == "find":
            keep = name_filter(args[0])
            return [{"box": list(o["box"]), "score": 1.0} for o in self._objects(ref) if keep(o)]
        if tool == "query":
            obj, q = self._single(ref), args[0].lower()
            for key in ("color", "shape", "size"):
                if key in q or (key == "color" and "colour" in q):
                    return obj[key]
            raise ValueError(f"oracle cannot answer {args[0]!r}")
        if tool == "verify":
            return name_filter(args[0])(self._single(ref))
        if tool == "read_text":
            objs = sorted(self._objects(ref), key=lambda o: (o["box"][1], o["box"][0]))
            return " ".join(o["text"] for o in objs if o["text"])
        if tool == "caption":
            return ", ".join(f"a {o['size']} {o['color']} {o['shape']}" for o in self._objects(ref))
        if tool == "match":
            return 1.0 if caption_true(self._objects(ref), args[0]) else 0.0
        if tool == "best_text_match":
            hits = [i for i, t in enumerate(args[0]) if caption_true(self._objects(ref), t)]
            if len(hits) != 1:
                raise ValueError(f"oracle: {len(hits)} true captions among {args[0]}")
            return hits[0]
        if tool == "best_image_match":
            hits = [i for i, r in enumerate(ref) if caption_true(self._objects(r), args[0])]
            if len(hits) != 1:
                raise ValueError(f"oracle: caption {args[0]!r} is true for {len(hits)} images")
            return hits[0]
        raise ValueError(f"oracle: unknown tool {tool!r}")


def run_program(source: str, images: list[list[dict]], sizes: list[tuple[int, int]], multi: bool,
                choices=None):
    """Execute a reference program against the oracle. ``images``: object lists per image;
    ``sizes``: (width, height) per image; ``multi``: pass a list of patches (image choice)."""
    namespace = {**api.PROGRAM_API, "__builtins__": builtins}
    exec(compile(source, "<program>", "exec"), namespace)  # noqa: S102 - test-only, trusted source
    patches = [api.ImagePatch(i, (0, 0, w, h)) for i, (w, h) in enumerate(sizes)]
    previous, api._transport = api._transport, GroundTruthTransport(images)
    try:
        first = patches if multi else patches[0]
        return namespace["execute"](first, choices) if choices is not None else namespace["execute"](first)
    finally:
        api._transport = previous


def box_iou(a, b) -> float:
    """IoU of two [x0, y0, x1, y1] boxes."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def outputs_match(output_kind: str, got, expected) -> bool:
    """Scoring as in the design: exact answer, exact choice, or boxes paired one-to-one at IoU >= 0.5."""
    if output_kind == "boxes":
        got = [p.box if isinstance(p, api.ImagePatch) else list(p) for p in got]
        if len(got) != len(expected):
            return False
        free = list(range(len(got)))
        for e in expected:
            j = next((j for j in free if box_iou(got[j], e) >= 0.5), None)
            if j is None:
                return False
            free.remove(j)
        return True
    return got == expected


def score_examples(examples: list[dict], scenes: list[list[dict]], sizes: list[tuple[int, int]]) -> list[str]:
    """Run every example's reference program; return a list of failure descriptions."""
    failures = []
    for ex in examples:
        ids = ex["scene_ids"]
        try:
            got = run_program(ex["program"], [scenes[i] for i in ids], [sizes[i] for i in ids],
                              multi=ex["qtype"].startswith("image_"), choices=ex["choices"])
        except Exception as err:  # a crash is a failure to report, not to hide
            failures.append(f"{ex['id']}: {type(err).__name__}: {err}")
            continue
        if not outputs_match(ex["output"], got, ex["expected"]):
            failures.append(f"{ex['id']} ({ex['query']}): got {got!r}, expected {ex['expected']!r}")
    return failures


# ---- pixel re-derivation (clean domain) ----------------------------------------------------
def nearest_color(rgb) -> str:
    """Colour name by hue (achromatic-safe enough for saturated objects), derived independently."""
    h = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0]
    def dist(name):
        h2 = colorsys.rgb_to_hsv(*(c / 255 for c in COLORS[name]))[0]
        d = abs(h - h2)
        return min(d, 1 - d)
    return min(COLORS, key=dist)


def classify_shape(mask: np.ndarray) -> str:
    """Shape from a component mask: fill ratio of the box (square 1.0, circle 0.78, hexagon 0.75,
    triangle 0.5, star 0.4) and how full its top/bottom rows are (hexagon >= 0.5 vs circle
    <= 0.38 on top; triangle 1.0 vs star <= 0.25 at the bottom)."""
    fill = mask.mean()
    if fill > 0.92:
        return "square"
    if mask[-1].mean() > 0.8:
        return "triangle"
    if fill > 0.62:
        return "hexagon" if mask[0].mean() > 0.45 else "circle"
    return "star"


def objects_from_pixels(img: np.ndarray) -> list[dict]:
    """Connected components of non-background pixels in a clean scene, as object dicts."""
    fg = np.abs(img.astype(int) - BACKGROUND_GRAY).sum(axis=2) > 30
    labels, n = ndimage.label(fg, structure=np.ones((3, 3)))
    out = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        comp = labels[sl] == i
        ys, xs = sl
        box = [xs.start, ys.start, xs.stop, ys.stop]
        rgb = np.median(img[sl][comp], axis=0)
        side = max(box[2] - box[0], box[3] - box[1])
        size = "large" if side > 0.17 * img.shape[1] else "small"
        out.append({"shape": classify_shape(comp), "color": nearest_color(rgb), "size": size, "box": box,
                    "text": None})
    return out
