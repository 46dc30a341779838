"""A meaning tree (``docs/meaning.md``) evaluated over the stored detections of every indexed image at once.

The same operators as the ground-truth interpreter (``builder.planner.tree_truth``), but over an
``ObjectTable`` of *detected* objects and vectorised: a ``Set`` is a boolean mask over all
objects of all images, a ``Num`` an integer per image, a ``Bool`` a truth value per image. Objects
of different images never meet: relations, nearest objects and shared attributes look only at
ordered pairs of objects of one image (built once per table).

Where the ground truth would call a request ill-posed on an image (a relation too close to call,
"the" anchor being several objects), the search reading is the cautious one: the relation does
not hold, the anchored set is empty. Ties for a superlative go to the object found first.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from builder.methods.image_index import Hit, SearchError, SearchIndex, check_embedder
from builder.planner import tree as T
from builder.planner.tree import Tree
from builder.tools.detections import ATTRS, ObjectTable, attribute_values


class Unsearchable(ValueError):
    """A tree that asks a question (a text answer, a caption choice) rather than describing images."""


def relation_margin(width: np.ndarray) -> np.ndarray:
    """Pixels two centres must differ by for a spatial relation to hold: the ground truth's rule
    (``builder.domains.shapes.world.tasks.spatial_margin``), per image width."""
    return np.maximum(3.0, 0.04 * np.asarray(width, np.float32))


class TableEval:
    """Evaluates trees over ``table``: ``run(tree)`` is an object mask, or a per-image array."""

    def __init__(self, table: ObjectTable, domain: str = "shapes"):
        self.t = table
        self.codes = {a: {v: i for i, v in enumerate(vals)} for a, vals in attribute_values(domain).items()}
        self._pairs: tuple[np.ndarray, np.ndarray] | None = None
        box = table.box
        self.cx, self.cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
        self.area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
        self.margin = relation_margin(table.width)

    def run(self, t: Tree) -> np.ndarray:
        """The value of ``t`` (a valid tree): object mask for sets, per-image array otherwise."""
        fn = getattr(self, "_" + t["op"], None)
        if fn is None:
            raise Unsearchable(f"a search cannot answer {t['op']!r}")
        return fn(t)

    # -- helpers --
    @property
    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(i, j): every ordered pair of two different objects of one image."""
        if self._pairs is None:
            t = self.t
            rep = t.counts[t.image].astype(np.int64)  # each object pairs with every object of its image
            pi = np.repeat(np.arange(len(t), dtype=np.int64), rep)
            first = np.repeat(np.cumsum(rep) - rep, rep)
            pj = t.offsets[t.image[pi]] + (np.arange(len(pi)) - first)
            keep = pi != pj
            self._pairs = (pi[keep], pj[keep])
        return self._pairs

    def _per_image(self, mask: np.ndarray) -> np.ndarray:
        return np.bincount(self.t.image[mask], minlength=self.t.n_images)

    def _scatter(self, objs: np.ndarray) -> np.ndarray:
        out = np.zeros(len(self.t), bool)
        out[objs] = True
        return out

    def _one_anchor(self, anchor: np.ndarray) -> np.ndarray:
        """The anchor mask kept only in images where it is exactly one object ("the big star")."""
        return anchor & (self._per_image(anchor) == 1)[self.t.image]

    def _first_per_image(self, objs: np.ndarray) -> np.ndarray:
        """Of candidate objects (indices, in object order), the first one of each image, as a mask."""
        if not len(objs):
            return np.zeros(len(self.t), bool)
        _, first = np.unique(self.t.image[objs], return_index=True)
        return self._scatter(objs[first])

    # -- sets: boolean masks over all objects --
    def _objects(self, t):
        return np.ones(len(self.t), bool)

    def _select(self, t):
        mask = np.ones(len(self.t), bool)
        if t.get("noun"):
            return ~mask  # stored detections carry only the vocabulary's attributes
        for a in ATTRS:
            if t.get(a) is not None:
                mask &= getattr(self.t, a) == self.codes[a][t[a]]
        return mask

    def _complement(self, t):
        return ~self.run(t["set"])

    def _intersect(self, t):
        return np.logical_and.reduce([self.run(s) for s in t["sets"]])

    def _union(self, t):
        return np.logical_or.reduce([self.run(s) for s in t["sets"]])

    def _related(self, t):
        objs, anchor = self.run(t["set"]), self.run(t["anchor"])
        pi, pj = self.pairs
        d = {"left of": self.cx[pj] - self.cx[pi], "right of": self.cx[pi] - self.cx[pj],
             "above": self.cy[pj] - self.cy[pi], "below": self.cy[pi] - self.cy[pj]}[t["rel"]]
        hold = objs[pi] & anchor[pj] & (d >= self.margin[self.t.image[pi]])
        return self._scatter(pi[hold])

    def _nearest(self, t):
        objs, anchor = self.run(t["set"]), self._one_anchor(self.run(t["anchor"]))
        pi, pj = self.pairs
        m = objs[pi] & anchor[pj]
        pi, pj = pi[m], pj[m]
        dist = np.hypot(self.cx[pi] - self.cx[pj], self.cy[pi] - self.cy[pj])
        best = np.full(self.t.n_images, np.inf)
        np.minimum.at(best, self.t.image[pi], dist)
        return self._first_per_image(pi[dist == best[self.t.image[pi]]])

    def _extreme(self, t):
        objs = self.run(t["set"])
        key = {"leftmost": self.cx, "rightmost": -self.cx, "topmost": self.cy, "bottommost": -self.cy,
               "largest": -self.area, "smallest": self.area}[t["by"]]
        keyed = np.where(objs, key, np.inf)
        best = np.full(self.t.n_images, np.inf)
        np.minimum.at(best, self.t.image, keyed)
        return self._first_per_image(np.flatnonzero(objs & (keyed == best[self.t.image])))

    def _sharing(self, t):
        objs, anchor = self.run(t["set"]), self._one_anchor(self.run(t["anchor"]))
        pi, pj = self.pairs
        attr = getattr(self.t, t["attr"])
        m = objs[pi] & anchor[pj] & (attr[pi] == attr[pj]) & (attr[pi] >= 0)
        return self._scatter(pi[m])

    # -- numbers: one per image --
    def _count(self, t):
        return self._per_image(self.run(t["set"]))

    def _number(self, t):
        return np.full(self.t.n_images, t["value"], np.int64)

    def _add(self, t):
        return np.sum([self.run(a) for a in t["args"]], axis=0)

    def _sub(self, t):
        left, right = (self.run(a) for a in t["args"])
        return np.maximum(left - right, 0)

    # -- truth values: one per image --
    def _exists(self, t):
        return self._count(t) > 0

    def _compare(self, t):
        left, right = self.run(t["left"]), self.run(t["right"])
        return {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal,
                "==": np.equal, "!=": np.not_equal}[t["cmp"]](left, right)

    def _every(self, t):
        return self._per_image(self.run(t["set"]) & ~self.run(t["in"])) == 0

    def _same(self, t):
        objs, attr = self.run(t["set"]), getattr(self.t, t["attr"]).astype(np.int16)
        low, high = np.full(self.t.n_images, 999, np.int16), np.full(self.t.n_images, -999, np.int16)
        np.minimum.at(low, self.t.image[objs], attr[objs])
        np.maximum.at(high, self.t.image[objs], attr[objs])
        return (self._per_image(objs) < 2) | (low == high)

    def _parity(self, t):
        return self.run(t["num"]) % 2 == (0 if t["parity"] == "even" else 1)

    def _not(self, t):
        return ~self.run(t["arg"])

    def _all_of(self, t):
        return np.logical_and.reduce([self.run(a) for a in t["args"]])

    def _any_of(self, t):
        return np.logical_or.reduce([self.run(a) for a in t["args"]])


