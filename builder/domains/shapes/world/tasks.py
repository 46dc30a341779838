"""Task families over shapes-world scenes: VQA, grounding and image-text matching.

Every example carries its ground truth and a reference program written against
``builder.tools.api``. Questions are only generated when their answer is unambiguous: object
references are unique, and spatial relations hold with a margin (see ``spatial_margin``).

Phrasings are split by construction: each question type has "train" templates and disjoint
"heldout" templates; an example records the template id and split it was phrased with.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from builder.domains.shapes.vocab import OPPOSITE, RELATIONS, ObjectSpec, with_article
from builder.domains.shapes.world.language import Caption, relation_holds
from builder.domains.shapes.world.scene import COLORS, SHAPES, SIZES, Scene, SceneObject

FAMILIES = ("vqa", "grounding", "itm")
OUTPUT_KIND = {"vqa": "text", "grounding": "boxes", "itm": "choice"}
# Sub-questions the reference programs ask the VQA engine about one object.
SUBQUESTION = {"color": "What color is this object?", "shape": "What shape is this object?"}
_METHOD = {"left of": "left_of", "right of": "right_of", "above": "above", "below": "below"}
_SUPERLATIVE = {"leftmost": (0, min), "rightmost": (0, max), "topmost": (1, min), "bottommost": (1, max)}
ANSWER_VOCAB = tuple(COLORS) + SHAPES + ("yes", "no") + tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class Template:
    """One phrasing. ``text`` is the query pattern; for caption-choice ITM, ``caption`` is the
    caption pattern (for image-choice ITM the query is the caption, so ``text`` is the caption)."""

    id: str
    family: str
    qtype: str
    split: str
    text: str
    caption: str | None = None


def _make(family: str, qtype: str, train: list[str], heldout: list[str]) -> list[Template]:
    out = []
    for split, texts in (("train", train), ("heldout", heldout)):
        out += [Template(f"{family}.{qtype}.{split[0]}{i}", family, qtype, split, t) for i, t in enumerate(texts)]
    return out


_CAPTIONS = {  # caption kind -> (train patterns, heldout patterns)
    "exists": (["There is {a_obj}."], ["The picture contains {a_obj}."]),
    "relation": (["There is {a_obj} {rel} {b_obj}."], ["You can see {a_obj} {rel} {b_obj}."]),
    "count": (["There are {k} {objs}."], ["The image shows exactly {k} {objs}."]),
}
_CHOICE_PROMPTS = (["Which caption fits the image?", "Choose the caption that describes the image."],
                   ["Pick the sentence that best describes this picture."])


def _itm_templates() -> list[Template]:
    out = []
    for kind, (train, heldout) in _CAPTIONS.items():
        for split, caps, prompts in (("train", train, _CHOICE_PROMPTS[0]), ("heldout", heldout, _CHOICE_PROMPTS[1])):
            pairs = list(itertools.product(prompts, caps))
            out += [Template(f"itm.text_{kind}.{split[0]}{i}", "itm", f"text_{kind}", split, p, c)
                    for i, (p, c) in enumerate(pairs)]
            out += [Template(f"itm.image_{kind}.{split[0]}{i}", "itm", f"image_{kind}", split, c)
                    for i, c in enumerate(caps)]
    return out


TEMPLATES: tuple[Template, ...] = tuple(
    _make("vqa", "attribute", ["What {attr} is the {obj}?", "What is the {attr} of the {obj}?"],
          ["Which {attr} does the {obj} have?", "Tell me the {attr} of the {obj}."])
    + _make("vqa", "count", ["How many {objs} are there?", "Count the {objs}."],
            ["What is the number of {objs}?", "How many {objs} can you see?"])
    + _make("vqa", "exists", ["Is there {a_obj}?", "Are there any {objs}?"],
            ["Does the image contain {a_obj}?", "Can you see any {objs}?"])
    + _make("vqa", "relation", ["Is the {a} {rel} the {b}?", "Is the {a} positioned {rel} the {b}?"],
            ["Would you say the {a} is {rel} the {b}?", "Is it true that the {a} is {rel} the {b}?"])
    + _make("vqa", "relate_attr", ["What {attr} is the object {rel} the {b}?",
                                   "What is the {attr} of the object {rel} the {b}?"],
            ["The object {rel} the {b} has what {attr}?"])
    + _make("vqa", "compare", ["Are there more {xs} than {ys}?"],
            ["Is the number of {xs} greater than the number of {ys}?"])
    + _make("vqa", "same_color", ["How many other objects have the same color as the {obj}?"],
            ["How many other objects share the color of the {obj}?"])
    + _make("vqa", "read", ["What is written on the {obj}?", "What does the {obj} say?"],
            ["Read the text on the {obj}."])
    + _make("grounding", "unique", ["the {obj}", "find the {obj}"], ["locate the {obj}", "where is the {obj}?"])
    + _make("grounding", "all", ["all {objs}", "find all {objs}"], ["every {obj}", "locate all the {objs}"])
    + _make("grounding", "superlative", ["the {sup} {obj}", "find the {sup} {obj}"],
            ["locate the {sup} {obj}", "which {obj} is the {sup} one?"])
    + _make("grounding", "relation", ["the {a} {rel} the {b}", "find the {a} {rel} the {b}"],
            ["locate the {a} {rel} the {b}", "the {a} that is {rel} the {b}"])
    + _itm_templates()
)
QTYPES = {f: tuple(dict.fromkeys(t.qtype for t in TEMPLATES if t.family == f)) for f in FAMILIES}


def spatial_margin(scene: Scene) -> float:
    """Minimum centre distance (pixels) for a spatial relation to count as unambiguous."""
    return max(3.0, 0.04 * scene.width)


def _q(s: str) -> str:
    return json.dumps(s)  # a safe Python string literal


def _specs(obj: SceneObject, fields=("size", "color", "shape")) -> list[ObjectSpec]:
    """Every non-empty combination of the object's attributes among ``fields``."""
    out = []
    for use in itertools.product((False, True), repeat=3):
        kw = {f: getattr(obj, f) for f, u in zip(("size", "color", "shape"), use, strict=True) if u and f in fields}
        if kw and len(kw) == sum(use):
            out.append(ObjectSpec(**kw))
    return out


