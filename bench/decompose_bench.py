"""Selective question decomposition on the shapes world: never / always / selective over tau.

The VQA engine is the shapes default model (or, when its weights are missing, the base the
SelTDA benchmark trains and caches); sub-questions use the shapes detector and the same VQA
engine on crops (``builder.methods.decompose.WorldDecomposer``). Items are scene-level VQA questions
on clean and shifted scenes. Flips are counted against never decomposing.

    python bench/decompose_bench.py [--n-scenes 150] [--domains clean,shifted]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from builder.domains.shapes.nets import vqa as vqa_net
from builder.domains.shapes.world import build_world, render_array
from builder.methods.decompose import WorldDecomposer, sweep
from builder.tools.backends.shapes import ShapesDetector, ShapesVQA


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-scenes", type=int, default=150)
    ap.add_argument("--domains", default="clean,shifted")
    ap.add_argument("--taus", default="0.3,0.5,0.6,0.7,0.8,0.9,0.95")
    ap.add_argument("--weights", default=None, help="VQA weights folder (default: bundled, else the SelTDA base)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    weights = args.weights
    if weights is None:
        weights = vqa_net.DEFAULT_WEIGHTS if (vqa_net.DEFAULT_WEIGHTS / "model.safetensors").is_file() else \
            Path("/tmp/visforge-seltda-base")
    vqa = ShapesVQA(weights=weights)
    dec = WorldDecomposer(ShapesDetector(), vqa)
    taus = [float(t) for t in args.taus.split(",")]
    out = {"bench": "decompose", "weights": str(weights), "args": vars(args), "domains": {}}
    for domain in args.domains.split(","):
        scenes, exs = build_world(args.n_scenes, 900 + args.seed, domain, families=("vqa",), heldout_fraction=0.25)
        items = [(render_array(scenes[e["scene_ids"][0]]), e["query"], e["expected"]) for e in exs
                 if e["qtype"] != "read" and e["expected"] in vqa_net.ANSWERS]
        rep = sweep(vqa, dec, items, taus, progress=False)
        best = max(rep["selective"].items(), key=lambda kv: kv[1]["accuracy"])
        rep["best_tau"] = {"tau": best[0], **best[1]}
        out["domains"][domain] = rep
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
