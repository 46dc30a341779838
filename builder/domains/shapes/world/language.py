"""Caption semantics of the shapes world: spatial relations and what a caption means.

Object names and their parser live in ``builder.domains.shapes.vocab`` (the one vocabulary).
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.domains.shapes.vocab import ObjectSpec, with_article
from builder.domains.shapes.world.scene import SceneObject


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
