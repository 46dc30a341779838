"""The composing parser's training mix: generated compositions (``phrasings.generate``), the 20
question kinds as the earlier parser's generator phrases them, and image-search descriptions."""

from __future__ import annotations

from builder.core.seeding import numpy_rng
from builder.planner import tree as T
from builder.planner.compose.phrasings import Phraser, _accept, generate
from builder.planner.compose.sample import NOUNS, TRAIN_NOUNS, TreeSampler
from builder.planner.tree import Tree


def kind_examples(n: int, seed: int = 0) -> list[dict]:
    """``n`` examples of the 20 question kinds as the earlier parser's generator phrases them
    (``builder.planner.phrasings``, world held-out templates excluded), written as trees: the
    composing parser learns the phrasings customers use for simple requests, not only ours."""
    from builder.planner.meaning import KINDS, Meaning
    from builder.planner.phrasings import generate as kind_generate
    from builder.planner.tree_sample import from_meaning

    out = []
    for ex in kind_generate(n, seed + 7919):
        m = Meaning.from_dict(ex["meaning"])
        out.append({"tree": from_meaning(m), "request": ex["query"], "output": KINDS[m.kind][1][0], "split": "train"})
    return out


# What image searches ask for (search_examples): mostly objects, their absence, thresholds and
# several objects together, rarer all/only, sameness and parity.
SEARCH_MIX = {"exists": 0.24, "none": 0.13, "all_of": 0.17, "any_of": 0.07, "neither": 0.05, "threshold": 0.15,
              "more": 0.05, "only": 0.06, "every": 0.04, "other": 0.04}


def search_tree(sampler: TreeSampler) -> Tree:
    """A truth value of the kind image searches describe (``SEARCH_MIX``)."""
    kind = sampler.pick(tuple(SEARCH_MIX), p=tuple(SEARCH_MIX.values()))
    if kind == "exists":
        return {"op": "exists", "set": sampler.set(3)}
    if kind == "none":
        return {"op": "not", "arg": {"op": "exists", "set": sampler.set(2)}}
    if kind in ("all_of", "any_of"):
        return {"op": kind, "args": [sampler.clause() for _ in range(2 if sampler.rng.random() < 0.8 else 3)]}
    if kind == "neither":
        return {"op": "not", "arg": {"op": "any_of", "args": [{"op": "exists", "set": sampler.leaf()} for _ in range(2)]}}
    if kind == "threshold":
        return {"op": "compare", "cmp": sampler.pick(T.CMPS), "left": sampler.count(2), "right": sampler.number()}
    if kind == "more":
        return {"op": "compare", "cmp": sampler.pick((">", "<", "==")), "left": sampler.num(2), "right": sampler.count(1)}
    if kind == "only":
        return sampler.only()
    return sampler.bool(3)


def search_examples(n: int, seed: int = 0) -> list[dict]:
    """``n`` image-search descriptions ("pictures with a star but no square") of ``search_tree`` trees,
    output ``bool``: what a search box gets is rarely a question, and ``generate`` writes few of them."""
    rng = numpy_rng(seed, "compose", "search")
    sampler, phraser = TreeSampler(rng, TRAIN_NOUNS), Phraser(rng, "train", dict(NOUNS))
    out: list[dict] = []
    while len(out) < n:
        tree = search_tree(sampler)
        text = phraser.search(tree) if _accept(tree, "train") else None
        if text:
            out.append({"tree": tree, "request": text, "output": "bool", "split": "train"})
    return out


def training_examples(n: int, seed: int = 0) -> list[dict]:
    """The composing parser's training requests: ``n`` generated compositions plus a fifth as many each
    of the 20 question kinds (``kind_examples``) and of image-search descriptions (``search_examples``)."""
    return generate(n, seed, "train") + kind_examples(n // 5, seed) + search_examples(n // 5, seed)
