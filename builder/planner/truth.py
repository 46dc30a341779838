"""Ground truth of a ``Meaning`` on a shapes-world scene graph (for metrics and rewards only).

Planners and programs never see this: it answers a meaning from the scene's object list, the way
``builder.domains.shapes.world.tasks`` answers its own questions, and returns ``None`` when the question is
ill-posed on that scene (a referent that is absent or not unique, a relation too close to call,
a superlative whose runner-up is too close), so evaluation only uses scenes where the question
has one right answer.
"""

from __future__ import annotations

from builder.domains.shapes.world.language import relation_holds
from builder.domains.shapes.world.scene import Scene, SceneObject
from builder.domains.shapes.world.tasks import spatial_margin
from builder.planner.meaning import Caption, Meaning, Ref

_AXIS = {"leftmost": (0, min), "rightmost": (0, max), "topmost": (1, min), "bottommost": (1, max)}


def matches(ref: Ref | None, obj: SceneObject) -> bool:
    """True if ``obj`` has every attribute ``ref`` names."""
    ref = ref or Ref()
    return all(getattr(ref, f) is None or getattr(ref, f) == getattr(obj, f) for f in ("size", "color", "shape"))


def _all(scene: Scene, ref: Ref | None) -> list[SceneObject]:
    return [o for o in scene.objects if matches(ref, o)]


def _unique(scene: Scene, ref: Ref | None) -> SceneObject | None:
    objs = _all(scene, ref)
    return objs[0] if len(objs) == 1 else None


def extreme_object(objs: list[SceneObject], extreme: str, margin: float) -> SceneObject | None:
    """The leftmost ... largest of ``objs``, or None if there is none or it is too close to call
    (centres within ``margin`` pixels; areas within a quarter of the largest: the same nominal size)."""
    if not objs:
        return None
    if extreme in ("largest", "smallest"):
        keyed = sorted(objs, key=lambda o: (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]))
        if len(keyed) > 1:
            area = [(o.box[2] - o.box[0]) * (o.box[3] - o.box[1]) for o in keyed]
            gap = area[1] - area[0] if extreme == "smallest" else area[-1] - area[-2]
            if gap < 0.25 * max(area):  # same nominal size: no single answer
                return None
        return keyed[0] if extreme == "smallest" else keyed[-1]
    axis, pick = _AXIS[extreme]
    coords = sorted(o.center[axis] for o in objs)
    if len(objs) > 1:
        gap = coords[1] - coords[0] if pick is min else coords[-1] - coords[-2]
        if gap < margin:
            return None
    return pick(objs, key=lambda o: o.center[axis])


def _extreme(scene: Scene, ref: Ref | None, extreme: str) -> SceneObject | None:
    """The extreme object among ``ref``'s matches, or None if there is none or it is too close to call."""
    return extreme_object(_all(scene, ref), extreme, spatial_margin(scene))


def _related(scene: Scene, a: Ref | None, rel: str, b: SceneObject) -> list[SceneObject] | None:
    """Objects matching ``a`` (other than ``b``) that are ``rel`` b; None if any is too close to call."""
    margin = spatial_margin(scene)
    out = []
    for o in _all(scene, a):
        if o is b:
            continue
        v = relation_holds(o, b, rel, margin)
        if v is None:
            return None
        if v:
            out.append(o)
    return out


def _attr(obj: SceneObject, attr: str) -> str:
    return getattr(obj, attr)


def caption_holds(cap: Caption, scene: Scene) -> bool | None:
    """Whether a caption is true of the scene (None when a relation is too close to call)."""
    if cap.kind == "exists":
        return bool(_all(scene, cap.a))
    if cap.kind == "count":
        return len(_all(scene, cap.a)) == cap.k
    margin = spatial_margin(scene)
    verdicts = [relation_holds(x, y, cap.rel, margin) for x in _all(scene, cap.a) for y in _all(scene, cap.b)
                if x is not y]
    if any(v is True for v in verdicts):
        return True
    return None if any(v is None for v in verdicts) else False


