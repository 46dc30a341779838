"""Image-text search benchmark: embedding-only, hybrid (embedding shortlist + matcher) and
brute-force matcher scoring, on shapes-world scenes with held-out caption phrasings.

Each of ``--n`` fresh scenes (seeds never used in training) gets a *distinctive* caption: true
clauses (exists / relation / count) added until the caption holds for its scene and is
definitely false for every other scene, rendered in the world's held-out phrasings only. So
text->image and image->text each have exactly one right answer. Scenes for which no such
caption exists are left out (counted).

Reports Recall@1/5/10 both ways for four methods: embedding only, hybrid with the matcher,
brute-force matcher, and *reading* (the query read into a meaning tree by the composing parser and
evaluated over the objects detected at index time, embedding similarity breaking ties; what
``search_images(verify=True)`` does). Also: query latency, the index build throughput with
detections (images/s, files on disk through ``build_index``, ``--threads`` torch threads), and
the warm query latency of reading search over a ``--big`` index (10,000 images by default).
Indexing throughput runs on ``--index-threads`` torch threads (2: the "2 cores" figure).

The blind compositional sets (``--blind``, one JSON object per line: ``id``, ``query``, ``tree``
in the meaning language, ``category``; ``tree`` null for requests that must be refused) is
searched over the ``--n`` scenes: relevance is the tree's ground truth on each scene graph
(``tree_truth``), and the report gives Hit@1, Hit@10 and precision@10 (relevant hits among the
top 10 over min(10, relevant images)), overall, per category and for negation queries, and how
many of the must-refuse queries were refused. ``search_blind.jsonl`` and ``search_blind_2.jsonl``
were written by two authors who saw only the vocabulary and the meaning language; the second was
never looked at query by query while the parser's training phrasings were written. Prints JSON and writes ``bench/results/search_bench.json``.

    python bench/search_bench.py                                      # the full run (1,000 + 10,000 images)
    python bench/search_bench.py --n 200 --big 1000 --throughput 200  # a quick check

Latencies are wall time and, for reading search, also CPU time (what a query costs an idle
core: on a shared, overloaded machine wall times mostly measure the wait for a core).
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
from builder.methods.tree_search import (
    TableEval,
    forget_readings,
    read_query,
    score_images,
    search_form,
    search_read,
)
from builder.planner import tree_truth
from builder.planner.compose.parse import TreeParser
from builder.tools.backends.shapes import ShapesDetector, ShapesEmbedder, ShapesMatcher
from builder.tools.detections import ObjectTable, detect_objects

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


def reading_recalls(parser, texts: list[str], table: ObjectTable, sims: np.ndarray) -> dict:
    """R@k both ways for reading search over the captioned scenes (``table`` rows in caption order)."""
    ev, m = TableEval(table), len(texts)
    score = np.zeros((m, table.n_images))
    refused = []
    for q, text in enumerate(texts):
        reading = read_query(text, parser)
        if reading.refusal:
            refused.append(f"{text} -> {reading.refusal}")
            continue
        score[q] = score_images(reading.tree, table, ev)[1]
    target = np.arange(m)
    return {"text_to_image": recalls(rank_of(score, target, sims)),
            "image_to_text": recalls(rank_of(score.T, target, sims.T)),
            "refused": len(refused), "refused_examples": refused[:5]}


def relevant(tree: dict, scenes: list) -> np.ndarray:
    """Per scene: does the blind query's tree hold on the scene graph (ill-posed counts as not)."""
    form = search_form(tree)
    out = []
    for sc in scenes:
        value = tree_truth.answer(form, sc)
        out.append(bool(value) if value is not None else False)
    return np.array(out)