def search_form(tree: Tree) -> Tree:
    """The tree a search evaluates per image: a ``Bool`` or, to rank by, a ``Num``.

    A set ("a red circle") is ``exists(set)``; "the picture on which ..." (``first_image``) is its
    condition; "the photo with the most circles" (``argmax_image``) ranks by its number. A question
    asking for a text answer or a caption cannot select images: ``Unsearchable``.
    """
    op, kind = tree["op"], T.result_type(tree)
    if kind == T.SET:
        return {"op": "exists", "set": tree}
    if op == "first_image":
        return tree["cond"]
    if op in ("argmax_image", "argmin_image"):
        return tree
    if kind in (T.BOOL, T.NUM):
        return tree
    raise Unsearchable("it asks a question with a text answer, not for images showing something"
                       if kind == T.TEXT else "it asks to choose a caption, not for images")


def score_images(tree: Tree, table: ObjectTable, evaluator: TableEval | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(holds, score) per image of ``table`` for a search tree (see ``search_form``).

    ``holds``: the tree is true on the image (for numbers: the number is above zero; for
    "most"/"fewest" every image qualifies). ``score``: 1 where it holds, else the fraction of a
    conjunction's clauses that hold, halved (a near miss ranks above a plain miss, below every
    hit); "most"/"fewest" score by their number.
    """
    ev = evaluator or TableEval(table)
    form = search_form(tree)
    if form["op"] in ("argmax_image", "argmin_image"):
        num = ev.run(form["num"]).astype(np.float64)
        num = num if form["op"] == "argmax_image" else -num
        span = max(float(num.max() - num.min()), 1.0) if len(num) else 1.0
        return np.ones(table.n_images, bool), (num - num.min(initial=0.0)) / span
    value = ev.run(form)
    if T.result_type(form) == T.NUM:
        holds = value > 0
        return holds, np.where(holds, 1.0, 0.0) + 1e-3 * value
    holds = np.asarray(value, bool)
    score = holds.astype(np.float64)
    if form["op"] == "all_of":
        part = np.mean([np.asarray(ev.run(a), bool) for a in form["args"]], axis=0)
        score = np.where(holds, 1.0, 0.5 * part)
    return holds, score


# ---- search: read the query, evaluate it over every image's stored objects -------------------
SEARCH_OUTPUT = "bool"  # a search describes what an image shows: a truth value per image
# Beam width of the parser for search: only the best tree is used. Beam 4 reads a phrase in about
# half the CPU time of the default 8 with the same best trees on our phrases; beam 2 was faster
# still in isolation (14 vs 33 ms per sentence) but lost a blind query and saved little end to end
# (38 vs 43 ms CPU per caption query on search_bench), so 4.
SEARCH_BEAM = 4
READINGS_KEPT = 1024  # readings remembered per process (a repeated query is not parsed again)


@dataclass
class Reading:
    """How a search query was read: its meaning tree and that tree in English, or a refusal."""

    query: str
    tree: Tree | None = None
    text: str = ""
    confidence: float = 0.0
    refusal: str | None = None


class SearchHits(list):
    """Search hits, best first (a list of ``Hit``), with the query's ``reading``; empty, with
    ``refusal`` saying which words could not be read, when the query was not understood."""

    def __init__(self, hits=(), reading: Reading | None = None, matched: int | None = None):
        super().__init__(hits)
        self.reading = reading
        self.matched = matched  # indexed images where the reading holds (None: not a reading search)

    @property
    def refusal(self) -> str | None:
        """Why there are no hits, when the query could not be read; None otherwise."""
        return self.reading.refusal if self.reading is not None else None


def sentences(query: str) -> list[str]:
    """The sentences of a query ("There is a red circle. There are two stars." has two)."""
    return [p.strip() for p in re.split(r"(?<=[.;!?])\s+|;", query) if p.strip(" .;!?")]


# Words that name the image itself in a search ("photos with ..."), not something in it.
IMAGE_WORDS = frozenset("image images picture pictures photo photos scene scenes shot shots frame frames".split())


def _says_something(tree: Tree) -> bool:
    """Whether the tree names an attribute value or a number (else it holds on nearly every image)."""
    if tree["op"] == "select" and any(tree.get(f) for f in (*ATTRS, "noun")):
        return True
    return tree["op"] == "number" or any(_says_something(c) for c in T.children(tree))


def _vacuous(sentence: str, tree: Tree, text: str, stopwords: frozenset[str]) -> str | None:
    """A refusal when ``tree`` names nothing to look for although the sentence has words it did not
    read ("a picture with a truck" read as "there are objects"), naming those words."""
    from builder.domains import vocabulary

    if _says_something(tree):
        return None
    vocab = vocabulary("shapes")
    said = set(text.lower().split())
    left = [w for w in vocab.split_words(sentence) if w.isalpha() and w.lower() not in stopwords
            and w.lower() not in IMAGE_WORDS and w.lower() not in said and w.lower() not in vocab.generic_nouns]
    if not left:
        return None
    return f"cannot search for {' '.join(left)!r}: the query reads only as '{text}', which nearly every image shows"


def read_query(query: str, parser=None, output: str = SEARCH_OUTPUT, engines: str = "shapes",
               beam: int = SEARCH_BEAM) -> Reading:
    """``query`` read by the composing parser (``TreeParser``) into the tree a search evaluates.

    A description of several sentences is read sentence by sentence and means all of them.
    Refused (``Reading.refusal``) when the parser refuses a sentence, naming the words it could
    not read, or when the reading asks a question rather than describing images.
    """
    from builder.planner.compose.parse import STOPWORDS, TreeParser
    from builder.planner.tree_text import render

    parser = parser or TreeParser.load()
    forms, texts, conf = [], [], 1.0
    for sentence in sentences(query) or [query]:
        parse = parser.parse(sentence, output=output, k=beam, closed_vocabulary=True, engines=engines)
        if parse.refusal:
            return Reading(query, refusal=parse.refusal)
        tree, c = parse.candidates[0]
        try:
            forms.append(search_form(tree))
        except Unsearchable as e:
            return Reading(query, tree, refusal=f"cannot search for {sentence.strip()!r}: {e}")
        texts.append(render(tree))
        vacuous = _vacuous(sentence, tree, texts[-1], STOPWORDS)
        if vacuous:
            return Reading(query, tree, refusal=vacuous)
        conf *= c
    if len(forms) > 1:
        if any(T.result_type(f) == T.CHOICE for f in forms):
            return Reading(query, refusal=f"cannot search for {query.strip()!r}: a ranking ('the most ...') "
                                          "can only be searched on its own, not as one sentence of several")
        forms = [f if T.result_type(f) == T.BOOL else
                 {"op": "compare", "cmp": ">", "left": f, "right": {"op": "number", "value": 0}} for f in forms]
    tree = forms[0] if len(forms) == 1 else {"op": "all_of", "args": forms}
    return Reading(query, tree, "; ".join(texts), conf)


_READINGS: OrderedDict[tuple, Reading] = OrderedDict()


def _remembered(query: str, parser, output: str) -> Reading:
    """``read_query``'s reading, remembered for the ``READINGS_KEPT`` latest queries."""
    key = (id(parser), query, output)
    if key in _READINGS:
        _READINGS.move_to_end(key)
        return _READINGS[key]
    reading = _READINGS[key] = read_query(query, parser, output)
    while len(_READINGS) > READINGS_KEPT:
        _READINGS.popitem(last=False)
    return reading


