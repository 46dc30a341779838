"""SelTDA benchmark on the shapes world: does pseudo-labelling shifted-domain images help?

Setup per seed:
  * base VQA: the shapes default weights (trained on clean scenes); if they are missing, a base
    is trained here on clean scenes for --base-steps (reported in the JSON);
  * labelled set: --n-real scene-level QA from the clean source domain (train phrasings);
  * real-only baseline (= ratio 0): the base fine-tuned on the labelled set;
  * teacher: question generator trained on the labelled set + the baseline as answerer;
  * unlabelled: --n-unlabelled images from the "shifted" domain, 2 nucleus-sampled
    (top_p 0.9) pseudo-labels each, structurally filtered;
  * students: the base fine-tuned on real + synthetic at each synthetic:real ratio, the same
    number of optimizer steps as the baseline, augmentation without flips.
Reports accuracy on a shifted test set (train phrasings), on shifted held-out phrasings and on
a clean test set, pseudo-label precision against ground truth, and filtering counts.

    python bench/seltda_bench.py            # full (about 12 min on one core)
    python bench/seltda_bench.py --quick    # minutes, smaller everything
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

from augment.seltda import (
    ShapesTeacher,
    build_student_set,
    count_answers,
    filter_pseudo_labels,
    make_augment,
    precision,
    pseudo_label,
)
from builder.methods.finetune import FinetuneConfig, ShapesVQAAdapter, finetune
from builder.tools.backends import shapes_vqa as sv
from builder.world import build_world, render_array


def scene_level(data):
    return [q for q in data if not q.qtype.startswith("crop")]


def acc(model, data) -> dict:
    r = sv.evaluate(model, data)
    return {"overall": r["overall"], "n": r["n"], "by_qtype": r["by_qtype"]}


def get_base(args, workdir: Path) -> tuple[Path, dict]:
    if (sv.DEFAULT_WEIGHTS / "model.safetensors").is_file():
        return sv.DEFAULT_WEIGHTS, {"base": "default weights", "path": str(sv.DEFAULT_WEIGHTS)}
    cache = Path(args.base_cache)
    if (cache / "model.safetensors").is_file():
        return cache, json.loads((cache / "config.json").read_text()).get("training", {}) | {"base": "cached"}
    t0 = time.time()
    data = sv.build_dataset(args.base_scenes, 1234, "clean", "train")
    model = sv.ShapesVQANet(sv.build_vocab(q[1] for q in data))
    sv.train(model, data, steps=args.base_steps, batch_size=32, lr=2e-3, seed=0, log_every=500,
             log=lambda m: print("  base", m, file=sys.stderr, flush=True))
    info = {"base": "trained in bench (no default weights)", "steps": args.base_steps, "scenes": args.base_scenes,
            "seconds": round(time.time() - t0, 1)}
    sv.save_model(model, cache, info)
    return cache, info


def run_seed(seed: int, ratios, args, base_dir: Path, workdir: Path) -> dict:
    t0 = time.time()
    real_pool = scene_level(sv.build_dataset(args.n_real, 100 + seed, "clean", "train", crops_per_scene=0))
    rng = np.random.default_rng(seed)
    real = [real_pool[i] for i in rng.permutation(len(real_pool))[:args.n_real]]
    scenes, _ = build_world(args.n_unlabelled, 200 + seed, "shifted", families=("vqa",))
    unl = [render_array(s) for s in scenes]
    tests = {
        "shifted": scene_level(sv.build_dataset(args.n_test, 300 + seed, "shifted", "train", crops_per_scene=0)),
        "shifted_heldout_phrasing": scene_level(sv.build_dataset(args.n_test, 400 + seed, "shifted", "heldout",
                                                                 crops_per_scene=0)),
        "clean": scene_level(sv.build_dataset(args.n_test // 2, 500 + seed, "clean", "train", crops_per_scene=0)),
    }
    base = sv.load_model(base_dir)
    out: dict = {"seed": seed, "n_real": len(real), "n_unlabelled": len(unl),
                 "tests": {k: len(v) for k, v in tests.items()},
                 "base": {k: acc(base, v)["overall"] for k, v in tests.items()}}

    def train_student(items, tag):
        epochs = max(1, round(args.steps * args.batch_size / (len(items) * 0.95)))
        cfg = FinetuneConfig(epochs=epochs, batch_size=args.batch_size, lr=args.lr, val_fraction=0.05, seed=seed)
        res = finetune(ShapesVQAAdapter(base_dir), items, workdir / f"s{seed}-{tag}", cfg, resume=False,
                       progress=False, augment=make_augment(seed))
        return sv.load_model(res.last_checkpoint), res

    # real-only baseline (ratio 0) and the teacher
    baseline, res0 = train_student(build_student_set(real, [], unl, 0, seed), "r0")
    out["curve"] = {"0": {k: acc(baseline, v)["overall"] for k, v in tests.items()}}
    out["baseline_by_qtype_shifted"] = acc(baseline, tests["shifted"])["by_qtype"]
    teacher = ShapesTeacher.create(baseline, [q.question for q in real])
    th = teacher.train(real, qgen_steps=args.qgen_steps, seed=seed, progress=False)
    raw = pseudo_label(teacher, unl, n_per_image=2, top_p=0.9, seed=seed, progress=False)
    kept, report = filter_pseudo_labels(raw, sv.ANSWERS)
    out["teacher"] = {"qgen_final_loss": float(np.mean(th["qgen_loss"][-20:])), "filter": report.to_dict(),
                      "precision_kept": precision(kept, scenes),
                      "answer_histogram_top5": dict(list(count_answers(kept).items())[:5])}
    for r in ratios:
        if r == 0:
            continue
        student, _ = train_student(build_student_set(real, kept, unl, r, seed), f"r{r:g}")
        out["curve"][f"{r:g}"] = {k: acc(student, v)["overall"] for k, v in tests.items()}
        print(f"  seed {seed} ratio {r:g}: {out['curve'][f'{r:g}']}", file=sys.stderr, flush=True)
    out["seconds"] = round(time.time() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ratios", default="0,0.5,1,2,4")
    ap.add_argument("--extra-seed-ratios", default="0,1", help="ratios for seeds after the first")
    ap.add_argument("--n-real", type=int, default=300)
    ap.add_argument("--n-unlabelled", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=150, help="test scenes per split (several QA each)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--qgen-steps", type=int, default=400)
    ap.add_argument("--base-steps", type=int, default=1500)
    ap.add_argument("--base-scenes", type=int, default=1500)
    ap.add_argument("--base-cache", default="/tmp/visforge-seltda-base")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.n_unlabelled, args.n_test, args.steps, args.qgen_steps = 1, 600, 60, 80, 150
        args.base_steps, args.base_scenes = 300, 300
    torch.set_num_threads(args.threads)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="seltda-bench-") as tmp:
        base_dir, base_info = get_base(args, Path(tmp))
        ratios = [float(r) for r in args.ratios.split(",")]
        extra = [float(r) for r in args.extra_seed_ratios.split(",")]
        seeds = []
        for s in range(args.seeds):
            seeds.append(run_seed(s, ratios if s == 0 else extra, args, base_dir, Path(tmp)))
            print(f"seed {s} done in {seeds[-1]['seconds']}s", file=sys.stderr, flush=True)
    summary = {}
    for r in sorted({k for s in seeds for k in s["curve"]}, key=float):
        for split in ("shifted", "shifted_heldout_phrasing", "clean"):
            vals = [s["curve"][r][split] for s in seeds if r in s["curve"]]
            summary.setdefault(split, {})[r] = {"mean": round(float(np.mean(vals)), 4),
                                                "std": round(float(np.std(vals)), 4), "seeds": len(vals)}
    gains = {}
    for split in ("shifted", "shifted_heldout_phrasing", "clean"):
        best_r = max((r for r in summary[split] if r != "0"), key=lambda r: summary[split][r]["mean"], default=None)
        if best_r is not None:
            gains[split] = {"best_ratio": best_r, "gain_points": round(100 * (summary[split][best_r]["mean"]
                                                                            - summary[split]["0"]["mean"]), 2)}
        if "1" in summary[split]:
            gains.setdefault(split, {})["ratio1_gain_points"] = round(
                100 * (summary[split]["1"]["mean"] - summary[split]["0"]["mean"]), 2)
    print(json.dumps({"bench": "seltda", "args": vars(args), "base": base_info, "summary": summary,
                      "gain_vs_real_only": gains, "per_seed": seeds, "seconds": round(time.time() - t0, 1)},
                     indent=1))


if __name__ == "__main__":
    main()
