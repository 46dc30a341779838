"""The tool API that generated programs see, in the spirit of ViperGPT's ImagePatch.

This module is imported inside the sandboxed worker. It holds no model and no pixels: each
engine call goes through ``_transport`` to the host process, which runs the engine (with the
tool cache and the trace) and answers with plain data. Names starting with ``_`` are out of a
program's reach (the AST check rejects them), so programs cannot touch the transport or forge
references.

Programs define one entry function whose first parameter receives the image (an ``ImagePatch``)
or, for examples with several images, a list of ``ImagePatch``. Two optional parameters are
filled by name when declared: ``query`` (the question text) and ``choices`` (candidate texts).

Every public method's docstring renders into the planner prompt (see ``builder.tools.docs``).
The host side of each engine call (engine kind, argument checks, implementation) is its
``ToolSpec`` in ``builder.tools.specs``.
"""

from __future__ import annotations

TOOL_API_VERSION = "1"

# Set by the worker: a callable (tool: str, ref: dict | list | None, args: list) -> plain data.
_transport = None


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

    __slots__ = ("_image", "left", "top", "right", "bottom", "score")

    def __init__(self, _image: int, box, score: float = 1.0):
        self._image = int(_image)
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

    def _ref(self) -> dict:
        return {"image": self._image, "box": self.box}

    def __repr__(self) -> str:
        return f"ImagePatch(box={self.box}, score={self.score:.2f})"

    # ---- engines --------------------------------------------------------------------------
    def find(self, name: str) -> list[ImagePatch]:
        """Find every object matching an open-vocabulary description, e.g. "circle",
        "red square", "small blue triangle". Returns patches sorted by score, best first;
        an empty list when there is none."""
        found = _call("find", self._ref(), [str(name)])
        return [ImagePatch(self._image, d["box"], d["score"]) for d in found]

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
        return ImagePatch(self._image, (l2, t2, r2, b2))

    def expand(self, margin: int) -> ImagePatch:
        """This patch grown by ``margin`` pixels on each side (not clipped to the image)."""
        m = int(margin)
        return ImagePatch(self._image, (self.left - m, self.top - m, self.right + m, self.bottom + m))

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
    "best_text_match": best_text_match,
    "best_image_match": best_image_match,
    "leftmost": leftmost,
    "rightmost": rightmost,
    "topmost": topmost,
    "bottommost": bottommost,
    "largest": largest,
    "smallest": smallest,
}
