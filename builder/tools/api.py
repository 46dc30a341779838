"""The tool API that generated programs see, in the spirit of ViperGPT's ImagePatch.

This module is imported inside the sandboxed worker. It holds no model and no pixels: each
engine call goes through ``_transport`` to the host process, which runs the engine (with the
tool cache and the trace) and answers with plain data. Names starting with ``_`` are out of a
program's reach (the AST check rejects them), so programs cannot touch the transport or forge
references.

Programs define one entry function whose first parameter receives the image (an ``ImagePatch``)
or, for examples with several images, a list of ``ImagePatch``; a video input arrives as a
``VideoSegment`` (its frames are ``ImagePatch`` objects that carry their frame index). Two optional parameters are
filled by name when declared: ``query`` (the question text) and ``choices`` (candidate texts).

Every public method's docstring renders into the planner prompt (see ``builder.tools.docs``).
The host side of each engine call (engine kind, argument checks, implementation) is its
``ToolSpec`` in ``builder.tools.specs``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TOOL_API_VERSION = "1"

# Set by the worker: a callable (tool: str, ref: dict | list | None, args: list) -> plain data.
_transport: Callable[[str, Any, Any], Any] | None = None


def _call(tool, ref, args):
    if _transport is None:
        raise RuntimeError("the tool API is not connected to a tool host")
    return _transport(tool, ref, args)


class ImagePatch:
    """A rectangular region of an input image (the whole image at first).

    Coordinates are pixels of the original image, origin top-left: ``left``/``top`` inclusive,
    ``right``/``bottom`` exclusive. ``score`` is the detector's confidence for patches returned
    by ``find`` (1.0 for whole images and crops).
    """

    __slots__ = ("_image", "_frame", "left", "top", "right", "bottom", "score")

    def __init__(self, _image: int, box, score: float = 1.0, _frame: int | None = None):
        self._image = int(_image)
        self._frame = None if _frame is None else int(_frame)
        self.left, self.top, self.right, self.bottom = (int(v) for v in box)
        self.score = float(score)

    # ---- geometry -------------------------------------------------------------------------
    @property
    def width(self) -> int:
        """Width in pixels."""
        return self.right - self.left

    @property
    def height(self) -> int:
        """Height in pixels."""
        return self.bottom - self.top

    @property
    def area(self) -> int:
        """Area in square pixels."""
        return self.width * self.height

    @property
    def center_x(self) -> float:
        """Horizontal centre in image pixels."""
        return (self.left + self.right) / 2

    @property
    def center_y(self) -> float:
        """Vertical centre in image pixels (grows downwards)."""
        return (self.top + self.bottom) / 2

    @property
    def box(self) -> list[int]:
        """The box as [left, top, right, bottom]."""
        return [self.left, self.top, self.right, self.bottom]

    @property
    def frame_index(self) -> int | None:
        """The video frame this patch is from (None for a still image)."""
        return self._frame

    def _ref(self) -> dict:
        if self._frame is None:
            return {"image": self._image, "box": self.box}
        return {"image": self._image, "frame": self._frame, "box": self.box}

    def _same(self, box, score: float = 1.0) -> ImagePatch:
        return ImagePatch(self._image, box, score, self._frame)

    def __repr__(self) -> str:
        where = "" if self._frame is None else f"frame={self._frame}, "
        return f"ImagePatch({where}box={self.box}, score={self.score:.2f})"

    # ---- engines --------------------------------------------------------------------------
    def find(self, name: str) -> list[ImagePatch]:
        """Find every object matching an open-vocabulary description, e.g. "circle",
        "red square", "small blue triangle". Returns patches sorted by score, best first;
        an empty list when there is none."""
        found = _call("find", self._ref(), [str(name)])
        return [self._same(d["box"], d["score"]) for d in found]

    def exists(self, name: str) -> bool:
        """True if at least one object matching ``name`` is in this patch."""
        return len(self.find(name)) > 0

    def count(self, name: str) -> int:
        """How many objects matching ``name`` are in this patch."""
        return len(self.find(name))

    def query(self, question: str) -> str:
        """Ask the VQA engine a question about this patch; returns a short answer string
        such as "red", "circle", "3", "yes"."""
        return str(_call("query", self._ref(), [str(question)]))

    def verify(self, question: str) -> bool:
        """Ask a yes/no question about this patch, e.g. "Is the object red?"; returns a bool."""
        return bool(_call("verify", self._ref(), [str(question)]))

    def caption(self) -> str:
        """A one-sentence description of this patch."""
        return str(_call("caption", self._ref(), []))

    def read_text(self) -> str:
        """The text written in this patch (OCR), words joined by spaces; "" if none."""
        return str(_call("read_text", self._ref(), []))

    def match(self, text: str) -> float:
        """How well ``text`` describes this patch (image-text matching); higher is better."""
        return float(_call("match", self._ref(), [str(text)]))

    # ---- local helpers (no engine call) ----------------------------------------------------
    def crop(self, left: int, top: int, right: int, bottom: int) -> ImagePatch:
        """A sub-patch given in image coordinates, clipped to this patch."""
        l2, t2 = max(self.left, int(left)), max(self.top, int(top))
        r2, b2 = min(self.right, int(right)), min(self.bottom, int(bottom))
        if r2 <= l2 or b2 <= t2:
            raise ValueError(f"crop ({left}, {top}, {right}, {bottom}) is empty inside {self.box}")
        return self._same((l2, t2, r2, b2))

    def expand(self, margin: int) -> ImagePatch:
        """This patch grown by ``margin`` pixels on each side (not clipped to the image)."""
        m = int(margin)
        return self._same((self.left - m, self.top - m, self.right + m, self.bottom + m))

    def left_of(self, other: ImagePatch) -> bool:
        """True if this patch's centre is left of ``other``'s centre."""
        return self.center_x < other.center_x

    def right_of(self, other: ImagePatch) -> bool:
        """True if this patch's centre is right of ``other``'s centre."""
        return self.center_x > other.center_x

    def above(self, other: ImagePatch) -> bool:
        """True if this patch's centre is above ``other``'s centre."""
        return self.center_y < other.center_y

    def below(self, other: ImagePatch) -> bool:
        """True if this patch's centre is below ``other``'s centre."""
        return self.center_y > other.center_y

    def iou(self, other: ImagePatch) -> float:
        """Intersection over union of the two boxes."""
        iw = max(0, min(self.right, other.right) - max(self.left, other.left))
        ih = max(0, min(self.bottom, other.bottom) - max(self.top, other.top))
        inter = iw * ih
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def overlaps(self, other: ImagePatch) -> bool:
        """True if the two boxes intersect."""
        return self.iou(other) > 0


class Track:
    """One object followed across video frames (returned by ``VideoSegment.track``).

    ``frames`` are the (absolute) frame indices where it was seen, ``boxes`` its
    [left, top, right, bottom] box in each; ``label`` names it ("red circle"), with ``color``,
    ``shape`` and ``size`` ("small"/"large") separately.
    """

    __slots__ = ("_video", "id", "label", "color", "shape", "size", "frames", "boxes")

    def __init__(self, _video: int, data: dict):
        self._video = int(_video)
        self.id = int(data["id"])
        self.label, self.color = str(data["label"]), str(data["color"])
        self.shape, self.size = str(data["shape"]), str(data["size"])
        self.frames = [int(f) for f in data["frames"]]
        self.boxes = [[int(v) for v in b] for b in data["boxes"]]

    def __repr__(self) -> str:
        return f"Track({self.label!r}, frames {self.first_frame}..{self.last_frame})"

    @property
    def first_frame(self) -> int:
        """The first frame the object is seen in."""
        return self.frames[0]

    @property
    def last_frame(self) -> int:
        """The last frame the object is seen in."""
        return self.frames[-1]

    def box_at(self, frame: int) -> list[int] | None:
        """The box in ``frame``, or None if the object was not seen there."""
        frame = int(frame)
        for f, b in zip(self.frames, self.boxes, strict=False):
            if f == frame:
                return list(b)
        return None

    def patch_at(self, frame: int) -> ImagePatch | None:
        """The object's patch in ``frame`` (for engine calls), or None if not seen there."""
        b = self.box_at(frame)
        return None if b is None else ImagePatch(self._video, b, 1.0, int(frame))

    def center_x_at(self, frame: int) -> float | None:
        """Horizontal centre of the box in ``frame`` (None if not seen)."""
        b = self.box_at(frame)
        return None if b is None else (b[0] + b[2]) / 2

    def crossings(self, x: float, direction: str | None = None) -> list[int]:
        """Frames where the box centre is on the other side of the vertical line at ``x`` than
        in the previous frame the object was seen in; ``direction`` "right" keeps only crossings
        from left to right, "left" only those from right to left (None: both)."""
        if direction not in (None, "left", "right"):
            raise ValueError(f"direction must be 'left', 'right' or None, got {direction!r}")
        def centre(k: int) -> float:
            b = self.boxes[min(max(k, 0), len(self.boxes) - 1)]
            return (b[0] + b[2]) / 2

        out = []
        for k in range(1, len(self.frames)):
            c0, c1 = centre(k - 1), centre(k)
            if (c0 < x) != (c1 < x):
                # the way it goes over a few seen frames around the crossing: a box that wobbles
                # back over the line for a frame still moves the same way
                way = "right" if centre(k + 2) - centre(k - 3) > 0 else "left"
                if direction in (None, way):
                    out.append(self.frames[k])
        return out

    def exit_edge(self, width: int, height: int) -> str:
        """The frame edge ("left", "right", "top", "bottom") nearest the centre of the last box:
        where an object that leaves the frame goes out."""
        b = self.boxes[-1]
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        gaps = {"left": cx, "right": width - cx, "top": cy, "bottom": height - cy}
        return min(gaps, key=lambda edge: gaps[edge])

    def velocity(self, start: int, stop: int) -> tuple[float, float]:
        """Mean motion in pixels per frame (dx, dy) between two frames, from the boxes nearest
        those frames; (0, 0) when both are nearest the same box."""
        a = min(range(len(self.frames)), key=lambda k: abs(self.frames[k] - int(start)))
        b = min(range(len(self.frames)), key=lambda k: abs(self.frames[k] - int(stop)))
        if a == b:
            return (0.0, 0.0)
        dt = self.frames[b] - self.frames[a]
        dx = (self.boxes[b][0] + self.boxes[b][2] - self.boxes[a][0] - self.boxes[a][2]) / 2
        dy = (self.boxes[b][1] + self.boxes[b][3] - self.boxes[a][1] - self.boxes[a][3]) / 2
        return (dx / dt, dy / dt)

    def direction(self, start: int, stop: int) -> str:
        """The main direction of motion between two frames ("left", "right", "up", "down"),
        from the boxes nearest those frames; "still" if it did not move."""
        dx, dy = self.velocity(start, stop)
        if dx == 0 and dy == 0:
            return "still"
        if abs(dx) >= abs(dy):
            return "right" if dx > 0 else "left"
        return "down" if dy > 0 else "up"

    def touches_border(self, frame: int, width: int, height: int, margin: int = 2) -> bool:
        """True if the box in ``frame`` reaches within ``margin`` pixels of the frame's edge."""
        b = self.box_at(frame)
        return b is not None and (b[0] <= margin or b[1] <= margin or b[2] >= width - margin
                                  or b[3] >= height - margin)


