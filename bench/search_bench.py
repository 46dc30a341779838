"""Image-text search benchmark: embedding-only, hybrid (embedding shortlist + matcher) and
brute-force matcher scoring, on shapes-world scenes with held-out caption phrasings.

Each of ``--n`` fresh scenes (seeds never used in training) gets a *distinctive* caption: true
clauses (exists / relation / count) added until the caption holds for its scene and is
definitely false for every other scene, rendered in the world's held-out phrasings only. So
text->image and image->text each have exactly one right answer. Scenes for which no such
caption exists are left out (counted).

Reports Recall@1/5/10 both ways for the three methods, query latency, the index build time
per 1,000 images (files on disk through ``build_index``) and the query latency of a 10,000-image
index (embedding only). Prints JSON and writes ``bench/results/search_bench.json``.

    python bench/search_bench.py                      # the full run (1,000 + 10,000 images)
    python bench/search_bench.py --n 100 --big 1000   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from builder.core.taskcard import load_task_card
from builder.core.workspace import Workspace
from builder.domains.shapes.world.captions import distinctive_caption, render_clauses
from builder.domains.shapes.world.cards import make_task_card
from builder.domains.shapes.world.scene import render_array, render_scene, sample_scene
from builder.methods.image_index import MatcherVerifier, SearchIndex, build_index, search_text
from builder.tools.backends.shapes import ShapesDetector, ShapesEmbedder, ShapesMatcher

KS = (1, 5, 10)


def recalls(ranks: np.ndarray) -> dict:
    return {f"R@{k}": round(float((ranks < k).mean()), 4) for k in KS}


def rank_of(scores: np.ndarray, target: np.ndarray, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Rank (0 = first) of each row's target column; ties broken by ``tiebreak`` then pessimistically."""
    t = scores[np.arange(len(scores)), target][:, None]
    better = scores > t
    if tiebreak is not None:
        tb = tiebreak[np.arange(len(scores)), target][:, None]
        better |= (scores == t) & (tiebreak > tb)
    return better.sum(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--big", type=int, default=10_000, help="images in the latency-only index")
    ap.add_argument("--shortlist", type=int, default=100)
    ap.add_argument("--seed", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for single queries on a shared machine)")
    ap.add_argument("--weights", default=None, help="shapes embedder weights (default: the bundled ones)")
    ap.add_argument("--out", default="bench/results/search_bench.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="search-bench-"))
    scenes = [sample_scene(np.random.default_rng([args.seed, i, 13])) for i in range(args.n)]
    img_dir = tmp / "images"
    img_dir.mkdir()
    for i, sc in enumerate(scenes):
        render_scene(sc).save(img_dir / f"{i:05d}.png")
    rng = np.random.default_rng(args.seed)
    pairs = [(i, c) for i in range(args.n) if (c := distinctive_caption(scenes, i, rng)) is not None]
    keep = [i for i, _ in pairs]
    texts = [render_clauses(c, rng, "heldout") for _, c in pairs]
    n_clauses = [len(c) for _, c in pairs]

    # index build through the workspace API (files on disk)
    card = make_task_card(tmp / "card", kind="count", target="red objects", n=2, seed=0)
    ws = Workspace.init(tmp / "ws", load_task_card(card, check_images=True), images_from=card.parent)
    detector = ShapesDetector()  # shared: the matcher reuses the objects the embedder's detector saw
    embedder, matcher = ShapesEmbedder(args.weights, detector=detector), ShapesMatcher(detector)
    embedder.embed_texts(["warm up"])
    t0 = time.perf_counter()
    res = build_index(ws, img_dir, embedder=embedder, progress=False)
    build_s = time.perf_counter() - t0
    index = SearchIndex.open(ws)
    row_of = {Path(it["path"]).name: r for r, it in enumerate(index.items)}
    rows = np.array([row_of[f"{i:05d}.png"] for i in keep])
    img_vecs = index.vectors[rows]  # images of the captioned scenes, in caption order
    txt_vecs = embedder.embed_texts(texts)
    m = len(keep)
    target = np.arange(m)

    # embedding only
    sims = txt_vecs @ img_vecs.T  # [caption, image]
    emb = {"text_to_image": recalls(rank_of(sims, target)), "image_to_text": recalls(rank_of(sims.T, target))}
    emb["text_to_image"][f"R@{args.shortlist}"] = round(float((rank_of(sims, target) < args.shortlist).mean()), 4)
    emb["image_to_text"][f"R@{args.shortlist}"] = round(float((rank_of(sims.T, target) < args.shortlist).mean()), 4)

    # brute-force matcher: every caption against every image
    pixels = [render_array(scenes[i]) for i in keep]
    t0 = time.perf_counter()
    full = np.array([matcher.scores(px, texts) for px in pixels]).T  # [caption, image]
    brute_s = time.perf_counter() - t0
    brute = {"text_to_image": recalls(rank_of(full, target)), "image_to_text": recalls(rank_of(full.T, target)),
             "seconds_all_pairs": round(brute_s, 2),
             "ms_per_text_query": round(1000 * brute_s / m, 2)}

    # hybrid: embedding shortlist, matcher re-ranks it (the rest keeps embedding order below);
    # the matcher's score of every (caption, image) pair is ``full`` (computed above, same engine)
    def hybrid(shortlist: int) -> dict:
        out = {}
        for name, sim, ver in (("text_to_image", sims, full), ("image_to_text", sims.T, full.T)):
            order = np.argsort(-sim, axis=1, kind="stable")
            ranks = []
            for q in range(m):
                cands = order[q, :shortlist]
                pos = np.flatnonzero(cands == q)
                if not len(pos):
                    ranks.append(m)  # not shortlisted: at best after the shortlist
                    continue
                sc, si = ver[q, cands], sim[q, cands]
                ranks.append(int(((sc > sc[pos[0]]) | ((sc == sc[pos[0]]) & (si > si[pos[0]]))).sum()))
            out[name] = recalls(np.array(ranks))
        return out

    s = args.shortlist
    hyb = hybrid(s)
    hyb_sizes = {str(n): hybrid(n) for n in sorted({50, 100, 200, 300, s}) if n <= m}

    # query latency through the search API (embed the text, faiss; hybrid also decodes and
    # verifies the shortlist: "warm" when the detector has seen the images, "cold" when not)
    lat_emb, lat_hyb, lat_cold = [], [], []
    verifier = MatcherVerifier(matcher)
    for q in range(min(50, m)):
        t0 = time.perf_counter()
        search_text(index, embedder, texts[q], k=10)
        lat_emb.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        search_text(index, embedder, texts[q], k=10, verifier=verifier, shortlist=s)
        lat_hyb.append(time.perf_counter() - t0)
    for q in range(3):
        cold = MatcherVerifier(ShapesMatcher(ShapesDetector()))
        t0 = time.perf_counter()
        search_text(index, embedder, texts[q], k=10, verifier=cold, shortlist=s)
        lat_cold.append(time.perf_counter() - t0)

    # a 10,000-image index: query latency (embedding only)
    big_vecs = [index.vectors]
    t0 = time.perf_counter()
    for start in range(args.n, args.big, 500):
        batch = [render_array(sample_scene(np.random.default_rng([args.seed + 1, i, 13])))
                 for i in range(start, min(args.big, start + 500))]
        big_vecs.append(embedder.embed_images(batch))
    big_embed_s = time.perf_counter() - t0
    big = SearchIndex(tmp / "big", dict(index.meta), [{"path": str(i)} for i in range(args.big)],
                      np.concatenate(big_vecs)[: args.big])
    _ = big.faiss_index  # built once, when the index is opened
    lat_big, lat_faiss = [], []
    for q in range(100):
        t0 = time.perf_counter()
        v = embedder.embed_texts([texts[q % m]])
        t1 = time.perf_counter()
        big.nearest(v, 10)
        t2 = time.perf_counter()
        lat_big.append(t2 - t0)
        lat_faiss.append(t2 - t1)

    def ms(xs):
        return {"median_ms": round(1000 * statistics.median(xs), 2), "p95_ms": round(1000 * float(np.percentile(xs, 95)), 2)}

    out = {
        "images": args.n, "captioned": m, "no_distinctive_caption": args.n - m,
        "mean_clauses_per_caption": round(float(np.mean(n_clauses)), 2), "phrasings": "heldout",
        "example_caption": texts[0], "shortlist": s,
        "embedding_only": emb, "hybrid": hyb, "hybrid_by_shortlist": hyb_sizes, "brute_force_matcher": brute,
        "latency": {"text_query_embedding_1k": ms(lat_emb), "text_query_hybrid_1k_warm": ms(lat_hyb),
                    "text_query_hybrid_1k_cold": ms(lat_cold),
                    f"text_query_embedding_{args.big // 1000}k": ms(lat_big),
                    f"faiss_search_only_{args.big // 1000}k": ms(lat_faiss)},
        "index_build": {"images": res.added, "seconds": round(build_s, 2),
                        "seconds_per_1000_images": round(1000 * build_s / max(1, res.added), 2),
                        f"embed_seconds_per_1000_images_{args.big // 1000}k": round(
                            1000 * big_embed_s / max(1, args.big - args.n), 2)},
        "engine": {"backend_id": embedder.backend_id, "version": embedder.version},
        "machine": {"cpus": os.cpu_count(), "torch_threads": args.threads, "loadavg_at_end": os.getloadavg()},
        "seconds": round(time.perf_counter() - t_all, 1),
        "command": "python bench/search_bench.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "weights") and v is not None),
    }
    print(json.dumps(out, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
