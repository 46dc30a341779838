"""Accuracy of the offline ``shapes`` engines on generated scenes, clean and under each domain preset.

Prints one JSON object: per domain, the detector's per-object recall/precision (IoU >= 0.5 and
correct shape, colour and size), VQA answer accuracy by question type for training and held-out
phrasings, matcher caption-choice accuracy and whether captions mention every object.
Ground truth is used here only to score the engines.

    python bench/engines_accuracy.py                 # 500 scenes per domain (a few minutes)
    python bench/engines_accuracy.py --scenes 100 --domains clean noisy
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time

import numpy as np
import torch

from builder.domains.shapes.training.vqa import build_dataset, evaluate
from builder.domains.shapes.world.scene import render_array, sample_scene
from builder.domains.shapes.world.tasks import make_example
from builder.tools.backends.shapes import ShapesCaptioner, ShapesDetector, ShapesMatcher, ShapesVQA

DOMAINS = ("clean", "textured", "noisy", "blur", "palette", "small", "clutter", "shifted", "dusk")
SEED = 20_261_124  # far from the training seeds (0 and 10_000)


def iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    iw, ih = max(0, min(a[2], b[2]) - max(a[0], b[0])), max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def match_objects(found, truth) -> tuple[int, int]:
    """Greedy one-to-one matching by IoU; returns (boxes matched at IoU >= 0.5, of which with
    correct shape, colour and size)."""
    pairs = sorted(((iou(f.box, t.box), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)), reverse=True)
    used_f, used_t, boxes, correct = set(), set(), 0, 0
    for v, i, j in pairs:
        if v < 0.5 or i in used_f or j in used_t:
            continue
        used_f.add(i)
        used_t.add(j)
        boxes += 1
        f, t = found[i], truth[j]
        correct += (f.shape, f.color, f.size) == (t.shape, t.color, t.size)
    return boxes, correct


def scenes_for(domain: str, n: int) -> list:
    return [sample_scene(np.random.default_rng([SEED, i]), domain) for i in range(n)]


def bench_detector_captioner(scenes, detector, captioner) -> dict:
    n_true = n_found = n_box = n_ok = exact = mentioned = 0
    errors = collections.Counter()
    for scene in scenes:
        img = render_array(scene)
        found = detector.objects(img)
        boxes, ok = match_objects(found, scene.objects)
        n_true, n_found, n_box, n_ok = n_true + len(scene.objects), n_found + len(found), n_box + boxes, n_ok + ok
        exact += ok == len(scene.objects) == len(found)
        if boxes > ok:
            errors["attribute"] += boxes - ok
        errors["missed"] += len(scene.objects) - boxes
        errors["spurious"] += len(found) - boxes
        cap = captioner.caption(img)
        want = collections.Counter(f"{o.size} {o.color} {o.shape}" for o in scene.objects)
        mentioned += all(cap.count(name) >= k for name, k in want.items())
    return {
        "detector": {"recall": round(n_ok / n_true, 4), "precision": round(n_ok / max(1, n_found), 4),
                     "box_recall": round(n_box / n_true, 4), "scenes_exact": round(exact / len(scenes), 4),
                     "errors": dict(errors)},
        "captioner": {"mentions_all_objects": round(mentioned / len(scenes), 4)},
    }


def bench_matcher(scenes, matcher) -> dict:
    right = collections.Counter()
    total = collections.Counter()
    kinds = ("exists", "relation", "count")
    for i, scene in enumerate(scenes):
        rng = np.random.default_rng([SEED, i, 3])
        for k in range(3):  # the scene may not support every kind; try the next
            kind = kinds[(i + k) % 3]
            ex = make_example(scene, rng, "itm", f"text_{kind}", heldout_fraction=0.5)
            if ex:
                break
        else:
            continue
        img = render_array(scene)
        pick = int(np.argmax(matcher.scores(img, ex["choices"])))
        right[kind] += pick == ex["expected"]
        total[kind] += 1
    out = {k: round(right[k] / total[k], 4) for k in kinds if total[k]}
    out["overall"] = round(sum(right.values()) / max(1, sum(total.values())), 4)
    out["n"] = sum(total.values())
    return out


def bench_vqa(domain: str, n: int, vqa) -> dict:
    out = {}
    for split in ("train", "heldout"):
        data = build_dataset(n, SEED + 1, domain, split)
        out[f"{split}_phrasings"] = evaluate(vqa.model, data)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=500)
    p.add_argument("--domains", nargs="+", default=list(DOMAINS))
    p.add_argument("--weights", default=None, help="VQA weights folder (default: bundled)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    detector = ShapesDetector()
    captioner, matcher = ShapesCaptioner(detector), ShapesMatcher(detector)
    vqa = ShapesVQA(a.weights)
    report = {"scenes_per_domain": a.scenes, "vqa_weights": vqa.version, "domains": {}}
    for domain in a.domains:
        t0 = time.time()
        scenes = scenes_for(domain, a.scenes)
        row = bench_detector_captioner(scenes, detector, captioner)
        row["matcher"] = bench_matcher(scenes, matcher)
        row["vqa"] = bench_vqa(domain, a.scenes, vqa)
        row["seconds"] = round(time.time() - t0, 1)
        report["domains"][domain] = row
        print(f"{domain}: done in {row['seconds']}s", file=sys.stderr)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
