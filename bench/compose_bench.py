"""Compositional planner benchmark: blind requests in the meaning language (docs/meaning.md).

Three blind sets, written by someone shown only the vocabulary and the meaning language
(never the training phrasings), never trained on:
- ``bench/data/compose_blind.jsonl``: compositional requests, each with its tree;
- ``bench/data/compose_out_of_scope.jsonl``: requests a shapes planner must refuse;
- ``bench/data/compose_open_vocab.jsonl``: requests about nouns outside the shapes vocabulary.

Per compositional request, on scenes where its tree has one right answer (``tree_truth``; yes/no
requests balanced between yes and no where the pool allows): top-1 (the first candidate on
``--test`` scenes) and select-by-examples (k candidates, the best on ``--examples`` scenes, scored
on the test scenes); solved = accuracy >= 0.9. Programs run in the real sandbox on the real shapes
engines. Reported per operator (requests whose tree holds it) and for requests holding an operator
combination the composing parser never saw in training (``compose.sample.HELDOUT_COMBOS``).
Refusals: recall on the out-of-scope set, false refusals on the previous blind set and the
compositional set; open vocabulary: the noun kept (open profile) or refused with the noun named
(closed profile). Every planner runs in the same process. Prints JSON; ``--out`` also writes it.

    python bench/compose_bench.py --out bench/results/compose_bench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from planner_bench import Runner, scene_pool  # noqa: E402

from builder.planner import tree as T  # noqa: E402
from builder.planner.prompt import PlanRequest, check_program  # noqa: E402
from builder.planner.tree_truth import answer  # noqa: E402

DATA = Path(__file__).parent / "data"
FAMILY_OF = {"text": "vqa", "bool": "vqa", "count": "vqa", "boxes": "grounding", "choice": "itm"}


def load(name: str) -> list[dict]:
    """The JSON lines of one blind set."""
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


# ---- examples: scenes on which a tree has one right answer ------------------------------------------
def examples_for(item: dict, pool, rng, n: int) -> list[dict]:
    """Up to ``n`` examples (scenes + expected answer); yes/no answers balanced where the pool allows."""
    tree, output = item["tree"], item["output"]
    if tree["op"] == "best_caption":
        return []  # free-text captions have no scene-graph truth: scored by structure below
    if T.result_type(tree) == T.CHOICE:
        out = []
        for _ in range(n * 6):
            group = [pool[int(j)] for j in rng.choice(len(pool), 4, replace=False)]
            value = answer(tree, [s for _, s in group])
            if value is not None:
                out.append({"scenes": group, "expected": value, "multi": True})
            if len(out) == n:
                break
        return out
    by_answer: dict[str, list[dict]] = defaultdict(list)
    for i in rng.permutation(len(pool)):
        key, scene = pool[i]
        value = answer(tree, scene)
        if value is None:
            continue
        if output == "text" and not isinstance(value, str):
            value = ("yes" if value else "no") if isinstance(value, bool) else str(value)
        by_answer[json.dumps(value)].append({"scenes": [(key, scene)], "expected": value})
        if sum(map(len, by_answer.values())) >= 4 * n:
            break
    if T.result_type(tree) == T.BOOL and len(by_answer) == 2:  # half yes, half no
        groups = list(by_answer.values())
        mixed = [e for pair in zip(*groups, strict=False) for e in pair]
        return mixed[:n]
    flat = [e for g in by_answer.values() for e in g]
    return [flat[int(j)] for j in rng.permutation(len(flat))[:n]]


# ---- planners under test ------------------------------------------------------------------------------
class SemanticPlanner:
    """The 20-kind default planner: no refusal of its own beyond returning no candidate."""

    label = "semantic (20 kinds)"

    def __init__(self):
        from builder.planner.semantic import load_semantic_planner

        self.planner = load_semantic_planner()

    def propose(self, req: PlanRequest, k: int) -> tuple[list[str], str | None]:
        cands = self.planner.propose([req], k=k, temperature=1.0)[0]
        return cands, (None if cands else "no candidate")


class ComposingPlanner:
    """The composing parser (``builder.planner.compose``): trees compiled to programs."""

    label = "composing parser"

    def __init__(self, closed_vocabulary: bool = True):
        from builder.planner.compose.parse import TreeParser

        self.parser = TreeParser.load()
        self.closed = closed_vocabulary

    def propose(self, req: PlanRequest, k: int) -> tuple[list[str], str | None]:
        from builder.planner.compose.planner import compile_candidates

        parse = self.parser.parse(req.query, output=req.output, k=k, closed_vocabulary=self.closed)
        if parse.refusal:
            return [], parse.refusal
        programs = compile_candidates(req, [tree for tree, _ in parse.candidates])
        return programs, (None if programs else "no candidate")


def held_out(tree: dict) -> set[str]:
    """The operator combinations in ``tree`` that the composing parser never saw in training."""
    from builder.planner.compose.sample import combos

    return combos(tree)


# ---- evaluation -------------------------------------------------------------------------------------------
def _request(item: dict, exs: list[dict]) -> PlanRequest:
    output = item["output"]
    multi = T.result_type(item["tree"]) == T.CHOICE and item["tree"]["op"] != "best_caption"
    return PlanRequest(item["query"], FAMILY_OF[output], item.get("choices"), multi, output)


class DefaultPlanner:
    """The planner the workflow uses (``builder.planner.compose.planner``): the composing parser,
    with the 20-kind parser leading on its own kinds."""

    label = "default planner (composing + 20 kinds)"

    def __init__(self, closed_vocabulary: bool = True):
        from builder.planner.compose.planner import ComposingPlanner as Planner

        self.planner = Planner(closed_vocabulary=closed_vocabulary)
        self.closed = closed_vocabulary

    def propose(self, req: PlanRequest, k: int) -> tuple[list[str], str | None]:
        self.planner.closed_vocabulary = self.closed
        plan = self.planner.plan(req, k=k)
        return plan.programs, plan.refusal or (None if plan.programs else "no candidate")


def evaluate_compositional(planner, items, example_sets, runner: Runner, k: int, n_examples: int) -> dict:
    """Top-1 and select-by-examples per request; per operator and on held-out operator pairs."""
    rows, times = [], []
    for item, exs in zip(items, example_sets, strict=True):
        req = _request(item, exs)
        t = time.perf_counter()
        cands, refusal = planner.propose(req, k)
        times.append(time.perf_counter() - t)
        cands = [c for c in dict.fromkeys(cands) if check_program(c, request=req) is None]
        row = {"id": item["id"], "ops": sorted(set(T.operators(item["tree"]))), "refused": refusal is not None,
               "held_out": sorted(held_out(item["tree"])), "top1": 0.0, "select": 0.0}
        if item["tree"]["op"] == "best_caption":
            row["top1"] = row["select"] = float(bool(cands) and "best_text_match" in cands[0])
        elif cands and exs[n_examples:]:
            shown, test = exs[:n_examples], exs[n_examples:]
            out = req.output
            row["top1"] = runner.accuracy(cands[0], test, out)
            shown_acc = [runner.accuracy(c, shown, out) for c in cands]
            best = cands[int(np.argmax(shown_acc))]
            row["select"] = row["top1"] if best == cands[0] else runner.accuracy(best, test, out)
        rows.append(row)
    return _summary(rows, times)


def _rate(rows, key) -> float:
    return round(float(np.mean([r[key] >= 0.9 for r in rows])), 3) if rows else 0.0


def _summary(rows, times) -> dict:
    ops = sorted({op for r in rows for op in r["ops"]})
    held = [r for r in rows if r["held_out"]]
    combos = sorted({c for r in held for c in r["held_out"]})
    return {
        "requests": len(rows), "top1_solved": _rate(rows, "top1"), "select_solved": _rate(rows, "select"),
        "refused": round(float(np.mean([r["refused"] for r in rows])), 3),
        "held_out_combinations": {"n": len(held), "top1_solved": _rate(held, "top1"),
                                  "select_solved": _rate(held, "select"),
                                  "per_combination": {c: {"n": len(rs), "top1_solved": _rate(rs, "top1")}
                                                      for c in combos for rs in [[r for r in held if c in r["held_out"]]]}},
        "per_operator": {op: {"n": len(rs), "top1_solved": _rate(rs, "top1"), "select_solved": _rate(rs, "select")}
                         for op in ops for rs in [[r for r in rows if op in r["ops"]]]},
        "propose_seconds_median": round(statistics.median(times), 4) if times else None,
        "unsolved_top1": [r["id"] for r in rows if r["top1"] < 0.9],
    }


def evaluate_refusals(planner, out_of_scope, in_scope_queries) -> dict:
    """Refusal recall on out-of-scope requests; false refusals on in-scope ones."""
    refused = []
    for item in out_of_scope:
        _, reason = planner.propose(PlanRequest(item["query"], "vqa", None, False, "text"), 1)
        refused.append({"id": item["id"], "category": item["category"], "refused": reason is not None,
                        "reason": reason, "names_words": bool(reason) and item.get("unreadable", "").lower()[:12]
                        in (reason or "").lower()})
    false = []
    for query, output in in_scope_queries:
        _, reason = planner.propose(PlanRequest(query, FAMILY_OF[output], None, False, output), 1)
        false.append(reason is not None and reason != "no candidate")
    cats = sorted({r["category"] for r in refused})
    return {"refusal_recall": round(float(np.mean([r["refused"] for r in refused])), 3),
            "per_category": {c: round(float(np.mean([r["refused"] for r in refused if r["category"] == c])), 3)
                             for c in cats},
            "reason_names_the_words": round(float(np.mean([r["names_words"] for r in refused if r["refused"]]
                                                          or [0])), 3),
            "false_refusals": round(float(np.mean(false)), 3) if false else None, "in_scope_n": len(false),
            "not_refused": [r["id"] for r in refused if not r["refused"]]}


def evaluate_open_vocab(planner, items) -> dict:
    """Open profile: the noun reaches the program; closed profile: refused with the noun named."""
    kept, named = [], []
    for item in items:
        req = PlanRequest(item["query"], FAMILY_OF[item["output"]], None, False, item["output"])
        nouns = [n.lower() for n in item["nouns"]]
        if hasattr(planner, "closed"):  # the readers that know a profile: open, then closed vocabulary
            planner.closed = False
            cands, _ = planner.propose(req, 1)
            planner.closed = True
            _, reason = planner.propose(req, 1)
        else:
            cands, reason = planner.propose(req, 1)
        kept.append(bool(cands) and all(n.split()[-1] in cands[0].lower() for n in nouns))
        named.append(reason is not None and any(n.split()[-1] in reason.lower() for n in nouns))
    return {"n": len(items), "noun_kept_open_profile": round(float(np.mean(kept)), 3),
            "refused_naming_noun_closed_profile": round(float(np.mean(named)), 3)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--examples", type=int, default=8)
    ap.add_argument("--test", type=int, default=30)
    ap.add_argument("--pool", type=int, default=1500)
    ap.add_argument("--limit", type=int, default=None, help="only the first N compositional requests")
    ap.add_argument("--planners", nargs="+", default=["semantic", "composing"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    makers = {"semantic": SemanticPlanner, "composing": ComposingPlanner, "default": DefaultPlanner}
    planners = [makers[name]() for name in a.planners]
    items = load("compose_blind.jsonl")[: a.limit]
    out_of_scope, open_vocab = load("compose_out_of_scope.jsonl"), load("compose_open_vocab.jsonl")
    from planner_bench import output_of

    previous = [(it["query"], output_of(it["meaning"]["kind"])) for it in load("planner_blind_dev.jsonl")]
    pool = scene_pool(a.pool, a.seed)
    rng = np.random.default_rng(a.seed)
    example_sets = [examples_for(it, pool, rng, a.examples + a.test) for it in items]
    result = {"k": a.k, "example_scenes": a.examples, "test_scenes": a.test, "planners": {}}
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(tmp)
        try:
            for planner in planners:
                t0 = time.perf_counter()
                res = {"compositional": evaluate_compositional(planner, items, example_sets, runner, a.k,
                                                               a.examples),
                       "refusals": evaluate_refusals(planner, out_of_scope, previous),
                       "open_vocabulary": evaluate_open_vocab(planner, open_vocab)}
                res["seconds"] = round(time.perf_counter() - t0, 1)
                result["planners"][planner.label] = res
                print(json.dumps({planner.label: {k: v for k, v in res["compositional"].items()
                                                  if k not in ("per_operator", "unsolved_top1")}}), file=sys.stderr)
        finally:
            runner.close()
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
