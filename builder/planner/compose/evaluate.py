"""Held-out figures of the composing parser: exact and executed accuracy, per operator and split,
refusals, speed, and the ablation between the decoder's ranking and paraphrase-similarity ranking.

``python -m builder.planner.compose.evaluate [--weights DIR] [--n 150]`` prints a JSON report.
Executed accuracy: the top tree's ground-truth answers (``tree_truth``) on sampled shapes scenes
equal the gold tree's (so "a red circle or a blue square" read as ``any_of`` of two ``exists``
counts as right when the gold is ``exists`` of a ``union``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

import numpy as np

from builder.domains import vocabulary
from builder.domains.shapes.world.scene import sample_scene
from builder.planner import tree as T
from builder.planner.compose.model import word_states
from builder.planner.compose.parse import TreeParser
from builder.planner.compose.phrasings import generate
from builder.planner.compose.sample import combos
from builder.planner.compose.scope import foreign, out_of_scope
from builder.planner.tree_text import render
from builder.planner.tree_truth import answer

split_words = vocabulary("shapes").split_words

SCENES = [sample_scene(np.random.default_rng([5, i]), "clean", None, (3, 8), i % 3 == 0) for i in range(8)]


def denotation(tree: T.Tree) -> str:
    """The tree's answers on the fixed scenes (image choices over three scenes at a time)."""
    if T.result_type(tree) == T.CHOICE:
        if tree["op"] == "best_caption":
            return "caption"
        return json.dumps([answer(tree, SCENES[i:i + 3]) for i in range(0, 6, 3)], default=str)
    return json.dumps([answer(tree, s) for s in SCENES], default=str)


def sentence_vectors(texts: list[str]) -> np.ndarray:
    """Unit-length mean MiniLM word states (the paraphrase similarity of design (b))."""
    vecs = np.stack([s.mean(0) for s in word_states([split_words(t) or ["?"] for t in texts])])
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def rerank(query: str, cands: list[tuple[T.Tree, float]], weight: float | None) -> T.Tree:
    """Design (b): the candidate whose rendering is most similar to the query (``weight`` None), or the
    decoder's log-probability plus ``weight`` x similarity (a and b combined)."""
    vecs = sentence_vectors([query] + [render(t) for t, _ in cands])
    sims = vecs[1:] @ vecs[0]
    if weight is None:
        return cands[int(np.argmax(sims))][0]
    conf = np.log(np.array([max(c, 1e-9) for _, c in cands]))
    return cands[int(np.argmax(conf + weight * sims))][0]


def evaluate(parser: TreeParser, n: int = 150, seed: int = 1000) -> dict:
    """The report (see the module doc) on ``n`` examples per held-out split."""
    report: dict = {"splits": {}, "per_operator": {}, "combos": {}}
    per_op = defaultdict(lambda: [0, 0])
    per_combo = defaultdict(lambda: [0, 0])
    designs = {"a_decoder": None, "b_similarity": "sim", "a+b": 2.0}
    times = []
    for split in ("train", "template", "noun", "combo"):
        examples = generate(n, seed, split)
        stats = defaultdict(int)
        for e in examples:
            t0 = time.perf_counter()
            p = parser.parse(e["request"], e["output"], k=8)
            times.append(time.perf_counter() - t0)
            stats["n"] += 1
            if p.refusal:
                stats["refused"] += 1
                continue
            gold_key, gold_den = T.key(e["tree"]), denotation(e["tree"])
            stats["oracle_at_8"] += any(T.key(t) == gold_key for t, _ in p.candidates)
            for name, w in designs.items():
                top = p.candidates[0][0] if w is None else rerank(e["request"], p.candidates, None if w == "sim" else w)
                stats[f"{name}_exact"] += T.key(top) == gold_key
                stats[f"{name}_executed"] += denotation(top) == gold_den
            ok = T.key(p.candidates[0][0]) == gold_key
            for op in set(T.operators(e["tree"])):
                per_op[op][0] += ok
                per_op[op][1] += 1
            for c in combos(e["tree"]):
                per_combo[c][0] += ok
                per_combo[c][1] += 1
        name = {"train": "iid (new draws, training templates)"}.get(split, split)
        report["splits"][name] = {k: round(v / stats["n"], 3) if k != "n" else v for k, v in stats.items()}
    report["per_operator"] = {op: f"{a}/{b} = {a / b:.2f}" for op, (a, b) in sorted(per_op.items())}
    report["combos"] = {c: f"{a}/{b} = {a / b:.2f}" for c, (a, b) in sorted(per_combo.items())}
    report["refusal"] = refusals(parser)
    report["speed_ms"] = {"median": round(1000 * statistics.median(times), 1),
                          "p90": round(1000 * float(np.percentile(times, 90)), 1)}
    return report


def refusals(parser: TreeParser) -> dict:
    """Refusal recall on held-out out-of-scope and foreign sentences, precision against in-scope ones."""
    bad = out_of_scope("heldout") + foreign("heldout")
    good = [e["request"] for split in ("template", "noun", "combo") for e in generate(60, 2000, split)]
    refused_bad = [s for s in bad if parser.parse(s).refusal]
    refused_good = [s for s in good if parser.parse(s).refusal]
    tp, fp = len(refused_bad), len(refused_good)
    return {"recall": round(tp / len(bad), 3), "precision": round(tp / max(1, tp + fp), 3),
            "false_refusal_rate": round(fp / len(good), 3), "missed": [s for s in bad if s not in refused_bad],
            "wrongly_refused": refused_good[:8]}


def main(argv: list[str] | None = None) -> None:
    """Command line: print the held-out report for ``--weights`` as JSON."""
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--n", type=int, default=150)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(json.dumps(evaluate(TreeParser.load(a.weights), a.n), indent=1))


if __name__ == "__main__":
    main()
