"""Reinforced self-training benchmark (issue "Planner and reinforced self-training"), printing JSON.

Per seed: train the default planner on <= 200 seed programs (training phrasings only), then run
``rounds`` rounds of reinforced self-training on annotated shapes-world tasks (images, query,
expected; any phrasing; no programs shown), and evaluate after every round on held-out scenes
whose queries all use HELD-OUT phrasings. Reports held-out execution accuracy per family for the
frozen planner (round 0) and after the last round, mean and spread over seeds, next to the
published VisReP gains (+10 VQA, +4 grounding/detection, +10 ITM, points).

Usage: python bench/selftrain_bench.py [--seeds 0 1 2] [--train-scenes 60] [--eval-scenes 60]
       [--rounds 3] [--k 8] [--steps 300] [--out DIR] [--reuse-default]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from builder.methods.selftrain import FAMILIES, ProgramRunner, SelfTrainConfig, load_tasks, self_train  # noqa: E402
from builder.planner.default import load_default_planner, pairs_of, seed_shots, train_default  # noqa: E402
from builder.tools.profile import load_profile  # noqa: E402
from builder.world import generate_dataset  # noqa: E402

PUBLISHED_GAIN = {"vqa": 10.0, "grounding": 4.0, "itm": 10.0}  # VisReP, points after self-training


def _stats(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "min": round(min(values), 4), "max": round(max(values), 4)}


def run_seed(seed: int, args, root: Path) -> dict:
    t0 = time.perf_counter()
    out = root / f"seed_{seed}"
    if args.reuse_default:
        planner_dir, info = None, {"reused": "builder/planner/weights"}
    else:
        planner_dir = out / "default"
        info = train_default(planner_dir, n_pairs=200, seed=seed, progress=False)
    planner = load_default_planner(planner_dir)
    pairs = pairs_of(seed_shots(200, 0 if args.reuse_default else seed))
    train_dir = generate_dataset(out / "train_world", n=args.train_scenes, seed=1000 + seed, heldout_fraction=0.5)
    eval_dir = generate_dataset(out / "eval_world", n=args.eval_scenes, seed=2000 + seed, heldout_fraction=1.0)
    train, heldout = load_tasks(train_dir), load_tasks(eval_dir, "heldout")
    cfg = SelfTrainConfig(rounds=args.rounds, k=args.k, steps=args.steps, probes=args.probes, eval_k=args.eval_k,
                          seed=seed)
    if args.engines == "pixels":  # the tests' exact pixel reader of clean scenes (while the shapes engines land)
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from test_selftrain import pixel_engines

        runner = ProgramRunner(engines=pixel_engines(), cache_dir=out / "tool_cache", workers=2)
    else:
        profile = {k: v for k, v in load_profile(args.profile).items() if k != "ocr"}  # no text labels here
        runner = ProgramRunner(profile, cache_dir=out / "tool_cache", workers=2)
    with runner:
        result = self_train(planner, train, heldout, out / "selftrain", cfg, seed_pairs=pairs, runner=runner,
                            progress=False)
    rounds = result["rounds"]
    return {"seed": seed, "train_tasks": len(train), "heldout_tasks": len(heldout), "default_planner": info,
            "accuracy_per_round": [r["eval"]["accuracy"] for r in rounds],
            "pass_at_k_per_round": [r["eval"].get(f"pass@{args.eval_k}") for r in rounds],
            "coverage_per_round": [r["eval"].get("coverage") for r in rounds],
            "grow": [r.get("grow") for r in rounds[1:]], "kept": [r.get("kept") for r in rounds[1:]],
            "round_seconds": [r.get("seconds") for r in rounds],
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-scenes", type=int, default=60)
    ap.add_argument("--eval-scenes", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--probes", type=int, default=3)
    ap.add_argument("--eval-k", type=int, default=8)
    ap.add_argument("--profile", default="shapes")
    ap.add_argument("--engines", choices=("profile", "pixels"), default="profile",
                    help="'pixels': the tests' exact pixel reader instead of the profile's engines")
    ap.add_argument("--reuse-default", action="store_true", help="start every seed from the committed weights")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="vf-selftrain-"))
    seeds = [run_seed(s, args, root) for s in args.seeds]
    summary = {}
    for fam in (*FAMILIES, "all"):
        frozen = [s["accuracy_per_round"][0].get(fam, 0.0) for s in seeds]
        final = [s["accuracy_per_round"][-1].get(fam, 0.0) for s in seeds]
        summary[fam] = {"frozen": _stats(frozen), f"after_{args.rounds}_rounds": _stats(final),
                        "gain_points": _stats([100 * (b - a) for a, b in zip(frozen, final, strict=True)]),
                        "published_gain_points": PUBLISHED_GAIN.get(fam)}
    print(json.dumps({"bench": "selftrain", "args": vars(args), "out": str(root), "summary": summary,
                      "seconds_per_seed": [s["seconds"] for s in seeds], "seeds": seeds,
                      "note": "2 CPU cores shared with other engineers' jobs; timings include contention"}, indent=1))


if __name__ == "__main__":
    main()
