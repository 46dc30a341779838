"""The shapes world's small language: object names, their matching, and caption semantics.

Object names are what programs pass to ``ImagePatch.find``: ``[size] [colour] (shape|object)``
with optional article and plural, e.g. "circle", "red circles", "large blue square", "objects".
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.world.scene import COLORS, SHAPES, SIZES, SceneObject

RELATIONS = ("left of", "right of", "above", "below")
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_ANY = ("object", "objects", "thing", "things")
_SKIP = ("the", "a", "an", "all", "any")


@dataclass(frozen=True)
class ObjectSpec:
    """Attributes an object must have to match a name (None = any)."""

    size: str | None = None
    color: str | None = None
    shape: str | None = None

    def matches(self, obj: SceneObject) -> bool:
        """True if ``obj`` has every attribute this spec names."""
        return ((self.size is None or obj.size == self.size) and (self.color is None or obj.color == self.color)
                and (self.shape is None or obj.shape == self.shape))

    def name(self, plural: bool = False) -> str:
        """Canonical name, e.g. "large red circle" or "red objects"."""
        noun = self.shape or "object"
        words = [w for w in (self.size, self.color) if w] + [noun + ("s" if plural else "")]
        return " ".join(words)


def parse_object_name(name: str) -> ObjectSpec:
    """Parse an object name such as "the large red circles"; raises ValueError on unknown words."""
    size = color = shape = None
    words = [w for w in name.lower().replace(",", " ").split() if w not in _SKIP]
    if not words:
        raise ValueError(f"empty object name {name!r}")
    for w in words:
        stem = w[:-1] if w.endswith("s") and w[:-1] in SHAPES else w
        if stem in SIZES:
            size = stem
        elif stem in COLORS:
            color = stem
        elif stem in SHAPES:
            shape = stem
        elif stem in _ANY:
            pass
        else:
            raise ValueError(f"unknown word {w!r} in object name {name!r}")
    return ObjectSpec(size, color, shape)


def with_article(phrase: str) -> str:
    """'a red circle' / 'an orange circle'."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def relation_holds(a: SceneObject, b: SceneObject, rel: str, margin: float) -> bool | None:
    """Whether ``a`` is ``rel`` ``b`` judged by box centres: True/False when the centres differ
    by at least ``margin`` pixels along the relation's axis, None when it is too close to call."""
    (ax, ay), (bx, by) = a.center, b.center
    d = {"left of": bx - ax, "right of": ax - bx, "above": by - ay, "below": ay - by}[rel]
    if d >= margin:
        return True
    if d <= -margin:
        return False
    return None


@dataclass(frozen=True)
class Caption:
    """A caption's meaning. kind "exists": some object matches ``a``; "relation": some object
    matching ``a`` is ``rel`` some other object matching ``b``; "count": exactly ``k`` match ``a``."""

    kind: str
    a: ObjectSpec
    b: ObjectSpec | None = None
    rel: str | None = None
    k: int | None = None

    def fill(self) -> dict:
        """Placeholder values for caption patterns."""
        out = {"a_obj": with_article(self.a.name()), "objs": self.a.name(plural=True)}
        if self.kind == "relation":
            out.update(b_obj=with_article(self.b.name()), rel=self.rel)
        if self.kind == "count":
            out["k"] = str(self.k)
        return out

    def holds(self, objects, margin: float) -> bool | None:
        """True/False for the objects, or None when a spatial relation is too close to call."""
        objects = list(objects)
        if self.kind == "exists":
            return any(self.a.matches(o) for o in objects)
        if self.kind == "count":
            return sum(self.a.matches(o) for o in objects) == self.k
        if self.kind != "relation":
            raise ValueError(f"unknown caption kind {self.kind!r}")
        verdicts = [relation_holds(x, y, self.rel, margin) for x in objects for y in objects
                    if x is not y and self.a.matches(x) and self.b.matches(y)]
        if any(v is True for v in verdicts):
            return True
        if any(v is None for v in verdicts):
            return None
        return False
