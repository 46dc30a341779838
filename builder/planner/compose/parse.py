"""``TreeParser``: a request read into ranked meaning trees, or refused with a reason.

Candidates come from a beam search over the decoder (``model``), constrained by ``grammar`` so
every candidate passes ``tree.check``. Whether to answer at all is decided apart from the
decoder's probabilities (which are sure of themselves on nonsense): the language check, the
length check, and the scope head (trained on generated requests against written out-of-scope
ones and near misses), helped by the request's *unread words* (content words never seen in training
phrasings and not copied into the tree): a request is refused when the scope head says so, or when it
is unsure (below 0.9) and two or more words are unread. The reason names the unread words.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from builder.domains import vocabulary as domain_vocabulary
from builder.planner import tree as T
from builder.planner.compose import grammar as G
from builder.planner.compose.language import not_english
from builder.planner.compose.model import COPY, FIELDS, OUTPUTS, START, word_states
from builder.planner.compose.train import WEIGHTS_DIR, ComposingParserWeights, load, root_types
from builder.planner.semantic import minilm
from builder.planner.tree import Tree
from builder.planner.tree_text import render

split_words = domain_vocabulary("shapes").split_words

MAX_ACTIONS = 90
STOPWORDS = frozenset("""a an the of in on at to for from by with and or but is are was were be been do does did
has have had it its this that these those there their they them we our us you your i me my he she his her
what which who whom how many much please can could would should will shall may might must any some all each
every no not only just very so than then too also as if whether about into over under up down out off""".split())


@dataclass
class Parse:
    """Candidate trees (best first, confidence in [0, 1]) or, when refused, none and the reason."""

    candidates: list[tuple[Tree, float]] = field(default_factory=list)
    refusal: str | None = None
    scope: float = 1.0  # the scope head's probability that the request is expressible
    unread: list[str] = field(default_factory=list)  # content words the parse did not account for


class TreeParser:
    """Reads requests into meaning trees with the trained decoder (``load`` for the shipped one)."""

    def __init__(self, model, info: dict, vocabulary: frozenset[str]):
        self.model = model
        self.info = info
        self.vocabulary = vocabulary
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path | None = None) -> TreeParser:
        """The parser saved at ``path`` (default: the committed weights), loaded once per process."""
        key = str(Path(path or WEIGHTS_DIR).resolve())
        with _LOADED_LOCK:
            if key not in _LOADED:
                model, info = load(key)
                vocab_file = Path(key) / "vocabulary.txt"
                vocab = frozenset(vocab_file.read_text().split()) if vocab_file.is_file() else frozenset()
                _LOADED[key] = cls(model, info, vocab)
            return _LOADED[key]

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write this parser (weights, how it was trained, the words it reads) as an artifact folder that
        ``load`` reads back; a parser adapted by Improve is saved this way in its workspace."""
        return ComposingParserWeights(self.model, self.info, sorted(self.vocabulary)).save_pretrained(folder)

    @staticmethod
    def forget(path: str | Path) -> None:
        """Drop the parser loaded from ``path`` from the per-process cache (its files were rewritten)."""
        with _LOADED_LOCK:
            _LOADED.pop(str(Path(path).resolve()), None)

    def parse(self, query: str, output: str | None = None, k: int = 8, closed_vocabulary: bool = False,
              engines: str = "shapes") -> Parse:
        """Up to ``k`` trees for ``query`` answering ``output`` (any kind when None), or a refusal.

        ``engines`` names the engine profile in refusals ("cannot see 'truck' with the shapes engines")."""
        import torch

        if output is not None and output not in OUTPUTS:
            raise ValueError(f"unknown output kind {output!r}; use one of {', '.join(map(str, OUTPUTS[1:]))}")
        words = split_words(query)
        if not any(w.isalnum() for w in words):
            return Parse(refusal="cannot read an empty request")
        foreign = not_english(query, self.vocabulary | minilm()[2])
        if foreign:
            return Parse(refusal=foreign)
        try:
            states = word_states([words])[0]
        except ValueError as e:
            return Parse(refusal=f"cannot read the whole request: {e}; ask one question at a time")
        read = G.read_words(words, minilm()[2], self.vocabulary - G.NOUN_WORDS)
        with self._lock, torch.no_grad():
            x = torch.from_numpy(states).unsqueeze(0)
            fields = torch.tensor([[FIELDS.index(w.field) for w in read]])
            mask = torch.ones(1, len(words), dtype=torch.bool)
            mem, h0, scope_logit = self.model.encode(x, fields, mask, torch.tensor([OUTPUTS.index(output)]))
            found = self._beam(mem, mask, h0, read, root_types(output), k)
        found = _by_coverage(_without_generic_nouns(found), read, query)
        scope = float(torch.sigmoid(scope_logit[0]))
        if not found:
            return Parse(refusal=f"cannot express {_quote(words)} as a {output or 'supported'} request", scope=scope)
        best = found[0][0]
        unread = self.unread(words, read, best)
        if scope < 0.5 or (scope < 0.9 and len(unread) >= 2):
            named = unread or self.unrendered(words, read, best)
            return Parse(refusal=f"cannot express {_quote(named)} with the {engines} engines", scope=scope,
                         unread=unread)
        nouns = T.nouns(best)
        if closed_vocabulary and nouns:
            return Parse(refusal=f"cannot see {_quote(nouns)} with the {engines} engines: their detector knows "
                                 "only its own shapes, colours and sizes (an open-vocabulary profile such as hf "
                                 "can look for it)",
                         scope=scope, unread=unread)
        logps = np.array([s for _, s in found])
        conf = np.exp(logps - logps.max())
        conf = conf / conf.sum() * scope
        return Parse([(t, float(c)) for (t, _), c in zip(found, conf, strict=True)], scope=scope, unread=unread)

    def unread(self, words: list[str], read: list[G.Word], tree: Tree) -> list[str]:
        """Content words neither seen in training phrasings, nor value words, nor copied into ``tree``."""
        nouns = {w for n in T.nouns(tree) for w in n.split()}
        out = []
        for w, r in zip(words, read, strict=True):
            low = w.lower()
            if not w.isalpha() or r.field or low in STOPWORDS or low in self.vocabulary:
                continue
            if low in nouns or G.singular(low) in nouns:
                continue
            out.append(w)
        return out

    @staticmethod
    def unrendered(words: list[str], read: list[G.Word], tree: Tree) -> list[str]:
        """Content words of the request that the tree's English rendering does not contain (for reasons)."""
        said = set(render(tree).lower().split())
        out = [w for w, r in zip(words, read, strict=True)
               if w.isalpha() and not r.field and w.lower() not in STOPWORDS and w.lower() not in said]
        return out[:4] or [w for w in words if w.isalpha()][:4]

    def _beam(self, mem, mask, h0, words: list[G.Word], roots: tuple[str, ...], k: int) -> list[tuple[Tree, float]]:
        import torch

        m = self.model
        beams = [(0.0, G.start(roots), [], START, -1, h0)]
        done: dict[str, tuple[Tree, float]] = {}
        while beams:
            ready = []
            for score, state, acts, prev, pp, h in beams:
                state, acts, prev, pp = _forced(state, list(acts), prev, pp, words)
                if state is None or len(acts) > MAX_ACTIONS:
                    continue
                if not state:
                    tree = G.build(acts, words)
                    T.check(tree)  # the grammar guarantees it; a failure here is a bug, not a bad request
                    key = T.key(tree)
                    if key not in done or done[key][1] < score:
                        done[key] = (tree, score)
                    continue
                ready.append((score, state, acts, prev, pp, h))
            worst = sorted(s for _, s in done.values())[-k] if len(done) >= k else -math.inf
            ready = [b for b in ready if b[0] > worst]
            if not ready:
                break
            n = len(ready)
            prev = torch.tensor([[b[3]] for b in ready])
            pp = torch.tensor([[b[4]] for b in ready])
            ctx = torch.tensor([[G.context(b[1])] for b in ready])
            memn, maskn = mem.expand(n, -1, -1), mask.expand(n, -1)
            out, hn = m.gru(m.step_inputs(memn, prev, pp, ctx), torch.cat([b[5] for b in ready], 1))
            logits = m.scores(memn, maskn, out)[:, 0]
            expansions = []
            for i, (score, state, acts, _, _, _) in enumerate(ready):
                fixed, copy = G.allowed(state, words)
                allowed = fixed + [COPY + c for c in copy]
                lp = torch.log_softmax(logits[i, allowed], -1)
                top = torch.topk(lp, min(k, len(allowed)))
                for v, j in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                    a = allowed[j]
                    new_prev, new_pp = (COPY, a - COPY) if a >= COPY else (a, -1)
                    expansions.append((score + v, G.advance(state, a), acts + [a], new_prev, new_pp,
                                       hn[:, i:i + 1]))
            beams = sorted(expansions, key=lambda b: -b[0])[:k]
        return sorted(done.values(), key=lambda ts: -ts[1])[:k]


