"""Self-training benchmark for the default planner (reinforced self-training, the Improve step).

Part 1, the world (3 seeds, 3 rounds): a planner with room to improve (the parser head trained on
only the first ``--patterns`` phrasing patterns of each question kind) self-trains on annotated
shapes-world tasks (image, query, expected; half of them phrased with the world's held-out
templates) and is evaluated after every round on other scenes whose queries all use held-out
phrasings. Reported per family: accuracy of the reference programs, of the start planner and
after each round, the share of the gap closed, and "right answer, wrong program" among the
trained readings: each kept program is compared with the task's reference program on 8 probe
scenes (the audit); the guard (3 other probe scenes) is what decides, and its precision and recall
against the audit are reported.

Part 2, customer adaptation: the blind development set split by query into an adaptation half
(4 labelled scenes per query) and an evaluation half (40 scenes per query, top-1), for the
shipped planner and for the planner with room to improve.

    python bench/selftrain_bench.py --out bench/results/selftrain_bench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner_bench import FAMILY_OF, Runner, blind_set, output_of, scene_pool  # noqa: E402

from builder.core.metrics import score  # noqa: E402
from builder.core.seeding import derive_seed  # noqa: E402
from builder.domains.shapes.world import build_world  # noqa: E402
from builder.methods.improve import AdaptConfig, QueryTask, self_train  # noqa: E402
from builder.planner.phrasings import generate  # noqa: E402
from builder.planner.semantic import SemanticParser, SemanticPlanner, load_semantic_planner, train_parser  # noqa: E402

OUTPUT_OF_FAMILY = {"vqa": "text", "grounding": "boxes", "itm": "choice"}


class Scorer:
    """Runs programs for the adaptation loop through the bench runner (real sandbox and engines)."""

    def __init__(self, runner: Runner):
        self.runner = runner

    def __call__(self, source, task, examples):
        return self.runner.hits(source, examples, task.output)

    def outputs(self, source, task, examples):
        return self.runner.outputs(source, examples)

    @staticmethod
    def same(output, a, b) -> bool:
        return a is not None and score(output, a, b)


def weak_planner(seed: int, patterns: int, n: int, steps: int) -> tuple[SemanticPlanner, dict]:
    """A parser head trained on few phrasing patterns: the starting point with room to improve."""
    head, log = train_parser(generate(n, seed=seed, patterns_per_kind=patterns), steps=steps, seed=seed,
                             progress=False)
    return SemanticPlanner(SemanticParser(head, {"config": {}})), log


def world_tasks(n_scenes: int, seed: int, heldout_fraction: float, probe_pool, n_guard: int, n_audit: int):
    """QueryTasks from world examples; guard and audit probes are other scenes (answers unused)."""
    scenes, examples = build_world(n_scenes, seed=seed, heldout_fraction=heldout_fraction, text_labels=True)
    rng = np.random.default_rng(seed)
    tasks = []
    for ex in examples:
        multi = ex["qtype"].startswith("image_")
        shown = {"scenes": [(derive_seed(seed, "scene", i), scenes[i]) for i in ex["scene_ids"]], "expected": ex["expected"],
                 "choices": ex.get("choices"), "query": ex["query"], "multi": multi}
        probes = []
        for j in rng.choice(len(probe_pool), n_guard + n_audit, replace=False):
            if multi:  # another set of images of the same shape
                idx = rng.choice(len(probe_pool), len(ex["scene_ids"]), replace=False)
                probes.append({**shown, "scenes": [probe_pool[i] for i in idx], "expected": None})
            else:
                probes.append({**shown, "scenes": [probe_pool[j]], "expected": None})
        task = QueryTask(ex["query"], OUTPUT_OF_FAMILY[ex["family"]], [shown], ex.get("choices") is not None, multi,
                         ex["family"], ex["program"], probes)
        tasks.append(task)
    return tasks


class GuardedScorer(Scorer):
    """Reward = right on the labelled example AND the same behaviour as the reference on the guard probes."""

    def __init__(self, runner, n_guard):
        super().__init__(runner)
        self.n_guard = n_guard
        self.decisions = []  # (task, program, guard verdict)

    def unguarded(self, source, task, examples):
        """Right or wrong on the labelled examples alone (self_train's keep-best check)."""
        return super().__call__(source, task, examples)

    def __call__(self, source, task, examples):
        hits = super().__call__(source, task, examples)
        if not all(hits) or not task.reference or not task.probes:
            return hits
        probes = task.probes[: self.n_guard]
        ref = self.outputs(task.reference, task, probes)
        got = self.outputs(source, task, probes)
        ok = all(self.same(task.output, g, r) for g, r in zip(got, ref, strict=True) if r is not None)
        self.decisions.append((task, source, ok))
        return hits if ok else [False] * len(hits)


def run_world_seed(seed: int, a, runner: Runner, pool) -> dict:
    t0 = time.perf_counter()
    planner, log = weak_planner(seed, a.patterns, a.weak_examples, a.weak_steps)
    train = world_tasks(a.train_scenes, derive_seed(seed, "train"), 0.5, pool, a.guard, a.audit)
    held = world_tasks(a.eval_scenes, derive_seed(seed, "eval"), 1.0, pool, 0, 0)
    scorer = GuardedScorer(runner, a.guard)
    reference = evaluate_reference(held, runner)
    weak_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    cfg = AdaptConfig(rounds=a.rounds, k=a.k, steps=a.steps, seed=seed)
    _, report = self_train(planner, train, held, scorer, cfg, progress=_log(f"seed {seed}"))
    rounds_s = time.perf_counter() - t1
    # guard precision/recall against the audit (8 further probes)
    tp = fp = fn = tn = 0
    rawp_trained = 0
    for task, src, ok in scorer.decisions:
        probes = task.probes[a.guard:]
        ref = scorer.outputs(task.reference, task, probes)
        got = scorer.outputs(src, task, probes)
        wrong = any(not scorer.same(task.output, g, r) for g, r in zip(got, ref, strict=True) if r is not None)
        rejected = not ok
        tp += rejected and wrong
        fp += rejected and not wrong
        fn += (not rejected) and wrong
        tn += (not rejected) and not wrong
        rawp_trained += (not rejected) and wrong
    kept = tn + fn
    return {"seed": seed, "weak_planner": {k: v for k, v in log.items() if k != "losses"},
            "reference": reference, "before": report["before"], "rounds": report["rounds"],
            "guard": {"rejected_wrong": tp, "rejected_right": fp, "passed_wrong": fn, "passed_right": tn,
                      "precision": round(tp / (tp + fp), 3) if tp + fp else None,
                      "recall": round(tp / (tp + fn), 3) if tp + fn else None},
            "rawp_among_trained": round(rawp_trained / kept, 4) if kept else 0.0,
            "setup_seconds": round(weak_s, 1), "rounds_seconds": round(rounds_s, 1)}


def evaluate_reference(tasks, runner: Runner) -> dict:
    by = {}
    for t in tasks:
        by.setdefault(t.family, []).extend(runner.hits(t.reference, t.examples, t.output))
    every = [h for v in by.values() for h in v]
    return {"accuracy": round(float(np.mean(every)), 4),
            "per_family": {f: round(float(np.mean(v)), 4) for f, v in sorted(by.items())}}


def blind_adaptation(planner: SemanticPlanner, runner: Runner, pool, a, label: str) -> dict:
    requests, metas, sets = blind_set(pool, a.seed_blind, 4, 40, None)
    rng = np.random.default_rng(7)
    order = rng.permutation(len(requests))
    half = set(order[: len(order) // 2].tolist())
    adapt, held = [], []
    for i, (req, meta, exs) in enumerate(zip(requests, metas, sets, strict=True)):
        if not exs:
            continue
        out = output_of(meta["kind"])
        if i in half:
            adapt.append(QueryTask(req.query, out, exs[:4], req.choices is not None, req.multi_image,
                                   FAMILY_OF[out]))
        else:
            held.append(QueryTask(req.query, out, exs[4:], req.choices is not None, req.multi_image, FAMILY_OF[out]))
    # choice tasks: each example carries its own choices; the request only needs to know there are some
    scorer = Scorer(runner)
    cfg = AdaptConfig(rounds=a.rounds, k=a.k, steps=a.steps, seed=0)
    t0 = time.perf_counter()
    _, report = self_train(planner, adapt, held, scorer, cfg, progress=_log(label))
    return {"planner": label, "adaptation_queries": len(adapt), "evaluation_queries": len(held),
            "before": report["before"], "after": report["after"],
            "rounds": [{k: v for k, v in r.items() if k != "audit"} for r in report["rounds"]],
            "seconds": round(time.perf_counter() - t0, 1)}


def _log(prefix: str):
    return lambda msg, frac: print(f"[{prefix}] {msg}", file=sys.stderr, flush=True)


def _stats(values):
    return {"mean": round(statistics.mean(values), 4), "min": round(min(values), 4), "max": round(max(values), 4)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--patterns", type=int, default=2, help="phrasing patterns per kind for the start planner")
    ap.add_argument("--weak-examples", type=int, default=3000)
    ap.add_argument("--weak-steps", type=int, default=400)
    ap.add_argument("--train-scenes", type=int, default=60)
    ap.add_argument("--eval-scenes", type=int, default=60)
    ap.add_argument("--guard", type=int, default=3)
    ap.add_argument("--audit", type=int, default=8)
    ap.add_argument("--seed-blind", type=int, default=1)
    ap.add_argument("--skip-blind", action="store_true")
    ap.add_argument("--skip-world", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    pool = scene_pool(600, 99)
    result = {"args": vars(a)}
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(tmp)
        try:
            if not a.skip_world:
                seeds = []
                for seed in a.seeds:
                    seeds.append(run_world_seed(seed, a, runner, pool))
                    print(json.dumps({"seed": seed, "before": seeds[-1]["before"],
                                      "after": seeds[-1]["rounds"][-1]["eval"]}), file=sys.stderr)
                fams = sorted(seeds[0]["reference"]["per_family"])
                summary = {}
                for f in fams:
                    ref = [s["reference"]["per_family"][f] for s in seeds]
                    before = [s["before"]["per_family"][f] for s in seeds]
                    after = [s["rounds"][-1]["eval"]["per_family"][f] for s in seeds]
                    gap_closed = [(af - b) / (r - b) if r - b > 1e-9 else 1.0 for r, b, af in zip(ref, before, after,
                                                                                                strict=True)]
                    summary[f] = {"reference": _stats(ref), "before": _stats(before), "after": _stats(after),
                                  "gap_closed": _stats(gap_closed)}
                result["world"] = {"per_family": summary,
                                   "rawp_among_trained": _stats([s["rawp_among_trained"] for s in seeds]),
                                   "rounds_seconds": _stats([s["rounds_seconds"] for s in seeds]), "seeds": seeds}
            if not a.skip_blind:
                result["blind_adaptation"] = [
                    blind_adaptation(load_semantic_planner(), runner, pool, a, "shipped planner"),
                    blind_adaptation(weak_planner(0, a.patterns, a.weak_examples, a.weak_steps)[0], runner, pool, a,
                                     "planner with room to improve"),
                ]
        finally:
            runner.close()
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