class VideoSegment:
    """A stretch of an input video: frames ``start`` (inclusive) to ``stop`` (exclusive).

    Frame indices are absolute (frame 0 is the video's first frame), also after ``trim``.
    Frames are decoded on the host only when a program asks for them.
    """

    __slots__ = ("_video", "start", "stop", "fps", "width", "height")

    def __init__(self, _video: int, start: int, stop: int, fps: float, width: int, height: int):
        self._video = int(_video)
        self.start, self.stop = int(start), int(stop)
        self.fps = float(fps)
        self.width, self.height = int(width), int(height)

    def __repr__(self) -> str:
        return f"VideoSegment(frames {self.start}..{self.stop - 1}, {self.fps:g} fps, {self.width}x{self.height})"

    @property
    def num_frames(self) -> int:
        """How many frames the segment holds."""
        return self.stop - self.start

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.fps if self.fps else 0.0

    def _ref(self, step: int = 1) -> dict:
        return {"video": self._video, "start": self.start, "stop": self.stop, "step": int(step)}

    def frame(self, index: int) -> ImagePatch:
        """Frame ``index`` (absolute, within the segment) as an ``ImagePatch`` of the whole frame."""
        index = int(index)
        if not self.start <= index < self.stop:
            raise ValueError(f"frame {index} is outside this segment ({self.start}..{self.stop - 1})")
        return ImagePatch(self._video, (0, 0, self.width, self.height), 1.0, index)

    def frame_at(self, seconds: float) -> ImagePatch:
        """The frame shown at ``seconds`` from the video's start."""
        return self.frame(min(self.stop - 1, max(self.start, int(float(seconds) * self.fps))))

    def sample_frames(self, n: int = 8) -> list[ImagePatch]:
        """``n`` frames spread evenly over the segment (first and last included)."""
        n = max(1, min(int(n), self.num_frames))
        if n == 1:
            return [self.frame(self.start)]
        return [self.frame(self.start + round(k * (self.num_frames - 1) / (n - 1))) for k in range(n)]

    def trim(self, start: int, stop: int) -> VideoSegment:
        """The part of this segment from frame ``start`` to ``stop`` (exclusive), clipped to it."""
        s, e = max(self.start, int(start)), min(self.stop, int(stop))
        if e <= s:
            raise ValueError(f"trim({start}, {stop}) is empty inside frames {self.start}..{self.stop - 1}")
        return VideoSegment(self._video, s, e, self.fps, self.width, self.height)

    def track(self, name: str = "object", step: int = 1) -> list[Track]:
        """Follow every object matching ``name`` ("object", "red circle", "squares") through the
        segment, looking at every ``step``-th frame. Returns tracks ordered by first appearance."""
        found = _call("track", self._ref(max(1, int(step))), [str(name)])
        return [Track(self._video, d) for d in found]

    def first_frame(self, condition) -> int | None:
        """The first frame index whose frame patch makes ``condition(patch)`` true, or None."""
        for f in range(self.start, self.stop):
            if condition(self.frame(f)):
                return f
        return None