def _forced(state, acts, prev, pp, words):
    """Take the steps that have a single allowed action; None for a state with none allowed."""
    while state:
        fixed, copy = G.allowed(state, words)
        if len(fixed) + len(copy) == 0:
            return None, acts, prev, pp
        if len(fixed) + len(copy) > 1:
            break
        a = fixed[0] if fixed else COPY + copy[0]
        state = G.advance(state, a)
        acts.append(a)
        prev, pp = (COPY, a - COPY) if a >= COPY else (a, -1)
    return state, acts, prev, pp


_GENERIC = frozenset(domain_vocabulary("shapes").generic_nouns)


def _generic_to_objects(node: Tree) -> Tree:
    """A ``select`` of a noun the domain calls any object ("items", "things") read as such."""
    if node["op"] == "select" and node.get("noun") and node["noun"].lower() in _GENERIC:
        node = {**node, "noun": None}
        return node if any(node.get(f) for f in T.ATTRS) else {"op": "objects"}
    return node


def _without_generic_nouns(found: list) -> list:
    """The beam's trees with generic nouns read as objects, duplicates that this makes merged."""
    seen, out = set(), []
    for tree, score in found:
        tree = T.rewrite(tree, _generic_to_objects)
        key = T.key(tree)
        if key not in seen:
            seen.add(key)
            out.append((tree, score))
    return out


