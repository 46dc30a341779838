"""Tracking and the collision summary: shapes named from H.264 pixels, near misses told from collisions."""

from __future__ import annotations

import numpy as np

from builder.core.video import decode_all
from builder.domains.shapes.world.video import sample_clip, write_clip
from builder.domains.shapes.world.video_tasks import reference_program
from builder.tools import api
from builder.tools.backends.shapes import ShapesDetector
from builder.tools.tracking import track_objects


def test_tracks_named_from_compressed_pixels():
    """Small objects (about 15 pixels at 128 px) keep their shape names through H.264: frame by
    frame (the blob the segmenter finds, named by ``describe_blob``) and per track (a vote)."""
    det = ShapesDetector()
    rng = np.random.default_rng([5, 11])
    frame_right = frame_total = right = total = 0
    for _ in range(12):
        clip = sample_clip(rng, "clean", collision=True)
        frames = decode_all(write_clip(clip))
        tracks = track_objects(det, lambda b, fr=frames: [fr[k] for k in b], list(range(len(frames))), 128, 128)
        for m in clip.movers:  # ground truth only scores: the tracker saw pixels
            named = [t["shape"] for t in tracks if t["color"] == m.color]
            right, total = right + (bool(named) and named[0] == m.shape), total + 1
        for t in range(0, len(frames), 4):
            blobs = det.segment(frames[t])
            for m in clip.movers:
                mine = [b for b, color, _ in blobs if color == m.color]
                box = m.visible_box(t, 128, 128)
                if m.size != "small" or len(mine) != 1 or box is None or min(box) < 3 or max(box) > 125:
                    continue
                frame_right += det.describe_blob(frames[t], mine[0], m.color)[0] == m.shape
                frame_total += 1
    assert total >= 30 and frame_total >= 100
    assert right / total >= 0.9, (right, total)
    assert frame_right / frame_total >= 0.95, (frame_right, frame_total)


def _track(tid, color, shape, boxes_by_frame):
    frames = sorted(boxes_by_frame)
    return api.Track(0, {"id": tid, "label": f"{color} {shape}", "color": color, "shape": shape, "size": "small",
                         "frames": frames, "boxes": [boxes_by_frame[f] for f in frames]})


def _run_summary(tracks):
    namespace = {k: getattr(api, k) for k in dir(api) if not k.startswith("_")}
    exec(reference_program("collision_summary"), namespace)  # noqa: S102 - our own reference program

    class Video:
        def track(self, name="object"):
            return tracks

    return namespace["execute"](Video())


def test_summary_prefers_the_contact_that_turns_both_objects():
    # red and blue pass 1 pixel apart at frame 0 and go on; green and yellow meet head-on at
    # frame 20 and bounce back. The earliest contact is the near miss; the collision is the other.
    red = _track(0, "red", "circle", {f: [10 + 2 * f, 10, 24 + 2 * f, 24] for f in range(40)})
    blue = _track(1, "blue", "square", {f: [10 + 2 * f, 25, 24 + 2 * f, 39] for f in range(40)})

    def x_of(f, start, v):  # moves at v until frame 20, then back
        return start + v * min(f, 20) - v * max(0, f - 20)

    green = _track(2, "green", "star", {f: [x_of(f, 0, 2), 80, x_of(f, 0, 2) + 14, 94] for f in range(40)})
    yellow = _track(3, "yellow", "hexagon", {f: [x_of(f, 96, -2), 80, x_of(f, 96, -2) + 14, 94]
                                             for f in range(40)})
    assert api.first_contact(red, blue) == 0 and api.first_contact(green, yellow) is not None
    out = _run_summary([red, blue, green, yellow])
    assert out["objects"] == ["green star", "yellow hexagon"]
    assert abs(out["frame"] - 20) <= 2
    assert out["before"] == {"green star": "right", "yellow hexagon": "left"}
    assert out["after"] == {"green star": "left", "yellow hexagon": "right"}
    assert green.velocity(10, 18) == (2.0, 0.0) and green.velocity(22, 30) == (-2.0, 0.0)
    assert red.velocity(5, 5) == (0.0, 0.0)
