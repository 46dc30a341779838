"""Video planner bench: kind and named-object accuracy on blind requests, against the keyword rule.

Reads ``bench/data/video_blind.jsonl`` (requests written by someone who never saw the planner's
training phrasings; fields ``kind``, ``query``, ``a``, ``b``) and prints aggregate numbers only:
the file is a blind test set, so no request is ever printed and nothing is tuned on it.

Per kind, from the query alone (no output kind given; with the card's output kind the kind is
always right, one kind per output):

* ``top1``: the MiniLM head's best kind is the labelled one; ``top2``: it is among the first two;
* ``slots_unordered`` / ``slots_ordered``: over requests that name objects, the colours of the
  first two objects read from the query equal the labelled ``a``/``b`` colours (as a set; in
  order). Order never changes a program's answer (a frame is symmetric, a summary's objects are
  sorted), so the unordered figure is the one that matters;
* the same figures for the old planner: the keyword rule for the kind, and for the objects the
  old collision program's run-time parse (the query's exact colour words, the first two).

Refusals: ``refused_in_scope`` is the share of the blind requests (all expressible) the planner
refuses (false refusals); ``bench/data/video_unsupported_blind*.jsonl`` hold requests no video kind
can express (speed, rotation, bounces, appearance changes, static counts, later events, video
editing, other domains; written blind, shown only the vocabulary and the kinds), and
``unsupported[].refused`` is the share of each set refused (refusal recall). The first set and
``_a`` were read while writing the refusal rules; ``_b`` never was. ``more_blind``
(``video_blind_c.jsonl``, written with ``_a``/``_b``) gives top-1 kind and false refusals on a
third set of expressible requests. ``--limit`` scores only the first n
rows of each file (a quick run).

End to end (``bench/video_e2e.py``): the blind requests of ``--new-kinds`` (the newer kinds and
filtered crossing / leaving / first-to-leave / collides requests, written blind) are planned, the
top-1 program of each is run through the sandbox and the shapes tools on ``--clips`` generated
clips and compared with the ground truth of the request's gold reading; a request is solved when
at least 0.9 of its clips are right. ``new_kinds.end_to_end`` reports the share solved per kind
and overall, the top-1 kind accuracy and refusals; ``new_kinds.refused_in_scope`` its false
refusals. The clip pool is kept in ``--cache-dir`` (with the tool cache), so a second run only
replans and reruns. Full run: ``python bench/video_planner_bench.py`` (30 clips of a 120-clip
pool); ``--quick``: 10 clips of 40.

Writes ``bench/results/video_planner_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from builder.domains.shapes.world.scene import COLORS
from builder.domains.shapes.world.video_tasks import VIDEO_KINDS
from builder.planner.video import (
    _BY_OUTPUT,
    VideoPlanner,
    _known_words,
    _value,
    keyword_video_kind,
    kind_probabilities,
    named_objects,
    rank_kinds,
)

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT))  # run as a script: the end-to-end helper beside it

from video_e2e import clip_pool, score_end_to_end  # noqa: E402


def _colour(value, known) -> str | None:
    """The world colour a labelled slot names ("red", "Red circle", "crimson"), or None."""
    if not value:
        return None
    words = re.findall(r"[a-z]+", str(value).lower())
    for w in words:
        if w in COLORS:
            return w
    for w in words:
        v = _value(w, known)
        if v and v[0] == "color":
            return v[1]
    return None


def _old_colours(query: str) -> list[str]:
    """The old collision program's run-time parse: the query's exact colour words, in order."""
    words = query.lower().replace("?", " ").replace(",", " ").split()
    return [w for w in words if w in COLORS][:2]


def _slots(pred: list, gold: list) -> tuple[bool, bool]:
    """(unordered, ordered): the colours read equal the labelled ones (as sets; in order)."""
    pred = (list(pred) + [None, None])[:2]
    return {c for c in pred if c} == {c for c in gold if c}, pred == gold


def _rows(path: str, limit: int | None) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def _refusals(queries: list[str]) -> list[bool]:
    """Whether the planner refuses each request (no output kind given)."""
    return [p.refusal is not None for p in VideoPlanner().plan_many(queries, k=1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "video_blind.jsonl"))
    ap.add_argument("--unsupported", nargs="+", default=[str(ROOT / "data" / f"video_unsupported_blind{s}.jsonl")
                                                          for s in ("", "_a", "_b")],
                    help="sets of requests no kind expresses (each reported on its own)")
    ap.add_argument("--more-blind", default=str(ROOT / "data" / "video_blind_c.jsonl"),
                    help="a third blind set of expressible requests (kind top-1 and false refusals)")
    ap.add_argument("--out", default=str(ROOT / "results" / "video_planner_bench.json"))
    ap.add_argument("--limit", type=int, default=None, help="score only the first n rows of each file")
    ap.add_argument("--new-kinds", default=str(ROOT / "data" / "video_new_kinds_blind.jsonl"),
                    help="blind requests over the newer kinds, scored end to end on clips")
    ap.add_argument("--clips", type=int, default=30, help="clips per request in the end-to-end score")
    ap.add_argument("--pool", type=int, default=120, help="clips generated for the end-to-end score")
    ap.add_argument("--seed", type=int, default=0, help="the clip pool's seed")
    ap.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "visforge-video-e2e"),
                    help="where the clip pool and its tool cache are kept between runs")
    ap.add_argument("--quick", action="store_true", help="end to end on 10 clips of a 40-clip pool")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end score")
    ap.add_argument("--only-e2e", action="store_true", help="only the newer kinds' refusals and end-to-end score")
    args = ap.parse_args()
    if args.quick:
        args.clips, args.pool = min(args.clips, 10), min(args.pool, 40)
    result = {} if args.only_e2e else kind_bench(args)
    if Path(args.new_kinds).exists():
        new_rows = _rows(args.new_kinds, args.limit)
        result["new_kinds"] = {"data": Path(args.new_kinds).name, "n": len(new_rows),
                               "refused_in_scope": _agg(_refusals([str(r["query"]) for r in new_rows]))}
        if not args.no_e2e:
            cache = Path(args.cache_dir)
            pool = clip_pool(cache, args.pool, args.seed)
            result["new_kinds"]["end_to_end"] = score_end_to_end(new_rows, pool, args.clips, cache)
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n", encoding="utf-8")


def _agg(vals: list) -> float | None:
    return round(float(np.mean(vals)), 4) if vals else None


def _refused_set(path: str, limit: int | None) -> dict:
    """The share of one unsupported set the planner refuses."""
    rows = _rows(path, limit)
    return {"data": Path(path).name, "n": len(rows), "refused": _agg(_refusals([str(r["query"]) for r in rows]))}


def _kind_set(path: str, limit: int | None) -> dict:
    """Top-1 kind (from the query alone) and false refusals on a blind set of ``query``/``kind`` rows."""
    rows = _rows(path, limit)
    queries = [str(r["query"]) for r in rows]
    top1 = [rank_kinds(q, None, p)[0][0] == r["kind"] for r, q, p in zip(rows, queries, kind_probabilities(queries),
                                                                          strict=True)]
    return {"data": Path(path).name, "n": len(rows), "top1": _agg(top1), "refused_in_scope": _agg(_refusals(queries))}


def kind_bench(args) -> dict:
    """Kind, slot and refusal figures on the first blind set and the unsupported set."""
    rows = _rows(args.data, args.limit)
    known = _known_words()
    queries = [str(r["query"]) for r in rows]
    t0 = time.perf_counter()
    probs = kind_probabilities(queries)
    objects = [named_objects(q) for q in queries]
    seconds = (time.perf_counter() - t0) / max(len(rows), 1)

    stats: dict = {}
    for r, q, p, objs in zip(rows, queries, probs, objects, strict=True):
        kind = r["kind"]
        s = stats.setdefault(kind, {k: [] for k in ("top1", "top2", "out_ok", "kw_top1", "slots_unordered",
                                                    "slots_ordered", "kw_slots_unordered", "kw_slots_ordered")})
        ranked = [k for k, _ in rank_kinds(q, None, p)]
        s["top1"].append(ranked[0] == kind)
        s["top2"].append(kind in ranked[:2])
        s["out_ok"].append(rank_kinds(q, VIDEO_KINDS.get(kind), p)[0][0] == kind if kind in VIDEO_KINDS else False)
        s["kw_top1"].append(keyword_video_kind(q) == kind)
        gold = [_colour(r.get("a"), known), _colour(r.get("b"), known)]
        if any(gold):
            new_u, new_o = _slots([o.color for o in objs][:2], gold)
            old_u, old_o = _slots(_old_colours(q), gold)
            s["slots_unordered"].append(new_u)
            s["slots_ordered"].append(new_o)
            s["kw_slots_unordered"].append(old_u)
            s["kw_slots_ordered"].append(old_o)

    agg = _agg

    per_kind = {}
    for kind in sorted(stats, key=lambda k: list(VIDEO_KINDS).index(k) if k in VIDEO_KINDS else 99):
        s = stats[kind]
        per_kind[kind] = {
            "n": len(s["top1"]), "n_named": len(s["slots_unordered"]),
            "minilm": {"top1": agg(s["top1"]), "top2": agg(s["top2"]), "with_output_kind": agg(s["out_ok"]),
                       "slots_unordered": agg(s["slots_unordered"]), "slots_ordered": agg(s["slots_ordered"])},
            "keyword_baseline": {"top1": agg(s["kw_top1"]), "slots_unordered": agg(s["kw_slots_unordered"]),
                                 "slots_ordered": agg(s["kw_slots_ordered"])},
        }
    every = {k: [v for s in stats.values() for v in s[k]] for k in next(iter(stats.values()))}
    result = {
        "data": Path(args.data).name, "n": len(rows), "seconds_per_query": round(seconds, 4),
        "overall": {"minilm": {"top1": agg(every["top1"]), "top2": agg(every["top2"]),
                               "slots_unordered": agg(every["slots_unordered"]),
                               "slots_ordered": agg(every["slots_ordered"])},
                    "keyword_baseline": {"top1": agg(every["kw_top1"]),
                                         "slots_unordered": agg(every["kw_slots_unordered"]),
                                         "slots_ordered": agg(every["kw_slots_ordered"])},
                    "n_named": len(every["slots_unordered"])},
        "refused_in_scope": agg(_refusals(queries)),
        "unsupported": [_refused_set(path, args.limit) for path in args.unsupported],
        **({"more_blind": _kind_set(args.more_blind, args.limit)} if Path(args.more_blind).exists() else {}),
        "per_kind": per_kind,
        "kinds_by_output": _BY_OUTPUT,
    }
    return result


if __name__ == "__main__":
    main()
