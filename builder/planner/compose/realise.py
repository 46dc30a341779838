"""English realisations of meaning trees: many templates per operator, nested sets read recursively.

``Realiser(rng, mode)`` writes a tree as a request. Every list of alternatives is split by
position: in mode ``"train"`` the alternatives at positions 3, 7, 11, ... are never used, in mode
``"heldout"`` only those are used (where a list has them), so held-out phrasings are new
templates, not new draws of known ones. Values and nouns appear literally in the text, so the
parser can copy them.
"""

from __future__ import annotations

import numpy as np

from builder.planner.tree import Tree

GENERIC_PL = ("objects", "things", "shapes", "items", "objects", "figures")
GENERIC_SG = ("object", "thing", "shape", "item", "object", "figure")
SIZE_WORDS = {"small": ("small", "tiny", "little", "small"), "large": ("large", "big", "huge", "large")}
REL_WORDS = {
    "left of": ("left of", "to the left of", "on the left of", "further left than", "to the left side of"),
    "right of": ("right of", "to the right of", "on the right of", "further right than", "to the right side of"),
    "above": ("above", "over", "on top of", "higher than", "above"),
    "below": ("below", "under", "beneath", "lower than", "underneath"),
}
EXT_WORDS = {"leftmost": ("leftmost", "left-most", "far-left", "leftmost"),
             "rightmost": ("rightmost", "right-most", "far-right", "rightmost"),
             "topmost": ("topmost", "highest", "uppermost", "top-most"),
             "bottommost": ("bottommost", "lowest", "bottom-most", "lowermost"),
             "largest": ("largest", "biggest", "largest", "hugest"), "smallest": ("smallest", "tiniest", "smallest",
                                                                                  "littlest")}
ATTR_WORDS = {"color": ("color", "colour", "color", "hue"), "shape": ("shape", "form", "shape", "kind of shape"),
              "size": ("size", "size", "size", "size")}
NUM_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
CMP_NUM = {">": ("more than", "over", "greater than", "above"), ">=": ("at least", "no fewer than", "at least",
                                                                      "a minimum of"),
           "<": ("fewer than", "less than", "under", "below"), "<=": ("at most", "no more than", "at most",
                                                                       "a maximum of"),
           "==": ("exactly", "precisely", "exactly", "just"), "!=": ("not exactly", "other than", "not exactly",
                                                                   "a number other than")}
CMP_SENT = {">": ("more than", "greater than", "larger than", "bigger than"),
            ">=": ("at least", "no less than", "greater than or equal to", "not smaller than"),
            "<": ("less than", "smaller than", "fewer than", "lower than"),
            "<=": ("at most", "no more than", "less than or equal to", "not larger than"),
            "==": ("equal to", "the same as", "equal to", "identical to"),
            "!=": ("different from", "not equal to", "unequal to", "other than")}


