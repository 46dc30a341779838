"""Random request-like meaning trees, open-vocabulary nouns and the held-out splits.

Trees are drawn the way customers ask (a set is mostly a described object, a number mostly a
count), not uniformly over the operator table. ``HELDOUT_COMBOS`` names operator combinations
that never occur in training trees, so a test can measure composition rather than recall.
"""

from __future__ import annotations

import numpy as np

from builder.planner import tree as T
from builder.planner.tree import BOOL, CHOICE, NUM, SET, TEXT, Tree

COLORS = tuple(T._WORDS["color"])
SHAPES = tuple(T._WORDS["shape"])
# Open-vocabulary nouns (singular, plural). Every fifth is held out of training (the noun split).
NOUNS = (("truck", "trucks"), ("pallet", "pallets"), ("bottle", "bottles"), ("box", "boxes"), ("car", "cars"),
         ("person", "people"), ("helmet", "helmets"), ("forklift", "forklifts"), ("cup", "cups"),
         ("label", "labels"), ("apple", "apples"), ("chair", "chairs"), ("screw", "screws"), ("bolt", "bolts"),
         ("dog", "dogs"), ("crate", "crates"), ("bicycle", "bicycles"), ("door", "doors"), ("window", "windows"),
         ("tomato", "tomatoes"), ("sign", "signs"), ("lamp", "lamps"), ("phone", "phones"), ("book", "books"),
         ("container", "containers"), ("tile", "tiles"), ("coin", "coins"), ("leaf", "leaves"), ("cat", "cats"),
         ("valve", "valves"), ("tablet", "tablets"), ("bag", "bags"), ("wheel", "wheels"), ("key", "keys"),
         ("traffic cone", "traffic cones"), ("safety vest", "safety vests"), ("brick", "bricks"),
         ("battery", "batteries"), ("mug", "mugs"), ("package", "packages"), ("tire", "tires"),
         ("cable", "cables"), ("can", "cans"), ("jar", "jars"), ("pipe", "pipes"), ("glove", "gloves"),
         ("shoe", "shoes"), ("bird", "birds"), ("tree", "trees"), ("boat", "boats"))
TRAIN_NOUNS = tuple(n for i, n in enumerate(NOUNS) if i % 5 != 4)
HELDOUT_NOUNS = tuple(n for i, n in enumerate(NOUNS) if i % 5 == 4)
HELDOUT_COMBOS = ("complement in related", "add over intersect", "compare over union", "nearest to an extreme")


def combos(tree: Tree) -> set[str]:
    """The held-out combinations (``HELDOUT_COMBOS``) that occur in ``tree``."""
    found: set[str] = set()
    op = tree["op"]
    kids = T.children(tree)
    if op == "related" and any(k["op"] == "complement" for k in kids):
        found.add("complement in related")
    counted = [k["set"]["op"] for k in kids if k["op"] == "count"]
    if op == "add" and "intersect" in counted:
        found.add("add over intersect")
    if op == "compare" and "union" in counted:
        found.add("compare over union")
    if op == "nearest" and tree["anchor"]["op"] == "extreme":
        found.add("nearest to an extreme")
    for k in kids:
        found |= combos(k)
    return found


