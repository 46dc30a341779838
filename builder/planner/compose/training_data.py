"""The composing parser's training mix: generated compositions (``phrasings.generate``), the 20
question kinds as the earlier parser's generator phrases them, and image-search descriptions."""

from __future__ import annotations

from builder.core.seeding import numpy_rng
from builder.planner import tree as T
from builder.planner.compose.phrasings import Phraser, _accept, generate
from builder.planner.compose.sample import COLORS, NOUNS, TRAIN_NOUNS, TreeSampler
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


# What image searches ask for (search_examples): mostly objects, their absence, one object without
# another ("a star but no square"), thresholds and several objects together; rarer all/only, the
# extreme object being something ("the largest object is a star"), sums, sameness and parity.
SEARCH_MIX = {"exists": 0.21, "none": 0.12, "but_not": 0.09, "all_of": 0.13, "any_of": 0.07, "neither": 0.05,
              "threshold": 0.13, "sum": 0.03, "more": 0.05, "only": 0.06, "single": 0.03, "every": 0.03}


def search_tree(sampler: TreeSampler) -> Tree:
    """A truth value of the kind image searches describe (``SEARCH_MIX``)."""
    kind = sampler.pick(tuple(SEARCH_MIX), p=tuple(SEARCH_MIX.values()))
    if kind == "exists":
        return {"op": "exists", "set": sampler.set(3)}
    if kind == "none":  # a fifth of them only an attribute ("nothing is red")
        absent = sampler.modifier({"shape": "-"}) if sampler.rng.random() < 0.2 else sampler.set(2)
        return {"op": "not", "arg": {"op": "exists", "set": absent}}
    if kind == "but_not":  # a fifth of them the same objects in one colour ("stars, none of them green")
        there = sampler.set(2)
        if there["op"] == "select" and not there["color"] and sampler.rng.random() < 0.2:
            absent = {**there, "color": sampler.pick(COLORS)}
        else:
            absent = sampler.set(1 + (sampler.rng.random() < 0.3))
        return {"op": "all_of", "args": [{"op": "exists", "set": there}, {"op": "not", "arg": {"op": "exists", "set": absent}}]}
    if kind in ("all_of", "any_of"):
        return {"op": kind, "args": [sampler.clause() for _ in range(2 if sampler.rng.random() < 0.8 else 3)]}
    if kind == "neither":
        return {"op": "not", "arg": {"op": "any_of", "args": [{"op": "exists", "set": sampler.leaf()} for _ in range(2)]}}
    if kind == "threshold":
        return {"op": "compare", "cmp": sampler.pick(T.CMPS), "left": sampler.count(2), "right": sampler.number()}
    if kind == "sum":
        return {"op": "compare", "cmp": sampler.pick(T.CMPS), "right": sampler.number(),
                "left": {"op": "add", "args": [sampler.count(1), sampler.count(1)]}}
    if kind == "more":
        return {"op": "compare", "cmp": sampler.pick((">", "<", "==")), "left": sampler.num(2), "right": sampler.count(1)}
    if kind == "only":
        return sampler.only()
    if kind == "single":
        # "the largest object is a star": the extreme is mostly of any object, said without the attribute it is
        inner = {"op": "objects"} if sampler.rng.random() < 0.6 else sampler.leaf(False)
        by = sampler.pick(T.EXTREMES)
        said = {**(inner if inner["op"] == "select" else {}), **({"size": by} if by in ("largest", "smallest") else {})}
        one = {"op": "extreme", "set": inner, "by": by}
        return {"op": "exists", "set": {"op": "intersect", "sets": [one, sampler.modifier(said)]}}
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