def _matching(scene: Scene, spec: ObjectSpec) -> list[SceneObject]:
    return [o for o in scene.objects if spec.matches(o)]


def _unique_specs(scene: Scene, obj: SceneObject, fields=("size", "color", "shape")) -> list[ObjectSpec]:
    return [s for s in _specs(obj, fields) if _matching(scene, s) == [obj]]


def _pick(rng: np.random.Generator, items):
    items = list(items)
    return items[int(rng.integers(len(items)))] if items else None


def _shuffled(rng: np.random.Generator, items) -> list:
    items = list(items)
    return [items[i] for i in rng.permutation(len(items))]


def _unique_ref(scene, rng, fields=("size", "color", "shape"), objects=None):
    """A random (object, unique spec) pair, or (None, None)."""
    pairs = [(o, s) for o in (scene.objects if objects is None else objects) for s in _unique_specs(scene, o, fields)]
    return _pick(rng, pairs) or (None, None)


def _prog(*lines: str, params: str = "image") -> str:
    return f"def execute({params}):\n" + "".join(f"    {line}\n" for line in lines)


# ---- VQA -------------------------------------------------------------------------------------
def _vqa_attribute(scene, rng):
    attr = _pick(rng, ("color", "shape"))
    obj, spec = _unique_ref(scene, rng, fields=tuple(f for f in ("size", "color", "shape") if f != attr))
    if obj is None:
        return None
    prog = _prog(f"obj = image.find({_q(spec.name())})[0]", f"return obj.query({_q(SUBQUESTION[attr])})")
    return {"attr": attr, "obj": spec.name()}, getattr(obj, attr), prog


def _random_spec(scene, rng, present: bool) -> ObjectSpec:
    if present:
        return _pick(rng, _specs(_pick(rng, scene.objects)))
    kw = {}
    for f, values in (("size", SIZES), ("color", tuple(COLORS)), ("shape", SHAPES)):
        if rng.random() < 0.6:
            kw[f] = _pick(rng, values)
    return ObjectSpec(**kw) if kw else ObjectSpec(shape=_pick(rng, SHAPES))


def _vqa_count(scene, rng):
    spec = _random_spec(scene, rng, present=rng.random() < 0.8)
    n = len(_matching(scene, spec))
    if n > 9:
        return None
    return {"objs": spec.name(plural=True)}, str(n), _prog(f"return str(image.count({_q(spec.name())}))")


def _vqa_exists(scene, rng):
    spec = _random_spec(scene, rng, present=rng.random() < 0.5)
    answer = "yes" if _matching(scene, spec) else "no"
    fill = {"a_obj": with_article(spec.name()), "objs": spec.name(plural=True)}
    return fill, answer, _prog(f"return \"yes\" if image.exists({_q(spec.name())}) else \"no\"")


