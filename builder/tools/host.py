"""The host side of the tool API: serves a sandboxed program's tool calls with real engines.

Which engine serves a tool, its argument checks and its implementation come from the tool
table (``builder.tools.specs``); this module adds patches, the cache and the trace.

One ``ToolHost`` per program run holds that run's inputs: image arrays, or lazy video readers
(``builder.core.video.VideoReader``) whose frames are decoded only when a call refers to them.
Each call from the worker arrives as ``(tool, ref, args)`` (see ``builder.tools.api``); the host
crops the patch (of a frame, for a video), asks the engine (through the content-keyed cache),
records a trace step and answers with plain data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from builder.core.images import WorkingImage, fit_within
from builder.core.video import VideoError, VideoReader
from builder.tools.cache import ToolCache, cache_key, image_hash
from builder.tools.engines import Captioner, Detector, Embedder, Matcher, OCREngine, VQAEngine
from builder.tools.specs import MAX_TEXTS, TOOLS, ToolError
from builder.tools.trace import Trace

# Engines see at most this many pixels on an image's longer side: a 12-megapixel phone photo costs
# what a working-size image costs. Programs keep the original image's coordinates.
WORKING_SIDE = 1280


def working_copy(image: np.ndarray, side: int | None) -> np.ndarray:
    """``image`` shrunk (area-averaged) so its longer side is at most ``side``; unchanged if it fits."""
    if side is None or max(image.shape[:2]) <= side:
        return image  # no copy of an image that fits
    return np.asarray(fit_within(Image.fromarray(image), side))


@dataclass
class Engines:
    """The engines a run may use; a tool whose engine is missing fails with a clear error."""

    detector: Detector | None = None
    vqa: VQAEngine | None = None
    captioner: Captioner | None = None
    matcher: Matcher | None = None
    ocr: OCREngine | None = None
    embedder: Embedder | None = None  # search only (no program tool uses it)

    def working_side(self) -> int:
        """The longer image side the configured engines work at: the largest any of them declares
        (an engine's ``working_side`` attribute; ``WORKING_SIDE`` for one that declares none)."""
        sides = [getattr(e, "working_side", WORKING_SIDE) for e in (self.detector, self.vqa, self.captioner,
                                                                     self.matcher, self.ocr) if e is not None]
        return max(sides, default=WORKING_SIDE)

    def get(self, kind: str):
        """The engine of ``kind`` ("detector", "vqa", ...); a ``ToolError`` when none is configured."""
        engine = getattr(self, kind)
        if engine is None:
            raise ToolError(f"no {kind} engine is configured in the engine profile")
        return engine


class VideoContext:
    """A video segment a tool refers to: the reader, the sampled frame indices and the host's
    cache, so that every object is tracked once per segment and detector version."""

    def __init__(self, host: ToolHost, reader: VideoReader, indices: list[int]):
        self.host, self.reader, self.indices = host, reader, indices

    def all_tracks(self, engine) -> list[dict]:
        """Every object's track over the segment (from the tool cache when it holds them)."""
        from builder.tools.tracking import TRACKER_VERSION, track_objects

        where = [[self.reader.digest, [self.indices[0], self.indices[-1] + 1, self._step()]]]
        key = cache_key(where, f"track:all:{TRACKER_VERSION}", engine.backend_id, engine.version, [])
        memo = self.host._tracks.get(key)
        if memo is not None:
            return memo
        hit: Any
        cache = self.host.cache
        hit = cache.get(key) if cache is not None else ToolCache.MISSING
        if hit is ToolCache.MISSING:
            info = self.reader.info
            hit = track_objects(engine, self.reader.frames, self.indices, info.width, info.height)
            if cache is not None:
                cache.set(key, hit)
        self.host._tracks[key] = hit
        return hit

    def _step(self) -> int:
        return self.indices[1] - self.indices[0] if len(self.indices) > 1 else 1


class ToolHost:
    """Serves tool calls for one run over ``images``: (H, W, 3) uint8 arrays or ``VideoReader``s.

    Images larger than ``working_side`` are shrunk once, here, before any engine sees them;
    patches and detections stay in the original image's coordinates.
    """

    def __init__(
        self,
        engines: Engines,
        images: list[np.ndarray | WorkingImage | VideoReader],
        cache: ToolCache | None = None,
        trace: Trace | None = None,
        working_side: int | None = None,
        deadline: float | None = None,
    ):
        self.engines = engines
        self.deadline = deadline  # time.monotonic() after which no engine is called
        working_side = working_side or engines.working_side()
        # (width, height) as the program sees it: the original image's
        self.sizes = [(img.shape[1], img.shape[0]) for img in images]
        self.images = [img if isinstance(img, VideoReader)
                       else working_copy(img.pixels if isinstance(img, WorkingImage) else img, working_side)
                       for img in images]
        self.cache = cache
        self.trace = trace
        self._digests: list[str | None] = [None] * len(images)
        self._tracks: dict[str, list] = {}
        self.calls = 0

    def image_sizes(self) -> list[tuple[int, int]]:
        """(width, height) of each image (or video frame), as the sandbox needs them."""
        return list(self.sizes)

    def video_infos(self) -> list[list | None]:
        """[frame count, fps] of each video input (None for images), as the sandbox needs them."""
        return [[len(v), v.info.fps] if isinstance(v, VideoReader) else None for v in self.images]

    def _digest(self, i: int, frame: int | None = None) -> str:
        media = self.images[i]
        if isinstance(media, VideoReader):
            return f"{media.digest}:{frame}"
        digest = self._digests[i]
        if digest is None:  # a shrunk copy is keyed with the original size its boxes refer to
            w, h = self.sizes[i]
            digest = self._digests[i] = image_hash(media) + ("" if media.shape[:2] == (h, w) else f"@{w}x{h}")
        return digest

    def _video(self, ref: Any) -> VideoContext:
        if not isinstance(ref, dict) or not all(k in ref for k in ("video", "start", "stop", "step")):
            raise ToolError("expected a video segment")
        i = ref["video"]
        if not isinstance(i, int) or not 0 <= i < len(self.images) or not isinstance(self.images[i], VideoReader):
            raise ToolError(f"input {i!r} is not a video")
        reader = self.images[i]
        assert isinstance(reader, VideoReader)  # checked above
        start, stop, step = (int(ref[k]) for k in ("start", "stop", "step"))
        if not 0 <= start < stop <= len(reader) or step < 1:
            raise ToolError(f"segment {start}..{stop} (step {step}) is outside the video's {len(reader)} frames")
        return VideoContext(self, reader, list(range(start, stop, step)))

    def _crop(self, ref: dict) -> tuple[np.ndarray, tuple[int, int, int, int], int | str]:
        if not isinstance(ref, dict) or "image" not in ref or "box" not in ref:
            raise ToolError("expected an image patch")
        i = ref["image"]
        if not isinstance(i, int) or not 0 <= i < len(self.images):
            raise ToolError(f"image index {i!r} is out of range")
        img = self.images[i]
        frame = ref.get("frame")
        if isinstance(img, VideoReader):
            if not isinstance(frame, int):
                raise ToolError(f"input {i} is a video: use a frame's patch (video.frame(i))")
            try:
                img = img.frame(frame)
            except VideoError as e:
                raise ToolError(str(e)) from None
        elif frame is not None:
            raise ToolError(f"input {i} is an image, not a video")
        w, h = self.sizes[i] if frame is None else (img.shape[1], img.shape[0])
        x0, y0, x1, y1 = (int(c) for c in ref["box"])
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise ToolError(f"patch {ref['box']} is empty inside the {w}x{h} image")
        sx, sy = img.shape[1] / w, img.shape[0] / h  # 1.0 unless the host shrank the image
        pixels = img[int(y0 * sy):max(int(y0 * sy) + 1, round(y1 * sy)),
                     int(x0 * sx):max(int(x0 * sx) + 1, round(x1 * sx))]
        return pixels, (x0, y0, x1, y1), (i if frame is None else f"{i}:{frame}")

    def __call__(self, tool: str, ref: Any, args: list) -> Any:
        """Serve one call; raises ``ToolError`` with a message meant for the program's author."""
        self.calls += 1
        t0 = time.perf_counter()
        cached = False
        spec = None
        try:
            spec = TOOLS.get(tool)
            if spec is None:
                raise ToolError(f"unknown tool {tool!r}")
            spec.check_args(args)
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise ToolError("the request passed its deadline")
            engine = self.engines.get(spec.engine)
            if spec.video:
                video = self._video(ref)
                key = None
                if self.cache is not None:
                    where = [[video.reader.digest, [video.indices[0], video.indices[-1] + 1, video._step()]]]
                    key = cache_key(where, tool, engine.backend_id, engine.version, args)
                    hit = self.cache.get(key)
                    if hit is not ToolCache.MISSING:
                        cached, result = True, hit
                if not cached:
                    result = spec.impl(engine, video, args)
                    if key is not None and self.cache is not None:
                        self.cache.set(key, result)
                self._record(tool, ref, args, result, None, t0, cached)
                return result
            refs = ref if spec.many_patches else [ref]
            if not isinstance(refs, list) or not refs or len(refs) > MAX_TEXTS:
                raise ToolError(f"{tool} needs 1 to {MAX_TEXTS} images")
            crops = [self._crop(r) for r in refs]
            key = None
            if self.cache is not None:
                where = [[self._where(i), list(box)] for _, box, i in crops]
                key = cache_key(where, tool, engine.backend_id, engine.version, args)
                hit = self.cache.get(key)
                if hit is not ToolCache.MISSING:
                    cached = True
                    result = hit
            if not cached:
                result = spec.impl(engine, crops, args)
                if key is not None and self.cache is not None:
                    self.cache.set(key, result)
        except ToolError as e:
            self._record(tool, ref, args, None, str(e), t0, cached)
            raise
        except Exception as e:  # an engine bug must reach the program's author, not crash the host
            msg = f"{tool} failed in the {spec.engine if spec else '?'} engine: {type(e).__name__}: {e}"
            self._record(tool, ref, args, None, msg, t0, cached)
            raise ToolError(msg) from e
        self._record(tool, ref, args, result, None, t0, cached)
        return result

    def _where(self, i: int | str) -> str:
        if isinstance(i, str):  # "input:frame"
            v, f = i.split(":")
            return self._digest(int(v), int(f))
        return self._digest(i)

    def _record(self, tool, ref, args, result, error, t0, cached) -> None:
        if self.trace is not None:
            self.trace.add(tool=tool, ref=ref, args=args, result=result, error=error,
                           duration_ms=(time.perf_counter() - t0) * 1000, cached=cached)
