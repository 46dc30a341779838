"""Fine-tuning recipe benchmark: does fine-tuning on a few real target-domain QA ever hurt?

Per seed: --n-real real QA from the target domain (--target, scene-level and crop questions,
train phrasings) fine-tune the default shapes VQA weights with the default recipe
(``FinetuneConfig``: lr 3e-4 with cosine decay, half of every batch from the original task,
best checkpoint by validation accuracy with the starting model as a candidate, early stop).
The starting model and the chosen checkpoint are scored on held-out target QA (other scenes),
overall, scene-level and crop. With --old, the previous recipe (constant lr 5e-4, last
checkpoint, no replay) is run too, for comparison. Beside them, in the same run, the baseline a
customer tries first: the starting model with ``illumination_normalise`` in front ("normalised").

    python bench/finetune_bench.py                 # 3 seeds
    python bench/finetune_bench.py --seeds 1 --n-test 40
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from augment.seltda import illumination_normalise
from builder.core.qa import QA
from builder.core.seeding import derive_seed
from builder.domains.shapes.nets import vqa as vqa_net
from builder.domains.shapes.training import vqa as vqa_train
from builder.methods.finetune import FinetuneConfig, ShapesVQAAdapter, finetune


def scores(model, data) -> dict:
    r = vqa_train.evaluate(model, data)
    return {k: r.get(k) for k in ("overall", "scene_level", "crop")}


def normalised(items) -> list[QA]:
    """The items with test-time illumination normalisation (each distinct image once)."""
    done: dict[int, np.ndarray] = {}
    for q in items:
        if id(q.image) not in done:
            done[id(q.image)] = illumination_normalise(q.image)
    return [QA(done[id(q.image)], q.question, q.answer, q.meta) for q in items]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--target", default="dusk")
    ap.add_argument("--n-real", type=int, default=300)
    ap.add_argument("--n-test", type=int, default=150, help="held-out target scenes")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--weights", default=str(vqa_net.DEFAULT_WEIGHTS))
    ap.add_argument("--old", action="store_true", help="also run the previous recipe")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    base = vqa_net.ShapesVQANet.from_pretrained(args.weights)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ft-bench-") as tmp:
        for seed in range(args.seeds):
            pool = vqa_train.build_dataset(args.n_real // 6 + 10, derive_seed(seed, "pool"), args.target, "train")
            real = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))[:args.n_real]]
            test = vqa_train.build_dataset(args.n_test, derive_seed(seed, "test"), args.target, "train")
            row = {"seed": seed, "n_real": len(real), "n_test": len(test), "start": scores(base, test),
                   "normalised": scores(base, normalised(test))}
            recipes = {"recipe": FinetuneConfig(epochs=args.epochs, batch_size=args.batch_size, seed=seed)}
            if args.old:
                recipes["old"] = FinetuneConfig(epochs=34, batch_size=args.batch_size, lr=5e-4, seed=seed,
                                                val_fraction=0.1, schedule="constant", warmup_steps=0,
                                                replay_fraction=0.0, keep_start=False, replay_guard=1.0,
                                                patience=0)
            for name, cfg in recipes.items():
                t1 = time.time()
                res = finetune(ShapesVQAAdapter(args.weights), real, Path(tmp) / f"{name}-{seed}", cfg,
                               resume=False, progress=False)
                ckpt = res.best_checkpoint if name == "recipe" else res.last_checkpoint
                row[name] = scores(vqa_net.ShapesVQANet.from_pretrained(ckpt), test) | {
                    "checkpoint": ckpt.name, "seconds": round(time.time() - t1, 1)}
                row[name]["delta_points"] = round(100 * (row[name]["overall"] - row["start"]["overall"]), 2)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    deltas = [r["recipe"]["delta_points"] for r in rows]
    vs_norm = [round(100 * (r["recipe"]["overall"] - r["normalised"]["overall"]), 2) for r in rows]
    print(json.dumps({"bench": "finetune", "args": vars(args), "per_seed": rows,
                      "recipe_delta_points": deltas, "never_worse": all(d >= 0 for d in deltas),
                      "recipe_minus_normalised_points": vs_norm,
                      "seconds": round(time.time() - t0, 1)}, indent=1))


if __name__ == "__main__":
    main()
