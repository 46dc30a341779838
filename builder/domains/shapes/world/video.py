"""Shapes-world video: clips of moving objects with exact per-frame scene graphs and events.

A clip is a few flat-coloured objects (distinct colours, so each is nameable as "red circle")
moving at constant velocities: they bounce off the walls, enter from outside, leave the frame,
and at most one planned pair collides head-on (an elastic exchange of the velocity component
along the collision axis). Every frame is drawn by ``render_scene`` from the image world, so the
domain-shift knobs (background, clutter, blur, noise, palette, object scale) are the same.

Ground truth per frame is the exact box of each object's visible pixels. Events:

* ``collision``: the first frame at which the two objects' full boxes touch (their intervals
  meet or overlap on both axes; x1/y1 exclusive, so ``a.x1 == b.x0`` is contact);
* ``cross``: a frame whose object centre is on the other side of the vertical line ``line_x``
  than in the frame before (both frames visible);
* ``enter`` / ``leave``: the first frame an object is visible / the first frame it is entirely
  outside after having been visible.

Clips are written as MP4 (PyAV, H.264) plus one JSONL line per clip; the same seed gives the
same clips, frames and events.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from builder.domains.shapes.world.scene import (
    COLORS,
    SHAPES,
    SIZE_FRACTION,
    SIZES,
    Domain,
    Scene,
    SceneObject,
    _shift_color,
    get_domain,
    render_array,
    shape_mask,
)

VIDEO_VERSION = "1"
DEFAULT_VIDEO_SIZE = 128
DEFAULT_FPS = 25
DEFAULT_FRAMES = 60
DIRECTIONS = ("left", "right", "up", "down")
# Speeds in pixels per frame for a 128-pixel clip (scaled with the clip size).
SPEED = (1.6, 3.0)
SIDE_DRIFT = 0.5  # the largest velocity component across the collision axis
AFTER_FRAMES = 6  # "before"/"after" directions are read over this many frames around the collision


@dataclass(frozen=True)
class Mover:
    """One moving object: appearance and its (float) top-left origin in every frame."""

    shape: str
    color: str
    size: str
    side: int
    rgb: tuple[int, int, int]
    path: tuple[tuple[float, float], ...]
    mode: str  # "bounce", "leave", "enter" or "collide"

    @property
    def name(self) -> str:
        """The object's name in queries and summaries: "red circle"."""
        return f"{self.color} {self.shape}"

    def full_box(self, t: int) -> tuple[int, int, int, int]:
        """The box of the object's mask at frame ``t`` (may lie partly outside the image)."""
        x, y = (round(v) for v in self.path[t])
        bx0, by0, bx1, by1 = shape_mask(self.shape, self.side).getbbox()
        return (x + bx0, y + by0, x + bx1, y + by1)

    def visible_box(self, t: int, width: int, height: int) -> tuple[int, int, int, int] | None:
        """The exact box of the object's pixels inside the image at frame ``t``; None if none."""
        x, y = (round(v) for v in self.path[t])
        m = np.asarray(shape_mask(self.shape, self.side)) > 0
        x0, y0 = max(0, -x), max(0, -y)
        x1, y1 = min(self.side, width - x), min(self.side, height - y)
        if x1 <= x0 or y1 <= y0:
            return None
        sub = m[y0:y1, x0:x1]
        ys, xs = np.nonzero(sub)
        if not len(xs):
            return None
        return (x + x0 + int(xs.min()), y + y0 + int(ys.min()), x + x0 + int(xs.max()) + 1,
                y + y0 + int(ys.max()) + 1)


