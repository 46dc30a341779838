"""Planner benchmark: how often the planner's programs answer customers' questions correctly.

Two query sets, neither seen in training:
- the blind development set (``bench/data/planner_blind_dev.jsonl``): customer phrasings written
  by someone shown only the world's vocabulary and the list of question kinds, each with its
  formal meaning, from which ground truth on any scene follows (``builder.planner.truth``);
- the shapes world's held-out phrasings (``build_world(..., heldout_fraction=1.0)``).

Per query, on scenes where the question has one right answer: top-1 (the first candidate on
>= 40 test scenes) and select-by-examples (k=8 candidates, the best on 8 example scenes, scored on
the 40 test scenes; solved = accuracy >= 0.9). Programs run in the real sandbox on the real
shapes engines. The previous default planner (the causal LM in ``builder/planner/causal_weights``) runs
in the same process for comparison. Prints JSON; ``--out`` also writes it.

    python bench/planner_bench.py --out bench/results/planner_bench.json
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

from builder.core.metrics import score  # noqa: E402
from builder.domains.shapes.world import build_world  # noqa: E402
from builder.domains.shapes.world.scene import render_scene, sample_scene  # noqa: E402
from builder.domains.shapes.world.tasks import _CAPTIONS, caption_distractors, spatial_margin, true_caption  # noqa: E402
from builder.executor import Sandbox  # noqa: E402
from builder.planner.meaning import KINDS, Meaning  # noqa: E402
from builder.planner.prompt import PlanRequest, check_program  # noqa: E402
from builder.planner.truth import answer, caption_holds  # noqa: E402
from builder.run.local import ExampleInput, run_program  # noqa: E402
from builder.tools.cache import ToolCache  # noqa: E402
from builder.tools.profile import build_engines  # noqa: E402

BLIND = Path(__file__).parent / "data" / "planner_blind_dev.jsonl"
FAMILY_OF = {"text": "vqa", "bool": "vqa", "count": "vqa", "boxes": "grounding", "choice": "itm"}


def output_of(kind: str) -> str:
    """The task card output kind a customer would pick for a question kind."""
    return KINDS[kind][1][0]


class Runner:
    """Runs programs on rendered scenes in the sandbox with the shapes engines (cached by image)."""

    def __init__(self, cache_dir: str):
        self.engines = build_engines("shapes")
        self.sandbox = Sandbox(workers=2)
        self.cache = ToolCache(cache_dir)
        self.images: dict[int, object] = {}

    def image(self, scene_key: int, scene):
        if scene_key not in self.images:
            self.images[scene_key] = np.asarray(render_scene(scene).convert("RGB"))
        return self.images[scene_key]

    def outputs(self, source: str, examples: list[dict]) -> list:
        """The program's value on each example (None where it errors)."""
        values = []
        for ex in examples:
            imgs = [self.image(k, s) for k, s in ex["scenes"]]
            inp = ExampleInput([f"scene{k}" for k, _ in ex["scenes"]], ex.get("query", ""), ex.get("choices"),
                               ex.get("expected"), multi_image=ex.get("multi", False))
            res, _ = run_program(source, inp, self.engines, self.sandbox, self.cache, images=imgs)
            values.append(res.value if res.error is None else None)
        return values

    def hits(self, source: str, examples: list[dict], output: str) -> list[bool]:
        """Whether the program answers each example right."""
        return [v is not None and score(output, v, ex["expected"])
                for v, ex in zip(self.outputs(source, examples), examples, strict=True)]

    def accuracy(self, source: str, examples: list[dict], output: str) -> float:
        return float(np.mean(self.hits(source, examples, output))) if examples else 0.0

    def close(self):
        self.sandbox.close()
        self.cache.close()


# ---- scenes for a blind query -------------------------------------------------------------------
def scene_pool(n: int, seed: int):
    """(key, scene) pairs: half with text labels (for reading questions)."""
    return [(i, sample_scene(np.random.default_rng([seed, i]), "clean", None, (3, 7), i % 2 == 0)) for i in range(n)]


