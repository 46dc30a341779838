"""The tool table: one ``ToolSpec`` per host tool, the single place a tool is described.

A host tool is what a sandboxed program's API call turns into (``builder.tools.api`` sends
``(tool, ref, args)`` to the host). Its spec names the engine kind that serves it, the shape of
its arguments, its implementation over that engine, and which program API names call it.
Everything else is derived from this table:

- the sandbox's check of a worker's request (``TOOL_NAMES``),
- the host's dispatch and argument checks (``builder.tools.host.ToolHost``),
- export's map from program API names to the engines a solution needs (``program_engines``),
- the planner's API document (``builder.tools.docs``), from the docstrings of the program API
  functions each spec lists (``ToolSpec.doc``).

Adding a tool: add its ``ToolSpec`` here, and its program-side stub (the method or function a
program calls, which only forwards to the host) in ``builder.tools.api``;
``tests/test_host.py`` checks that the two agree.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from builder.tools import api

# Engine kinds, in profile order. Each has a protocol in builder.tools.engines.
ENGINE_KINDS = ("detector", "vqa", "captioner", "matcher", "ocr", "embedder")
YES = {"yes", "true", "y"}
MAX_TEXTS = 64  # candidates for one best_text_match / best_image_match call
MAX_ARG_CHARS = 2_000


class ToolError(RuntimeError):
    """A tool call that cannot be served (bad arguments, missing engine, engine failure)."""


# Argument kinds: "text" is one non-empty string; "texts" a list of 1..MAX_TEXTS strings.
ARG_KINDS = ("text", "texts")

# An implementation: (engine, crops, args) -> plain data. ``crops`` is a list of
# (pixels, (x0, y0, x1, y1), image index), one per patch the call refers to.
Impl = Callable[[Any, Any, list], Any]  # crops (a list), or a VideoContext for video tools


@dataclass(frozen=True)
class ToolSpec:
    """One host tool: its name, engine kind, argument schema, implementation and callers.

    ``methods`` are the ``ImagePatch`` methods that call it, ``segment_methods`` the
    ``VideoSegment`` methods, ``functions`` the module-level API functions; ``many_patches``
    marks a tool whose reference is a list of patches, ``video`` one whose reference is a video
    segment (its implementation receives a ``VideoContext`` instead of crops).
    """

    name: str
    engine: str
    args: tuple[str, ...]
    impl: Impl
    methods: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    many_patches: bool = False
    segment_methods: tuple[str, ...] = ()
    video: bool = False
    callers: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        if self.engine not in ENGINE_KINDS:
            raise ValueError(f"tool {self.name}: unknown engine kind {self.engine!r}")
        if any(a not in ARG_KINDS for a in self.args):
            raise ValueError(f"tool {self.name}: argument kinds must be among {ARG_KINDS}")
        object.__setattr__(self, "callers", self.methods + self.segment_methods + self.functions)

    @property
    def doc(self) -> str:
        """The program-facing documentation: the docstring of the API name that is the tool itself."""
        name = self.name
        if name in self.methods:
            obj = getattr(api.ImagePatch, name, None)
        elif name in self.segment_methods:
            obj = getattr(api.VideoSegment, name, None)
        else:
            obj = getattr(api, name, None)
        return inspect.getdoc(obj) or ""

    def check_args(self, args: Any) -> None:
        """Raise ``ToolError`` unless ``args`` fits the schema (the message is for the program's author)."""
        tool = self.name
        if not isinstance(args, list):
            raise ToolError(f"{tool}: arguments must be a list")
        if not self.args:
            if args:
                raise ToolError(f"{tool} takes no arguments")
            return
        if len(args) != len(self.args):
            raise ToolError(f"{tool} takes exactly one argument")
        for kind, value in zip(self.args, args, strict=True):
            if kind == "texts":
                if not isinstance(value, list) or not value or len(value) > MAX_TEXTS:
                    raise ToolError(f"{tool} needs a list of 1 to {MAX_TEXTS} texts")
                if not all(isinstance(t, str) and len(t) <= MAX_ARG_CHARS for t in value):
                    raise ToolError(f"{tool} texts must be strings of at most {MAX_ARG_CHARS} characters")
            else:
                if not isinstance(value, str) or not value.strip():
                    raise ToolError(f"{tool} needs a non-empty text argument")
                if len(value) > MAX_ARG_CHARS:
                    raise ToolError(f"{tool}: text argument longer than {MAX_ARG_CHARS} characters")


# ---- implementations -------------------------------------------------------------------------
def _find(engine, crops, args):
    crop, (x0, y0, x1, y1), _ = crops[0]
    # The crop's pixels may be a shrunk copy of the patch (the host bounds what engines see):
    # detections come back in the patch's original coordinates.
    sx, sy = (x1 - x0) / crop.shape[1], (y1 - y0) / crop.shape[0]
    dets = sorted(engine.detect(crop, args[0]), key=lambda d: -d.score)
    return [{"box": [x0 + round(d.box[0] * sx), y0 + round(d.box[1] * sy), x0 + round(d.box[2] * sx),
                     y0 + round(d.box[3] * sy)], "score": round(float(d.score), 4)} for d in dets]


def _query(engine, crops, args):
    return engine.answer(crops[0][0], args[0]).text


def _verify(engine, crops, args):
    return engine.answer(crops[0][0], args[0]).text.strip().lower() in YES


def _caption(engine, crops, args):
    return engine.caption(crops[0][0])


def _read_text(engine, crops, args):
    return " ".join(span.text for span in engine.read(crops[0][0])).strip()


def _match(engine, crops, args):
    return float(engine.scores(crops[0][0], [args[0]])[0])


def _argmax(values) -> int:
    """Index of the first largest value (as numpy.argmax; this module stays importable without numpy,
    because the sandbox worker imports it)."""
    values = [float(v) for v in values]
    return max(range(len(values)), key=values.__getitem__)


def _best_text_match(engine, crops, args):
    return _argmax(engine.scores(crops[0][0], args[0]))


def _best_image_match(engine, crops, args):
    return _argmax([engine.scores(c, [args[0]])[0] for c, _, _ in crops])


def _track(engine, video, args):
    # Every object is tracked once per segment (cached by the host); the query only filters.
    from builder.tools.tracking import filter_tracks

    return filter_tracks(video.all_tracks(engine), args[0])


# ---- the table -------------------------------------------------------------------------------
TOOLS: dict[str, ToolSpec] = {spec.name: spec for spec in (
    ToolSpec("find", "detector", ("text",), _find, methods=("find", "exists", "count")),
    ToolSpec("query", "vqa", ("text",), _query, methods=("query",)),
    ToolSpec("verify", "vqa", ("text",), _verify, methods=("verify",)),
    ToolSpec("caption", "captioner", (), _caption, methods=("caption",)),
    ToolSpec("read_text", "ocr", (), _read_text, methods=("read_text",)),
    ToolSpec("match", "matcher", ("text",), _match, methods=("match",)),
    ToolSpec("best_text_match", "matcher", ("texts",), _best_text_match, functions=("best_text_match",)),
    ToolSpec("best_image_match", "matcher", ("text",), _best_image_match, functions=("best_image_match",),
             many_patches=True),
    ToolSpec("track", "detector", ("text",), _track, segment_methods=("track",), video=True),
)}

TOOL_NAMES = tuple(TOOLS)


def program_engines() -> tuple[dict[str, str], dict[str, str]]:
    """(ImagePatch or VideoSegment method -> engine kind, API function -> engine kind), for reading
    a program's needs."""
    methods = {m: spec.engine for spec in TOOLS.values() for m in spec.methods + spec.segment_methods}
    functions = {f: spec.engine for spec in TOOLS.values() for f in spec.functions}
    return methods, functions