@dataclass(frozen=True)
class Clip:
    """A sampled clip: movers, size, frame rate, domain, the crossing line and its events."""

    width: int
    height: int
    fps: int
    n_frames: int
    movers: tuple[Mover, ...]
    domain: Domain
    background: str
    render_seed: int
    line_x: int
    events: tuple[dict, ...] = field(default=())
    summary: dict | None = None

    def scene(self, t: int) -> Scene:
        """Frame ``t`` as an image-world scene (visible objects only; boxes are visible pixels)."""
        objs = []
        for m in self.movers:
            box = m.visible_box(t, self.width, self.height)
            if box is None:
                continue
            x, y = (round(v) for v in m.path[t])
            objs.append(SceneObject(m.shape, m.color, m.size, box, None, m.rgb, (x, y), m.side))
        # The same render seed in every frame: background, clutter and noise stay put, objects move.
        return Scene(self.width, self.height, tuple(objs), self.domain, self.background, self.render_seed)

    def frame_graph(self, t: int) -> list[dict]:
        """The scene graph of frame ``t``: every visible object's id, attributes and box."""
        out = []
        for i, m in enumerate(self.movers):
            box = m.visible_box(t, self.width, self.height)
            if box is not None:
                out.append({"id": i, "name": m.name, "shape": m.shape, "color": m.color, "size": m.size,
                            "box": list(box)})
        return out

    def to_json(self) -> dict:
        """Plain-data ground truth of the clip (without pixels)."""
        return {
            "width": self.width, "height": self.height, "fps": self.fps, "n_frames": self.n_frames,
            "domain": self.domain.name, "background": self.background, "line_x": self.line_x,
            "objects": [{"id": i, "name": m.name, "shape": m.shape, "color": m.color, "size": m.size,
                         "mode": m.mode} for i, m in enumerate(self.movers)],
            "frames": [self.frame_graph(t) for t in range(self.n_frames)],
            "events": list(self.events),
            "summary": self.summary,
        }


def render_frame(clip: Clip, t: int) -> np.ndarray:
    """Frame ``t`` as an (H, W, 3) uint8 RGB array (deterministic)."""
    return render_array(clip.scene(t))


def _touch(a, b) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _direction(dx: float, dy: float) -> str:
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def _simulate(start, vel, side, size, n_frames, bounce_from: int | None, collide_at=None):
    """Positions per frame. Walls reflect from frame ``bounce_from`` on (None: never);
    ``collide_at`` = (frame, new velocity) replaces the velocity after that frame."""
    x, y = start
    vx, vy = vel
    path = []
    for t in range(n_frames):
        path.append((x, y))
        if collide_at is not None and t == collide_at[0]:
            vx, vy = collide_at[1]
        nx, ny = x + vx, y + vy
        inside = 0 <= x and x + side <= size and 0 <= y and y + side <= size
        if bounce_from is not None and t >= bounce_from and inside:
            if nx < 0 or nx + side > size:
                vx, nx = -vx, x - vx
            if ny < 0 or ny + side > size:
                vy, ny = -vy, y - vy
        x, y = nx, ny
    return tuple(path)


def _velocity(rng, scale: float) -> tuple[float, float]:
    speed = rng.uniform(*SPEED) * scale
    angle = rng.uniform(0, 2 * math.pi)
    return (speed * math.cos(angle), speed * math.sin(angle))


def _appearance(rng, dom: Domain, size: int, color: str, hue: float):
    shape = SHAPES[rng.integers(len(SHAPES))]
    sz = SIZES[rng.integers(len(SIZES))]
    side = max(6, round(size * SIZE_FRACTION[sz] * dom.object_scale * rng.uniform(0.95, 1.05)))
    rgb = COLORS[color]
    if dom.palette_shift > 0:
        rgb = _shift_color(rgb, hue + rng.uniform(-1.5, 1.5), rng.uniform(0.85, 1.0), rng.uniform(0.88, 1.0))
    return shape, sz, side, rgb


