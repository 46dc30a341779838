"""The meaning language: typed trees over the objects in an image (``docs/meaning.md``).

A tree is plain JSON data: a dict with an ``"op"`` and the fields that op takes. ``OPS`` is the
one table of operators (result type and field types) that validation, the compiler
(``tree_compile``), the ground-truth interpreter (``tree_truth``) and the English renderer
(``tree_text``) all read, so an operator is added in one place.

Trees stay dicts (not classes) because they travel as JSON everywhere: blind evaluation sets,
planner training data, self-training pairs and task-card history.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from builder.domains import vocabulary

VOCAB = vocabulary("shapes")  # the one vocabulary (builder.domains); another domain would pass its own
COLORS, SHAPES, SIZES = VOCAB.values["color"], VOCAB.values["shape"], VOCAB.values["size"]
RELATIONS = VOCAB.relations

Tree = dict[str, Any]

# Result types (docs/meaning.md, "Types").
SET, NUM, BOOL, TEXT, CHOICE = "Set", "Num", "Bool", "Text", "Choice"
# Field kinds besides the result types: a vocabulary value or a closed list of words.
ATTRS = ("color", "shape", "size")
EXTREMES = ("leftmost", "rightmost", "topmost", "bottommost", "largest", "smallest")
CMPS = (">", ">=", "<", "<=", "==", "!=")
PARITIES = ("even", "odd")

# op -> (result type, {field: kind}); a kind ending in "+" is a list of two or more, "?" may be null.
OPS: dict[str, tuple[str, dict[str, str]]] = {
    "objects": (SET, {}),
    "select": (SET, {"color": "color?", "shape": "shape?", "size": "size?", "noun": "noun?"}),
    "complement": (SET, {"set": SET}),
    "intersect": (SET, {"sets": SET + "+"}),
    "union": (SET, {"sets": SET + "+"}),
    "related": (SET, {"set": SET, "rel": "rel", "anchor": SET}),
    "nearest": (SET, {"set": SET, "anchor": SET}),
    "extreme": (SET, {"set": SET, "by": "extreme"}),
    "sharing": (SET, {"set": SET, "attr": "attr", "anchor": SET}),
    "count": (NUM, {"set": SET}),
    "number": (NUM, {"value": "int"}),
    "add": (NUM, {"args": NUM + "+"}),
    "sub": (NUM, {"args": NUM + "2"}),
    "exists": (BOOL, {"set": SET}),
    "compare": (BOOL, {"cmp": "cmp", "left": NUM, "right": NUM}),
    "every": (BOOL, {"set": SET, "in": SET}),
    "same": (BOOL, {"attr": "attr", "set": SET}),
    "parity": (BOOL, {"parity": "parity", "num": NUM}),
    "not": (BOOL, {"arg": BOOL}),
    "all_of": (BOOL, {"args": BOOL + "+"}),
    "any_of": (BOOL, {"args": BOOL + "+"}),
    "attribute": (TEXT, {"attr": "attr", "set": SET, "options": "options?"}),
    "read": (TEXT, {"set": SET}),
    "argmax_image": (CHOICE, {"num": NUM}),
    "argmin_image": (CHOICE, {"num": NUM}),
    "first_image": (CHOICE, {"cond": BOOL}),
    "best_caption": (CHOICE, {}),
}
TYPES = (SET, NUM, BOOL, TEXT, CHOICE)
_WORDS = {"color": tuple(COLORS), "shape": SHAPES, "size": SIZES, "rel": RELATIONS, "attr": ATTRS,
          "extreme": EXTREMES, "cmp": CMPS, "parity": PARITIES}
# The output kinds a request may ask for, by the root's type (docs/meaning.md).
OUTPUTS_OF = {SET: ("boxes",), NUM: ("count", "text"), BOOL: ("bool", "text"), TEXT: ("text",),
              CHOICE: ("choice",)}
MAX_NUMBER = 1000


class TreeError(ValueError):
    """A tree breaks the meaning language: an unknown op, a missing or ill-typed field."""


def check(tree: Any, where: str = "tree") -> str:
    """Validate ``tree`` recursively and return its result type; raises ``TreeError`` naming the spot."""
    if not isinstance(tree, dict) or not isinstance(tree.get("op"), str):
        raise TreeError(f"{where}: expected an object with an 'op', got {_short(tree)}")
    op = tree["op"]
    if op not in OPS:
        raise TreeError(f"{where}: unknown op {op!r}")
    result, fields = OPS[op]
    extra = set(tree) - set(fields) - {"op"}
    if extra:
        raise TreeError(f"{where} ({op}): unknown field(s) {', '.join(sorted(extra))}")
    for name, kind in fields.items():
        _check_field(tree, name, kind, f"{where}.{name}")
    if op == "select" and tree.get("shape") and tree.get("noun"):
        raise TreeError(f"{where} (select): 'shape' and 'noun' are exclusive")
    return result


def _check_field(tree: Tree, name: str, kind: str, where: str) -> None:
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    value = tree.get(name)
    if value is None:
        if optional:
            return
        raise TreeError(f"{where}: missing")
    if kind in TYPES:
        got = check(value, where)
        if got != kind:
            raise TreeError(f"{where}: expected a {kind}, got a {got} ({value['op']})")
    elif kind[:-1] in TYPES:  # a list: "+" two or more, "2" exactly two
        if not isinstance(value, list) or len(value) < 2 or (kind.endswith("2") and len(value) != 2):
            raise TreeError(f"{where}: expected {'two' if kind.endswith('2') else 'two or more'} {kind[:-1]} trees")
        for i, item in enumerate(value):
            _check_field({"x": item}, "x", kind[:-1], f"{where}[{i}]")
    elif kind == "int":
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_NUMBER:
            raise TreeError(f"{where}: expected a whole number from 0 to {MAX_NUMBER}, got {_short(value)}")
    elif kind == "noun":
        if not isinstance(value, str) or not value.strip() or len(value) > 60:
            raise TreeError(f"{where}: expected a noun phrase, got {_short(value)}")
    elif kind == "options":
        if (not isinstance(value, list) or len(value) < 2
                or not all(isinstance(v, str) and v.strip() for v in value)):
            raise TreeError(f"{where}: expected a list of two or more answer options")
    elif value not in _WORDS[kind]:
        raise TreeError(f"{where}: {_short(value)} is not a {kind} (one of {', '.join(_WORDS[kind])})")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def result_type(tree: Tree) -> str:
    """The result type of a valid tree (no validation; see ``check``)."""
    return OPS[tree["op"]][0]


def children(tree: Tree) -> list[Tree]:
    """The sub-trees of ``tree``, in field order."""
    out: list[Tree] = []
    for name, kind in OPS[tree["op"]][1].items():
        value = tree.get(name)
        if value is None:
            continue
        if kind.rstrip("?") in TYPES:
            out.append(value)
        elif kind[:-1] in TYPES:
            out.extend(value)
    return out


def operators(tree: Tree) -> list[str]:
    """Every op in the tree, pre-order (for per-operator reports)."""
    return [tree["op"], *(op for child in children(tree) for op in operators(child))]


def nouns(tree: Tree) -> list[str]:
    """The open-vocabulary nouns a tree holds (its ``select`` nodes' ``noun``), in order."""
    found = [tree["noun"]] if tree.get("op") == "select" and tree.get("noun") else []
    return found + [n for c in children(tree) for n in nouns(c)]


def key(tree: Tree) -> str:
    """A canonical string for a tree (equal trees, equal keys): for deduplication and exact match."""
    return json.dumps(normalise(tree), sort_keys=True, separators=(",", ":"))


def rewrite(tree: Tree, fn: Callable[[Tree], Tree]) -> Tree:
    """A new tree: every node's sub-trees rewritten first, then the node itself passed to ``fn``."""
    out = dict(tree)
    for name, kind in OPS[tree["op"]][1].items():
        value = tree.get(name)
        if value is None:
            continue
        if kind.rstrip("?") in TYPES:
            out[name] = rewrite(value, fn)
        elif kind[:-1] in TYPES:
            out[name] = [rewrite(v, fn) for v in value]
    return fn(out)


def normalise(tree: Tree) -> Tree:
    """The tree with defaults written out (``select``'s absent attributes as null) and set lists sorted."""
    return rewrite(tree, _normal_node)


def _normal_node(node: Tree) -> Tree:
    op = node["op"]
    out: Tree = {"op": op}
    for name, kind in OPS[op][1].items():
        value = node.get(name)
        if kind[:-1] in TYPES and op in ("intersect", "union", "add", "all_of", "any_of"):
            value = sorted(value, key=lambda v: json.dumps(v, sort_keys=True))  # order carries no meaning
        out[name] = value
    return out


def select(color: str | None = None, shape: str | None = None, size: str | None = None,
           noun: str | None = None) -> Tree:
    """A ``select`` node (the commonest leaf), written out in full."""
    return {"op": "select", "color": color, "shape": shape, "size": size, "noun": noun}


def option_map(attr: str, options: list[str]) -> dict[str, str]:
    """Attribute value -> the customer's option word naming it ("large" -> "big"), read with the lexicon."""
    mapping: dict[str, str] = {}
    for option in options:
        for word in option.split():
            found = VOCAB.lookup(word)
            if found and found[0] == attr:
                mapping[str(found[1])] = option
    return mapping
