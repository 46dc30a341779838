"""Image-search descriptions of truth values ("pictures with a star but no square", "only blue
shapes", "three or more stars"): what a search box gets is rarely a question. ``Phraser`` writes
requests with these too (``Phraser.request``), and ``training_data.search_examples`` trains the
composing parser on them."""

from __future__ import annotations

from builder.planner.compose.realise import ATTR_WORDS, CMP_NUM, REL_WORDS, SIZE_WORDS, Realiser
from builder.planner.tree import Tree

# How descriptions that are whole sentences begin ("the largest object is a star", "nothing is red"):
# a search gives them a "where" lead, and they are never one part of an "and" list.
SENTENCES = ("the ", "nothing ", "no object ", "none of ", "not one ", "everything ", "all of the ", "each ")


class Describer(Realiser):
    """Noun-phrase descriptions of what an image shows for a truth value, and search-box leads."""

    def single_is(self, s: Tree) -> tuple[str, str] | None:
        """For one object and what is asked of it ("topmost object", "a hexagon"), or None: an ``intersect`` of
        an extreme or nearest object with a select, or such an object in a relation."""
        if s["op"] == "intersect" and len(s["sets"]) == 2:
            one = [x for x in s["sets"] if x["op"] in ("extreme", "nearest")]
            rest = [x for x in s["sets"] if x["op"] == "select"]
            if len(one) == 1 and len(rest) == 1:
                return self.np(one[0], False), self.pred(rest[0], False)
        if s["op"] == "related" and s["set"]["op"] in ("extreme", "nearest"):
            return self.np(s["set"], False), f"{self.pick(REL_WORDS[s['rel']])} {self.anchor(s['anchor'])}"
        return None

    def search(self, t: Tree) -> str | None:
        """What an image search box gets for a truth value ("pictures with a star but no square", "only
        blue shapes", "three or more stars somewhere"), or None when ``describe`` has no such wording."""
        body = self.describe(t)
        if body is None:
            return None
        lacking = self.lacking(t)
        if lacking and self.coin(0.25):
            body = lacking
            lead = self.pick(("images ", "pictures ", "photos ", "scenes ", "frames ", "show me images ", "find pictures "))
        elif body.startswith("without "):
            lead = self.pick(("images ", "pictures ", "photos ", "scenes ", "show me images ", "find pictures "))
        elif body.startswith(SENTENCES):
            lead = self.pick(("", "images where ", "pictures in which ", "", "scenes where ", "photos where "))
        else:
            lead = self.pick(("", "", "images with ", "pictures with ", "photos showing ", "show me images with ",
                              "find pictures that have ", "scenes containing ", "I'm looking for images with ",
                              "pics with ", "any image with ", "images that contain ", "frames with "))
        tail = self.pick(("", " somewhere", " anywhere", " in the shot", " in the picture", " at all",
                          " anywhere in the frame", " please", " in view")) if self.coin(0.2) else ""
        text = lead + body + tail
        return text[0].upper() + text[1:] + "." if self.coin(0.15) else text

    def describe(self, t: Tree) -> str | None:
        """A noun-phrase description of what an image shows for ``t``, or None."""
        op = t["op"]
        if op == "exists":
            single = self.single_is(t["set"])
            if single:
                return f"the {single[0]} is {single[1]}"
            return self.article(self.np_either(t["set"], False)) if self.coin(0.55) else \
                self.pick(("", "some ", "", "any ")) + self.np_either(t["set"])
        if op == "not":
            return self.describe_absence(t)
        if op == "compare":
            return self.describe_count(t)
        if op == "every" and t["set"]["op"] == "objects" and self.coin(0.4):
            sg, pl = self.pred(t["in"], False), self.pred(t["in"], True)
            return self.pick((f"everything is {sg}", f"all of the {self.np_objects({}, True)} are {pl}",
                              f"each {self.np_objects({}, False)} is {sg}", f"everything in it is {sg}"))
        if op == "every" and t["set"]["op"] == "objects":
            return self.pick(("only ", "nothing but ", "just ", "only ")) + self.np(t["in"])
        if op == "every" and t["in"]["op"] in ("select", "complement", "related"):
            return self.pick((f"all {self.np(t['set'])} {self.pred(t['in'])}",
                              f"{self.np(t['set'])} that are all {self.pred(t['in'])}",
                              f"every {self.np(t['set'], False)} {self.pred(t['in'], False)}"))
        if op == "same":
            return f"all {self.np(t['set'])} the same {self.pick(ATTR_WORDS[t['attr']])}"
        if op == "parity" and t["num"]["op"] == "count":
            return f"an {t['parity']} number of {self.np(t['num']['set'])}"
        if op == "all_of" and len(t["args"]) == 2 and t["args"][1]["op"] == "not" \
                and t["args"][1]["arg"]["op"] == "exists" and t["args"][0]["op"] == "exists" and self.coin(0.6):
            return self.but_no(t["args"][0]["set"], t["args"][1]["arg"]["set"])
        if op in ("all_of", "any_of"):
            parts = [self.describe(a) for a in t["args"]]
            if None in parts or any(p.startswith((*SENTENCES, "without")) for p in parts):
                return None
            if op == "any_of":
                return self.pick((self.join(parts, "or"), "either " + self.join(parts, "or")))
            if len(parts) == 2 and t["args"][1]["op"] == "not":
                return self.pick((f"{parts[0]} but {parts[1]}", f"{parts[0]} and {parts[1]}", f"{parts[0]} with {parts[1]}"))
            return self.pick((self.join(parts, "and"), ", ".join(parts), " plus ".join(parts),
                              "both " * (len(parts) == 2) + self.join(parts, "and"), self.join(parts, "with")))
        return None

    def describe_absence(self, t: Tree) -> str | None:
        """What an image lacks for a ``not`` ("no circles", "nothing is red", "neither stars nor squares")."""
        if t["arg"]["op"] == "exists":
            s = t["arg"]["set"]
            if s["op"] == "select" and not (s.get("shape") or s.get("noun")) and self.coin(0.35):
                p = self.pred(s)
                return self.pick((f"nothing is {p}", f"no object is {p}", f"none of the {self.np_objects({}, True)} are {p}",
                                  f"not one {self.np_objects({}, False)} is {p}", f"nothing {p}"))
            return self.pick((f"no {self.np_either(s)}", f"without {self.np_either(s)}",
                              f"not a single {self.np_either(s, False)}", f"without any {self.np_either(s)}",
                              f"zero {self.np_either(s)}", f"no {self.np_either(s, False)}"))
        if t["arg"]["op"] == "any_of" and all(a["op"] == "exists" for a in t["arg"]["args"]):
            nps = [self.np(a["set"]) for a in t["arg"]["args"]]
            return self.pick((f"neither {' nor '.join(nps)}", f"no {self.join(nps, 'or')}",
                              f"without {self.join(nps, 'or')}", "no " + " and no ".join(nps)))
        return None

    def describe_count(self, t: Tree) -> str | None:
        """A number of objects for a ``compare`` ("three or more stars", "more circles than squares")."""
        if t["left"]["op"] == "count" and t["right"]["op"] == "number":
            n, s, cmp = self.num_word(t["right"]["value"]), self.np(t["left"]["set"]), t["cmp"]
            extra = {">=": (f"{n} or more {s}",), "<=": (f"{n} or fewer {s}", f"{n} or less {s}")}.get(cmp, ())
            return f"{self.pick(CMP_NUM[cmp])} {n} {s}" if not extra or self.coin(0.6) else self.pick(extra)
        if t["left"]["op"] == "add" and t["right"]["op"] == "number" \
                and all(x["op"] == "count" for x in t["left"]["args"]):
            n = self.num_word(t["right"]["value"])
            nps = self.join([self.np(x["set"]) for x in t["left"]["args"]], "and")
            return f"{self.pick(CMP_NUM[t['cmp']])} {n} {nps} {self.pick(('combined', 'together', 'in total', 'altogether'))}"
        if t["left"]["op"] in ("count", "add") and t["right"]["op"] == "count" \
                and t["cmp"] in (">", "<", "=="):
            left = t["left"]
            a = self.np(left["set"]) if left["op"] == "count" else \
                self.join([self.np(x["set"]) for x in left["args"]], "and") + self.pick((" combined", " together"))
            b = self.np(t["right"]["set"])
            return {">": f"more {a} than {b}", "<": self.pick((f"fewer {a} than {b}", f"less {a} than {b}")),
                    "==": self.pick((f"as many {a} as {b}", f"equally many {a} and {b}"))}[t["cmp"]]
        return None

    def but_no(self, there: Tree, absent: Tree) -> str:
        """Images with one set but none of another ("a circle but no hexagons", "stars, none of them green")."""
        has = self.article(self.np_either(there, False)) if self.coin(0.5) else self.np_either(there)
        extra = [f for f in ("color", "size") if absent.get(f) and not there.get(f)]
        if there["op"] == "select" and absent["op"] == "select" and len(extra) == 1 \
                and {**absent, extra[0]: None} == there and self.coin(0.4):
            w = absent[extra[0]] if extra[0] == "color" else self.pick(SIZE_WORDS[absent["size"]])
            many = self.np(there)
            return self.pick((f"{many}, none of them {w}", f"{many} but none that are {w}", f"{many}, but no {w} ones",
                              f"{many} and none of them {w}", f"{many} where none is {w}"))
        no = self.np_either(absent)
        return self.pick((f"{has} but no {no}", f"{has} without {no}", f"{has} and no {no}", f"{has}, no {no}",
                          f"{has} with no {no}", f"{has} but not a single {self.np_either(absent, False)}",
                          f"{has} and without any {no}", f"{has} but without {no}", f"{has} but zero {no}"))

    def lacking(self, t: Tree) -> str | None:
        """"that don't have any stars", "that contain no circles or squares" for a none or neither, or None."""
        if t["op"] != "not":
            return None
        arg = t["arg"]
        if arg["op"] == "exists":
            what = self.np_either(arg["set"])
        elif arg["op"] == "any_of" and all(a["op"] == "exists" for a in arg["args"]):
            what = self.join([self.np(a["set"]) for a in arg["args"]], "or")
        else:
            return None
        return self.pick(("that don't have any ", "that do not contain any ", "that don't show any ", "that have no ",
                          "that contain no ", "which have no ", "without any ")) + what
