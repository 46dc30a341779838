"""The host side of the tool API: serves a sandboxed program's tool calls with real engines.

One ``ToolHost`` per program run holds that run's images. Each call from the worker arrives
as ``(tool, ref, args)`` (see ``builder.tools.api``); the host crops the patch, asks the
engine (through the content-keyed cache), records a trace step and answers with plain data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from builder.tools.cache import ToolCache, cache_key, image_hash
from builder.tools.engines import Captioner, Detector, Matcher, OCREngine, VQAEngine
from builder.tools.trace import Trace

YES = {"yes", "true", "y"}
MAX_TEXTS = 64  # candidates for one best_text_match / best_image_match call
MAX_ARG_CHARS = 2_000


class ToolError(RuntimeError):
    """A tool call that cannot be served (bad arguments, missing engine, engine failure)."""


@dataclass
class Engines:
    """The engines a run may use; a tool whose engine is missing fails with a clear error."""

    detector: Detector | None = None
    vqa: VQAEngine | None = None
    captioner: Captioner | None = None
    matcher: Matcher | None = None
    ocr: OCREngine | None = None

    def get(self, kind: str):
        engine = getattr(self, kind)
        if engine is None:
            raise ToolError(f"no {kind} engine is configured in the engine profile")
        return engine


# tool -> the engine kind it uses
TOOL_ENGINE = {
    "find": "detector",
    "query": "vqa",
    "verify": "vqa",
    "caption": "captioner",
    "read_text": "ocr",
    "match": "matcher",
    "best_text_match": "matcher",
    "best_image_match": "matcher",
}


class ToolHost:
    """Serves tool calls for one run over ``images`` ((H, W, 3) uint8 arrays)."""

    def __init__(
        self,
        engines: Engines,
        images: list[np.ndarray],
        cache: ToolCache | None = None,
        trace: Trace | None = None,
    ):
        self.engines = engines
        self.images = images
        self.cache = cache
        self.trace = trace
        self._digests: list[str | None] = [None] * len(images)
        self.calls = 0

    def image_sizes(self) -> list[tuple[int, int]]:
        """(width, height) of each image, as the sandbox needs them."""
        return [(img.shape[1], img.shape[0]) for img in self.images]

    def _digest(self, i: int) -> str:
        if self._digests[i] is None:
            self._digests[i] = image_hash(self.images[i])
        return self._digests[i]

    def _crop(self, ref: dict) -> tuple[np.ndarray, tuple[int, int, int, int], int]:
        if not isinstance(ref, dict) or "image" not in ref or "box" not in ref:
            raise ToolError("expected an image patch")
        i = ref["image"]
        if not isinstance(i, int) or not 0 <= i < len(self.images):
            raise ToolError(f"image index {i!r} is out of range")
        img = self.images[i]
        h, w = img.shape[:2]
        x0, y0, x1, y1 = (int(c) for c in ref["box"])
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise ToolError(f"patch {ref['box']} is empty inside the {w}x{h} image")
        return img[y0:y1, x0:x1], (x0, y0, x1, y1), i

    def __call__(self, tool: str, ref: Any, args: list) -> Any:
        """Serve one call; raises ``ToolError`` with a message meant for the program's author."""
        self.calls += 1
        t0 = time.perf_counter()
        cached = False
        try:
            if tool not in TOOL_ENGINE:
                raise ToolError(f"unknown tool {tool!r}")
            _check_args(tool, args)
            engine = self.engines.get(TOOL_ENGINE[tool])
            refs = ref if tool == "best_image_match" else [ref]
            if not isinstance(refs, list) or not refs or len(refs) > MAX_TEXTS:
                raise ToolError(f"best_image_match needs 1 to {MAX_TEXTS} images")
            crops = [self._crop(r) for r in refs]
            key = None
            if self.cache is not None:
                where = [[self._digest(i), list(box)] for _, box, i in crops]
                key = cache_key(where, tool, engine.backend_id, engine.version, args)
                hit = self.cache.get(key)
                if hit is not ToolCache.MISSING:
                    cached = True
                    result = hit
            if not cached:
                result = self._run(tool, engine, crops, args)
                if key is not None:
                    self.cache.set(key, result)
        except ToolError as e:
            self._record(tool, ref, args, None, str(e), t0, cached)
            raise
        except Exception as e:  # an engine bug must reach the program's author, not crash the host
            msg = f"{tool} failed in the {TOOL_ENGINE.get(tool, '?')} engine: {type(e).__name__}: {e}"
            self._record(tool, ref, args, None, msg, t0, cached)
            raise ToolError(msg) from e
        self._record(tool, ref, args, result, None, t0, cached)
        return result

    def _record(self, tool, ref, args, result, error, t0, cached) -> None:
        if self.trace is not None:
            self.trace.add(tool=tool, ref=ref, args=args, result=result, error=error,
                           duration_ms=(time.perf_counter() - t0) * 1000, cached=cached)

    @staticmethod
    def _run(tool: str, engine, crops, args: list) -> Any:
        crop, (x0, y0, _, _), _ = crops[0]
        if tool == "find":
            dets = engine.detect(crop, args[0])
            dets = sorted(dets, key=lambda d: -d.score)
            return [
                {"box": [d.box[0] + x0, d.box[1] + y0, d.box[2] + x0, d.box[3] + y0], "score": round(float(d.score), 4)}
                for d in dets
            ]
        if tool == "query":
            return engine.answer(crop, args[0]).text
        if tool == "verify":
            return engine.answer(crop, args[0]).text.strip().lower() in YES
        if tool == "caption":
            return engine.caption(crop)
        if tool == "read_text":
            return " ".join(span.text for span in engine.read(crop)).strip()
        if tool == "match":
            return float(engine.scores(crop, [args[0]])[0])
        if tool == "best_text_match":
            return int(np.argmax(engine.scores(crop, args[0])))
        if tool == "best_image_match":
            return int(np.argmax([engine.scores(c, [args[0]])[0] for c, _, _ in crops]))
        raise ToolError(f"unknown tool {tool!r}")


def _check_args(tool: str, args: Any) -> None:
    if not isinstance(args, list):
        raise ToolError(f"{tool}: arguments must be a list")
    if tool in ("caption", "read_text"):
        if args:
            raise ToolError(f"{tool} takes no arguments")
        return
    if len(args) != 1:
        raise ToolError(f"{tool} takes exactly one argument")
    if tool == "best_text_match":
        texts = args[0]
        if not isinstance(texts, list) or not texts or len(texts) > MAX_TEXTS:
            raise ToolError(f"best_text_match needs a list of 1 to {MAX_TEXTS} texts")
        if not all(isinstance(t, str) and len(t) <= MAX_ARG_CHARS for t in texts):
            raise ToolError(f"best_text_match texts must be strings of at most {MAX_ARG_CHARS} characters")
        return
    if not isinstance(args[0], str) or not args[0].strip():
        raise ToolError(f"{tool} needs a non-empty text argument")
    if len(args[0]) > MAX_ARG_CHARS:
        raise ToolError(f"{tool}: text argument longer than {MAX_ARG_CHARS} characters")