def blind_phase(path: Path, scenes: list, index: SearchIndex, embedder, parser) -> dict:
    """Hit@1, Hit@10 and precision@10 of reading search on the blind compositional set."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    scene_of = np.array([int(Path(it["path"]).stem) for it in index.items])
    per_cat: dict[str, list] = {}
    refuse = {"queries": 0, "refused": 0, "answered_examples": []}
    no_relevant, misread = 0, []
    for row in rows:
        hits = search_read(index, embedder, row["query"], k=10, parser=parser)
        if row.get("tree") is None:
            refuse["queries"] += 1
            refuse["refused"] += int(hits.refusal is not None)
            if hits.refusal is None and len(refuse["answered_examples"]) < 5:
                refuse["answered_examples"].append(f"{row['query']} -> {hits.reading.text}")
            continue
        rel = relevant(row["tree"], scenes)
        if not rel.any():
            no_relevant += 1
            continue
        top = [bool(rel[scene_of[index_row(index, h.item)]]) for h in hits]
        n_rel = int(rel.sum())
        result = (float(bool(top[:1]) and top[0]), float(any(top[:10])), sum(top[:10]) / min(10, n_rel))
        per_cat.setdefault(row.get("category", "?"), []).append(result)
        if not top or not top[0]:
            misread.append(f"{row['query']} -> {hits.refusal or hits.reading.text}")
    def agg(results):
        a = np.array(results).reshape(-1, 3)
        return {"queries": len(a), "Hit@1": round(float(a[:, 0].mean()), 4) if len(a) else None,
                "Hit@10": round(float(a[:, 1].mean()), 4) if len(a) else None,
                "precision@10": round(float(a[:, 2].mean()), 4) if len(a) else None}
    every = [r for rs in per_cat.values() for r in rs]
    return {"file": str(path), "overall": agg(every), "negation": agg(per_cat.get("negation", [])),
            "by_category": {c: agg(rs) for c, rs in sorted(per_cat.items())},
            "must_refuse": {**refuse, "rate": round(refuse["refused"] / max(1, refuse["queries"]), 4)},
            "no_relevant_image": no_relevant, "top1_misses": misread[:15]}


def index_row(index: SearchIndex, path: str) -> int:
    """The row of image ``path`` in ``index`` (cached mapping)."""
    rows = getattr(index, "_row_of", None)
    if rows is None:
        rows = index._row_of = {it["path"]: r for r, it in enumerate(index.items)}
    return rows[path]


def phase(name: str, t_all: float) -> None:
    """A progress line on stderr (the JSON report goes to stdout)."""
    import sys

    print(f"[{time.perf_counter() - t_all:7.1f}s] {name}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--big", type=int, default=10_000, help="images in the latency-only index")
    ap.add_argument("--shortlist", type=int, default=100)
    ap.add_argument("--seed", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for single queries on a shared machine)")
    ap.add_argument("--index-threads", type=int, default=2, help="torch threads for the indexing throughput figure")
    ap.add_argument("--weights", default=None, help="shapes embedder weights (default: the bundled ones)")
    ap.add_argument("--blind", nargs="+", default=["bench/data/search_blind.jsonl", "bench/data/search_blind_2.jsonl"],
                    help="blind compositional sets, each reported on its own (skipped if absent)")
    ap.add_argument("--throughput", type=int, default=None,
                    help="images indexed from disk (embedding + detection) for the images/s figure (default: --big)")
    ap.add_argument("--out", default="bench/results/search_bench.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    t_all, load_start = time.perf_counter(), os.getloadavg()
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

    phase("index build", t_all)
    # index build through the workspace API (files on disk)
    card = make_task_card(tmp / "card", kind="count", target="red objects", n=2, seed=0)
    ws = Workspace.init(tmp / "ws", load_task_card(card, check_images=True), images_from=card.parent)
    detector = ShapesDetector()  # shared: the matcher reuses the objects the embedder's detector saw
    embedder, matcher = ShapesEmbedder(args.weights, detector=detector), ShapesMatcher(detector)
    embedder.embed_texts(["warm up"])
    t0 = time.perf_counter()
    # the profile's detector is its own engine (as build_engines makes it), not the embedder's
    res = build_index(ws, img_dir, embedder=embedder, detector=ShapesDetector(), progress=False)
    build_s = time.perf_counter() - t0
    index = SearchIndex.open(ws)
    row_of = {Path(it["path"]).name: r for r, it in enumerate(index.items)}
    rows = np.array([row_of[f"{i:05d}.png"] for i in keep])
    img_vecs = index.vectors[rows]  # images of the captioned scenes, in caption order
    txt_vecs = embedder.embed_texts(texts)
    m = len(keep)
    target = np.arange(m)

    phase("embedding only", t_all)
    # embedding only
    sims = txt_vecs @ img_vecs.T  # [caption, image]
    emb = {"text_to_image": recalls(rank_of(sims, target)), "image_to_text": recalls(rank_of(sims.T, target))}
    emb["text_to_image"][f"R@{args.shortlist}"] = round(float((rank_of(sims, target) < args.shortlist).mean()), 4)
    emb["image_to_text"][f"R@{args.shortlist}"] = round(float((rank_of(sims.T, target) < args.shortlist).mean()), 4)

    phase("brute-force matcher", t_all)
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

    phase("reading", t_all)
    # reading: the query read into a meaning tree, evaluated over the stored detections
    parser = TreeParser.load()
    t0 = time.perf_counter()
    reading = reading_recalls(parser, texts, index.objects.take(rows), sims)
    reading["seconds"] = round(time.perf_counter() - t0, 1)

    phase("hybrid", t_all)
    s = args.shortlist
    hyb = hybrid(s)
    hyb_sizes = {str(n): hybrid(n) for n in sorted({50, 100, 200, 300, s}) if n <= m}

    phase("latency 1k", t_all)
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

    phase("big index", t_all)
    # a 10,000-image index: query latency (embedding only, and reading over stored detections)
    big_vecs, big_objs = [index.vectors], [index.objects]
    t0 = time.perf_counter()
    for start in range(args.n, args.big, 500):
        batch = [render_array(sample_scene(np.random.default_rng([args.seed + 1, i, 13])))
                 for i in range(start, min(args.big, start + 500))]
        big_vecs.append(embedder.embed_images(batch))
        big_objs.append(ObjectTable.from_images([detect_objects(detector, im) for im in batch],
                                                [im.shape[1] for im in batch]))
    big_embed_s = time.perf_counter() - t0
    big_table = big_objs[0]
    for part in big_objs[1:]:
        big_table = big_table.extend(part)
    big = SearchIndex(tmp / "big", dict(index.meta), [{"path": str(i)} for i in range(args.big)],
                      np.concatenate(big_vecs)[: args.big], big_table.take(np.arange(args.big)))
    _ = big.faiss_index  # built once, when the index is opened
    search_read(big, embedder, "a red circle", parser=parser)  # warm: the pair table is built once per index
    lat_big, lat_faiss, lat_read = [], [], []
    for q in range(100):
        t0 = time.perf_counter()
        v = embedder.embed_texts([texts[q % m]])
        t1 = time.perf_counter()
        big.nearest(v, 10)
        t2 = time.perf_counter()
        lat_big.append(t2 - t0)
        lat_faiss.append(t2 - t1)
    forget_readings()
    lat_parse, lat_eval = [], []
    cpu_read = []
    for q in range(min(100, m)):  # distinct queries, none read before: every one is parsed
        t0, c0 = time.perf_counter(), time.process_time()
        search_read(big, embedder, texts[q], k=10, parser=parser)
        lat_read.append(time.perf_counter() - t0)
        cpu_read.append(time.process_time() - c0)  # what the query cost the CPU: wall time on an idle core
        t0 = time.perf_counter()
        tree = read_query(texts[q], parser).tree
        t1 = time.perf_counter()
        if tree is not None:
            score_images(tree, big.objects, big.evaluator)
        lat_parse.append(t1 - t0)
        lat_eval.append(time.perf_counter() - t1)

    phase("throughput", t_all)
    # indexing throughput with detections, files on disk
    n_tp = args.throughput or args.big
    tp_dir = tmp / "throughput"
    tp_dir.mkdir()
    for i in range(n_tp):
        render_scene(sample_scene(np.random.default_rng([args.seed + 2, i, 13]))).save(tp_dir / f"{i:05d}.png")
    emb_tp = ShapesEmbedder(args.weights)
    emb_tp.embed_texts(["warm up"])
    torch.set_num_threads(args.index_threads)
    t0, c0 = time.perf_counter(), time.process_time()
    tp = build_index(ws, tp_dir, name="throughput", embedder=emb_tp, detector=ShapesDetector(), progress=False)
    tp_s, tp_cpu = time.perf_counter() - t0, time.process_time() - c0
    torch.set_num_threads(args.threads)

    phase("blind set", t_all)
    blinds = [blind_phase(Path(b), scenes, index, embedder, parser) if Path(b).is_file() else
              {"file": b, "skipped": "file not found"} for b in args.blind]
    blind = blinds[0] if len(blinds) == 1 else {Path(b).stem: r for b, r in zip(args.blind, blinds, strict=True)}

    def ms(xs):
        return {"median_ms": round(1000 * statistics.median(xs), 2), "p95_ms": round(1000 * float(np.percentile(xs, 95)), 2)}

    out = {
        "images": args.n, "captioned": m, "no_distinctive_caption": args.n - m,
        "mean_clauses_per_caption": round(float(np.mean(n_clauses)), 2), "phrasings": "heldout",
        "example_caption": texts[0], "shortlist": s,
        "embedding_only": emb, "reading": reading, "hybrid": hyb, "hybrid_by_shortlist": hyb_sizes,
        "brute_force_matcher": brute, "blind": blind,
        "latency": {"text_query_embedding_1k": ms(lat_emb), "text_query_hybrid_1k_warm": ms(lat_hyb),
                    "text_query_hybrid_1k_cold": ms(lat_cold),
                    f"text_query_embedding_{args.big // 1000}k": ms(lat_big),
                    f"faiss_search_only_{args.big // 1000}k": ms(lat_faiss),
                    f"text_query_reading_{args.big // 1000}k_warm": ms(lat_read),
                    f"text_query_reading_{args.big // 1000}k_warm_cpu_time": ms(cpu_read),
                    "reading_parse_only": ms(lat_parse),
                    f"reading_evaluate_only_{args.big // 1000}k": ms(lat_eval)},
        "index_build": {"images": res.added, "seconds": round(build_s, 2),
                        "seconds_per_1000_images": round(1000 * build_s / max(1, res.added), 2),
                        f"embed_seconds_per_1000_images_{args.big // 1000}k": round(
                            1000 * big_embed_s / max(1, args.big - args.n), 2),
                        "with_detections": {"images": tp.added, "objects": tp.objects, "seconds": round(tp_s, 2),
                                            "images_per_second": round(tp.added / max(tp_s, 1e-9), 1),
                                            "cpu_seconds_per_image": round(tp_cpu / max(1, tp.added), 4),
                                            "torch_threads": args.index_threads}},
        "engine": {"backend_id": embedder.backend_id, "version": embedder.version},
        "machine": {"cpus": os.cpu_count(), "torch_threads": args.threads, "loadavg_at_start": load_start,
                    "loadavg_at_end": os.getloadavg()},
        "seconds": round(time.perf_counter() - t_all, 1),
        "command": "python bench/search_bench.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "weights") and v is not None),
    }
    print(json.dumps(out, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
