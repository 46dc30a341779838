"""What a customer's request means, and the program that answers it.

The default planner is a semantic parser: it reads a query and predicts a ``Meaning`` (a
question kind plus slots: object references, a relation, an attribute, ...), and
``compile_program`` turns the meaning into a program over the tool API. Decoding is therefore
constrained by construction: every candidate parses, calls the API correctly, has the signature
the request needs, returns the requested output kind, and stays correct when a named object
is absent (no ``find(...)[0]`` on an empty list).

The schema is plain data (``to_dict`` / ``from_dict``) so that blind evaluation sets, training
phrasings and self-training pairs can all be written as JSON lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from builder.domains import vocabulary

VOCAB = vocabulary("shapes")  # the world's vocabulary is the planner's
COLORS, SHAPES, SIZES = VOCAB.values["color"], VOCAB.values["shape"], VOCAB.values["size"]
RELATIONS = VOCAB.relations
ATTRS = ("color", "shape", "size")
EXTREMES = ("leftmost", "rightmost", "topmost", "bottommost", "largest", "smallest")
OPS = ("more", "fewer", "same")
CAPTION_KINDS = ("exists", "count", "relation")
OUTPUTS = ("text", "bool", "count", "boxes", "choice")

# Question kinds: the slots each one needs and the output kinds its program can return.
# "a?" marks a reference that may be empty (any object).
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "count": (("a?",), ("count", "text")),
    "exists": (("a",), ("bool", "text")),
    "absent": (("a",), ("bool", "text")),
    "attribute": (("attr", "a"), ("text",)),
    "extreme_attribute": (("attr", "extreme", "a?"), ("text",)),
    "relation": (("a", "rel", "b"), ("bool", "text")),
    "relate_attr": (("attr", "a?", "rel", "b"), ("text",)),
    "relational_count": (("a?", "rel", "b"), ("count", "text")),
    "compare": (("op", "a", "b"), ("bool", "text")),
    "all_are": (("a?", "p"), ("bool", "text")),
    "same_attr": (("attr", "a?"), ("bool", "text")),
    "same_color_count": (("a",), ("count", "text")),
    "read": (("a",), ("text",)),
    "locate": (("a",), ("boxes",)),
    "locate_all": (("a?",), ("boxes",)),
    "locate_extreme": (("extreme", "a?"), ("boxes",)),
    "locate_relation": (("a", "rel", "b"), ("boxes",)),
    "caption_check": (("caption",), ("bool", "text")),
    "choose_caption": ((), ("choice",)),
    "choose_image": (("caption",), ("choice",)),
}
KIND_NAMES = tuple(KINDS)
# The crop question that reads an attribute, and the patch method of each relation: programs compiled
# from meanings and from meaning trees (``tree_compile``) ask the engines the same way.
ATTRIBUTE_QUESTION = {"color": "What color is this object?", "shape": "What shape is this object?"}
RELATION_METHOD = {"left of": "left_of", "right of": "right_of", "above": "above", "below": "below"}
_OPERATOR = {"more": ">", "fewer": "<", "same": "=="}


class MeaningError(ValueError):
    """A meaning is malformed (unknown kind or value, a missing or conflicting slot)."""


@dataclass(frozen=True)
class Ref:
    """An object reference: the attributes an object must have (None = any)."""

    size: str | None = None
    color: str | None = None
    shape: str | None = None

    def __post_init__(self):
        for value, allowed, what in ((self.size, SIZES, "size"), (self.color, COLORS, "color"),
                                     (self.shape, SHAPES, "shape")):
            if value is not None and value not in allowed:
                raise MeaningError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")

    @property
    def empty(self) -> bool:
        """True when the reference names no attribute (any object)."""
        return self.size is None and self.color is None and self.shape is None

    def name(self, plural: bool = False) -> str:
        """The object name programs pass to ``find``, e.g. "large red circle" or "object"."""
        noun = (self.shape or "object") + ("s" if plural else "")
        return " ".join([w for w in (self.size, self.color) if w] + [noun])

    def merged(self, other: Ref) -> Ref:
        """Both references' attributes together; conflicting values are a ``MeaningError``."""
        out = {}
        for f in ("size", "color", "shape"):
            mine, theirs = getattr(self, f), getattr(other, f)
            if mine and theirs and mine != theirs:
                raise MeaningError(f"conflicting {f}: {mine!r} and {theirs!r}")
            out[f] = mine or theirs
        return Ref(**out)

    def to_dict(self) -> dict:
        """The reference as a dict of size/color/shape (None where any value fits)."""
        return {"size": self.size, "color": self.color, "shape": self.shape}

    @classmethod
    def from_dict(cls, d: dict | None) -> Ref:
        """Inverse of ``to_dict``; None is the empty reference, other keys are a ``MeaningError``."""
        if d is None:
            return cls()
        if not isinstance(d, dict) or set(d) - {"size", "color", "shape"}:
            raise MeaningError(f"an object reference is a dict of size/color/shape, got {d!r}")
        return cls(d.get("size"), d.get("color"), d.get("shape"))


