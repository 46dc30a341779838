"""Parameter tuning on a shapes task whose program has a badly chosen threshold.

Task: "How many large objects are there?" on clean and shifted scenes (expected counts from
ground truth, for scoring only). The engineer's program filters detections by box area with a
threshold (1500 px^2) above the area of most large objects; ``builder.methods.tune`` lifts it and tunes
it with Optuna TPE on 70% of the examples, and reports untuned vs tuned on the other 30%.

    python bench/tune_bench.py [--n-scenes 80] [--trials 30]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from builder.domains.shapes.world import build_world, render_scene
from builder.methods.tune import tune_program
from builder.run import ExampleInput
from builder.tools.backends.shapes import ShapesDetector
from builder.tools.host import Engines

PROGRAM = '''def execute(image):
    # large objects: boxes bigger than this many square pixels
    objs = image.find("object")
    return len([p for p in objs if p.area > 1500])
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-scenes", type=int, default=80)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
        examples = []
        for domain in ("clean", "shifted"):
            scenes, _ = build_world(args.n_scenes // 2, 700 + args.seed, domain, families=("vqa",))
            for i, s in enumerate(scenes):
                path = Path(tmp) / f"{domain}-{i}.png"
                render_scene(s).save(path)
                examples.append(ExampleInput([str(path)], "How many large objects are there?",
                                             expected=sum(o.size == "large" for o in s.objects), id=f"{domain}-{i}"))
        res = tune_program(PROGRAM, examples, "count", engines=Engines(detector=ShapesDetector()),
                           n_trials=args.trials, heldout_fraction=0.3, seed=args.seed, progress=False)
    print(json.dumps({"bench": "tune", "args": vars(args), "n_examples": len(examples), "original": res.original,
                      "tuned_params": res.params, "untuned": res.untuned, "tuned": res.tuned,
                      "n_tune": res.n_tune, "n_heldout": res.n_heldout, "tuned_source": res.source,
                      "seconds": round(time.time() - t0, 1)}, indent=1))


if __name__ == "__main__":
    main()