def _vqa_relation(scene, rng):
    margin = spatial_margin(scene)
    for a, b in _shuffled(rng, itertools.permutations(scene.objects, 2)):
        rel = _pick(rng, RELATIONS)
        verdict = relation_holds(a, b, rel, margin)
        sa, sb = _pick(rng, _unique_specs(scene, a)), _pick(rng, _unique_specs(scene, b))
        if verdict is None or sa is None or sb is None:
            continue
        prog = _prog(f"a = image.find({_q(sa.name())})[0]", f"b = image.find({_q(sb.name())})[0]",
                     f"return \"yes\" if a.{_METHOD[rel]}(b) else \"no\"")
        return {"a": sa.name(), "b": sb.name(), "rel": rel}, "yes" if verdict else "no", prog
    return None


def _only_related(scene, candidates, b, rel):
    """The single candidate that is ``rel`` b with margin, if no other candidate is in doubt."""
    margin = spatial_margin(scene)
    verdicts = [(o, relation_holds(o, b, rel, margin)) for o in candidates if o is not b]
    hits = [o for o, v in verdicts if v is True]
    if len(hits) == 1 and all(v is not None for _, v in verdicts):
        return hits[0]
    return None


def _vqa_relate_attr(scene, rng):
    attr = _pick(rng, ("color", "shape"))
    for b in _shuffled(rng, scene.objects):
        rel = _pick(rng, RELATIONS)
        target, sb = _only_related(scene, scene.objects, b, rel), _pick(rng, _unique_specs(scene, b))
        if target is None or sb is None:
            continue
        prog = _prog(f"b = image.find({_q(sb.name())})[0]",
                     f"objs = [p for p in image.find(\"object\") if p.{_METHOD[rel]}(b)]",
                     f"return objs[0].query({_q(SUBQUESTION[attr])})")
        return {"attr": attr, "rel": rel, "b": sb.name()}, getattr(target, attr), prog
    return None


def _vqa_compare(scene, rng):
    for _ in range(10):
        x, y = _random_spec(scene, rng, True), _random_spec(scene, rng, rng.random() < 0.7)
        nx, ny = len(_matching(scene, x)), len(_matching(scene, y))
        if x != y and nx != ny:
            prog = _prog(f"return \"yes\" if image.count({_q(x.name())}) > image.count({_q(y.name())}) else \"no\"")
            return {"xs": x.name(plural=True), "ys": y.name(plural=True)}, "yes" if nx > ny else "no", prog
    return None


def _vqa_same_color(scene, rng):
    obj, spec = _unique_ref(scene, rng, fields=("size", "shape"))
    if obj is None:
        return None
    n = sum(o.color == obj.color for o in scene.objects) - 1
    prog = _prog(f"obj = image.find({_q(spec.name())})[0]", f"color = obj.query({_q(SUBQUESTION['color'])})",
                 "return str(image.count(color + \" object\") - 1)")
    return {"obj": spec.name()}, str(n), prog


def _vqa_read(scene, rng):
    obj, spec = _unique_ref(scene, rng, objects=[o for o in scene.objects if o.text])
    if obj is None:
        return None
    return {"obj": spec.name()}, obj.text, _prog(f"return image.find({_q(spec.name())})[0].read_text()")


# ---- grounding -------------------------------------------------------------------------------
def _ground_unique(scene, rng):
    obj, spec = _unique_ref(scene, rng)
    if obj is None:
        return None
    return {"obj": spec.name()}, [list(obj.box)], _prog(f"return image.find({_q(spec.name())})[:1]")


def _ground_all(scene, rng):
    specs = {s for o in scene.objects for s in _specs(o) if len(_matching(scene, s)) >= 2}
    spec = _pick(rng, sorted(specs, key=lambda s: s.name()))
    if spec is None:
        return None
    boxes = [list(o.box) for o in _matching(scene, spec)]
    return {"obj": spec.name(), "objs": spec.name(plural=True)}, boxes, _prog(f"return image.find({_q(spec.name())})")


