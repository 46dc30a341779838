"""Random meaning trees (training data and tests) and the 20 question kinds of ``meaning.py`` as trees.

``random_tree`` draws well-typed trees of a requested result type up to a depth, with each
operator's fields filled from the vocabulary; ``from_meaning`` writes a ``Meaning`` of the
previous planner as the equivalent tree, so the old kinds are a subset of the new language.
"""

from __future__ import annotations

import numpy as np

from builder.planner import tree as T
from builder.planner.meaning import Meaning, Ref
from builder.planner.tree import BOOL, CHOICE, NUM, SET, TEXT, Tree

_BY_TYPE = {t: [op for op, (r, _) in T.OPS.items() if r == t] for t in T.TYPES}
_LEAVES = {SET: ["select", "objects"], NUM: ["count"], BOOL: ["exists"], TEXT: ["attribute"],
           CHOICE: ["argmax_image"]}


def random_select(rng: np.random.Generator, p_attr: float = 0.5) -> Tree:
    """A ``select`` naming each attribute with probability ``p_attr`` (at least one)."""
    while True:
        t = T.select(*(str(rng.choice(v)) if rng.random() < p_attr else None
                       for v in (tuple(T._WORDS["color"]), T._WORDS["shape"], T._WORDS["size"])))
        if any(t[f] for f in T.ATTRS):
            return t


def random_tree(rng: np.random.Generator, kind: str = BOOL, depth: int = 3) -> Tree:
    """A random well-typed tree of result type ``kind`` with at most ``depth`` levels of operators."""
    ops = _LEAVES[kind] if depth <= 1 else [op for op in _BY_TYPE[kind] if op != "best_caption"]
    op = str(rng.choice(ops))
    if op == "select":
        return random_select(rng)
    out: Tree = {"op": op}
    for name, field in T.OPS[op][1].items():
        out[name] = _field(rng, op, name, field, depth)
    return out


def _field(rng, op, name, field, depth):
    base = field.rstrip("?+2")
    if base in T.TYPES:
        n = 1 if field[-1] not in "+2" else (2 if field.endswith("2") or rng.random() < 0.8 else 3)
        items = [random_tree(rng, base, depth - 1) for _ in range(n)]
        return items if field[-1] in "+2" else items[0]
    if field == "int":
        return int(rng.integers(0, 6))
    if field == "noun?" or field == "options?":
        return None
    return str(rng.choice(T._WORDS[base]))


def _sel(ref: Ref | None) -> Tree:
    ref = ref or Ref()
    if ref.empty:
        return {"op": "objects"}
    return T.select(ref.color, ref.shape, ref.size)


def _count(ref: Ref | None) -> Tree:
    return {"op": "count", "set": _sel(ref)}


def from_meaning(m: Meaning) -> Tree:
    """The tree equivalent to one of the previous planner's question kinds (choice kinds included)."""
    k = m.kind
    related = ({"op": "related", "set": _sel(m.a), "rel": m.rel, "anchor": _sel(m.b)}
               if m.rel else None)
    extreme = {"op": "extreme", "set": _sel(m.a), "by": m.extreme} if m.extreme else None
    table = {
        "count": lambda: _count(m.a),
        "exists": lambda: {"op": "exists", "set": _sel(m.a)},
        "absent": lambda: {"op": "not", "arg": {"op": "exists", "set": _sel(m.a)}},
        "attribute": lambda: {"op": "attribute", "attr": m.attr, "set": _sel(m.a), "options": None},
        "extreme_attribute": lambda: {"op": "attribute", "attr": m.attr, "set": extreme, "options": None},
        "relation": lambda: {"op": "exists", "set": related},
        "relate_attr": lambda: {"op": "attribute", "attr": m.attr, "set": related, "options": None},
        "relational_count": lambda: {"op": "count", "set": related},
        "compare": lambda: {"op": "compare", "cmp": {"more": ">", "fewer": "<", "same": "=="}[m.op],
                            "left": _count(m.a), "right": _count(m.b)},
        "all_are": lambda: {"op": "every", "set": _sel(m.a), "in": _sel(m.a.merged(m.p) if m.a else m.p)},
        "same_attr": lambda: {"op": "same", "attr": m.attr, "set": _sel(m.a)},
        "read": lambda: {"op": "read", "set": _sel(m.a)},
        "locate": lambda: _sel(m.a),
        "locate_all": lambda: _sel(m.a),
        "locate_extreme": lambda: extreme,
        "locate_relation": lambda: related,
        "choose_caption": lambda: {"op": "best_caption"},
    }
    if k in table:
        return table[k]()
    if k == "same_color_count":
        return {"op": "count", "set": {"op": "sharing", "set": {"op": "objects"}, "attr": "color", "anchor": _sel(m.a)}}
    caption = _caption(m.caption)
    return caption if k == "caption_check" else {"op": "first_image", "cond": caption}


def _caption(c) -> Tree:
    if c.kind == "exists":
        return {"op": "exists", "set": _sel(c.a)}
    if c.kind == "count":
        return {"op": "compare", "cmp": "==", "left": _count(c.a), "right": {"op": "number", "value": c.k}}
    return {"op": "exists", "set": {"op": "related", "set": _sel(c.a), "rel": c.rel, "anchor": _sel(c.b)}}


def is_question_kind(tree: Tree) -> bool:
    """True if ``tree`` is one of the previous planner's 20 question kinds (``from_meaning``'s shapes):
    a single select/extreme/relation under one count, exists, attribute, compare, every, same or read."""
    op = tree["op"]
    kids = T.children(tree)
    if op in ("select", "objects"):
        return True
    if op == "extreme":
        return _leaf(tree["set"])
    if op == "related":
        return _leaf(tree["set"]) and _leaf(tree["anchor"])
    if op in ("count", "exists"):
        inner = tree["set"]
        return _leaf(inner) or (inner["op"] == "related" and is_question_kind(inner)) or (
            op == "count" and inner["op"] == "sharing" and inner["set"]["op"] == "objects" and _leaf(inner["anchor"]))
    if op == "not":
        return tree["arg"]["op"] == "exists" and _leaf(tree["arg"]["set"])
    if op == "attribute":
        inner = tree["set"]
        return not tree.get("options") and (_leaf(inner) or inner["op"] in ("extreme", "related")) and is_question_kind(inner)
    if op == "compare":
        counts = [k for k in kids if k["op"] == "count" and _leaf(k["set"])]
        return len(counts) == 2 and tree["cmp"] in (">", "<", "==")
    if op in ("every", "same", "read"):
        return all(_leaf(k) for k in kids)
    return op == "best_caption"


def _leaf(t: Tree) -> bool:
    return t["op"] in ("select", "objects") and not t.get("noun")