class TreeSampler:
    """Draws request-like trees; ``nouns`` are the open-vocabulary nouns it may use (singular forms)."""

    def __init__(self, rng: np.random.Generator, nouns=TRAIN_NOUNS, p_noun: float = 0.12):
        self.rng = rng
        self.nouns = [n for n, _ in nouns]
        self.p_noun = p_noun

    def pick(self, options, p=None):
        """A random element of ``options``, weighted by ``p`` when given."""
        return options[int(self.rng.choice(len(options), p=p))]

    def leaf(self, allow_objects: bool = True) -> Tree:
        """A leaf set: ``objects`` (only when ``allow_objects``), a noun select, or a select on attributes."""
        r = self.rng.random()
        if allow_objects and r < 0.08:
            return {"op": "objects"}
        if r < 0.08 + self.p_noun:
            color = self.pick(COLORS) if self.rng.random() < 0.3 else None
            size = self.pick(T.SIZES) if self.rng.random() < 0.15 else None
            return T.select(color=color, size=size, noun=self.pick(self.nouns))
        while True:
            t = T.select(self.pick(COLORS) if self.rng.random() < 0.55 else None,
                         self.pick(SHAPES) if self.rng.random() < 0.7 else None,
                         self.pick(T.SIZES) if self.rng.random() < 0.25 else None)
            if any(t[f] for f in T.ATTRS):
                return t

    def set(self, depth: int = 3) -> Tree:
        """A random set tree up to ``depth``: a leaf, or an operator whose anchor or inner set may recurse."""
        if depth <= 1 or self.rng.random() < 0.42:
            return self.leaf()
        op = self.pick(("complement", "intersect", "union", "related", "nearest", "extreme", "sharing"),
                       p=(0.12, 0.1, 0.12, 0.3, 0.1, 0.16, 0.1))
        if op == "complement":
            return self.complement(depth)
        if op == "intersect":
            return self.intersect(depth)
        if op == "union":
            return self.union(depth)
        if op == "related":
            inner = self.leaf() if self.rng.random() < 0.8 else self.set(depth - 1)
            return {"op": op, "set": inner, "rel": self.pick(T._WORDS["rel"]), "anchor": self.set(depth - 1)}
        if op == "nearest":
            return {"op": op, "set": self.leaf(), "anchor": self.set(depth - 1)}
        if op == "extreme":
            inner = self.leaf() if self.rng.random() < 0.7 else self.set(depth - 1)
            return {"op": op, "set": inner, "by": self.pick(T.EXTREMES)}
        anchor = self.leaf(False)
        return {"op": op, "set": self.leaf(), "attr": self.pick(T.ATTRS), "anchor": anchor}

    def modifier(self, head: Tree) -> Tree:
        """A one-attribute select on a field ``head`` leaves open (a colour, a size or a shape)."""
        free = [f for f in ("color", "size", "shape") if not head.get(f) and not (f == "shape" and head.get("noun"))]
        field = self.pick(free or ["color"])
        value = self.pick({"color": COLORS, "size": T.SIZES, "shape": SHAPES}[field])
        return T.select(**{field: value})

    def complement(self, depth: int) -> Tree:
        """Everything but a leaf ("non-red things"), but a union ("neither stars nor circles"), or but the
        objects in a relation ("things not left of any circle")."""
        r = self.rng.random()
        if r < 0.65 or depth <= 1:
            return {"op": "complement", "set": self.leaf(False)}
        if r < 0.85:
            return {"op": "complement", "set": {"op": "union", "sets": [self.leaf(False) for _ in range(2)]}}
        return {"op": "complement", "set": self.related_to(depth - 1)}

    def union(self, depth: int) -> Tree:
        """Either of two or three leaves ("circles or stars"), or one set in either of two relations
        ("triangles left of the red circle or left of the blue one")."""
        if self.rng.random() < 0.8 or depth <= 1:
            n = 2 if self.rng.random() < 0.85 else 3
            return {"op": "union", "sets": [self.leaf(False) for _ in range(n)]}
        head = self.leaf()
        return {"op": "union", "sets": [{"op": "related", "set": head, "rel": self.pick(T._WORDS["rel"]),
                                         "anchor": self.set(depth - 1)} for _ in range(2)]}

    def related_to(self, depth: int) -> Tree:
        """Any object in a random relation to a random anchor."""
        return {"op": "related", "set": {"op": "objects"}, "rel": self.pick(T._WORDS["rel"]),
                "anchor": self.set(max(depth, 1))}

    def intersect(self, depth: int) -> Tree:
        """A set qualified the ways people qualify things: by an attribute, by not having one ("circles that
        aren't green"), by not being in a relation, by two relations at once, or by either of two attributes."""
        r = self.rng.random()
        if r < 0.3 or depth <= 1:
            a = T.select(color=self.pick(COLORS)) if self.rng.random() < 0.5 else T.select(size=self.pick(T.SIZES))
            return {"op": "intersect", "sets": [T.select(shape=self.pick(SHAPES)), a]}
        head = self.leaf()
        if r < 0.65:
            return {"op": "intersect", "sets": [head, {"op": "complement", "set": self.modifier(head)}]}
        if r < 0.77:
            return {"op": "intersect", "sets": [head, {"op": "complement", "set": self.related_to(depth - 1)}]}
        if r < 0.9:
            rels = self.rng.choice(len(T._WORDS["rel"]), 2, replace=False)
            return {"op": "intersect", "sets": [
                {"op": "related", "set": head, "rel": T._WORDS["rel"][int(i)], "anchor": self.set(depth - 1)}
                for i in rels]}
        return {"op": "intersect", "sets": [head, {"op": "union", "sets": [self.modifier(head), self.modifier(head)]}]}

    def single(self) -> Tree:
        """One object: an extreme of a leaf or the leaf nearest to an anchor."""
        if self.rng.random() < 0.6:
            return {"op": "extreme", "set": self.leaf(), "by": self.pick(T.EXTREMES)}
        return {"op": "nearest", "set": self.leaf(), "anchor": self.leaf(False)}

    def pair(self) -> tuple[Tree, Tree]:
        """Two counts of one set in two relations to one anchor ("left of the star ... than right of it")."""
        inner = self.leaf()
        anchor = self.leaf(False) if self.rng.random() < 0.8 else self.single()
        rels = self.rng.choice(len(T._WORDS["rel"]), 2, replace=False)
        return tuple({"op": "count", "set": {"op": "related", "set": inner, "rel": T._WORDS["rel"][int(i)],
                                             "anchor": anchor}} for i in rels)

    def count(self, depth: int = 3) -> Tree:
        """A ``count`` of a random set."""
        return {"op": "count", "set": self.set(depth)}

    def num(self, depth: int = 3) -> Tree:
        """A random number tree: mostly a count, else a sum or difference of counts."""
        r = self.rng.random()
        if r < 0.7 or depth <= 1:
            return self.count(depth)
        if r < 0.85:
            if self.rng.random() < 0.2:
                return {"op": "add", "args": list(self.pair())}
            n = 2 if self.rng.random() < 0.8 else 3
            return {"op": "add", "args": [self.count(depth - 1) for _ in range(n)]}
        if self.rng.random() < 0.25:
            return {"op": "sub", "args": list(self.pair())}
        return {"op": "sub", "args": [self.count(depth - 1), self.count(depth - 1)]}

    def number(self) -> Tree:
        """A literal 0 to 10, small values more likely."""
        return {"op": "number", "value": int(self.rng.choice(11, p=_NUMBER_P))}

    def bool(self, depth: int = 3, negate: bool = True) -> Tree:
        """A random truth-valued tree up to ``depth``, negations allowed when ``negate``."""
        op = self.pick(("exists", "compare", "every", "same", "parity", "not", "all_of", "any_of"),
                       p=(0.24, 0.28, 0.09, 0.07, 0.07, 0.13 if negate else 0, 0.06, 0.06 + (0 if negate else 0.13)))
        if op == "exists":
            r = self.rng.random()
            if r < 0.12:  # "is the topmost object a hexagon?"
                single = self.single()
                return {"op": op, "set": {"op": "intersect", "sets": [single, self.modifier(single["set"])]}}
            if r < 0.2:  # "is the largest circle right of the largest square?"
                return {"op": op, "set": {"op": "related", "set": self.single(), "rel": self.pick(T._WORDS["rel"]),
                                          "anchor": self.single() if self.rng.random() < 0.5 else self.leaf(False)}}
            return {"op": op, "set": self.set(depth)}
        if op == "compare":
            if self.rng.random() < 0.12:
                left, right = self.pair()
                return {"op": op, "cmp": self.pick((">", "<", "==")), "left": left, "right": right}
            left = self.num(depth)
            right = self.number() if self.rng.random() < 0.5 else self.count(depth - 1)
            return {"op": op, "cmp": self.pick(T.CMPS), "left": left, "right": right}
        if op == "every" and self.rng.random() < 0.15:  # "are all the objects red?", "only circles"
            return self.only()
        if op == "every":
            s = self.leaf(False) if self.rng.random() < 0.75 else self.set(2)
            r = self.rng.random()
            # "are all stars red", "... red or blue", "... not orange", "... above the blue square"
            inner = (self.modifier(s) if r < 0.45 else {"op": "union", "sets": [self.modifier(s), self.modifier(s)]}
                     if r < 0.55 else {"op": "complement", "set": self.modifier(s)} if r < 0.65
                     else self.related_to(1) if r < 0.85 else self.set(2))
            return {"op": op, "set": s, "in": inner}
        if op == "same":
            r = self.rng.random()
            if r < 0.15:  # "is the topmost star the same colour as the lowest one?"
                return {"op": op, "attr": self.pick(T.ATTRS), "set": {"op": "union", "sets": [self.single(),
                                                                                            self.single()]}}
            if r < 0.3:  # "are the red and blue objects all one shape?"
                return {"op": op, "attr": self.pick(T.ATTRS), "set": {"op": "union", "sets": [self.leaf(False),
                                                                                            self.leaf(False)]}}
            return {"op": op, "attr": self.pick(T.ATTRS), "set": self.set(depth - 1)}
        if op == "parity":
            return {"op": op, "parity": self.pick(T.PARITIES), "num": self.count(depth - 1)}
        if op == "not":
            return {"op": op, "arg": self.bool(depth - 1, negate=False)}
        return {"op": op, "args": [self.clause() for _ in range(2 if self.rng.random() < 0.85 else 3)]}

    def only(self) -> Tree:
        """Every object has one colour (60%) or one shape: "only blue shapes", "nothing but circles"."""
        value = T.select(color=self.pick(COLORS)) if self.rng.random() < 0.6 else T.select(shape=self.pick(SHAPES))
        return {"op": "every", "set": {"op": "objects"}, "in": value}

    def clause(self) -> Tree:
        """One clause of an "and"/"or" question or a caption: mostly "there is ...", else a threshold, a
        "there is no ...", an "all ... are ...", a parity or a sameness."""
        kind = self.pick(("exists", "compare", "none", "every", "parity", "same"), p=(0.45, 0.22, 0.13, 0.08, 0.06, 0.06))
        if kind == "exists":
            return {"op": "exists", "set": self.set(2)}
        if kind == "compare":
            return {"op": "compare", "cmp": self.pick(T.CMPS), "left": self.count(2), "right": self.number()}
        if kind == "none":
            return {"op": "not", "arg": {"op": "exists", "set": self.set(2)}}
        if kind == "every":
            return {"op": "every", "set": self.leaf(False), "in": T.select(color=self.pick(COLORS))}
        if kind == "parity":
            return {"op": "parity", "parity": self.pick(T.PARITIES), "num": self.count(2)}
        return {"op": "same", "attr": self.pick(T.ATTRS), "set": self.leaf(False)}

    def text(self, depth: int = 3) -> Tree:
        """A ``read`` of a set, or an ``attribute`` question, with two or three options 30% of the time."""
        if self.rng.random() < 0.15:
            return {"op": "read", "set": self.set(depth - 1)}
        attr = self.pick(T.ATTRS)
        options = None
        if self.rng.random() < 0.3:
            words = {"color": COLORS, "shape": SHAPES, "size": ("big", "small", "large", "tiny", "huge")}[attr]
            n = 2 if self.rng.random() < 0.8 else 3
            options = [str(w) for w in self.rng.choice(words, n, replace=False)]
        return {"op": "attribute", "attr": attr, "set": self.set(depth), "options": options}

    def choice(self, depth: int = 3) -> Tree:
        """A choice tree: argmax/argmin image by a number, first image meeting a condition, or best caption."""
        op = self.pick(("argmax_image", "argmin_image", "first_image", "best_caption"), p=(0.31, 0.23, 0.31, 0.15))
        if op == "best_caption":
            return {"op": op}
        if op == "first_image":
            return {"op": op, "cond": self.bool(depth - 1)}
        return {"op": op, "num": self.num(depth - 1)}

    def tree(self, kind: str | None = None, depth: int = 3) -> Tree:
        """A tree of result type ``kind`` (drawn when None)."""
        kind = kind or self.pick((SET, NUM, BOOL, TEXT, CHOICE), p=(0.2, 0.24, 0.32, 0.14, 0.1))
        if kind == SET and self.rng.random() < 0.06:  # "the topmost star and the lowest square"
            return {"op": "union", "sets": [self.single(), self.single()]}
        return {SET: self.set, NUM: self.num, BOOL: self.bool, TEXT: self.text, CHOICE: self.choice}[kind](depth)


_NUMBER_P = np.array([2, 6, 9, 9, 8, 7, 5, 4, 3, 2, 2], dtype=float)
_NUMBER_P /= _NUMBER_P.sum()
