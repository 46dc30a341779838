"""Ground truth of a meaning tree on shapes-world scene graphs (metrics, rewards and tests only).

Planners and programs never see this. It answers a tree from the scene's object list and returns
``None`` when the request is ill-posed on that scene — an attribute of a set that is not exactly
one object, a relation, a nearest object or a superlative too close to call, a tie between images —
so evaluation uses only scenes where the request has one right answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from builder.domains.shapes.world.language import relation_holds
from builder.domains.shapes.world.scene import Scene
from builder.domains.shapes.world.tasks import spatial_margin
from builder.planner import tree as T
from builder.planner.tree import Tree
from builder.planner.truth import extreme_object


class Ambiguous(Exception):
    """The request has no single right answer on this scene."""


def answer(tree: Tree, scene: Scene | Sequence[Scene], options: Sequence[str] | None = None) -> Any:
    """The right answer (bool, int, str, list of boxes, or an image index for choices), or None if ill-posed.

    ``scene`` is a list of scenes for image choices. ``best_caption`` has no ground truth here
    (its captions are free text): None.
    """
    try:
        if T.result_type(tree) == T.CHOICE:
            return _choice(tree, list(scene))  # type: ignore[arg-type]
        value = _Eval(scene).run(tree)  # type: ignore[arg-type]
    except Ambiguous:
        return None
    if T.result_type(tree) == T.SET:
        return [list(o.box) for o in value] if value else []
    return value


class _Eval:
    def __init__(self, scene: Scene):
        self.scene = scene
        self.margin = spatial_margin(scene)

    def run(self, t: Tree) -> Any:
        return getattr(self, "_" + t["op"])(t)

    # -- sets (lists of SceneObject, in scene order) --
    def _objects(self, t):
        return list(self.scene.objects)

    def _select(self, t):
        if t.get("noun"):
            return []  # the shapes world holds only its five shapes
        return [o for o in self.scene.objects
                if all(t.get(f) is None or t.get(f) == getattr(o, f) for f in T.ATTRS)]

    def _complement(self, t):
        inner = self.run(t["set"])
        return [o for o in self.scene.objects if all(o is not i for i in inner)]

    def _intersect(self, t):
        first, *rest = [self.run(s) for s in t["sets"]]
        return [o for o in first if all(any(o is x for x in r) for r in rest)]

    def _union(self, t):
        members = [self.run(s) for s in t["sets"]]
        return [o for o in self.scene.objects if any(any(o is x for x in m) for m in members)]

    def _related(self, t):
        objs, anchors = self.run(t["set"]), self.run(t["anchor"])
        out = []
        for o in objs:
            verdicts = [relation_holds(o, a, t["rel"], self.margin) for a in anchors if a is not o]
            if True in verdicts:
                out.append(o)
            elif None in verdicts:
                raise Ambiguous
        return out

    def _nearest(self, t):
        objs, anchors = self.run(t["set"]), self.run(t["anchor"])
        if not anchors:
            return []
        if len(anchors) > 1:
            raise Ambiguous  # "the" anchor is not one object
        a = anchors[0]
        cands = sorted((math.dist(o.center, a.center), i) for i, o in enumerate(objs) if o is not a)
        if len(cands) > 1 and cands[1][0] - cands[0][0] < self.margin:
            raise Ambiguous
        return [objs[cands[0][1]]] if cands else []

    def _extreme(self, t):
        objs = self.run(t["set"])
        if not objs:
            return []
        found = extreme_object(objs, t["by"], self.margin)
        if found is None:  # too close to call
            raise Ambiguous
        return [found]

    def _sharing(self, t):
        objs, anchors = self.run(t["set"]), self.run(t["anchor"])
        if not anchors:
            return []
        if len(anchors) > 1:
            raise Ambiguous
        a, attr = anchors[0], t["attr"]
        return [o for o in objs if o is not a and getattr(o, attr) == getattr(a, attr)]

    # -- numbers --
    def _count(self, t):
        return len(self.run(t["set"]))

    def _number(self, t):
        return t["value"]

    def _add(self, t):
        return sum(self.run(a) for a in t["args"])

    def _sub(self, t):
        left, right = (self.run(a) for a in t["args"])
        return max(left - right, 0)

    # -- truth values --
    def _exists(self, t):
        return bool(self.run(t["set"]))

    def _compare(self, t):
        left, right = self.run(t["left"]), self.run(t["right"])
        return {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right,
                "==": left == right, "!=": left != right}[t["cmp"]]

    def _every(self, t):
        within = self.run(t["in"])
        return all(any(o is x for x in within) for o in self.run(t["set"]))

    def _same(self, t):
        return len({getattr(o, t["attr"]) for o in self.run(t["set"])}) <= 1

    def _parity(self, t):
        return self.run(t["num"]) % 2 == (0 if t["parity"] == "even" else 1)

    def _not(self, t):
        return not self.run(t["arg"])

    def _all_of(self, t):
        return all([self.run(a) for a in t["args"]])  # every clause evaluated: ambiguity anywhere counts

    def _any_of(self, t):
        return any([self.run(a) for a in t["args"]])

    # -- text --
    def _attribute(self, t):
        objs = self.run(t["set"])
        if not objs:
            return "none"
        if len(objs) > 1:
            raise Ambiguous
        value = getattr(objs[0], t["attr"])
        if t.get("options"):
            return T.option_map(t["attr"], t["options"]).get(value, value)
        return value

    def _read(self, t):
        objs = self.run(t["set"])
        if not objs:
            return "none"
        if len(objs) > 1 or not objs[0].text:
            raise Ambiguous
        return objs[0].text


def _choice(t: Tree, scenes: list[Scene]) -> int | None:
    if t["op"] == "best_caption":
        return None
    if t["op"] == "first_image":
        for i, scene in enumerate(scenes):
            if _Eval(scene).run(t["cond"]):
                return i
        return None
    values = [_Eval(s).run(t["num"]) for s in scenes]
    best = max(values) if t["op"] == "argmax_image" else min(values)
    if values.count(best) > 1:
        raise Ambiguous
    return values.index(best)