@dataclass(frozen=True)
class Caption:
    """A caption's meaning: some ``a`` exists, exactly ``k`` ``a``, or some ``a`` is ``rel`` some ``b``."""

    kind: str
    a: Ref = field(default_factory=Ref)
    b: Ref | None = None
    rel: str | None = None
    k: int | None = None

    def __post_init__(self):
        if self.kind not in CAPTION_KINDS:
            raise MeaningError(f"unknown caption kind {self.kind!r}")
        if self.kind == "relation" and (self.b is None or self.rel not in RELATIONS):
            raise MeaningError("a relation caption needs b and a relation")
        if self.kind == "count" and (not isinstance(self.k, int) or not 0 <= self.k <= 20):
            raise MeaningError(f"a count caption needs k between 0 and 20, got {self.k!r}")

    def text(self) -> str:
        """The caption in the words the matcher engines read, e.g. "There are 3 red circles."."""
        if self.kind == "count":
            return f"There {'is' if self.k == 1 else 'are'} {self.k} {self.a.name(plural=self.k != 1)}."
        first = _with_article(self.a.name())
        if self.kind == "exists":
            return f"There is {first}."
        return f"There is {first} {self.rel} {_with_article(self.b.name())}."

    def to_dict(self) -> dict:
        """The caption as plain data: kind and ``a``, plus ``rel`` and ``b`` or ``k`` where used."""
        out = {"kind": self.kind, "a": self.a.to_dict()}
        if self.kind == "relation":
            out.update(rel=self.rel, b=self.b.to_dict())
        if self.kind == "count":
            out["k"] = self.k
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Caption:
        """Inverse of ``to_dict``; the constructor checks kind and slots (``MeaningError``)."""
        if not isinstance(d, dict):
            raise MeaningError(f"a caption is a dict, got {d!r}")
        b = Ref.from_dict(d["b"]) if d.get("b") is not None else None
        return cls(d.get("kind"), Ref.from_dict(d.get("a")), b, d.get("rel"), d.get("k"))