def examples_for(item: dict, pool, rng, n: int) -> list[dict]:
    """Up to ``n`` examples (scenes + expected answer) where the item's question is well posed."""
    m = Meaning.from_dict(item["meaning"])
    out = []
    order = rng.permutation(len(pool))
    if m.kind == "choose_caption":
        for i in order:
            key, scene = pool[i]
            cap = true_caption(scene, rng, ["exists", "count", "relation"][len(out) % 3])
            if cap is None:
                continue
            false = [d for d in caption_distractors(cap) if d.holds(scene.objects, spatial_margin(scene)) is False]
            if len(false) < 3:
                continue
            opts = [cap] + [false[j] for j in rng.choice(len(false), 3, replace=False)]
            perm = rng.permutation(4)
            texts = [_caption_text(opts[j]) for j in perm]
            out.append({"scenes": [(key, scene)], "choices": texts, "expected": int(np.flatnonzero(perm == 0)[0])})
            if len(out) == n:
                break
        return out
    if m.kind == "choose_image":
        truth = {key: caption_holds(m.caption, scene) for key, scene in pool}
        yes = [p for p in pool if truth[p[0]] is True]
        no = [p for p in pool if truth[p[0]] is False]
        for _ in range(n if yes and len(no) >= 3 else 0):
            target = yes[int(rng.integers(len(yes)))]
            others = [no[j] for j in rng.choice(len(no), 3, replace=False)]
            scenes = others + [target]
            perm = [int(j) for j in rng.permutation(4)]
            out.append({"scenes": [scenes[j] for j in perm], "expected": perm.index(3), "multi": True})
        return out
    for i in order:
        key, scene = pool[i]
        value = answer(m, scene)
        if value is not None:
            out.append({"scenes": [(key, scene)], "expected": value})
            if len(out) == n:
                break
    return out


def _caption_text(cap) -> str:
    """The caption in the world's first training pattern for its kind."""
    return _CAPTIONS[cap.kind][0][0].format(**cap.fill())


# ---- evaluation ---------------------------------------------------------------------------------
def evaluate(planner, requests: list[PlanRequest], items: list[dict], example_sets, runner: Runner, k: int,
             n_examples: int, label: str) -> dict:
    """Top-1 and select-by-examples per query; grouped by question kind."""
    t0 = time.perf_counter()
    per_kind: dict[str, list[dict]] = defaultdict(list)
    times = []
    for req, item, exs in zip(requests, items, example_sets, strict=True):
        t = time.perf_counter()
        cands = planner.propose([req], k=k, temperature=1.0)[0]
        times.append(time.perf_counter() - t)
        cands = [c for c in dict.fromkeys(cands) if check_program(c, request=req) is None]
        shown, test = exs[:n_examples], exs[n_examples:]
        out = req.output
        if not cands or not test:
            per_kind[item["kind"]].append({"top1": 0.0, "select": 0.0, "valid": len(cands)})
            continue
        top1 = runner.accuracy(cands[0], test, out)
        shown_acc = [runner.accuracy(c, shown, out) for c in cands]
        best = cands[int(np.argmax(shown_acc))]
        select = top1 if best == cands[0] else runner.accuracy(best, test, out)
        per_kind[item["kind"]].append({"top1": top1, "select": select, "valid": len(cands)})
    rows = [r for rs in per_kind.values() for r in rs]
    summary = {
        "planner": label, "queries": len(rows),
        "top1_solved": round(float(np.mean([r["top1"] >= 0.9 for r in rows])), 3),
        "select_solved": round(float(np.mean([r["select"] >= 0.9 for r in rows])), 3),
        "top1_accuracy": round(float(np.mean([r["top1"] for r in rows])), 3),
        "valid_candidates_mean": round(float(np.mean([r["valid"] for r in rows])), 2),
        "propose_seconds_median": round(statistics.median(times), 4),
        "propose_seconds_p95": round(float(np.percentile(times, 95)), 4),
        "seconds": round(time.perf_counter() - t0, 1),
        "per_kind": {kind: {"n": len(rs), "top1_solved": round(float(np.mean([r["top1"] >= 0.9 for r in rs])), 3),
                            "select_solved": round(float(np.mean([r["select"] >= 0.9 for r in rs])), 3)}
                     for kind, rs in sorted(per_kind.items())},
    }
    return summary