def answer(m: Meaning, scene: Scene):
    """The right answer to ``m`` on ``scene`` (str, int, bool or list of boxes), or None if ill-posed.

    Yes/no answers are bools, counts ints, attributes and text strings, grounding a list of boxes.
    Choice meanings have no single-scene answer (they need the candidates): None.
    """
    rule = _RULES.get(m.kind)
    return None if rule is None else rule(m, scene)


def _count(m: Meaning, scene: Scene) -> int:
    return len(_all(scene, m.a))


def _presence(m: Meaning, scene: Scene) -> bool:
    return bool(_all(scene, m.a)) == (m.kind == "exists")


def _attribute(m: Meaning, scene: Scene) -> str | None:
    obj = _unique(scene, m.a)
    return None if obj is None else _attr(obj, m.attr)


def _extreme_attribute(m: Meaning, scene: Scene) -> str | None:
    obj = _extreme(scene, m.a, m.extreme)
    return None if obj is None else _attr(obj, m.attr)


def _relation(m: Meaning, scene: Scene) -> bool | None:
    a, b = _unique(scene, m.a), _unique(scene, m.b)
    if a is None or b is None or a is b:
        return None
    return relation_holds(a, b, m.rel, spatial_margin(scene))


def _relative(m: Meaning, scene: Scene):
    """relate_attr, relational_count and locate_relation: the objects in ``m.rel`` to the unique ``m.b``."""
    b = _unique(scene, m.b)
    rel = _related(scene, m.a, m.rel, b) if b is not None else None
    if rel is None:
        return None
    if m.kind == "relational_count":
        return len(rel)
    if len(rel) != 1:
        return None
    return _attr(rel[0], m.attr) if m.kind == "relate_attr" else [list(rel[0].box)]


def _compare(m: Meaning, scene: Scene) -> bool:
    na, nb = len(_all(scene, m.a)), len(_all(scene, m.b))
    return {"more": na > nb, "fewer": na < nb, "same": na == nb}[m.op]


def _all_are(m: Meaning, scene: Scene) -> bool | None:
    objs = _all(scene, m.a)
    return all(matches(m.p, o) for o in objs) if objs else None


def _same_attr(m: Meaning, scene: Scene) -> bool | None:
    objs = _all(scene, m.a)
    return len({_attr(o, m.attr) for o in objs}) == 1 if len(objs) >= 2 else None


def _same_color_count(m: Meaning, scene: Scene) -> int | None:
    obj = _unique(scene, m.a)
    return None if obj is None else sum(o.color == obj.color for o in scene.objects) - 1


def _read(m: Meaning, scene: Scene) -> str | None:
    obj = _unique(scene, m.a)
    return obj.text if obj is not None and obj.text else None


def _locate(m: Meaning, scene: Scene) -> list | None:
    obj = _unique(scene, m.a)
    return None if obj is None else [list(obj.box)]


def _locate_all(m: Meaning, scene: Scene) -> list | None:
    objs = _all(scene, m.a)
    return [list(o.box) for o in objs] if objs else None


def _locate_extreme(m: Meaning, scene: Scene) -> list | None:
    obj = _extreme(scene, m.a, m.extreme)
    return None if obj is None else [list(obj.box)]


def _caption_check(m: Meaning, scene: Scene) -> bool | None:
    return caption_holds(m.caption, scene)


# Meaning kind -> its answer on a scene; kinds not here (choices) have no single-scene answer.
_RULES = {
    "count": _count,
    "exists": _presence,
    "absent": _presence,
    "attribute": _attribute,
    "extreme_attribute": _extreme_attribute,
    "relation": _relation,
    "relate_attr": _relative,
    "relational_count": _relative,
    "locate_relation": _relative,
    "compare": _compare,
    "all_are": _all_are,
    "same_attr": _same_attr,
    "same_color_count": _same_color_count,
    "read": _read,
    "locate": _locate,
    "locate_all": _locate_all,
    "locate_extreme": _locate_extreme,
    "caption_check": _caption_check,
}
