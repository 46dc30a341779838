"""SelTDA benchmark on the shapes world: every baseline a customer would try, in the same run.

Per target domain (--domains, default the customer-camera shifts "camera" and "sketch") and seed,
with the shapes default VQA weights (trained on daylight scenes) as the start:

  * labelled target set: --n-real scene-level QA on target-domain scenes (training phrasings;
    question-answer pairs only, no object boxes), split once into train (80%) and validation;
  * unlabelled target images: --n-unlabelled other target scenes (pixels only);
  * arms, all scored on the same test sets:
      untrained       the start model;
      normalised      the start model with ``illumination_normalise`` in front (test-time);
      real_only       fine-tuned on the labelled train split (``FinetuneConfig``: cosine lr,
                      original-task replay, checkpoint chosen on the labelled validation split,
                      the start a candidate), --epochs x --epoch-steps optimizer steps;
      teacher         the learned SelTDA teacher used directly as the answerer: the real_only
                      model answering over augmented views and paraphrases (``VQATeacher``);
      seltda@r        the start fine-tuned on labelled train + the learned teacher's filtered
                      pseudo-labels (about r synthetic per real), with the same steps, epochs,
                      replay and checkpoint selection as real_only; the actual ratio is reported;
      detection@r     the same student recipe with the hand-built ``DetectionTeacher``'s labels
                      (a named baseline, never the headline);
  * test sets (other scenes): target (training phrasings), target_heldout_phrasing, clean;
    "target_unseen_query" is the part of target whose question string is not in the labelled set.
The headline ratio is chosen on the labelled validation split (not on a test set). Pseudo-label
precision is measured against the scene graphs afterwards; no teacher gets them.

    python bench/seltda_bench.py                  # full: 2 domains x 3 seeds
    python bench/seltda_bench.py --quick          # one domain, one seed, smaller everything
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
    VQATeacher,
    build_student_set,
    count_answers,
    filter_pseudo_labels,
    make_augment,
    precision,
    pseudo_label,
)
from builder.core.qa import QA, normalised
from builder.core.seeding import derive_seed, seed_everything
from builder.domains.shapes.nets import vqa as vqa_net
from builder.domains.shapes.training import vqa as vqa_train
from builder.domains.shapes.world import build_world, render_array
from builder.methods.finetune import FinetuneConfig, ShapesVQAAdapter, finetune, split_items

SPLITS = ("target", "target_heldout_phrasing", "target_unseen_query", "clean")


def scene_level(data):
    return [q for q in data if q.meta["qtype"] in vqa_train.SCENE_QTYPES]


def labelled_target(n: int, seed: int, domain: str) -> list[QA]:
    """``n`` scene-level QA on target scenes, as a customer labels them: no object boxes."""
    pool = scene_level(vqa_train.build_dataset(n // 5 + 10, derive_seed(seed, "real"), domain, "train",
                                               crops_per_scene=0))
    pick = np.random.default_rng(derive_seed(seed, "pick")).permutation(len(pool))[:n]
    return [QA(pool[i].image, pool[i].question, pool[i].answer, {"qtype": pool[i].meta["qtype"]}) for i in pick]


def build_tests(args, seed: int, domain: str, labelled_questions: set[str]) -> dict[str, list[QA]]:
    def build(tag, dom, split, n):
        return scene_level(vqa_train.build_dataset(n, derive_seed(seed, tag, domain), dom, split, crops_per_scene=0))

    tests = {"target": build("target", domain, "train", args.n_test),
             "target_heldout_phrasing": build("heldout", domain, "heldout", args.n_test),
             "clean": build("clean", "clean", "train", args.n_test // 2)}
    tests["target_unseen_query"] = [q for q in tests["target"] if q.question not in labelled_questions]
    return tests


def score_model(model, tests: dict) -> dict:
    return {k: vqa_train.evaluate(model, v)["overall"] if v else None for k, v in tests.items()}


def score_teacher(teacher: VQATeacher, tests: dict) -> dict:
    """The teacher as the answerer: its view- and paraphrase-averaged answer to each test question."""
    out = {}
    for name, items in tests.items():
        groups: dict[int, list[int]] = {}
        for i, q in enumerate(items):
            groups.setdefault(id(q.image), []).append(i)
        keys = list(groups)
        res = teacher.answer_distributions([items[groups[k][0]].image for k in keys],
                                           [[items[i].question for i in groups[k]] for k in keys])
        right = [a == items[i].answer for k, row in zip(keys, res, strict=True)
                 for i, (a, _, _) in zip(groups[k], row, strict=True)]
        out[name] = round(float(np.mean(right)), 4) if right else None
    return out


def make_trainer(args, seed: int, base_dir: Path, workdir: Path, val: list[QA]):
    """Fine-tune the start model on items; every arm with the same steps, epochs and selection."""
    cfg = FinetuneConfig(epochs=args.epochs, epoch_steps=args.epoch_steps, batch_size=args.batch_size, lr=args.lr,
                         seed=seed, patience=0, replay_fraction=args.replay_fraction)

    def train(items: list[QA], tag: str):
        t1 = time.time()
        res = finetune(ShapesVQAAdapter(base_dir), items, workdir / tag, cfg, resume=False, progress=False,
                       augment=make_augment(seed), validation=val)
        best = res.history.get("start", {}) if res.best_checkpoint.name == "start" else next(
            h for h in res.history["val"] if f"epoch-{h['epoch']:04d}" == res.best_checkpoint.name)
        info = {"best": res.best_checkpoint.name, "steps": res.history["train"][-1]["step"],
                "val_accuracy": best.get("accuracy"), "seconds": round(time.time() - t1, 1)}
        return vqa_net.ShapesVQANet.from_pretrained(res.best_checkpoint), info

    return train


def pseudo_labels(teacher, unl, scenes, args, seed: int, min_confidence: float) -> tuple[list, dict]:
    raw = pseudo_label(teacher, unl, n_per_image=args.n_per_image, top_p=0.9, seed=seed, progress=False)
    kept, report = filter_pseudo_labels(raw, vqa_net.ANSWERS, min_confidence=min_confidence)
    parsed, _ = filter_pseudo_labels(raw, None)  # every parsable label with an answer, for precision
    return kept, {"filter": report.to_dict(), "precision_parsed": precision(parsed, scenes),
                  "precision_kept": precision(kept, scenes),
                  "answer_histogram_top5": dict(list(count_answers(kept).items())[:5])}


def run_student(train, real, kept, unl, ratio: float, seed: int, tests: dict, tag: str) -> dict:
    items = build_student_set(real, kept, unl, ratio, seed)
    synth = sum(q.meta["source"] == "synthetic" for q in items)
    model, info = train(items, tag)
    return score_model(model, tests) | info | {"ratio_asked": ratio, "synthetic": synth, "real": len(real),
                                               "ratio_actual": round(synth / len(real), 3)}


def run_domain_seed(domain: str, seed: int, args, base_dir: Path, workdir: Path) -> dict:
    t0 = time.time()
    seed_everything(seed)  # before any model is built
    labelled = labelled_target(args.n_real, seed, domain)
    tr_idx, val_idx = split_items(len(labelled), 0.2, seed)
    real, val = [labelled[i] for i in tr_idx], [labelled[i] for i in val_idx]
    scenes, _ = build_world(args.n_unlabelled, derive_seed(seed, "unlabelled", domain), domain, families=("vqa",))
    unl = [render_array(s) for s in scenes]  # the scenes stay here: only precision reads them
    tests = build_tests(args, seed, domain, {q.question for q in labelled})
    base = vqa_net.ShapesVQANet.from_pretrained(base_dir)
    out: dict = {"domain": domain, "seed": seed, "n_real_train": len(real), "n_val": len(val),
                 "n_unlabelled": len(unl), "tests": {k: len(v) for k, v in tests.items()}, "arms": {}}
    arms = out["arms"]
    arms["untrained"] = score_model(base, tests)
    arms["normalised"] = score_model(base, {k: normalised(v) for k, v in tests.items()})
    log = lambda name: print(f"  {domain} seed {seed} {name}: {arms[name]} ({time.time() - t0:.0f}s)",  # noqa: E731
                             file=sys.stderr, flush=True)
    log("normalised")
    train = make_trainer(args, seed, base_dir, workdir / f"{domain}-s{seed}", val)
    real_model, info = train(real, "real-only")
    arms["real_only"] = score_model(real_model, tests) | info
    log("real_only")
    seed_everything(seed, "teacher")
    teacher = VQATeacher.create(real_model, [q.question for q in real], views=args.views)
    teacher.train(real, qgen_steps=args.qgen_steps, seed=seed, progress=False)
    arms["teacher"] = score_teacher(teacher, tests)
    log("teacher")
    kept, out["learned_teacher"] = pseudo_labels(teacher, unl, scenes, args, seed, args.min_confidence)
    out["learned_teacher"]["stats"] = dict(teacher.last_stats)
    for r in args.ratio_list:
        arms[f"seltda@{r:g}"] = run_student(train, real, kept, unl, r, seed, tests, f"seltda-{r:g}")
        log(f"seltda@{r:g}")
    det = DetectionTeacher(min_score=0.6)
    det.train(real)
    det_kept, out["detection_teacher"] = pseudo_labels(det, unl, scenes, args, seed, 0.6)
    r = max(args.ratio_list)
    arms[f"detection@{r:g}"] = run_student(train, real, det_kept, unl, r, seed, tests, f"detection-{r:g}")
    log(f"detection@{r:g}")
    out["seconds"] = round(time.time() - t0, 1)
    return out


BASELINES = ("untrained", "normalised", "real_only", "teacher")


def summarise(runs: list[dict], ratios: list[float]) -> dict:
    """Mean/std per arm and split; the headline student (ratio chosen on validation) against the
    best baseline on each split, per domain."""
    out = {}
    for domain in dict.fromkeys(r["domain"] for r in runs):
        rs = [r for r in runs if r["domain"] == domain]
        arms = list(rs[0]["arms"])
        table = {a: {s: _mean_std([r["arms"][a][s] for r in rs]) for s in SPLITS} for a in arms}
        students = [f"seltda@{x:g}" for x in ratios]
        head = max(students, key=lambda a: np.mean([r["arms"][a]["val_accuracy"] for r in rs]))
        margins = {}
        for s in SPLITS:
            best = max(BASELINES, key=lambda a: table[a][s]["mean"])
            per_seed = [r["arms"][head][s] - max(r["arms"][b][s] for b in BASELINES) for r in rs]
            margins[s] = {"best_baseline": best, "student_minus_best_baseline_points":
                          round(100 * (table[head][s]["mean"] - table[best][s]["mean"]), 2),
                          "per_seed_points_vs_best_baseline_of_that_seed": [round(100 * m, 2) for m in per_seed]}
        clean_drop = round(100 * (table["untrained"]["clean"]["mean"] - table[head]["clean"]["mean"]), 2)
        gap = table["untrained"]["clean"]["mean"] - table["untrained"]["target"]["mean"]
        recovered = (table["normalised"]["target"]["mean"] - table["untrained"]["target"]["mean"]) / gap if gap else None
        out[domain] = {"table": table, "headline_student": head, "vs_best_baseline": margins,
                       "clean_drop_points": clean_drop,
                       "normalisation_recovers_share_of_gap": None if recovered is None else round(recovered, 3),
                       "actual_ratios": {a: [r["arms"][a]["ratio_actual"] for r in rs] for a in arms if "@" in a}}
    return out


def _mean_std(vals) -> dict:
    vals = [v for v in vals if v is not None]
    return {"mean": round(float(np.mean(vals)), 4) if vals else None,
            "std": round(float(np.std(vals)), 4) if vals else None, "seeds": len(vals)}


QUICK = {"domains": "camera", "seeds": 1, "ratios": "2", "n_unlabelled": 150, "n_test": 25, "epochs": 4,
         "epoch_steps": 15, "qgen_steps": 200}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--domains", default="camera,sketch")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ratios", default="1,2,4", help="synthetic:real ratios of the SelTDA students")
    ap.add_argument("--n-real", type=int, default=150, help="labelled target QA (80%% train, 20%% validation)")
    ap.add_argument("--n-unlabelled", type=int, default=600)
    ap.add_argument("--n-per-image", type=int, default=4, help="teacher labels asked per unlabelled image")
    ap.add_argument("--n-test", type=int, default=100, help="test scenes per split (several QA each)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--epoch-steps", type=int, default=20, help="optimizer steps per epoch (every arm)")
    ap.add_argument("--qgen-steps", type=int, default=400, help="question-generator training steps")
    ap.add_argument("--views", type=int, default=4, help="image views the teacher must agree across")
    ap.add_argument("--min-confidence", type=float, default=0.8)
    ap.add_argument("--replay-fraction", type=float, default=0.25, help="original-task share of each batch")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--weights", default=str(vqa_net.DEFAULT_WEIGHTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="one domain, one seed, small sets (a few minutes); "
                    "flags given explicitly still apply")
    if "--quick" in sys.argv[1:]:
        ap.set_defaults(**QUICK)
    args = ap.parse_args()
    args.ratio_list = [float(r) for r in args.ratios.split(",")]
    if any(r <= 0 for r in args.ratio_list):
        raise SystemExit("--ratios: positive synthetic:real ratios (real_only is the ratio-0 arm)")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    runs = []
    with tempfile.TemporaryDirectory(prefix="seltda-bench-") as tmp:
        for domain in args.domains.split(","):
            for s in range(args.seeds):
                runs.append(run_domain_seed(domain, s, args, Path(args.weights), Path(tmp)))
                print(f"{domain} seed {s} done in {runs[-1]['seconds']}s", file=sys.stderr, flush=True)
    print(json.dumps({"bench": "seltda", "args": {k: v for k, v in vars(args).items() if k != "ratio_list"},
                      "summary": summarise(runs, args.ratio_list), "per_run": runs,
                      "seconds": round(time.time() - t0, 1)}, indent=1))


if __name__ == "__main__":
    main()