UNCOVERED_PENALTY = 1.0  # nats per value word left out; chosen on the generated held-out splits, not the blind set


def values(tree: Tree) -> list[str]:
    """Every value a tree holds (colours, shapes, sizes, numbers, options, nouns), lower case."""
    out = []
    for name, v in tree.items():
        if isinstance(v, dict):
            out += values(v)
        elif isinstance(v, list):
            out += [x for item in v for x in (values(item) if isinstance(item, dict) else [str(item).lower()])]
        elif name != "op" and v is not None:
            out.append(str(v).lower())
    return out


_LISTED = re.compile(r"(^|[\s(:,])['\"\u2018\u201c]\w|(^|\s)\(?[1-4a-dA-D][.):]\s")  # an opening quote, "1)", "(b)", "C:"


def lists_options(query: str) -> bool:
    """Whether the request quotes or enumerates text ("'a red circle'", "1) ...", "(b) ...", "C: ...")."""
    return bool(_LISTED.search(query))


def uncovered(tree: Tree, read: list[G.Word], listed: bool = False) -> int:
    """How many distinct value words of the request (colour, shape, size, number) the tree leaves out.

    A reading that drops "stars" from "except the hexagons and the stars" is rarely right; the decoder's
    own probabilities do not know this (coverage, as in machine translation). A caption choice is exempt
    when the request ``listed`` its captions (their words are options, not values of the tree)."""
    if tree["op"] == "best_caption" and listed:
        return 0
    held = set(values(tree))
    return len({str(w.value).lower() for w in read if w.field in FIELDS[1:]} - held)


def _by_coverage(found: list, read: list[G.Word], query: str = "") -> list:
    """The beam's (tree, log-probability) re-ranked with ``UNCOVERED_PENALTY`` per value word left out."""
    listed = lists_options(query)
    scored = [(tree, lp - UNCOVERED_PENALTY * uncovered(tree, read, listed)) for tree, lp in found]
    return sorted(scored, key=lambda ts: -ts[1])


def _quote(words: list[str]) -> str:
    return "'" + " ".join(words) + "'"


_LOADED: dict[str, TreeParser] = {}
_LOADED_LOCK = threading.Lock()
