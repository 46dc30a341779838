"""Loading videos safely: limits are checked from the container before frames are decoded.

A video is probed first (a video stream, its size, frame rate, duration and frame count); any
limit over, or a file PyAV cannot open, is a ``VideoError`` (a ``UserError``) naming the file and
the problem. Frames are then decoded lazily by ``VideoReader``, in one forward pass, into a
bounded cache; a frame that fails to decode is a ``VideoError`` naming the frame.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from builder.core.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov")
MAX_VIDEO_BYTES = 100 * 1024 * 1024
MAX_DURATION_S = 120.0
MAX_SIDE = 1920
MAX_FRAMES = 3000
FRAME_CACHE_BYTES = 256 * 1024 * 1024


class VideoError(UserError, ValueError):
    """A video could not be used; the message names the video and the problem."""


class VideoTooLarge(VideoError):
    """A video over a limit (bytes, duration, resolution or frame count), refused before decoding."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video."""

    width: int
    height: int
    fps: float
    n_frames: int

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.n_frames / self.fps if self.fps else 0.0


def is_video_path(path: str) -> bool:
    """True if a file name has a video suffix (.mp4, .m4v, .mov)."""
    return str(path).lower().endswith(VIDEO_SUFFIXES)


def probe_video(data: bytes, name: str = "video", max_duration: float = MAX_DURATION_S, max_side: int = MAX_SIDE,
                max_frames: int = MAX_FRAMES, max_bytes: int = MAX_VIDEO_BYTES) -> VideoInfo:
    """Read a video's header and check the limits; raises ``VideoError`` / ``VideoTooLarge``."""
    import av

    if not data:
        raise VideoError(f"{name}: empty file")
    if len(data) > max_bytes:
        raise VideoTooLarge(f"{name}: {len(data)} bytes is over the {max_bytes}-byte limit")
    try:
        with av.open(io.BytesIO(data), mode="r") as c:
            if not c.streams.video:
                raise VideoError(f"{name}: no video stream")
            s = c.streams.video[0]
            w, h = int(s.codec_context.width), int(s.codec_context.height)
            rate = s.average_rate or s.guessed_rate
            fps = float(rate) if rate else 0.0
            n = int(s.frames or 0)
            if n == 0:  # the container does not say: count packets (no decoding)
                n = sum(1 for p in c.demux(s) if p.size)
    except VideoError:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as e:
        raise VideoError(f"{name}: not a readable video ({type(e).__name__}: {e})") from None
    if w < 1 or h < 1 or n < 1 or fps <= 0:
        raise VideoError(f"{name}: the video has no frames (or no size or frame rate)")
    if max(w, h) > max_side:
        raise VideoTooLarge(f"{name}: {w}x{h} pixels: a side is over the {max_side}-pixel limit")
    if n > max_frames:
        raise VideoTooLarge(f"{name}: {n} frames is over the {max_frames}-frame limit")
    if n / fps > max_duration:
        raise VideoTooLarge(f"{name}: {n / fps:.1f} s is over the {max_duration:g}-second limit")
    return VideoInfo(w, h, fps, n)


class VideoReader:
    """Decodes a probed video's frames on demand, in one forward pass, with a bounded frame cache.

    ``frame(i)`` is an (H, W, 3) uint8 RGB array. Asking for an earlier frame than the decoder's
    position restarts decoding from the start (clips are short; seeking is not frame-exact).
    """

    def __init__(self, data: bytes, name: str = "video", info: VideoInfo | None = None,
                 cache_bytes: int = FRAME_CACHE_BYTES):
        self.data = data
        self.name = name
        self.info = info or probe_video(data, name)
        self.digest = hashlib.sha256(data).hexdigest()[:32]
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        frame_bytes = self.info.width * self.info.height * 3
        self._max_cached = max(2, cache_bytes // max(1, frame_bytes))
        self._lock = threading.Lock()
        self._container: Any = None  # av's InputContainer, opened lazily
        self._iter: Any = None  # its frame iterator
        self._next = 0  # index of the frame the decoder yields next
        self.decoded = 0  # frames decoded so far (for benchmarks and tests)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(height, width, 3), as an image array's shape."""
        return (self.info.height, self.info.width, 3)

    def __len__(self) -> int:
        return self.info.n_frames

    def _restart(self) -> None:
        import av

        self.close()
        try:
            self._container = av.open(io.BytesIO(self.data), mode="r")
            stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            self._iter = self._container.decode(stream)
        except av.FFmpegError as e:
            raise VideoError(f"{self.name}: cannot decode ({e})") from None
        self._next = 0

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` (0-based) as an RGB array; ``VideoError`` if out of range or undecodable."""
        return self.frames([i])[0]

    def frames(self, indices) -> list[np.ndarray]:
        """Several frames, decoded in one forward pass where they are not cached."""
        import av

        idx = [int(i) for i in indices]
        for i in idx:
            if not 0 <= i < self.info.n_frames:
                raise VideoError(f"{self.name}: frame {i} is outside 0..{self.info.n_frames - 1}")
        with self._lock:
            out: dict[int, np.ndarray] = {i: self._frames[i] for i in idx if i in self._frames}
            todo = sorted(set(idx) - set(out))
            if todo:
                if self._iter is None or todo[0] < self._next:
                    self._restart()
                want = set(todo)
                while want:
                    try:
                        frame = next(self._iter)
                    except StopIteration:
                        raise VideoError(f"{self.name}: the video ends at frame {self._next}, before frame "
                                         f"{min(want)}") from None
                    except av.FFmpegError as e:
                        raise VideoError(f"{self.name}: frame {self._next} cannot be decoded ({e})") from None
                    k = self._next
                    self._next += 1
                    if k in want:
                        arr = frame.to_ndarray(format="rgb24")
                        if arr.shape != self.shape:
                            raise VideoError(f"{self.name}: frame {k} is {arr.shape[1]}x{arr.shape[0]}, not "
                                             f"{self.info.width}x{self.info.height}")
                        self.decoded += 1
                        out[k] = arr
                        want.discard(k)
                        self._frames[k] = arr
                        while len(self._frames) > self._max_cached:
                            self._frames.popitem(last=False)
            for i in out:
                if i in self._frames:
                    self._frames.move_to_end(i)
        return [out[i] for i in idx]

    def close(self) -> None:
        """Release the decoder (cached frames stay)."""
        if self._container is not None:
            self._container.close()
        self._container = self._iter = None


def load_video(data: bytes, name: str = "video", **limits) -> VideoReader:
    """Probe ``data`` against the limits and return a lazy reader (``VideoError`` when unusable)."""
    return VideoReader(data, name, probe_video(data, name, **limits))


def decode_all(data: bytes) -> list[np.ndarray]:
    """Every frame as RGB arrays, the plain way (the baseline benchmarks compare against)."""
    import av

    with av.open(io.BytesIO(data), mode="r") as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    return frames


def load_media(path) -> np.ndarray | VideoReader:
    """An example input from a file: a lazy ``VideoReader`` for a video suffix, else an RGB image
    array (through ``builder.core.images``' guards); errors are ``VideoError`` / ``ImageError``."""
    from builder.core.images import decode_image, read_image_bytes

    data = read_image_bytes(path)
    return load_video(data, str(path)) if is_video_path(str(path)) else decode_image(data, str(path))