def boxes_touch(a, b, gap: int = 2) -> bool:
    """True if two [left, top, right, bottom] boxes overlap or are at most ``gap`` pixels apart."""
    return a[0] <= b[2] + gap and b[0] <= a[2] + gap and a[1] <= b[3] + gap and b[1] <= a[3] + gap


def first_contact(a: Track, b: Track, gap: int = 2) -> int | None:
    """The first frame where both tracks are seen and their boxes touch (see ``boxes_touch``), or None."""
    other = dict(zip(b.frames, b.boxes, strict=False))
    for f, box in zip(a.frames, a.boxes, strict=False):
        if f in other and boxes_touch(box, other[f], gap):
            return f
    return None


def best_text_match(image: ImagePatch, texts: list[str]) -> int:
    """Index of the text in ``texts`` that best describes ``image``."""
    texts = [str(t) for t in texts]
    if not texts:
        raise ValueError("best_text_match needs at least one text")
    return int(_call("best_text_match", image._ref(), [texts]))


def best_image_match(images: list[ImagePatch], text: str) -> int:
    """Index of the image (patch) in ``images`` that ``text`` describes best."""
    if not images:
        raise ValueError("best_image_match needs at least one image")
    return int(_call("best_image_match", [p._ref() for p in images], [str(text)]))


