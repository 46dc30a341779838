"""Tracking objects across video frames on the host: a detector per frame, linked by Hungarian matching.

Each frame's objects come from the detector engine: its cheap ``segment`` pass (box, colour,
area) where the backend has one, else ``detect(frame, "object")``. Detections are linked to the
open tracks by ``scipy.optimize.linear_sum_assignment`` over a cost of ``1 - IoU`` with the
track's predicted box (constant velocity) plus an appearance term (a different colour costs
``COLOR_COST``); pairs whose boxes are far apart are never linked. A track not seen for
``MAX_GAP`` sampled frames ends. Each track is then named by a vote of the backend's
``describe_blob`` (shape) over a few frames where it is clear of the border (its largest view
when it never is), and ``size_names``.
"""

from __future__ import annotations

import re

import numpy as np
from scipy.optimize import linear_sum_assignment

from builder.core.metrics import box_iou

TRACKER_VERSION = "2"  # part of the cache key of tracks: bump when tracking or naming changes
MAX_GAP = 3
COLOR_COST = 1.0
MAX_COST = 1.6
BATCH = 32  # frames decoded per pass
SNAPSHOTS = 5  # frames a track's shape is named on (a vote)
SNAP_EVERY = 8  # frames between them
_STOP = {"the", "a", "an", "all", "any", "every", "each", "object", "objects", "thing", "things", "shape",
         "shapes", "item", "items"}


def _detections(engine, frame) -> list[tuple[tuple[int, int, int, int], str, int]]:
    if hasattr(engine, "segment"):
        return engine.segment(frame)
    out = []
    for d in engine.detect(frame, "object"):
        x0, y0, x1, y1 = (int(v) for v in d.box)
        out.append(((x0, y0, x1, y1), getattr(d, "label", "object"), (x1 - x0) * (y1 - y0)))
    return out


class _Open:
    __slots__ = ("frames", "boxes", "color", "areas", "last")

    def __init__(self, f, box, color, area):
        self.frames, self.boxes, self.areas = [f], [box], [area]
        self.color, self.last = color, f

    def predict(self, f) -> tuple[float, float, float, float]:
        if len(self.boxes) < 2:
            return self.boxes[-1]
        (a, fa), (b, fb) = (self.boxes[-2], self.frames[-2]), (self.boxes[-1], self.frames[-1])
        k = (f - fb) / max(1, fb - fa)
        return tuple(bv + (bv - av) * k for av, bv in zip(a, b, strict=True))


def _link_cost(track: _Open, f: int, box, color) -> float:
    pred = track.predict(f)
    iou = box_iou(pred, box)
    if iou == 0:
        # no overlap: allow a short hop (fast objects, skipped frames) up to one box size
        size = max(pred[2] - pred[0], pred[3] - pred[1], 1)
        dist = max(abs((pred[0] + pred[2]) / 2 - (box[0] + box[2]) / 2),
                   abs((pred[1] + pred[3]) / 2 - (box[1] + box[3]) / 2))
        if dist > size:
            return np.inf
        iou = -dist / size  # ranks the nearer hop first, still below any overlap
    return 1 - iou + (COLOR_COST if color != track.color else 0.0)


def track_objects(engine, frames_of, indices: list[int], width: int, height: int) -> list[dict]:
    """Track every object over the frames ``indices`` (ascending); ``frames_of(batch)`` decodes a
    batch of frame indices to RGB arrays. Returns plain-data tracks:
    ``{"id", "label", "color", "shape", "size", "frames", "boxes"}``."""
    done: list[_Open] = []
    live: list[_Open] = []
    # id(track) -> up to SNAPSHOTS (frame index, box, frame pixels) clear of the border, spread in time
    snaps: dict[int, list] = {}
    spares: dict[int, tuple] = {}  # id(track) -> (area, box, frame pixels) of its largest view at the border
    step = indices[1] - indices[0] if len(indices) > 1 else 1
    for b0 in range(0, len(indices), BATCH):
        batch = indices[b0:b0 + BATCH]
        for f, frame in zip(batch, frames_of(batch), strict=True):
            dets = _detections(engine, frame)
            live_now = [t for t in live if f - t.last <= MAX_GAP * step]
            done += [t for t in live if t not in live_now]
            live = live_now
            matched = _link(live, f, dets) if live and dets else set()
            for j, d in enumerate(dets):
                if j not in matched:
                    live.append(_Open(f, d[0], d[1], d[2]))
            _take_snapshots(live, f, frame, snaps, spares, width, height, step)
    tracks = [t for t in done + live if len(t.frames) >= 2]
    tracks.sort(key=lambda t: (t.frames[0], t.boxes[0][0], t.boxes[0][1]))
    return _name_tracks(engine, tracks, snaps, spares, width)


