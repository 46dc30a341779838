"""SelTDA benchmark on the shapes world: do pseudo-labelled target-domain images help?

Setup per seed:
  * base VQA: the shapes default weights (trained on daylight scenes, ``mix`` domains);
  * labelled set: --n-real scene-level QA from the clean source domain (train phrasings);
  * real-only baseline (= ratio 0): the base fine-tuned on the labelled set with the default
    fine-tuning recipe (``FinetuneConfig``: small lr with cosine decay, original-task replay,
    best checkpoint by validation, early stop);
  * teacher: ``DetectionTeacher`` (questions and answers from what the shapes detector sees
    after illumination normalisation; question-type mix learnt from the labelled set);
  * unlabelled: --n-unlabelled images of the target domain (--target, default "dusk"), 2
    labels each, filtered for answerability and confidence (two detector views must agree,
    every detection score >= --min-confidence) and structurally;
  * students: the base fine-tuned on real + synthetic at each synthetic:real ratio (same recipe,
    the same number of optimizer steps as the baseline), augmentation without flips.
Reports accuracy on target test sets (train and held-out phrasings) and a clean test set,
pseudo-label precision against the scene graphs (ground truth used only to measure), filter
counts, the ratio curve and the gain over real-only.

    python bench/seltda_bench.py            # full: 3 seeds x 3 ratios (about 11 min on one core)
    python bench/seltda_bench.py --quick    # a few minutes, smaller everything
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
    DetectionTeacher,
    build_student_set,
    count_answers,
    filter_pseudo_labels,
    make_augment,
    precision,
    pseudo_label,
)
from builder.core.seeding import derive_seed
from builder.domains.shapes.nets import vqa as vqa_net
from builder.domains.shapes.training import vqa as vqa_train
from builder.domains.shapes.world import build_world, render_array
from builder.methods.finetune import FinetuneConfig, ShapesVQAAdapter, finetune


def scene_level(data):
    return [q for q in data if q.meta["qtype"] in vqa_train.SCENE_QTYPES]


def acc(model, data) -> float:
    return vqa_train.evaluate(model, data)["overall"]


def run_seed(seed: int, ratios, args, base_dir: Path, workdir: Path) -> dict:
    t0 = time.time()
    real_pool = scene_level(vqa_train.build_dataset(args.n_real, derive_seed(seed, "real"), "clean", "train", crops_per_scene=0))
    rng = np.random.default_rng(seed)
    real = [real_pool[i] for i in rng.permutation(len(real_pool))[:args.n_real]]
    scenes, _ = build_world(args.n_unlabelled, derive_seed(seed, "unlabelled"), args.target, families=("vqa",))
    unl = [render_array(s) for s in scenes]  # the scenes are kept only to measure precision
    tests = {
        "target": scene_level(vqa_train.build_dataset(args.n_test, derive_seed(seed, "target"), args.target, "train", crops_per_scene=0)),
        "target_heldout_phrasing": scene_level(vqa_train.build_dataset(args.n_test, derive_seed(seed, "target heldout"), args.target, "heldout",
                                                                crops_per_scene=0)),
        "clean": scene_level(vqa_train.build_dataset(args.n_test // 2, derive_seed(seed, "clean"), "clean", "train", crops_per_scene=0)),
        # scene-level and object-crop questions (what programs ask after find()) together
        "target_with_crops": vqa_train.build_dataset(args.n_test // 2, derive_seed(seed, "crops"), args.target, "train"),
    }
    base = vqa_net.ShapesVQANet.from_pretrained(base_dir)
    out: dict = {"seed": seed, "n_real": len(real), "n_unlabelled": len(unl),
                 "tests": {k: len(v) for k, v in tests.items()},
                 "base": {k: acc(base, v) for k, v in tests.items()}}

    def train_student(items, tag):
        per_batch = args.batch_size - round(args.batch_size * args.replay_fraction)
        epochs = max(1, round(args.steps * per_batch / (len(items) * 0.8)))
        cfg = FinetuneConfig(epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=seed,
                             patience=args.patience, replay_fraction=args.replay_fraction)
        res = finetune(ShapesVQAAdapter(base_dir), items, workdir / f"s{seed}-{tag}", cfg, resume=False,
                       progress=False, augment=make_augment(seed))
        best = res.best_checkpoint.name
        return vqa_net.ShapesVQANet.from_pretrained(res.best_checkpoint), {
            "best": best, "epochs": epochs, "steps": res.history["train"][-1]["step"]}

    t1 = time.time()
    baseline, info = train_student(build_student_set(real, [], unl, 0, seed), "r0")
    out["curve"] = {"0": {k: acc(baseline, v) for k, v in tests.items()} | info}
    print(f"  seed {seed} ratio 0: {out['curve']['0']} ({time.time() - t1:.0f}s)", file=sys.stderr, flush=True)
    t1 = time.time()
    teacher = DetectionTeacher(min_score=args.min_confidence)
    th = teacher.train(real)
    raw = pseudo_label(teacher, unl, n_per_image=2, top_p=0.9, seed=seed, progress=False)
    kept, report = filter_pseudo_labels(raw, vqa_net.ANSWERS, min_confidence=args.min_confidence)
    out["teacher"] = {"qtype_prior": th["qtype_prior"], "filter": report.to_dict(),
                      "precision_raw": precision(raw, scenes), "precision_kept": precision(kept, scenes),
                      "answer_histogram_top5": dict(list(count_answers(kept).items())[:5]),
                      "seconds": round(time.time() - t1, 1)}
    print(f"  seed {seed} teacher: {out['teacher']['precision_kept']} kept {report.kept}/{report.total}",
          file=sys.stderr, flush=True)
    for r in ratios:
        if r == 0:
            continue
        t1 = time.time()
        student, info = train_student(build_student_set(real, kept, unl, r, seed), f"r{r:g}")
        out["curve"][f"{r:g}"] = {k: acc(student, v) for k, v in tests.items()} | info
        print(f"  seed {seed} ratio {r:g}: {out['curve'][f'{r:g}']} ({time.time() - t1:.0f}s)", file=sys.stderr,
              flush=True)
    out["seconds"] = round(time.time() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ratios", default="0,2,4")
    ap.add_argument("--target", default="dusk", help="target domain preset (unlabelled images only)")
    ap.add_argument("--n-real", type=int, default=300)
    ap.add_argument("--n-unlabelled", type=int, default=600)
    ap.add_argument("--n-test", type=int, default=100, help="test scenes per split (several QA each)")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--replay-fraction", type=float, default=0.25, help="original-task share of each batch")
    ap.add_argument("--patience", type=int, default=0,
                    help="early stop (0: train every epoch; the best epoch, or the start, is still kept)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--min-confidence", type=float, default=0.6)
    ap.add_argument("--weights", default=str(vqa_net.DEFAULT_WEIGHTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.n_unlabelled, args.n_test, args.steps, args.ratios = 1, 200, 40, 40, "0,2"
    torch.set_num_threads(args.threads)
    t0 = time.time()
    ratios = [float(r) for r in args.ratios.split(",")]
    with tempfile.TemporaryDirectory(prefix="seltda-bench-") as tmp:
        seeds = []
        for s in range(args.seeds):
            seeds.append(run_seed(s, ratios, args, Path(args.weights), Path(tmp)))
            print(f"seed {s} done in {seeds[-1]['seconds']}s", file=sys.stderr, flush=True)
    summary = {}
    for r in sorted({k for s in seeds for k in s["curve"]}, key=float):
        for split in ("target", "target_heldout_phrasing", "clean", "target_with_crops"):
            vals = [s["curve"][r][split] for s in seeds if r in s["curve"]]
            summary.setdefault(split, {})[r] = {"mean": round(float(np.mean(vals)), 4),
                                                "std": round(float(np.std(vals)), 4), "seeds": len(vals)}
    for split in ("target", "target_heldout_phrasing", "clean", "target_with_crops"):
        vals = [s["base"][split] for s in seeds]
        summary[split]["base"] = {"mean": round(float(np.mean(vals)), 4), "seeds": len(vals)}
    gains = {}
    for split in ("target", "target_heldout_phrasing", "clean", "target_with_crops"):
        best_r = max((r for r in summary[split] if r not in ("0", "base")), key=lambda r: summary[split][r]["mean"],
                     default=None)
        if best_r is not None:
            gains[split] = {"best_ratio": best_r, "gain_points": round(100 * (summary[split][best_r]["mean"]
                                                                            - summary[split]["0"]["mean"]), 2)}
    prec = [s["teacher"]["precision_kept"]["precision"] for s in seeds]
    print(json.dumps({"bench": "seltda", "args": vars(args), "summary": summary, "gain_vs_real_only": gains,
                      "pseudo_label_precision_kept_mean": round(float(np.mean(prec)), 4),
                      "per_seed": seeds, "seconds": round(time.time() - t0, 1)}, indent=1))


if __name__ == "__main__":
    main()