def _collision_pair(rng, dom, size, n_frames, colors, hue):
    """Two movers set on a head-on course that first touch at a chosen frame, or None."""
    scale = size / DEFAULT_VIDEO_SIZE
    # the approach is wall-free, so its length is bounded: long clips collide early
    span = min(n_frames, DEFAULT_FRAMES)
    fc = int(rng.integers(round(span * 0.3), round(span * 0.65)))
    axis = int(rng.integers(2))  # 0: horizontal approach, 1: vertical
    a_app = _appearance(rng, dom, size, colors[0], hue)
    b_app = _appearance(rng, dom, size, colors[1], hue)
    sa, sb = a_app[2], b_app[2]
    # room to move after the contact before any wall can turn an object round
    margin = round(AFTER_FRAMES * SPEED[1] * scale) + 4
    if size - sa - sb - 2 * margin <= 0:
        return None
    # A's origin along the axis at contact; B touches it (full boxes meet: a.x1 == b.x0).
    a_pos = float(rng.integers(margin, size - sa - sb - margin + 1))
    a_box = shape_mask(a_app[0], sa).getbbox()
    b_box = shape_mask(b_app[0], sb).getbbox()
    a_end = round(a_pos) + (a_box[2] if axis == 0 else a_box[3])
    b_pos = float(a_end - (b_box[0] if axis == 0 else b_box[1]))
    # speeds that keep the whole approach inside the frame (no wall before the contact)
    va_max = min(SPEED[1] * scale, (a_pos - 1) / fc)
    vb_max = min(SPEED[1] * scale, (size - sb - b_pos - 1) / fc)
    if min(va_max, vb_max) < 0.8 * scale:
        return None
    va_axis = rng.uniform(0.6, 1.0) * va_max
    vb_axis = -rng.uniform(0.6, 1.0) * vb_max
    cross_a = float(rng.integers(1, size - sa))
    # B's cross-axis origin overlapping A's enough for a head-on contact
    cross_b = float(np.clip(cross_a + rng.uniform(-0.4, 0.4) * min(sa, sb), 1, size - sb - 1))

    def drift(cross, side):
        room = min(SIDE_DRIFT * scale, (cross - 1) / fc, (size - side - cross - 1) / fc)
        return rng.uniform(-1, 1) * max(0.0, room)

    va_side, vb_side = drift(cross_a, sa), drift(cross_b, sb)

    def build(pos, cross, v_axis, v_side, v_new_axis, side, app, which):
        origin = (pos, cross) if axis == 0 else (cross, pos)
        vel = (v_axis, v_side) if axis == 0 else (v_side, v_axis)
        new_vel = (v_new_axis, v_side) if axis == 0 else (v_side, v_new_axis)
        # start where the velocity brings the object to ``origin`` at fc; walls act only after it
        start = (origin[0] - vel[0] * fc, origin[1] - vel[1] * fc)
        path = _simulate(start, vel, side, size, n_frames, bounce_from=fc + 1, collide_at=(fc, new_vel))
        path = path[:fc] + (origin,) + path[fc + 1:]  # exact contact despite float drift
        return Mover(app[0], colors[which], app[1], side, app[3], path, "collide")

    a = build(a_pos, cross_a, va_axis, va_side, vb_axis, sa, a_app, 0)
    b = build(b_pos, cross_b, vb_axis, vb_side, va_axis, sb, b_app, 1)
    for m in (a, b):  # no wall before the collision: the whole approach is inside the frame
        for t in range(fc + 1):
            x, y = m.path[t]
            if not (0 <= x and x + m.side <= size and 0 <= y and y + m.side <= size):
                return None
    return a, b, fc