def forget_readings() -> None:
    """Forget the remembered readings (after the parser's weights change; benchmarks timing parses)."""
    _READINGS.clear()


def search_read(index: SearchIndex, embedder, query: str, k: int = 10, parser=None, output: str = SEARCH_OUTPUT) -> SearchHits:
    """Text->image search by reading: the ``k`` best images of ``index`` for ``query``.

    The query is read into a meaning tree (``read_query``) and the tree evaluated over the stored
    detected objects of *every* indexed image, so "without any green objects" or "at least three
    stars" find all the images they describe. Images where the tree holds come first; embedding
    similarity to the query orders images of equal score; when fewer than ``k`` images match, the
    nearest misses follow (lower scores). ``SearchHits.matched`` says how many images match. A
    query that cannot be read gets no hits and the reason (``SearchHits.refusal``).
    """
    if not query or not query.strip():
        raise SearchError("the search query is empty")
    if k < 1:
        raise SearchError(f"k must be at least 1, got {k}")
    if index.objects is None:
        raise SearchError(f"{index.folder}: the index has no stored detections (its profile had no detector, or it "
                          "was built before they were stored); run `visforge index` on it again to add them")
    reading = _remembered(query, parser, output)
    if reading.refusal:
        return SearchHits([], reading)
    if index.evaluator is None:
        index.evaluator = TableEval(index.objects)
    holds, score = score_images(reading.tree, index.objects, index.evaluator)
    sims = np.zeros(len(score), np.float32)
    if embedder is not None and len(score):
        check_embedder(index.meta, embedder)
        sims = index.vectors @ np.asarray(embedder.embed_texts([query]), np.float32)[0]
    top = np.lexsort((-sims, -score))[:k]
    hits = [Hit(r + 1, str(index.path(int(i))), float(score[i]), float(sims[i]), float(score[i]))
            for r, i in enumerate(top)]
    return SearchHits(hits, reading, int(holds.sum()))