def leftmost(patches: list[ImagePatch]) -> ImagePatch:
    """The patch whose centre is furthest left."""
    return min(patches, key=lambda p: p.center_x)


def rightmost(patches: list[ImagePatch]) -> ImagePatch:
    """The patch whose centre is furthest right."""
    return max(patches, key=lambda p: p.center_x)


def topmost(patches: list[ImagePatch]) -> ImagePatch:
    """The patch whose centre is highest in the image."""
    return min(patches, key=lambda p: p.center_y)


def bottommost(patches: list[ImagePatch]) -> ImagePatch:
    """The patch whose centre is lowest in the image."""
    return max(patches, key=lambda p: p.center_y)


def largest(patches: list[ImagePatch]) -> ImagePatch:
    """The patch with the largest area."""
    return max(patches, key=lambda p: p.area)


def smallest(patches: list[ImagePatch]) -> ImagePatch:
    """The patch with the smallest area."""
    return min(patches, key=lambda p: p.area)


# What a program's namespace receives (besides the safe builtins).
PROGRAM_API = {
    "ImagePatch": ImagePatch,
    "VideoSegment": VideoSegment,
    "Track": Track,
    "boxes_touch": boxes_touch,
    "first_contact": first_contact,
    "best_text_match": best_text_match,
    "best_image_match": best_image_match,
    "leftmost": leftmost,
    "rightmost": rightmost,
    "topmost": topmost,
    "bottommost": bottommost,
    "largest": largest,
    "smallest": smallest,
}