def sample_clip(rng: np.random.Generator | int, domain: str | Domain = "clean", size: int = DEFAULT_VIDEO_SIZE,
                n_frames: int = DEFAULT_FRAMES, fps: int = DEFAULT_FPS, n_objects: tuple[int, int] = (2, 4),
                collision: float | bool = 0.7, max_tries: int = 200) -> Clip:
    """Sample a clip with exact ground truth.

    ``collision``: probability of a planned collision (True/False force it). Other objects
    bounce, leave or enter; no two objects touch except the planned pair at its frame.
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    dom = get_domain(domain)
    if size < 64 or n_frames < 20 or fps < 1:
        raise ValueError("a clip needs size >= 64, n_frames >= 20 and fps >= 1")
    lo, hi = n_objects
    if not 1 <= lo <= hi <= len(COLORS):
        raise ValueError(f"invalid n_objects range {n_objects}")
    want_collision = collision if isinstance(collision, bool) else bool(rng.random() < collision)
    scale = size / DEFAULT_VIDEO_SIZE
    for _ in range(max_tries):
        count = max(int(rng.integers(lo, hi + 1)), 2 if want_collision else 1)
        colors = [list(COLORS)[i] for i in rng.permutation(len(COLORS))[:count]]
        hue = float(rng.uniform(-dom.palette_shift, dom.palette_shift))
        movers: list[Mover] = []
        fc = None
        if want_collision:
            pair = _collision_pair(rng, dom, size, n_frames, colors[:2], hue)
            if pair is None or not _pair_ok(pair[0], pair[1], size, n_frames, pair[2]):
                continue
            movers += pair[:2]
            fc = pair[2]
        for color in colors[len(movers):]:
            for _ in range(30):  # place each further object without contact with the others
                m = _free_mover(rng, dom, size, n_frames, color, hue, scale)
                if m is not None and all(_pair_ok(m, o, size, n_frames, None) for o in movers):
                    movers.append(m)
                    break
        if len(movers) < lo:
            continue
        clip = _finish(movers, dom, size, n_frames, fps, fc, rng)
        if clip is not None:
            return clip
    raise ValueError(f"could not sample a valid clip in {max_tries} tries; loosen the settings")


def _free_mover(rng, dom, size, n_frames, color, hue, scale) -> Mover | None:
    """An object that bounces, leaves or enters; None when its path breaks its mode's rule."""
    shape, sz, side, rgb = _appearance(rng, dom, size, color, hue)
    mode = ("bounce", "leave", "enter")[int(rng.choice(3, p=(0.5, 0.25, 0.25)))]
    vel = _velocity(rng, scale)
    if mode == "enter":  # start just outside the wall the velocity points away from
        vx, vy = vel
        if abs(vx) >= abs(vy):
            start = (-side - 1.0 if vx > 0 else size + 1.0, float(rng.integers(1, size - side)))
        else:
            start = (float(rng.integers(1, size - side)), -side - 1.0 if vy > 0 else size + 1.0)
        path = _simulate(start, vel, side, size, n_frames, bounce_from=0)
    else:
        start = (float(rng.integers(1, size - side)), float(rng.integers(1, size - side)))
        path = _simulate(start, vel, side, size, n_frames, bounce_from=0 if mode == "bounce" else None)
    m = Mover(shape, color, sz, side, rgb, path, mode)
    seen = [t for t in range(n_frames) if m.visible_box(t, size, size) is not None]
    if not seen:
        return None
    gone = [t for t in range(seen[0], n_frames) if m.visible_box(t, size, size) is None]
    if mode == "enter" and not 2 <= seen[0] <= n_frames // 2:
        return None
    if mode == "leave" and (not gone or gone[0] > n_frames - 3):
        return None
    if mode != "leave" and gone:
        return None
    return m


def _pair_ok(a: Mover, b: Mover, size: int, n_frames: int, fc: int | None) -> bool:
    """No contact between two visible objects, except a planned first contact at ``fc``."""
    touching = [t for t in range(n_frames) if _touch(a.full_box(t), b.full_box(t))
                and a.visible_box(t, size, size) is not None and b.visible_box(t, size, size) is not None]
    if fc is None:
        return not touching
    return bool(touching) and touching[0] == fc and all(t <= fc + 2 for t in touching)