def _ground_superlative(scene, rng):
    margin = spatial_margin(scene)
    specs = sorted({s for o in scene.objects for s in _specs(o)} | {ObjectSpec()}, key=lambda s: s.name())
    for spec in _shuffled(rng, specs):
        objs = _matching(scene, spec)
        sup = _pick(rng, _SUPERLATIVE)
        axis, pick = _SUPERLATIVE[sup]
        if len(objs) < 2:
            continue
        coords = sorted(o.center[axis] for o in objs)
        gap = coords[1] - coords[0] if pick is min else coords[-1] - coords[-2]
        if gap < margin:  # the runner-up is too close to call
            continue
        best = pick(objs, key=lambda o: o.center[axis])
        prog = _prog(f"return [{sup}(image.find({_q(spec.name())}))]")
        return {"sup": sup, "obj": spec.name()}, [list(best.box)], prog
    return None


def _ground_relation(scene, rng):
    for b in _shuffled(rng, scene.objects):
        sb = _pick(rng, _unique_specs(scene, b))
        rel = _pick(rng, RELATIONS)
        if sb is None:
            continue
        # prefer a description that alone is ambiguous, so the relation is what singles it out
        specs = sorted({s for o in scene.objects if o is not b for s in _specs(o) if not s.matches(b)},
                       key=lambda s: (len(_matching(scene, s)) < 2, s.name()))
        for sa in specs:
            target = _only_related(scene, _matching(scene, sa), b, rel)
            if target is None:
                continue
            prog = _prog(f"b = image.find({_q(sb.name())})[0]",
                         f"return [p for p in image.find({_q(sa.name())}) if p.{_METHOD[rel]}(b)]")
            return {"a": sa.name(), "rel": rel, "b": sb.name()}, [list(target.box)], prog
    return None


# ---- image-text matching ---------------------------------------------------------------------
def _variants(spec: ObjectSpec) -> list[ObjectSpec]:
    """Specs that differ from ``spec`` in exactly one attribute it names."""
    out = []
    for f, values in (("size", SIZES), ("color", tuple(COLORS)), ("shape", SHAPES)):
        if getattr(spec, f) is not None:
            out += [ObjectSpec(**{**spec.__dict__, f: v}) for v in values if v != getattr(spec, f)]
    return out


def true_caption(scene: Scene, rng: np.random.Generator, kind: str) -> Caption | None:
    """A caption of ``kind`` ("exists", "relation", "count") that holds for the scene."""
    if kind == "exists":
        return Caption("exists", _pick(rng, _specs(_pick(rng, scene.objects))))
    if kind == "count":
        specs = sorted({s for o in scene.objects for s in _specs(o) if 2 <= len(_matching(scene, s)) <= 9},
                       key=lambda s: s.name())
        spec = _pick(rng, specs)
        return Caption("count", spec, k=len(_matching(scene, spec))) if spec else None
    margin = spatial_margin(scene)
    for a, b in _shuffled(rng, itertools.permutations(scene.objects, 2)):
        rel = _pick(rng, RELATIONS)
        if relation_holds(a, b, rel, margin) is True:
            sa = _pick(rng, [s for s in _specs(a) if s.shape])
            sb = _pick(rng, [s for s in _specs(b) if s.shape])
            cap = Caption("relation", sa, sb, rel)
            if cap.holds(scene.objects, margin) is True:
                return cap
    return None


def caption_distractors(caption: Caption) -> list[Caption]:
    """Captions that differ from ``caption`` in one attribute, the relation or the count."""
    if caption.kind == "exists":
        return [Caption("exists", v) for v in _variants(caption.a)]
    if caption.kind == "count":
        return [Caption("count", caption.a, k=k) for k in range(2, 10) if k != caption.k]
    return ([Caption("relation", v, caption.b, caption.rel) for v in _variants(caption.a)]
            + [Caption("relation", caption.a, v, caption.rel) for v in _variants(caption.b)]
            + [Caption("relation", caption.a, caption.b, OPPOSITE[caption.rel])])


def _itm_text(scene, rng, kind, template):
    cap = true_caption(scene, rng, kind)
    if cap is None:
        return None
    false = [d for d in caption_distractors(cap) if d.holds(scene.objects, spatial_margin(scene)) is False]
    if len(false) < 3:
        return None
    options = [cap] + [false[i] for i in rng.choice(len(false), 3, replace=False)]
    order = rng.permutation(4)
    choices = [template.caption.format(**options[i].fill()) for i in order]
    return {}, int(np.flatnonzero(order == 0)[0]), _prog("return best_text_match(image, choices)",
                                                         params="image, choices"), choices


