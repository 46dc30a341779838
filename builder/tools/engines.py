"""Engine protocols: what every backend (Hugging Face, OCR, shapes-world default) implements.

Engines run in the host process (never in the sandboxed program worker). They take images as
``numpy.ndarray`` of shape (H, W, 3), dtype uint8, RGB, and return plain data. Boxes are
``(x0, y0, x1, y1)`` integer pixel coordinates in the image given, x1/y1 exclusive.

Every engine has ``backend_id`` (which backend and model, e.g. ``"hf:google/owlv2-base-patch16@<rev>"``
or ``"shapes:detector"``) and ``version`` (bumped when its behaviour changes); both go into the
tool-result cache key, so a changed engine never serves stale results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from builder.core.images import as_rgb_array  # noqa: F401  (engines' callers import it from here)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Detection:
    """One detected object: its box, a score in [0, 1] and the label it was found for."""

    box: Box
    score: float
    label: str


@dataclass(frozen=True)
class Answer:
    """A VQA answer with the engine's confidence in [0, 1] (used by selective decomposition)."""

    text: str
    confidence: float


@dataclass(frozen=True)
class TextSpan:
    """A piece of text read by OCR, with its box and recognition score."""

    text: str
    box: Box
    score: float


@runtime_checkable
class Engine(Protocol):
    """What every engine has: ``backend_id`` and ``version``, both part of the tool-cache key."""

    backend_id: str
    version: str


@runtime_checkable
class Detector(Engine, Protocol):
    """Open-vocabulary object detection."""

    def detect(self, image: np.ndarray, query: str, threshold: float | None = None) -> list[Detection]:
        """Find every object matching the open-vocabulary ``query`` (e.g. "red circle")."""
        ...


@runtime_checkable
class VQAEngine(Engine, Protocol):
    """Visual question answering, with a confidence per answer."""

    def answer(self, image: np.ndarray, question: str) -> Answer:
        """Answer a natural-language question about the image."""
        ...


@runtime_checkable
class Captioner(Engine, Protocol):
    """One-sentence image captions."""

    def caption(self, image: np.ndarray) -> str:
        """Describe the image in one sentence."""
        ...


@runtime_checkable
class Matcher(Engine, Protocol):
    """Image-text matching scores."""

    def scores(self, image: np.ndarray, texts: list[str]) -> list[float]:
        """Image-text matching: one score per text, higher means a better fit."""
        ...


@runtime_checkable
class Embedder(Engine, Protocol):
    """Image and text encoders into one space (retrieval). Rows are unit vectors, float32."""

    dim: int

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, dim) embeddings of N images."""
        ...

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(N, dim) embeddings of N texts, comparable to image embeddings by inner product."""
        ...


@runtime_checkable
class OCREngine(Engine, Protocol):
    """Text reading (OCR), with a box and score per piece of text."""

    def read(self, image: np.ndarray) -> list[TextSpan]:
        """Read all text in the image, in reading order."""
        ...


