"""Self-training benchmark for the default planner (the Improve step), beside its baselines.

Per seed, every arm starts from the same planner and uses the same seed:

- **start**: a parser head trained on only the first ``--patterns`` phrasing patterns of each
  question kind (seeded before the head is built, so the same seed gives the same start);
- **full**: self-training on the customer's labelled queries with the replay mix;
- **replay_only**: the same rounds, steps and replay mix, nothing learnt from the customer's
  examples (``AdaptConfig.explore=False``);
- **no_replay**: self-training on the customer's queries alone (``replay=0``).

The customer's queries are split **by query string** (the planner's output depends on the query
alone): training queries (labelled; their examples are the only reward: a program's outputs
scored against the expected answers, no reference program), validation queries (labelled, never
trained on; they decide keep-best for every arm) and evaluation queries (never seen by any
choice; the reported accuracy, top-1). "Never worse" is checked on the evaluation queries.
"Retention" is the share of generated phrasings from the start's own patterns (another seed)
whose top reading is their exact meaning: what replay is there to keep.

Customer sets (``--customer``):
- ``blind``: the hand-written blind development queries (``bench/data/planner_blind_dev.jsonl``,
  phrasings written without the generator), ``--labelled`` scenes per training/validation query
  and ``--test`` scenes per evaluation query;
- ``world``: the shapes world's held-out templates (phrasings the generator never produces) on
  ``--world-scenes`` scenes, grouped by query string.

Replay (``--replay-from``): ``start`` draws the generated phrasings from the start planner's own
training patterns (rehearsal, as in the product, where the shipped planner replays the
distribution it was trained on); ``all`` draws every generator pattern, so replay alone teaches
the start phrasings it never saw (the issue's confound; the replay-only arm measures it).

Readers (``--reader``): ``kinds`` self-trains the 20-kind parser from the weak start above
(``improve.self_train``); ``trees`` self-trains the shipped composing parser inside the planner that
proposes (``improve_trees.self_train_trees``; the start is the shipped ``ComposingPlanner``, its
20-kind reader the shipped one), with a third customer set, ``compose``: the blind compositional
requests (``bench/data/compose_blind.jsonl``, scenes where the tree has one answer), so the
customer's labels teach the parser compositions phrased the customer's way. Retention for trees:
the share of generated compositional requests (training templates, another seed) read exactly.

    python bench/selftrain_bench.py --out bench/results/selftrain_bench.json   # full: 3 seeds
    python bench/selftrain_bench.py --reader trees --customer compose world --seeds 0 1 2 \
        --out bench/results/selftrain_trees_bench.json
    python bench/selftrain_bench.py --quick                                   # < 5 min, 1 seed
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
from builder.core.seeding import derive_seed, numpy_rng  # noqa: E402
from builder.domains.shapes.world.dataset import build_world  # noqa: E402
from builder.methods.improve import AdaptConfig, QueryTask, self_train  # noqa: E402
from builder.planner.phrasings import generate  # noqa: E402
from builder.planner.prompt import PlanRequest  # noqa: E402
from builder.planner.semantic import SemanticParser, SemanticPlanner, train_parser  # noqa: E402

OUTPUT_OF_FAMILY = {"vqa": "text", "grounding": "boxes", "itm": "choice"}
ARMS = ("full", "replay_only", "no_replay")
RESULTS = Path(__file__).parent / "results" / "selftrain_bench.json"


class Scorer:
    """Scores programs on labelled examples through the bench runner (real sandbox and engines).

    Outputs are memoised per (program, example): every arm evaluates the same queries, and a
    program's output on an image never changes.
    """

    def __init__(self, runner: Runner):
        self.runner = runner
        self._memo: dict[tuple[str, int], object] = {}
        self._keep: list = []  # the examples memoised, so their ids stay theirs

    def outputs(self, source, task, examples):
        todo = [ex for ex in examples if (source, id(ex)) not in self._memo]
        for ex, value in zip(todo, self.runner.outputs(source, todo) if todo else [], strict=True):
            self._memo[(source, id(ex))] = value
            self._keep.append(ex)
        return [self._memo[(source, id(ex))] for ex in examples]

    def __call__(self, source, task, examples):
        return [v is not None and score(task.output, v, ex["expected"])
                for v, ex in zip(self.outputs(source, task, examples), examples, strict=True)]

    @staticmethod
    def same(output, a, b) -> bool:
        return a is not None and score(output, a, b)


def start_planner(seed: int, patterns: int, n: int, steps: int) -> tuple[SemanticPlanner, dict]:
    """A parser head trained on few phrasing patterns: the starting point with room to improve."""
    head, log = train_parser(generate(n, seed=seed, patterns_per_kind=patterns), steps=steps, seed=seed,
                             progress=False)
    return SemanticPlanner(SemanticParser(head, {"config": {}})), {k: v for k, v in log.items() if k != "losses"}


def blind_tasks(pool, seed: int, n_labelled: int, n_test: int) -> list[QueryTask]:
    """One task per blind query, ``n_labelled + n_test`` scenes each (trimmed once split)."""
    requests, metas, sets = blind_set(pool, derive_seed(seed, "blind scenes"), n_labelled, n_test, None)
    tasks = []
    for req, meta, exs in zip(requests, metas, sets, strict=True):
        if len(exs) > n_labelled:
            out = output_of(meta["kind"])
            tasks.append(QueryTask(req.query, out, exs, req.choices is not None, req.multi_image, FAMILY_OF[out]))
    return tasks


def world_tasks(n_scenes: int, seed: int) -> list[QueryTask]:
    """World examples phrased with held-out templates, grouped by query string (one task each)."""
    scenes, examples = build_world(n_scenes, seed=seed, heldout_fraction=1.0, text_labels=True)
    by_query: dict[tuple, QueryTask] = {}
    for ex in examples:
        multi = ex["qtype"].startswith("image_")
        shown = {"scenes": [(derive_seed(seed, "scene", i), scenes[i]) for i in ex["scene_ids"]],
                 "expected": ex["expected"], "choices": ex.get("choices"), "query": ex["query"], "multi": multi}
        key = (ex["query"], ex["family"], multi, ex.get("choices") is not None)
        if key not in by_query:
            by_query[key] = QueryTask(ex["query"], OUTPUT_OF_FAMILY[ex["family"]], [], key[3], multi, ex["family"])
        by_query[key].examples.append(shown)
    return list(by_query.values())


def split_by_query(tasks: list[QueryTask], seed: int, eval_fraction: float, val_fraction: float,
                   n_labelled: int | None) -> dict[str, list[QueryTask]]:
    """Training / validation / evaluation tasks with disjoint query strings (shuffled with ``seed``).

    Training and validation queries keep ``n_labelled`` examples (the customer's labels);
    evaluation queries keep the rest of theirs.
    """
    queries = sorted({t.query for t in tasks})
    order = [queries[i] for i in numpy_rng(seed, "query split").permutation(len(queries))]
    n_eval = round(len(order) * eval_fraction)
    n_val = round((len(order) - n_eval) * val_fraction)
    split_of = {q: "evaluation" if i < n_eval else "validation" if i < n_eval + n_val else "training"
                for i, q in enumerate(order)}
    out: dict[str, list[QueryTask]] = {"training": [], "validation": [], "evaluation": []}
    for t in tasks:
        part = split_of[t.query]
        if n_labelled is not None:
            exs = t.examples[n_labelled:] if part == "evaluation" else t.examples[:n_labelled]
            t = QueryTask(t.query, t.output, exs, t.choices, t.multi_image, t.family)
        out[part].append(t)
    return out


def compose_tasks(pool, seed: int, n_labelled: int, n_test: int) -> list[QueryTask]:
    """One task per blind compositional request with scenes where its tree has one answer (caption
    choices have none and are left out)."""
    from compose_bench import examples_for, load

    from builder.planner import tree as T

    rng = numpy_rng(seed, "compose scenes")
    tasks = []
    for item in load("compose_blind.jsonl"):
        exs = examples_for(item, pool, rng, n_labelled + n_test)
        if len(exs) > n_labelled:
            multi = T.result_type(item["tree"]) == T.CHOICE
            exs = [{**e, "query": item["query"]} for e in exs]
            tasks.append(QueryTask(item["query"], item["output"], exs, False, multi, FAMILY_OF[item["output"]]))
    return tasks


class KindsReader:
    """The 20-kind parser, self-trained from a weak start (``start_planner``)."""

    name = "kinds"

    def start(self, seed: int, a):
        return start_planner(seed, a.patterns, a.start_examples, a.start_steps)

    def retention_set(self, seed: int, a):
        return retention_set(seed, a.retention, a.patterns)

    retention = staticmethod(lambda planner, items: retention(planner, items))
    self_train = staticmethod(self_train)


class TreesReader:
    """The shipped composing parser inside the proposing planner, self-trained (``self_train_trees``)."""

    name = "trees"

    def start(self, seed: int, a):
        from builder.planner.compose.planner import ComposingPlanner
        from builder.planner.semantic import load_semantic_planner

        return ComposingPlanner(kinds=load_semantic_planner()), {"shipped": True}

    def retention_set(self, seed: int, a):
        from builder.planner.compose.phrasings import generate as compose_generate

        return compose_generate(a.retention, derive_seed(seed, "tree retention"), "train")

    @staticmethod
    def retention(planner, items) -> float:
        from builder.planner import tree as T

        right = 0
        for e in items:
            parse = planner.parser.parse(e["request"], e["output"], k=1)
            right += bool(parse.candidates) and T.key(parse.candidates[0][0]) == T.key(e["tree"])
        return round(right / len(items), 4)

    @staticmethod
    def self_train(planner, tasks, eval_tasks, scorer, config, progress=None, val_tasks=()):
        from builder.methods.improve_trees import self_train_trees

        return self_train_trees(planner, tasks, eval_tasks, scorer, config, progress=progress, val_tasks=val_tasks)


READERS = {"kinds": KindsReader, "trees": TreesReader}


def retention_set(seed: int, n: int, patterns: int) -> list[tuple[PlanRequest, dict]]:
    """Generated phrasings of every kind from the start planner's own patterns (another seed):
    what the planner knew before adapting, to see whether an arm forgets it."""
    out = []
    for ex in generate(n, seed=derive_seed(seed, "retention"), patterns_per_kind=patterns):
        kind = ex["meaning"]["kind"]
        out.append((PlanRequest(ex["query"], None, ["a", "b"] if kind == "choose_caption" else None,
                                kind == "choose_image", output_of(kind)), ex["meaning"]))
    return out


def retention(planner: SemanticPlanner, items: list[tuple[PlanRequest, dict]]) -> float:
    """Share of ``items`` whose top reading is exactly the meaning they were generated from."""
    parses = planner.parses([req for req, _ in items], k=1)
    return round(float(np.mean([bool(p) and p[0].meaning.to_dict() == m for p, (_, m) in zip(parses, items, strict=True)])), 4)


def arm_config(arm: str, seed: int, a) -> AdaptConfig:
    """The same knobs for every arm; only what the arm removes differs."""
    replay_patterns = a.patterns if a.replay_from == "start" else None
    return AdaptConfig(rounds=a.rounds, k=a.k, steps=a.steps, seed=seed, replay=0 if arm == "no_replay" else a.replay,
                       replay_patterns=replay_patterns, explore=arm != "replay_only")


def run_seed(seed: int, a, scorer: Scorer, pool, customer: str, start: tuple, reader) -> dict:
    """Every arm for one seed and customer set: held-out query-string accuracy per arm."""
    t0 = time.perf_counter()
    planner, log = start
    if customer in ("blind", "compose"):
        tasks = (blind_tasks if customer == "blind" else compose_tasks)(pool, seed, a.labelled, a.test)
        parts = split_by_query(tasks, seed, a.eval_fraction, a.val_fraction, a.labelled)
    else:
        parts = split_by_query(world_tasks(a.world_scenes, derive_seed(seed, "world")), seed, a.eval_fraction,
                               a.val_fraction, None)
    row = {"seed": seed, "start_planner": log, "data_seconds": round(time.perf_counter() - t0, 1),
           "queries": {k: len(v) for k, v in parts.items()},
           "examples": {k: sum(len(t.examples) for t in v) for k, v in parts.items()}, "arms": {}}
    kept = reader.retention_set(seed, a)
    row["start_retention"] = reader.retention(planner, kept)
    for arm in a.arms:
        t1 = time.perf_counter()
        adapted, report = reader.self_train(planner, parts["training"], parts["evaluation"], scorer,
                                            arm_config(arm, seed, a), progress=_log(f"{customer} seed {seed} {arm}"),
                                            val_tasks=parts["validation"])
        row["start"] = report["before"]
        row["arms"][arm] = {"after": report["after"], "never_worse": report["never_worse"],
                            "retention": reader.retention(adapted, kept),
                            "validation_before": report["validation_before"]["accuracy"],
                            "rounds": [{k: v for k, v in r.items() if k not in ("audit", "eval")} | {
                                "eval": r["eval"]["accuracy"]} for r in report["rounds"]],
                            "seconds": round(time.perf_counter() - t1, 1)}
    return row


def summarise(seeds: list[dict], arms) -> dict:
    """Mean/min/max per arm over seeds, the full method's margin over replay-only, never-worse."""
    out = {"start": _stats([s["start"]["accuracy"] for s in seeds]),
           "start_retention": _stats([s["start_retention"] for s in seeds])}
    for arm in arms:
        out[arm] = _stats([s["arms"][arm]["after"]["accuracy"] for s in seeds])
        out[arm]["never_worse_all_seeds"] = all(s["arms"][arm]["never_worse"] for s in seeds)
        out[arm]["retention"] = _stats([s["arms"][arm]["retention"] for s in seeds])
    if {"full", "replay_only"} <= set(arms):
        out["full_minus_replay_only"] = _stats([s["arms"]["full"]["after"]["accuracy"]
                                                - s["arms"]["replay_only"]["after"]["accuracy"] for s in seeds])
    return out


def _log(prefix: str):
    return lambda msg, frac: print(f"[{prefix}] {msg}", file=sys.stderr, flush=True)


def _stats(values):
    return {"mean": round(statistics.mean(values), 4), "min": round(min(values), 4), "max": round(max(values), 4),
            "per_seed": [round(v, 4) for v in values]}


QUICK = {"seeds": [0], "customer": ["blind"], "rounds": 1, "steps": 60, "replay": 400, "start_examples": 1000,
         "start_steps": 150, "test": 4, "k": 6}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one seed, blind queries, small sizes (< 5 min)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--reader", choices=tuple(READERS), default="kinds", help="which parser self-trains")
    ap.add_argument("--customer", nargs="+", choices=("blind", "world", "compose"), default=["blind", "world"])
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--replay", type=int, default=1500)
    ap.add_argument("--replay-from", choices=("start", "all"), default="start")
    ap.add_argument("--patterns", type=int, default=1, help="phrasing patterns per kind for the start planner")
    ap.add_argument("--start-examples", type=int, default=3000)
    ap.add_argument("--start-steps", type=int, default=400)
    ap.add_argument("--labelled", type=int, default=4, help="labelled scenes per training/validation blind query")
    ap.add_argument("--test", type=int, default=20, help="scenes per evaluation blind query")
    ap.add_argument("--world-scenes", type=int, default=120)
    ap.add_argument("--retention", type=int, default=400, help="generated phrasings for the retention check")
    ap.add_argument("--eval-fraction", type=float, default=0.5)
    ap.add_argument("--val-fraction", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default=None, help=f"default: {RESULTS} (not written by --quick unless given)")
    a = ap.parse_args(argv)
    if a.quick:
        given = {s.split("=")[0].lstrip("-").replace("-", "_") for s in (argv or sys.argv[1:])}
        for key, value in QUICK.items():
            if key not in given:
                setattr(a, key, value)
    elif a.out is None:
        a.out = str(RESULTS if a.reader == "kinds" else RESULTS.with_name("selftrain_trees_bench.json"))
    return a


def main(argv=None) -> dict:
    a = parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    pool = scene_pool(600, 99)
    result = {"args": vars(a)}
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(tmp)
        try:
            scorer = Scorer(runner)
            rows: dict[str, list[dict]] = {c: [] for c in a.customer}
            reader = READERS[a.reader]()
            for seed in a.seeds:
                start = reader.start(seed, a)  # one per seed, every arm
                for customer in a.customer:
                    rows[customer].append(run_seed(seed, a, scorer, pool, customer, start, reader))
            for customer, seeds in rows.items():
                result[customer] = {"summary": summarise(seeds, a.arms), "seeds": seeds}
                print(json.dumps({customer: result[customer]["summary"]}), file=sys.stderr, flush=True)
        finally:
            runner.close()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