# ---- assembling examples ---------------------------------------------------------------------
_GENERATORS = {
    ("vqa", "attribute"): _vqa_attribute, ("vqa", "count"): _vqa_count, ("vqa", "exists"): _vqa_exists,
    ("vqa", "relation"): _vqa_relation, ("vqa", "relate_attr"): _vqa_relate_attr,
    ("vqa", "compare"): _vqa_compare, ("vqa", "same_color"): _vqa_same_color, ("vqa", "read"): _vqa_read,
    ("grounding", "unique"): _ground_unique, ("grounding", "all"): _ground_all,
    ("grounding", "superlative"): _ground_superlative, ("grounding", "relation"): _ground_relation,
}


def choose_template(rng: np.random.Generator, family: str, qtype: str, heldout_fraction: float) -> Template:
    """Draw the split (heldout with probability ``heldout_fraction``), then a template in it."""
    split = "heldout" if rng.random() < heldout_fraction else "train"
    return _pick(rng, [t for t in TEMPLATES if t.family == family and t.qtype == qtype and t.split == split])


def make_example(scene: Scene, rng: np.random.Generator, family: str, qtype: str,
                 heldout_fraction: float = 0.25) -> dict | None:
    """One single-image example of ``family``/``qtype`` for the scene, or None if the scene does
    not support an unambiguous one. Keys: family, qtype, output, query, choices, expected,
    template_id, split, program (image paths are added by the caller)."""
    template = choose_template(rng, family, qtype, heldout_fraction)
    if family == "itm":
        if not qtype.startswith("text_"):
            raise ValueError("image-choice ITM examples need several scenes: use make_image_choice")
        made = _itm_text(scene, rng, qtype[len("text_"):], template)
        if made is None:
            return None
        _, expected, program, choices = made
        query = template.text
    else:
        made = _GENERATORS[(family, qtype)](scene, rng)
        if made is None:
            return None
        fill, expected, program = made
        query, choices = template.text.format(**fill), None
    return {"family": family, "qtype": qtype, "output": OUTPUT_KIND[family], "query": query, "choices": choices,
            "expected": expected, "template_id": template.id, "split": template.split, "program": program}


def make_image_choice(scenes: list[Scene], target: int, rng: np.random.Generator, kind: str,
                      n_images: int = 4, heldout_fraction: float = 0.25) -> tuple[dict, list[int]] | None:
    """An image-choice example: a caption true for ``scenes[target]`` and false for ``n_images - 1``
    other scenes. Returns (example without image paths, scene indices in presented order)."""
    scene = scenes[target]
    template = choose_template(rng, "itm", f"image_{kind}", heldout_fraction)
    cap = true_caption(scene, rng, kind)
    if cap is None:
        return None
    others = [i for i in rng.permutation(len(scenes)) if i != target
              and cap.holds(scenes[i].objects, spatial_margin(scenes[i])) is False][: n_images - 1]
    if len(others) < n_images - 1:
        return None
    order = [int(i) for i in rng.permutation([target] + others)]
    caption = template.text.format(**cap.fill())
    ex = {"family": "itm", "qtype": f"image_{kind}", "output": "choice", "query": caption, "choices": None,
          "expected": order.index(target), "template_id": template.id, "split": template.split,
          "program": _prog(f"return best_image_match(image, {_q(caption)})")}
    return ex, order


# Size questions the shapes VQA model answers beyond the VQA templates.
SIZE_PHRASINGS = ("What size is the {obj}?", "Is the {obj} small or large?", "Tell me the size of the {obj}.")


@lru_cache(maxsize=4)
def question_patterns(skip_qtypes: tuple[str, ...] = ()) -> tuple[tuple[str, re.Pattern], ...]:
    """(qtype, regex) for every shapes-world VQA phrasing (train and held-out templates, plus the
    size questions), lower-case without the final "?"/"."; named groups are the template's slots.

    Selective decomposition parses questions with it; SelTDA's precision oracle answers them.
    """
    slots = {"attr": r"(?P<attr>color|shape|size)", "rel": r"(?P<rel>left of|right of|above|below)"}
    texts = [(t.qtype, t.text) for t in TEMPLATES if t.family == "vqa" and t.qtype not in skip_qtypes]
    texts += [("size", text) for text in SIZE_PHRASINGS]
    out = []
    for qtype, text in texts:
        pattern = re.escape(text.lower().rstrip("?."))
        for name in ("attr", "rel", "obj", "objs", "a_obj", "a", "b", "xs", "ys"):
            pattern = pattern.replace(re.escape("{" + name + "}"), slots.get(name, rf"(?P<{name}>[a-z ]+?)"), 1)
        out.append((qtype, re.compile("^" + pattern + "$")))
    return tuple(out)