def _finish(movers, dom, size, n_frames, fps, fc, rng) -> Clip | None:
    """The clip with its events derived from the paths; None when a crossing or the collision's
    after-motion would be ambiguous."""
    from builder.domains.shapes.world.scene import BACKGROUND_KINDS

    line_x = size // 2
    events: list[dict] = []
    boxes = [[m.full_box(t) for t in range(n_frames)] for m in movers]
    vis = [[m.visible_box(t, size, size) for t in range(n_frames)] for m in movers]
    for i, m in enumerate(movers):
        seen = [t for t in range(n_frames) if vis[i][t] is not None]
        if m.mode == "enter":
            events.append({"type": "enter", "frame": seen[0], "object": i})
        gone = [t for t in range(seen[0], n_frames) if vis[i][t] is None]
        if gone:
            events.append({"type": "leave", "frame": gone[0], "object": i})
        for t in range(1, n_frames):
            if vis[i][t] is None or vis[i][t - 1] is None:
                continue
            c0 = (boxes[i][t - 1][0] + boxes[i][t - 1][2]) / 2
            c1 = (boxes[i][t][0] + boxes[i][t][2]) / 2
            if (c0 < line_x) != (c1 < line_x):
                # a centre right on the line would make the count depend on a half pixel
                if min(abs(c0 - line_x), abs(c1 - line_x)) < 0.5:
                    return None
                events.append({"type": "cross", "frame": t, "object": i,
                               "direction": "right" if c1 > c0 else "left"})
    summary = None
    if fc is not None:
        events.append({"type": "collision", "frame": fc, "objects": [0, 1]})
        if fc + AFTER_FRAMES >= n_frames or fc < AFTER_FRAMES:
            return None
        before, after = {}, {}
        for i in (0, 1):
            p = movers[i].path
            before[movers[i].name] = _direction(p[fc][0] - p[fc - AFTER_FRAMES][0], p[fc][1] - p[fc - AFTER_FRAMES][1])
            dx, dy = p[fc + AFTER_FRAMES][0] - p[fc][0], p[fc + AFTER_FRAMES][1] - p[fc][1]
            if max(abs(dx), abs(dy)) < 1.5 * min(abs(dx), abs(dy)) + 1:  # no clear direction
                return None
            after[movers[i].name] = _direction(dx, dy)
        summary = {"objects": sorted(m.name for m in movers[:2]), "frame": fc, "before": before, "after": after}
    events.sort(key=lambda e: (e["frame"], e["type"]))
    background = dom.background
    if background == "textured":
        background = BACKGROUND_KINDS[1 + int(rng.integers(len(BACKGROUND_KINDS) - 1))]
    return Clip(size, size, fps, n_frames, tuple(movers), dom, background, int(rng.integers(2**31)), line_x,
                tuple(events), summary)


def fits(obj: dict, want) -> bool:
    """Whether a clip object (``clip_json["objects"][i]``) is the named object ``want``
    (colour, shape, size; None matches anything)."""
    color, shape, size = want
    return color in (None, obj["color"]) and shape in (None, obj["shape"]) and size in (None, obj["size"])


def _wanted(clip_json: dict, i: int, objects) -> bool:
    return not objects or any(fits(clip_json["objects"][i], w) for w in objects)


def crossing_count(clip_json: dict, objects=(), direction: str | None = None) -> int:
    """Ground truth: how many distinct objects cross the vertical line at least once. ``objects``
    (named objects as (colour, shape, size); empty: every object) and ``direction`` ("right": left
    to right, "left": right to left; None: either) narrow which objects and crossings count."""
    return len({e["object"] for e in clip_json["events"] if e["type"] == "cross"
                and direction in (None, e["direction"]) and _wanted(clip_json, e["object"], objects)})


def leave_edge(clip_json: dict, event: dict) -> str:
    """The edge ("left", "right", "top", "bottom") a leave event goes through: the border nearest
    the centre of the object's last visible box."""
    w, h = clip_json["width"], clip_json["height"]
    box = next(o["box"] for o in clip_json["frames"][event["frame"] - 1] if o["id"] == event["object"])
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    gaps = {"left": cx, "right": w - cx, "top": cy, "bottom": h - cy}
    return min(gaps, key=gaps.get)