class Realiser:
    """Writes trees as English requests; ``nouns`` maps a noun to its plural."""

    def __init__(self, rng: np.random.Generator, mode: str = "train", nouns: dict[str, str] | None = None):
        self.rng = rng
        self.mode = mode
        self.plurals = nouns or {}
        self.either = False  # inside np_either

    def pick(self, options):
        """A random option; ``train`` mode skips positions 3, 7, 11, ..., ``heldout`` mode uses only those."""
        options = list(options)
        held = [o for i, o in enumerate(options) if i % 4 == 3]
        if self.mode == "train" and len(options) >= 4:
            options = [o for i, o in enumerate(options) if i % 4 != 3]
        elif self.mode == "heldout" and held:
            options = held
        return options[int(self.rng.integers(len(options)))]

    def coin(self, p: float) -> bool:
        """True with probability ``p``."""
        return bool(self.rng.random() < p)

    # ---- values -----------------------------------------------------------------------------
    def num_word(self, n: int) -> str:
        """``n`` spelled out (half the time, up to ten) or as digits."""
        return NUM_WORDS[n] if n < len(NUM_WORDS) and self.coin(0.5) else str(n)

    def noun(self, t: Tree, plural: bool) -> str:
        """The head noun of a select: its open-vocabulary noun, its shape, or a generic word."""
        if t.get("noun"):
            return self.plurals.get(t["noun"], t["noun"] + "s") if plural else t["noun"]
        if t.get("shape"):
            shape = t["shape"]
            return (shape + ("es" if shape.endswith("x") else "s")) if plural else shape
        return self.pick(GENERIC_PL if plural else GENERIC_SG)

    def adjectives(self, t: Tree) -> list[str]:
        """The size word and colour of a select, in that order."""
        out = []
        if t.get("size"):
            out.append(self.pick(SIZE_WORDS[t["size"]]))
        if t.get("color"):
            out.append(t["color"] + ("-coloured" if self.coin(0.05) else ""))
        return out

    # ---- sets ---------------------------------------------------------------------------------
    def np(self, t: Tree, plural: bool = True) -> str:
        """A noun phrase for a set, without a determiner ("red circles left of the star")."""
        return getattr(self, "np_" + t["op"])(t, plural)

    def np_objects(self, t: Tree, plural: bool) -> str:
        """A generic noun ("objects", "things", ...)."""
        return self.pick(GENERIC_PL if plural else GENERIC_SG)

    def np_select(self, t: Tree, plural: bool) -> str:
        """Adjectives and head noun, sometimes as "<noun> that are <colour>"."""
        adjs, head = self.adjectives(t), self.noun(t, plural)
        if t.get("color") and not t.get("size") and (t.get("shape") or t.get("noun")) and self.coin(0.12):
            return f"{head} that {'are' if plural else 'is'} {t['color']}"
        return " ".join(adjs + [head])

    def np_complement(self, t: Tree, plural: bool) -> str:
        """Objects that are not the inner set ("shapes that are not red", "objects except the stars")."""
        s = t["set"]
        gen = self.pick(GENERIC_PL if plural else GENERIC_SG)
        be = "are" if plural else "is"
        if s["op"] == "select" and s.get("color") and not (s.get("shape") or s.get("noun") or s.get("size")):
            c = s["color"]
            return self.pick((f"{gen} that {be} not {c}", f"non-{c} {gen}", f"{gen} that {be}n't {c}",
                              f"{gen} which {be} not {c}", f"{gen} of any colour but {c}",
                              f"{gen} not coloured {c}", f"{gen} other than {c} ones", f"{gen} that aren't {c}"))
        if s["op"] == "union":
            preds = [self.pred(x, plural) for x in s["sets"]]
            nps = [self.np(x, True) for x in s["sets"]]
            return self.pick((f"{gen} that {be} neither {' nor '.join(preds)}", f"{gen} other than {self.join(nps, 'and')}",
                              f"{gen} that {be} not {self.join(preds, 'or')}",
                              f"everything except the {self.join(nps, 'and the')}",
                              f"{gen} except the {self.join(nps, 'and')}", f"{gen} excluding {self.join(nps, 'and')}",
                              f"{gen} which {be}n't {self.join(preds, 'or')}", f"{gen} apart from {self.join(nps, 'and')}"))
        if s["op"] == "related" and s["set"]["op"] == "objects":
            where = f"{self.pick(REL_WORDS[s['rel']])} {self.anchor(s['anchor'])}"
            return self.pick((f"{gen} that {be} not {where}", f"{gen} not {where}", f"{gen} which {be}n't {where}",
                              f"{gen} nowhere {where}", f"{gen} that {be} not located {where}"))
        inner = self.np(s, True)
        return self.pick((f"{gen} that {be} not {inner}", f"{gen} except the {inner}", f"{gen} other than {inner}",
                          f"{gen} apart from the {inner}", f"{gen} besides the {inner}",
                          f"{gen} that {be}n't {inner}", f"everything except the {inner}",
                          f"{gen} excluding the {inner}"))

    def but_not(self, head: Tree, neg: Tree, plural: bool) -> str:
        """``head`` without the objects of ``neg`` ("circles that aren't green", "non-red stars", "stars not
        left of any square", "hexagons other than the large ones")."""
        h, be = self.np(head, plural), "are" if plural else "is"
        only = [f for f in ("color", "size", "shape") if neg["op"] == "select" and neg.get(f)]
        if neg["op"] == "select" and len(only) == 1 and not neg.get("noun"):
            field = only[0]
            w = neg[field] if field != "size" else self.pick(SIZE_WORDS[neg["size"]])
            if field == "shape":
                w_np = self.np(neg, plural)
                return self.pick((f"{h} that {be} not {w_np if plural else self.article(w_np)}", f"non-{w} {h}",
                                  f"{h} other than {self.np(neg, True)}", f"{h} that {be}n't {self.np(neg, True)}",
                                  f"{h} except the {self.np(neg, True)}", f"{h} apart from the {self.np(neg, True)}",
                                  f"{h} excluding {self.np(neg, True)}", f"{h}, but not the {self.np(neg, True)}"))
            ones = "ones" if plural else "one"
            extra = (f"{h} not coloured {w}", f"{h} of any colour except {w}") if field == "color" else \
                (f"{h} that {be} not {w} in size", f"{h} of any size but {w}")
            return self.pick((f"{h} that {be} not {w}", f"non-{w} {h}", f"{h} that {be}n't {w}",
                              f"{h} other than the {w} {ones}", f"{h} which {be} not {w}", f"{h} except the {w} {ones}",
                              f"{h}, skipping the {w} {ones}", f"{h} not {w}", *extra))
        if neg["op"] == "related" and neg["set"]["op"] == "objects":
            where = f"{self.pick(REL_WORDS[neg['rel']])} {self.anchor(neg['anchor'])}"
            return self.pick((f"{h} that {be} not {where}", f"{h} not {where}", f"{h} which {be}n't {where}",
                              f"{h} that {be} not located {where}", f"{h} not sitting {where}"))
        if neg["op"] == "union":
            preds = [self.pred(x, plural) for x in neg["sets"]]
            return self.pick((f"{h} that {be} neither {' nor '.join(preds)}", f"{h} that {be} not {self.join(preds, 'or')}",
                              f"{h} which {be}n't {self.join(preds, 'or')}", f"{h} neither {' nor '.join(preds)}"))
        return self.pick((f"{h} that {be} not {self.pred(neg, plural)}", f"{h} other than {self.np(neg, True)}",
                          f"{h} except the {self.np(neg, True)}", f"{h} that {be}n't {self.pred(neg, plural)}"))

    def pred(self, t: Tree, plural: bool = True) -> str:
        """A predicate for "are X" ("red", "circles", "left of the star")."""
        if t["op"] == "select" and not (t.get("shape") or t.get("noun")):
            return " ".join(self.adjectives(t))
        if t["op"] == "related":
            return f"{self.pick(REL_WORDS[t['rel']])} {self.anchor(t['anchor'])}"
        inner = t.get("set") or {}
        if t["op"] == "complement" and inner["op"] == "select" and not (inner.get("shape") or inner.get("noun")):
            return self.pick(("not ", "not ", "anything but ", "never ")) + " ".join(self.adjectives(inner))
        phrase = self.np(t, plural)
        return phrase if plural else ("an " if phrase[0] in "aeiou" else "a ") + phrase

    def np_intersect(self, t: Tree, plural: bool) -> str:
        """The first set qualified by the others ("circles that are also red", "circles that aren't green",
        "stars both above a square and left of a hexagon", "hexagons that are large or purple")."""
        sets = t["sets"]
        be = "are" if plural else "is"
        negs = [s for s in sets if s["op"] == "complement"]
        if len(sets) == 2 and len(negs) == 1:
            head = next(s for s in sets if s is not negs[0])
            return self.but_not(head, negs[0]["set"], plural)
        if all(s["op"] == "related" for s in sets) and all(s["set"] == sets[0]["set"] for s in sets):
            h = self.np(sets[0]["set"], plural)
            where = [f"{self.pick(REL_WORDS[s['rel']])} {self.anchor(s['anchor'])}" for s in sets]
            return self.pick((f"{h} that {be} {self.join(where, 'and')}", f"{h} both {self.join(where, 'and')}",
                              f"{h} {where[0]} and also {self.join(where[1:], 'and')}",
                              f"{h} that {be} {where[0]} and that {be} {self.join(where[1:], 'and')}",
                              f"{h} {self.join(where, 'and')}", f"{h} that {be} both {self.join(where, 'and')}"))
        unions = [s for s in sets if s["op"] == "union"]
        if len(sets) == 2 and len(unions) == 1 and all(x["op"] == "select" for x in unions[0]["sets"]):
            head = next(s for s in sets if s is not unions[0])
            preds = [self.pred(x, plural) for x in unions[0]["sets"]]
            h = self.np(head, plural)
            return self.pick((f"{h} that {be} either {self.join(preds, 'or')}", f"{h} that {be} {self.join(preds, 'or')}",
                              f"{h} which {be} {self.join(preds, 'or')}", f"{h}, either {self.join(preds, 'or')}"))
        a, b = sets[0], sets[1]
        rest = " and ".join(self.pred(s, plural) for s in sets[1:])
        if b["op"] == "select" and not b.get("shape") and a["op"] == "select" and self.coin(0.5):
            a, rest = b, self.pred(a, plural)
        return self.pick((f"{self.np(a, plural)} that {be} also {rest}", f"{self.np(a, plural)} which {be} {rest}",
                          f"{self.np(a, plural)} that {be} {rest} as well", f"{self.np(a, plural)} being also {rest}"))

    def np_union(self, t: Tree, plural: bool) -> str:
        """The sets joined with "or" ("circles, stars or squares")."""
        sets = t["sets"]
        if all(s["op"] == "related" for s in sets) and all(s["set"] == sets[0]["set"] for s in sets):
            where = [f"{self.pick(REL_WORDS[s['rel']])} {self.anchor(s['anchor'])}" for s in sets]
            h = self.np(sets[0]["set"], plural)
            return self.pick((f"{h} {self.join(where, 'or')}", f"{h} that are {self.join(where, 'or')}",
                              f"{h} either {self.join(where, 'or')}", f"{h} {where[0]} or else {self.join(where[1:], 'or')}"))
        if all(s["op"] in ("extreme", "nearest") for s in sets):
            ones = [f"the {self.np(s, False)}" for s in sets]
            return self.pick((self.join(ones, "and"), self.join(ones, "as well as"), "both " + self.join(ones, "and"),
                              self.join(ones, "and also")))
        factored = self.factored(sets, plural)
        if factored and self.coin(0.4):
            return factored
        parts = [self.np(s, True) for s in sets]
        head = ", ".join(parts[:-1])
        if self.either:  # "is there a circle and a star" asks for both: only "or" says a union there
            return self.pick((f"{head} or {parts[-1]}", f"either {head} or {parts[-1]}", f"{head} and/or {parts[-1]}"))
        return self.pick((f"{head} or {parts[-1]}", f"either {head} or {parts[-1]}", f"{head} or {parts[-1]}",
                          f"{head} and/or {parts[-1]}", f"{head} and {parts[-1]}", f"{head} as well as {parts[-1]}"))

    def factored(self, sets: list[Tree], plural: bool) -> str | None:
        """Selects of one noun that differ in one colour or size, said once ("purple or orange hexagons"),
        or None."""
        if not all(s["op"] == "select" and not s.get("size" if s.get("color") else "color") for s in sets):
            return None
        field = "color" if all(s.get("color") for s in sets) else "size" if all(s.get("size") for s in sets) else None
        shared = [{**s, field: None} for s in sets] if field else []
        if not field or any(x != shared[0] for x in shared) or not (shared[0].get("shape") or shared[0].get("noun")):
            return None
        words = [s[field] if field == "color" else self.pick(SIZE_WORDS[s[field]]) for s in sets]
        return f"{self.join(words, 'or')} {self.np(shared[0], plural)}"

    def np_either(self, t: Tree, plural: bool = True) -> str:
        """``np`` for a set whose existence is asked: its unions are said with "or", never "and"."""
        self.either = True
        try:
            return self.np(t, plural)
        finally:
            self.either = False

    def anchor(self, t: Tree) -> str:
        """The reference object of a relation, with "the", "a", "any" or "some"."""
        if t["op"] in ("extreme", "nearest") or (t["op"] == "select" and self.coin(0.7)):
            return "the " + self.np(t, False)
        if t["op"] == "select" and self.coin(0.5) or t["op"] == "related" and self.coin(0.4):
            phrase = self.np(t, False)  # "a square (that is) above a circle"
            return ("an " if phrase[0] in "aeiou" else "a ") + phrase
        return self.pick(("the ", "any ", "the ", "some ")) + self.np(t, True)

    def np_related(self, t: Tree, plural: bool) -> str:
        """A noun phrase for a ``related`` set: the objects, the relation words, the anchor."""
        head, rel, anchor = self.np(t["set"], plural), self.pick(REL_WORDS[t["rel"]]), self.anchor(t["anchor"])
        be = "are" if plural else "is"
        return self.pick((f"{head} {rel} {anchor}", f"{head} that {be} {rel} {anchor}", f"{head} {rel} {anchor}",
                          f"{head} located {rel} {anchor}", f"{head} which {be} {rel} {anchor}",
                          f"{head} positioned {rel} {anchor}", f"{head} sitting {rel} {anchor}",
                          f"{head} placed {rel} {anchor}"))

    def np_nearest(self, t: Tree, plural: bool) -> str:
        """The object nearest to the anchor ("circle closest to the star")."""
        head, anchor = self.np(t["set"], False), self.np(t["anchor"], False)
        return self.pick((f"{head} nearest to the {anchor}", f"{head} closest to the {anchor}",
                          f"{head} nearest the {anchor}", f"{head} that is closest to the {anchor}",
                          f"{head} next to the {anchor}", f"{head} with the smallest distance to the {anchor}",
                          f"{head} that is nearest to the {anchor}", f"{head} right by the {anchor}"))

    def np_extreme(self, t: Tree, plural: bool) -> str:
        """The extreme member of a set ("leftmost circle", "largest of the red shapes")."""
        s, word = t["set"], self.pick(EXT_WORDS[t["by"]])
        if s["op"] in ("select", "objects") and self.coin(0.8):
            return f"{word} {self.np(s, False)}"
        return self.pick((f"{word} of the {self.np(s, True)}", f"{word} one of the {self.np(s, True)}",
                          f"{word} among the {self.np(s, True)}", f"{word} of all the {self.np(s, True)}"))

    def np_sharing(self, t: Tree, plural: bool) -> str:
        """Objects sharing an attribute with the anchor ("squares with the same colour as the star")."""
        head, attr, anchor = self.np(t["set"], plural), self.pick(ATTR_WORDS[t["attr"]]), self.np(t["anchor"], False)
        return self.pick((f"{head} with the same {attr} as the {anchor}", f"other {head} sharing the {anchor}'s {attr}",
                          f"{head} of the same {attr} as the {anchor}", f"{head} matching the {attr} of the {anchor}",
                          f"{head} that have the {anchor}'s {attr}", f"other {head} the same {attr} as the {anchor}",
                          f"{head} whose {attr} equals that of the {anchor}", f"{head} in the same {attr} as the {anchor}"))

    # ---- numbers ------------------------------------------------------------------------------
    def num_phrase(self, t: Tree) -> str:
        """A number as a noun phrase ("the number of red circles")."""
        op = t["op"]
        if op == "number":
            return self.num_word(t["value"])
        if op == "count":
            return self.pick(("the number of ", "the count of ", "the number of ", "the amount of ")) + self.np(t["set"])
        if op == "add":
            sets = [a["set"] for a in t["args"] if a["op"] == "count"]
            if len(sets) == len(t["args"]) and self.coin(0.6):
                return self.pick(("the total number of ", "the combined number of ", "the total count of ",
                                  "the number of ")) + self.join([self.np(s) for s in sets], "and") + \
                    self.pick(("", " combined", " together", " in total"))
            return self.join([self.num_phrase(a) for a in t["args"]], "plus")
        return f"{self.num_phrase(t['args'][0])} minus {self.num_phrase(t['args'][1])}"

    def article(self, phrase: str) -> str:
        """``phrase`` with "a" or "an" in front, chosen by its first letter."""
        return ("an " if phrase[0] in "aeiou" else "a ") + phrase

    @staticmethod
    def join(parts: list[str], word: str) -> str:
        """``parts`` as an English list, ``word`` before the last."""
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + f" {word} " + parts[-1]