def blind_set(pool, seed: int, n_examples: int, n_test: int, limit: int | None):
    items = [json.loads(line) for line in BLIND.read_text().splitlines() if line.strip()][:limit]
    rng = np.random.default_rng(seed)
    requests, metas, sets = [], [], []
    for it in items:
        kind = it["meaning"]["kind"]
        exs = examples_for(it, pool, rng, n_examples + n_test)
        out = output_of(kind)
        first = exs[0] if exs else {}
        requests.append(PlanRequest(it["query"], FAMILY_OF[out], first.get("choices"), kind == "choose_image", out))
        metas.append({"kind": kind, "id": it["id"]})
        sets.append([{**e, "query": it["query"]} for e in exs])
    return requests, metas, sets


def world_heldout(n_scenes: int, seed: int):
    """One request per world example phrased with a held-out template, scored on its own scene (top-1)."""
    scenes, examples = build_world(n_scenes, seed=seed, heldout_fraction=1.0, text_labels=True)
    requests, metas, sets = [], [], []
    for ex in examples:
        out = {"vqa": "text", "grounding": "boxes", "itm": "choice"}[ex["family"]]
        multi = ex["qtype"].startswith("image_")
        requests.append(PlanRequest(ex["query"], ex["family"], ex.get("choices"), multi, out))
        metas.append({"kind": f"{ex['family']}.{ex['qtype']}", "id": ex["id"]})
        sets.append([{"scenes": [(10_000 + i, scenes[i]) for i in ex["scene_ids"]], "expected": ex["expected"],
                      "choices": ex.get("choices"), "query": ex["query"], "multi": multi}])
    return requests, metas, sets


class _FamilyRequests:
    """Adapter: the previous planner reads task families, not output kinds."""

    def __init__(self, planner):
        self.planner = planner

    def propose(self, requests, k, temperature):
        return self.planner.propose([PlanRequest(r.query, r.family, r.choices, r.multi_image) for r in requests],
                                    k=k, temperature=temperature)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--examples", type=int, default=8)
    ap.add_argument("--test", type=int, default=40)
    ap.add_argument("--pool", type=int, default=1500)
    ap.add_argument("--world-scenes", type=int, default=150)
    ap.add_argument("--limit", type=int, default=None, help="only the first N blind queries")
    ap.add_argument("--no-previous", action="store_true", help="skip the previous default planner")
    ap.add_argument("--composing", action="store_true", help="also the default planner (composing + 20 kinds)")
    ap.add_argument("--weights", default=None, help="semantic planner weights (default: the committed ones)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    from builder.planner.causal import load_causal_planner
    from builder.planner.compose.planner import ComposingPlanner
    from builder.planner.semantic import load_semantic_planner

    planners = {"semantic (20 kinds)": load_semantic_planner(a.weights)}
    if a.composing:
        planners["default (composing + 20 kinds)"] = ComposingPlanner(kinds=planners["semantic (20 kinds)"])
    if not a.no_previous:
        planners["previous causal LM"] = _FamilyRequests(load_causal_planner())
    pool = scene_pool(a.pool, a.seed)
    blind = blind_set(pool, a.seed, a.examples, a.test, a.limit)
    world = world_heldout(a.world_scenes, 4242 + a.seed)
    result = {"k": a.k, "example_scenes": a.examples, "test_scenes": a.test, "blind": {}, "world_heldout": {}}
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(tmp)
        try:
            for label, planner in planners.items():
                result["blind"][label] = evaluate(planner, *blind, runner, a.k, a.examples, label)
                print(json.dumps({"blind": label, **{k: v for k, v in result["blind"][label].items()
                                                     if k != "per_kind"}}), file=sys.stderr)
                result["world_heldout"][label] = evaluate(planner, *world, runner, 1, 0, label)
        finally:
            runner.close()
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