def any_leaves(clip_json: dict, objects=(), edge: str | None = None) -> bool:
    """Ground truth: whether any object leaves the frame; ``objects`` (as for ``crossing_count``)
    and ``edge`` ("left", "right", "top", "bottom"; None: any) narrow which leavings count."""
    return any(e["type"] == "leave" and _wanted(clip_json, e["object"], objects)
               and edge in (None, leave_edge(clip_json, e)) for e in clip_json["events"])


def collision_event(clip_json: dict) -> dict | None:
    """Ground truth: the collision event, or None."""
    return next((e for e in clip_json["events"] if e["type"] == "collision"), None)


def first_to_leave(clip_json: dict, objects=(), edge: str | None = None, answer: str = "name") -> str | None:
    """Ground truth: the object that leaves the frame first (its name, or its colour when
    ``answer`` is "color"), among ``objects`` and through ``edge`` as for ``any_leaves``; "none" if
    none leaves, None when the first two leave within 3 frames of each other (too close to call)."""
    gone = sorted((e["frame"], e["object"]) for e in clip_json["events"] if e["type"] == "leave"
                  and _wanted(clip_json, e["object"], objects) and edge in (None, leave_edge(clip_json, e)))
    if not gone:
        return "none"
    if len(gone) > 1 and gone[1][0] - gone[0][0] <= 3:
        return None
    obj = clip_json["objects"][gone[0][1]]
    return obj["color"] if answer == "color" else obj["name"]


def collides(clip_json: dict, a, b=None) -> bool:
    """Ground truth: whether the named object ``a`` (colour, shape, size; None matches anything)
    collides, with ``b`` when given (any object when None)."""
    ev = collision_event(clip_json)
    if ev is None:
        return False
    x, y = (clip_json["objects"][i] for i in ev["objects"])
    want_b = b if b is not None else (None, None, None)
    return (fits(x, a) and fits(y, want_b)) or (fits(y, a) and fits(x, want_b))


def encode_mp4(frames, path: str | Path | None, fps: int, crf: int = 16) -> bytes:
    """Encode RGB frames (an iterable of (H, W, 3) uint8 arrays) as H.264 MP4; returns the bytes
    and writes them to ``path`` when given. A low CRF keeps flat colours close to the source."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = None
        for arr in frames:
            if stream is None:
                stream = out.add_stream("libx264", rate=fps)
                stream.height, stream.width = arr.shape[:2]
                stream.pix_fmt = "yuv420p"
                # deterministic output: one thread, no scene-cut heuristics depending on timing
                stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1", "tune": "animation"}
                stream.codec_context.thread_count = 1
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
    data = buf.getvalue()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    return data


def write_clip(clip: Clip, path: str | Path | None = None) -> bytes:
    """Render every frame and encode the clip as MP4 (bytes; also written to ``path``)."""
    return encode_mp4((render_frame(clip, t) for t in range(clip.n_frames)), path, clip.fps)


def generate_video_dataset(out_dir: str | Path, n: int, seed: int, domain: str | Domain = "clean",
                           size: int = DEFAULT_VIDEO_SIZE, n_frames: int = DEFAULT_FRAMES, fps: int = DEFAULT_FPS,
                           collision: float = 0.7) -> Path:
    """Write ``n`` clips as ``clips/NNNN.mp4`` and their ground truth as ``clips.jsonl``; returns the folder."""
    if n < 1:
        raise ValueError("n must be at least 1")
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 17])
    lines = []
    for i in range(n):
        clip = sample_clip(rng, domain, size, n_frames, fps, collision=collision)
        rel = f"clips/{i:04d}.mp4"
        write_clip(clip, out / rel)
        lines.append(json.dumps({"id": f"clip{i:04d}", "video": rel, "version": VIDEO_VERSION, **clip.to_json()}))
    (out / "clips.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
