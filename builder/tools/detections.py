"""Detected objects stored with an image index: one table of boxes and attributes for every image.

Indexing asks the profile's detector engine, through its ordinary ``detect(image, phrase)``
interface (pixels in, boxes out), for every object ("objects"), then once per vocabulary value
("red objects", "circle", "small objects", ...); each object gets the attribute values whose
query found a box overlapping it (IoU >= 0.5, the best-scoring one per attribute). An attribute
no query found stays unknown (-1), so an open-vocabulary detector that finds a box but no colour
simply never matches a colour filter.

``ObjectTable`` keeps the objects of all images in flat numpy arrays grouped by image (``offsets``),
which is what lets a search evaluate a meaning tree over 10,000 images in milliseconds
(``builder.methods.tree_search``). It is saved next to the embeddings as ``detections.npz``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from builder.core.atomic import atomic_write_bytes
from builder.domains import vocabulary

ATTRS = ("color", "shape", "size")
MATCH_IOU = 0.5
DETECTIONS_FILE = "detections.npz"


def attribute_values(domain: str = "shapes") -> dict[str, tuple[str, ...]]:
    """Attribute -> the values a stored attribute code indexes (code i is ``values[attr][i]``)."""
    values = vocabulary(domain).values
    return {a: tuple(values[a]) for a in ATTRS}


def _queries(domain: str) -> list[tuple[str, int, str]]:
    """(attribute, code, detector phrase) for every attribute value: "red objects", "circle", ..."""
    vocab = vocabulary(domain)
    noun = "objects" if "objects" in vocab.generic_nouns else vocab.generic_nouns[0]
    out = []
    for attr, values in attribute_values(domain).items():
        for code, value in enumerate(values):
            out.append((attr, code, value if attr == "shape" else f"{value} {noun}"))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (n, 4) with every box in ``b`` (m, 4): an (n, m) array."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def detect_objects(detector, image: np.ndarray, domain: str = "shapes") -> dict[str, np.ndarray]:
    """Every object the detector engine finds in ``image``, with attribute codes (-1: unknown).

    Returns arrays ``box`` (n, 4) float32, ``score`` (n,), and ``color``/``shape``/``size`` (n,) int8.
    """
    found = detector.detect(image, "objects")
    n = len(found)
    out = {"box": np.array([d.box for d in found], np.float32).reshape(n, 4),
           "score": np.array([d.score for d in found], np.float32)}
    best = {a: np.zeros(n, np.float32) for a in ATTRS}
    for attr in ATTRS:
        out[attr] = np.full(n, -1, np.int8)
    if n == 0:
        return out
    for attr, code, phrase in _queries(domain):
        hits = detector.detect(image, phrase)
        if not hits:
            continue
        iou = _iou(out["box"], np.array([d.box for d in hits], np.float32).reshape(-1, 4))
        scores = np.array([d.score for d in hits], np.float32)
        j = iou.argmax(1)
        ok = iou[np.arange(n), j] >= MATCH_IOU
        better = ok & (scores[j] > best[attr])
        out[attr][better] = code
        best[attr][better] = scores[j][better]
    return out


@dataclass
class ObjectTable:
    """The detected objects of ``n_images`` images, grouped by image in flat arrays.

    ``counts[i]`` objects belong to image row ``i`` and sit at ``offsets[i]:offsets[i + 1]``;
    ``image`` maps each object back to its row. ``width`` is each image's width (pixels), which
    sets the margin a spatial relation needs. Attribute codes index ``attribute_values()``.
    """

    counts: np.ndarray  # (n_images,) int32
    width: np.ndarray  # (n_images,) float32
    box: np.ndarray  # (n, 4) float32
    score: np.ndarray  # (n,) float32
    color: np.ndarray  # (n,) int8
    shape: np.ndarray
    size: np.ndarray

    def __post_init__(self):
        self.counts = np.asarray(self.counts, np.int32)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])
        self.image = np.repeat(np.arange(len(self.counts), dtype=np.int32), self.counts)
        if len(self.box) != self.offsets[-1]:
            raise ValueError(f"{len(self.box)} objects but the counts add up to {self.offsets[-1]}")

    @property
    def n_images(self) -> int:
        """How many images the table covers (objects or not)."""
        return len(self.counts)

    def __len__(self) -> int:
        return len(self.box)

    @classmethod
    def empty(cls) -> ObjectTable:
        """A table of no images."""
        return cls(np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros((0, 4), np.float32),
                   np.zeros(0, np.float32), *(np.zeros(0, np.int8) for _ in ATTRS))

    @classmethod
    def from_images(cls, per_image: list[dict[str, np.ndarray]], widths: list[float]) -> ObjectTable:
        """A table from ``detect_objects`` results, one per image (in row order), and image widths."""
        if not per_image:
            return cls.empty()
        cat = {k: np.concatenate([d[k] for d in per_image]) for k in ("box", "score", *ATTRS)}
        return cls(np.array([len(d["score"]) for d in per_image], np.int32), np.asarray(widths, np.float32),
                   cat["box"].reshape(-1, 4), cat["score"], *(cat[a].astype(np.int8) for a in ATTRS))

    def extend(self, other: ObjectTable) -> ObjectTable:
        """A table of this one's images followed by ``other``'s."""
        return ObjectTable(np.concatenate([self.counts, other.counts]), np.concatenate([self.width, other.width]),
                           np.concatenate([self.box, other.box]), np.concatenate([self.score, other.score]),
                           *(np.concatenate([getattr(self, a), getattr(other, a)]) for a in ATTRS))

    def take(self, rows: np.ndarray) -> ObjectTable:
        """A table of the images ``rows`` (in that order)."""
        rows = np.asarray(rows, np.int64)
        idx = np.concatenate([np.arange(self.offsets[r], self.offsets[r + 1]) for r in rows]) if len(rows) else \
            np.zeros(0, np.int64)
        idx = idx.astype(np.int64)
        return ObjectTable(self.counts[rows], self.width[rows], self.box[idx], self.score[idx],
                           *(getattr(self, a)[idx] for a in ATTRS))

    def save(self, path: Path) -> None:
        """Write the table atomically as an ``.npz``."""
        buf = io.BytesIO()
        np.savez(buf, counts=self.counts, width=self.width, box=self.box, score=self.score,
                 **{a: getattr(self, a) for a in ATTRS})
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> ObjectTable:
        """Read a table written by ``save``."""
        with np.load(path) as z:
            return cls(z["counts"], z["width"], z["box"], z["score"], *(z[a] for a in ATTRS))