def _link(live: list[_Open], f: int, dets: list) -> set[int]:
    """Extend the live tracks with frame ``f``'s detections (Hungarian matching); the matched indices."""
    matched: set[int] = set()
    cost = np.array([[_link_cost(t, f, d[0], d[1]) for d in dets] for t in live])
    finite = np.where(np.isfinite(cost), cost, 1e6)
    rows, cols = linear_sum_assignment(finite)
    for r, c in zip(rows, cols, strict=True):
        if finite[r, c] <= MAX_COST:
            t = live[r]
            t.frames.append(f)
            t.boxes.append(dets[c][0])
            t.areas.append(dets[c][2])
            t.last = f
            matched.add(c)
    return matched


def _take_snapshots(live: list[_Open], f: int, frame, snaps: dict, spares: dict,
                    width: int, height: int, step: int) -> None:
    """Keep frame ``f`` for naming the tracks seen in it: a spaced snapshot when clear of the border,
    else the largest border view of a track that has no snapshot yet."""
    for t in live:
        if t.last != f:
            continue
        x0, y0, x1, y1 = t.boxes[-1]
        clear = x0 > 1 and y0 > 1 and x1 < width - 1 and y1 < height - 1
        have = snaps.setdefault(id(t), [])
        if clear and len(have) < SNAPSHOTS and (not have or f - have[-1][0] >= SNAP_EVERY * step):
            have.append((f, t.boxes[-1], frame))
        elif not clear and not have and t.areas[-1] > spares.get(id(t), (0,))[0]:
            # never clear of the border (yet): its largest view names it if nothing better comes
            spares[id(t)] = (t.areas[-1], t.boxes[-1], frame)


def _name_tracks(engine, tracks: list[_Open], snaps: dict, spares: dict, width: int) -> list[dict]:
    """The plain-data tracks, each named by a shape vote over its snapshots and a size class."""
    shapes, sides = [], []
    for t in tracks:
        have = snaps.get(id(t)) or ([(0, *spares[id(t)][1:])] if id(t) in spares else [])
        votes: dict[str, float] = {}
        if hasattr(engine, "describe_blob"):
            for _, box, frame in have:  # a vote weighted by confidence over a few frames
                shape, conf = engine.describe_blob(frame, box, t.color)
                votes[shape] = votes.get(shape, 0.0) + conf
        shapes.append(max(votes, key=lambda s: votes[s]) if votes else "object")
        box = have[len(have) // 2][1] if have else t.boxes[len(t.boxes) // 2]
        sides.append(max(box[2] - box[0], box[3] - box[1]))
    sizes = engine.size_names(sides, width) if hasattr(engine, "size_names") and sides else [""] * len(tracks)
    out = []
    for k, (t, shape, size) in enumerate(zip(tracks, shapes, sizes, strict=True)):
        label = f"{t.color} {shape}" if t.color != "object" else shape
        out.append({"id": k, "label": label, "color": t.color, "shape": shape, "size": size,
                    "frames": t.frames, "boxes": [list(b) for b in t.boxes]})
    return out


def _singular(w: str) -> str:
    return w[:-1] if w.endswith("s") and len(w) > 3 and not w.endswith("ss") else w


def filter_tracks(tracks: list[dict], query: str) -> list[dict]:
    """The tracks whose size, colour and shape words include every content word of ``query``
    ("red circle", "circles", "objects"); "object" alone keeps them all."""
    words = {_singular(w) for w in re.findall(r"[a-z]+", query.lower())} - _STOP
    return [t for t in tracks if words <= {t["size"], t["color"], t["shape"]}]