@dataclass(frozen=True)
class Meaning:
    """A question kind and its slots (see ``KINDS`` for which slots each kind uses)."""

    kind: str
    a: Ref | None = None
    b: Ref | None = None
    p: Ref | None = None
    attr: str | None = None
    rel: str | None = None
    extreme: str | None = None
    op: str | None = None
    caption: Caption | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise MeaningError(f"unknown question kind {self.kind!r}")
        slots = {s.rstrip("?") for s in KINDS[self.kind][0]}
        for s in ("a", "b", "p", "attr", "rel", "extreme", "op", "caption"):
            if getattr(self, s) is not None and s not in slots:
                raise MeaningError(f"{self.kind}: unexpected slot {s!r}")
        for s in KINDS[self.kind][0]:
            name, optional = s.rstrip("?"), s.endswith("?")
            value = getattr(self, name)
            if value is None and not optional:
                raise MeaningError(f"{self.kind}: missing slot {name!r}")
            if isinstance(value, Ref) and value.empty and not optional:
                raise MeaningError(f"{self.kind}: slot {name!r} must name an attribute")
        for value, allowed, what in ((self.attr, ATTRS, "attr"), (self.rel, RELATIONS, "rel"),
                                     (self.extreme, EXTREMES, "extreme"), (self.op, OPS, "op")):
            if value is not None and value not in allowed:
                raise MeaningError(f"unknown {what} {value!r}")
        if self.kind == "all_are":
            (self.a or Ref()).merged(self.p)

    @property
    def outputs(self) -> tuple[str, ...]:
        """Output kinds a program for this meaning can return."""
        return KINDS[self.kind][1]

    def to_dict(self) -> dict:
        """The meaning as plain data: its kind and the slots that are set (references as dicts)."""
        out: dict = {"kind": self.kind}
        for s in ("attr", "extreme", "op", "a", "rel", "b", "p", "caption"):
            v = getattr(self, s)
            if v is not None:
                out[s] = v.to_dict() if hasattr(v, "to_dict") else v
        return out

    def key(self) -> str:
        """A canonical string (equal meanings, equal keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> Meaning:
        """Inverse of ``to_dict``; a non-dict, unknown keys or invalid slots are a ``MeaningError``.

        Optional reference slots the kind allows are filled with the empty reference when absent.
        """
        if not isinstance(d, dict) or "kind" not in d:
            raise MeaningError(f"a meaning is a dict with a 'kind', got {d!r}")
        kind = d["kind"]
        optional = {s.rstrip("?") for s in KINDS.get(kind, ((),))[0] if s.endswith("?")}
        refs = {}
        for s in ("a", "b", "p"):
            if d.get(s) is not None or s in optional:
                refs[s] = Ref.from_dict(d.get(s))
        cap = Caption.from_dict(d["caption"]) if d.get("caption") is not None else None
        unknown = set(d) - {"kind", "a", "b", "p", "attr", "rel", "extreme", "op", "caption"}
        if unknown:
            raise MeaningError(f"unknown meaning keys {sorted(unknown)}")
        return cls(kind, caption=cap, attr=d.get("attr"), rel=d.get("rel"), extreme=d.get("extreme"),
                   op=d.get("op"), **refs)


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


# ---- compiling a meaning into a program -------------------------------------------------------
def signature(multi_image: bool = False, choices: bool = False) -> str:
    """The entry function's signature for a request's inputs."""
    return "def execute(images):" if multi_image else ("def execute(image, choices):" if choices
                                                       else "def execute(image):")


def compile_program(m: Meaning, output: str = "text", multi_image: bool = False, choices: bool = False) -> str:
    """The program for ``m`` with the request's signature, returning ``output``.

    Raises ``MeaningError`` when the meaning cannot answer such a request (a count meaning for a
    boxes task, a caption choice without choices, a single-image question on several images).
    """
    if output not in OUTPUTS:
        raise MeaningError(f"unknown output kind {output!r}")
    if output not in m.outputs:
        raise MeaningError(f"a {m.kind} question cannot return {output}")
    if (m.kind == "choose_image") != multi_image:
        raise MeaningError("only image choice takes several images" if multi_image
                           else "image choice needs several images")
    if (m.kind == "choose_caption") != choices:
        raise MeaningError("only caption choice takes choices" if choices else "caption choice needs choices")
    body = _BODY[m.kind](m, output)
    return signature(multi_image, choices) + "\n" + "".join(f"    {line}\n" for line in body)


def _q(text: str) -> str:
    return json.dumps(text)


def _yes_no(expr: str, output: str) -> list[str]:
    return [f"return {expr}"] if output == "bool" else [f"return \"yes\" if {expr} else \"no\""]


def _number(expr: str, output: str) -> list[str]:
    return [f"return {expr}"] if output == "count" else [f"return str({expr})"]


def _attribute(patch: str, attr: str, ref: Ref) -> list[str]:
    """Lines that return ``attr`` of the patch named ``patch`` (an object matching ``ref``)."""
    if attr in ATTRIBUTE_QUESTION:
        return [f"return {patch}.query({_q(ATTRIBUTE_QUESTION[attr])})"]
    big = Ref("large", ref.color, ref.shape).name()
    return [f"large = image.find({_q(big)})",
            f"return \"large\" if any(p.iou({patch}) > 0.5 for p in large) else \"small\""]


def _find(var: str, ref: Ref | None) -> str:
    return f"{var} = image.find({_q((ref or Ref()).name())})"


def _body_count(m, out):
    return _number(f"image.count({_q((m.a or Ref()).name())})", out)


def _body_exists(m, out):
    return _yes_no(f"image.exists({_q(m.a.name())})", out)


def _body_absent(m, out):
    return _yes_no(f"not image.exists({_q(m.a.name())})", out)


def _body_attribute(m, out):
    return [_find("objs", m.a), "if not objs:", "    return \"none\"", "obj = objs[0]"] + _attribute("obj", m.attr, m.a)


def _body_extreme_attribute(m, out):
    return ([_find("objs", m.a), "if not objs:", "    return \"none\"", f"obj = {m.extreme}(objs)"]
            + _attribute("obj", m.attr, Ref()))


def _body_relation(m, out):
    no = "False" if out == "bool" else "\"no\""
    return ([_find("a", m.a), _find("b", m.b), "if not a or not b:", f"    return {no}"]
            + _yes_no(f"a[0].{RELATION_METHOD[m.rel]}(b[0])", out))


def _related(m) -> list[str]:
    return [f"objs = [p for p in image.find({_q((m.a or Ref()).name())}) if p.iou(b[0]) < 0.5 "
            f"and p.{RELATION_METHOD[m.rel]}(b[0])]"]


def _body_relate_attr(m, out):
    return ([_find("b", m.b), "if not b:", "    return \"none\""] + _related(m)
            + ["if not objs:", "    return \"none\"", "obj = objs[0]"] + _attribute("obj", m.attr, Ref()))


def _body_relational_count(m, out):
    zero = "0" if out == "count" else "\"0\""
    return [_find("b", m.b), "if not b:", f"    return {zero}"] + _related(m) + _number("len(objs)", out)


def _body_compare(m, out):
    return _yes_no(f"image.count({_q(m.a.name())}) {_OPERATOR[m.op]} image.count({_q(m.b.name())})", out)


def _body_all_are(m, out):
    a = m.a or Ref()
    both = a.merged(m.p)
    return [f"n = image.count({_q(a.name())})"] + _yes_no(f"image.count({_q(both.name())}) == n", out)


def _body_same_attr(m, out):
    a = m.a or Ref()
    if m.attr == "size":
        return [f"n = image.count({_q(a.name())})",
                f"large = image.count({_q(Ref('large', a.color, a.shape).name())})"] + _yes_no("large in (0, n)", out)
    values = f"[p.query({_q(ATTRIBUTE_QUESTION[m.attr])}) for p in image.find({_q(a.name())})]"
    return [f"values = {values}"] + _yes_no("len(set(values)) <= 1", out)


def _body_same_color_count(m, out):
    zero = "0" if out == "count" else "\"0\""
    return ([_find("objs", m.a), "if not objs:", f"    return {zero}",
             f"color = objs[0].query({_q(ATTRIBUTE_QUESTION['color'])})"] + _number("image.count(color + \" object\") - 1", out))


def _body_read(m, out):
    return [_find("objs", m.a), "if not objs:", "    return \"\"", "return objs[0].read_text()"]


def _body_locate(m, out):
    return [f"return image.find({_q(m.a.name())})[:1]"]


def _body_locate_all(m, out):
    return [f"return image.find({_q((m.a or Ref()).name())})"]


def _body_locate_extreme(m, out):
    return [_find("objs", m.a), "if not objs:", "    return []", f"return [{m.extreme}(objs)]"]


def _body_locate_relation(m, out):
    return [_find("b", m.b), "if not b:", "    return []"] + _related(m) + ["return objs"]


def _body_caption_check(m, out):
    return _yes_no(f"image.match({_q(m.caption.text())}) >= 1", out)


def _body_choose_caption(m, out):
    return ["return best_text_match(image, choices)"]


def _body_choose_image(m, out):
    return [f"return best_image_match(images, {_q(m.caption.text())})"]


_BODY = {kind: globals()[f"_body_{kind}"] for kind in KINDS}
