"""Offline default engines for the shapes world: detector, VQA, captioner, matcher and embedder.

Thin engine adapters over the shapes domain (``builder.domains.shapes``): they see only pixels
and the query text. The detector engine is the domain's classical-CV ``ObjectDetector`` plus
query matching; the captioner and matcher are built on it; the VQA engine and the embedder load
the domain's learned networks (``nets.vqa``, ``nets.embed``) from their weights folders.
Object phrases and captions are read with the domain's one vocabulary (``vocab.parse_phrase``).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from builder.core.artifacts import read_record
from builder.domains.shapes.detector import CHROMA_THRESHOLD, ObjectDetector, ShapeObject
from builder.domains.shapes.vocab import (
    NUMBER_NAMES,
    RELATION_SYNONYMS,
    RELATIONS,
    ObjectSpec,
    parse_phrase,
    split_words,
    with_article,
)
from builder.tools.engines import Answer, Detection, as_rgb_array

DETECTOR_VERSION = "1"
CAPTIONER_VERSION = "1"
MATCHER_VERSION = "1"
# The longer image side these engines work at (``Engines.working_side``): world scenes are 128 to
# 256 pixels and the VQA net reads 128; on 1600-pixel JPEG photos of 200 scenes (clean, noisy) the
# detector is exactly as right at 512 as at 1280, and 6x faster.
WORKING_SIDE = 512


# ---- detector -------------------------------------------------------------------------------
class ShapesDetector(ObjectDetector):
    """Open-vocabulary detector for shapes-world objects (classical CV, no learning).

    ``detect(image, "large red circle")`` returns one ``Detection`` per matching object with a
    tight box (x1/y1 exclusive). ``objects(image)`` returns every object with its attributes.
    """

    backend_id = "shapes:detector"
    version = DETECTOR_VERSION
    working_side = WORKING_SIDE

    def __init__(self, threshold: float = 0.0, chroma_threshold: float = CHROMA_THRESHOLD):
        super().__init__(chroma_threshold)
        self.threshold = float(threshold)
        self.version = f"{DETECTOR_VERSION}+t{self.threshold:g}+c{self.chroma_threshold:g}"

    def detect(self, image, query: str, threshold: float | None = None) -> list[Detection]:
        """Objects matching ``query`` ("red circle", "objects", ...); an unknown noun finds nothing."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        q = parse_phrase(query)
        if not q.known:
            return []
        limit = self.threshold if threshold is None else float(threshold)
        label = query.strip() or "object"
        return [Detection(o.box, o.score, label) for o in self.objects(image) if q.matches(o) and o.score >= limit]


# ---- learned engines --------------------------------------------------------------------------
class _LearnedWeights:
    """A learned engine's weights folder (an artifact, ``builder.core.artifacts``): checked when
    the engine is built (a clear error naming the training command, or the conversion command
    for a folder in an older layout), hashed into ``version`` (cached tool results never outlive
    a retrain), and the torch model loaded once, on first use, by ``_load(weights, device)``."""

    _train_command: str  # named in the error when the weights are missing
    _load: Callable[[Path, str], Any]  # each engine's loader: (weights folder, device) -> torch model

    def _use_weights(self, weights: str | Path | None, default: Path, device: str) -> str:
        """Set ``weights`` and ``device``; returns the weights' version string."""
        self.weights = Path(weights) if weights is not None else default
        self.device = device
        path = self.weights / "model.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"{self.weights}: no model.safetensors (train with "
                                    f"`{self._train_command}`)")
        read_record(self.weights)  # an older layout fails here, naming the conversion command
        self._model = None
        self._lock = threading.Lock()
        return f"1+{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"

    @property
    def model(self):
        """The torch model (loaded on first access)."""
        with self._lock:
            if self._model is None:
                self._model = self._load(self.weights, self.device)
            return self._model


# ---- VQA --------------------------------------------------------------------------------------
class ShapesVQA(_LearnedWeights):
    """Learned shapes-world VQA (perception slots + question-conditioned reading, closed answer vocabulary).

    ``ShapesVQA()`` loads the bundled default weights, ``ShapesVQA(weights="dir")`` a folder
    written by ``save``. The model loads on first use. ``model`` exposes the torch module for
    fine-tuning (see ``builder.domains.shapes.training.vqa.train``); ``version`` includes a hash of the weights, so cached
    tool results never outlive a fine-tune.
    """

    backend_id = "shapes:vqa"
    working_side = WORKING_SIDE

    _train_command = "visforge engines train-vqa --out DIR"

    @staticmethod
    def _load(weights: Path, device: str):
        from builder.domains.shapes.nets.vqa import ShapesVQANet

        return ShapesVQANet.from_pretrained(weights).to(device)

    def __init__(self, weights: str | Path | None = None, device: str = "cpu"):
        from builder.domains.shapes.nets import vqa

        self.version = self._use_weights(weights, vqa.DEFAULT_WEIGHTS, device)

    def answer(self, image, question: str) -> Answer:
        """Answer ``question`` about ``image``; confidence is the softmax probability."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("question must be a non-empty string")
        text, conf = self.model.predict([as_rgb_array(image)], [question])[0]
        return Answer(text, round(conf, 6))

    def answer_batch(self, images: list, questions: list[str]) -> list[Answer]:
        """Answer many (image, question) pairs in one forward pass."""
        if len(images) != len(questions):
            raise ValueError("images and questions differ in length")
        preds = self.model.predict([as_rgb_array(im) for im in images], list(questions))
        return [Answer(t, round(c, 6)) for t, c in preds]

    def save(self, out_dir) -> Path:
        """Write the current model (e.g. after fine-tuning) to ``out_dir`` as an artifact folder."""
        return self.model.save_pretrained(out_dir)


# ---- captioner --------------------------------------------------------------------------------
def _relation(a: ShapeObject, b: ShapeObject) -> str:
    """Dominant-axis relation of ``a`` to ``b`` by box centres."""
    dx, dy = b.center[0] - a.center[0], b.center[1] - a.center[1]
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


class ShapesCaptioner:
    """Deterministic captions from detections, e.g. "a large red circle left of a small blue square"."""

    backend_id = "shapes:captioner"
    version = CAPTIONER_VERSION
    working_side = WORKING_SIDE

    def __init__(self, detector: ShapesDetector | None = None):
        self.detector = detector or ShapesDetector()
        self.version = f"{CAPTIONER_VERSION}+det{self.detector.version}"

    def caption(self, image) -> str:
        """One sentence naming every detected object (left to right)."""
        objs = self.detector.objects(image)
        if not objs:
            return "no objects"
        if len(objs) == 1:
            return with_article(objs[0].name())
        if len(objs) == 2:
            return f"{with_article(objs[0].name())} {_relation(objs[0], objs[1])} {with_article(objs[1].name())}"
        count = NUMBER_NAMES[len(objs)] if len(objs) < len(NUMBER_NAMES) else str(len(objs))
        return f"{count} objects: " + ", ".join(with_article(o.name()) for o in objs)


# ---- matcher ----------------------------------------------------------------------------------
_REL_PATTERN = re.compile(r"\b(?:to the )?(" + "|".join(RELATIONS + tuple(RELATION_SYNONYMS)) + r")\b")


def _holds(a: ShapeObject, b: ShapeObject, rel: str) -> bool:
    (ax, ay), (bx, by) = a.center, b.center
    return {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[rel]


def parse_caption(text: str) -> list[tuple]:
    """Constraints in a caption (see ``_parse_caption``); parsed once per distinct text."""
    return list(_parse_caption(text))


@lru_cache(maxsize=8192)
def _parse_caption(text: str) -> tuple:
    """Constraints in a caption: ("exists", q), ("count", q) or ("relation", qa, rel, qb).

    Clauses are split at ",", ";", ":" and "and"; a clause with a relation word relates the
    phrase before it to the phrase after it; a number makes a count ("There are 2 red circles").
    """
    out: list[tuple] = []
    for clause in re.split(r"[,;:.]|\band\b", text.lower()):
        if not any(w[0].isalnum() for w in split_words(clause)):
            continue
        m = _REL_PATTERN.search(clause)
        if m:
            rel = RELATION_SYNONYMS.get(m.group(1), m.group(1))
            qa, qb = parse_phrase(clause[: m.start()]), parse_phrase(clause[m.end():])
            out += [_object_constraint(qa), _object_constraint(qb), ("relation", qa, rel, qb)]
            continue
        q = parse_phrase(clause)
        if q.size or q.color or q.shape or q.count is not None or not q.known:
            out.append(_object_constraint(q))
    return tuple(out)


def _object_constraint(q: ObjectSpec) -> tuple:
    return ("count", q) if q.count is not None else ("exists", q)


class ShapesMatcher:
    """Image-text matching by checking a caption's constraints against detections.

    Score = fraction of constraints satisfied plus a tie-break below 0.01 for near misses (an
    object with most of the named attributes, a count off by one), so higher is a better fit.
    """

    backend_id = "shapes:matcher"
    version = MATCHER_VERSION
    working_side = WORKING_SIDE

    def __init__(self, detector: ShapesDetector | None = None):
        self.detector = detector or ShapesDetector()
        self.version = f"{MATCHER_VERSION}+det{self.detector.version}"

    def scores(self, image, texts: list[str]) -> list[float]:
        """One score in [0, 1.01) per text."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings")
        objs = self.detector.objects(image)
        return [self._score(objs, t) for t in texts]

    @staticmethod
    def _score(objs: list[ShapeObject], text: str) -> float:
        constraints = parse_caption(text)
        if not constraints:
            return 0.0
        hits, near = 0.0, 0.0
        for c in constraints:
            if c[0] == "exists":
                ok = any(c[1].matches(o) for o in objs)
                near += 1.0 if ok else max((c[1].partial(o) for o in objs), default=0.0)
            elif c[0] == "count":
                n = sum(c[1].matches(o) for o in objs)
                ok = n == c[1].count
                near += 1.0 / (1 + abs(n - c[1].count))
            else:
                _, qa, rel, qb = c
                ok = any(_holds(a, b, rel) for a in objs for b in objs if a is not b and qa.matches(a) and qb.matches(b))
                near += float(ok)
            hits += float(ok)
        return round(hits / len(constraints) + 0.009 * near / len(constraints), 6)


# ---- embedder ---------------------------------------------------------------------------------
class ShapesEmbedder(_LearnedWeights):
    """The shapes-world dual encoder (``builder.domains.shapes.nets.embed.DualEncoder``): images and captions in one space.

    Images go through ``detector`` (frozen) and the trained set encoder; texts through the
    trained clause encoder.

    ``ShapesEmbedder()`` loads the bundled weights (``weights/embed``), ``weights="dir"`` others.
    ``version`` includes a hash of the weights, so cached embeddings never outlive a retrain.
    """

    backend_id = "shapes:embedder"

    _train_command = "visforge engines train-embed --out DIR"

    @staticmethod
    def _load(weights: Path, device: str):
        from builder.domains.shapes.nets.embed import DualEncoder

        return DualEncoder.from_pretrained(weights).to(device)

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", batch_size: int = 256,
                 detector: ShapesDetector | None = None):
        from builder.domains.shapes.nets import embed

        self.detector = detector or ShapesDetector()
        version = self._use_weights(weights, embed.DEFAULT_WEIGHTS, device)
        self.version = f"{version}+det{self.detector.version}"
        self.batch_size = int(batch_size)

    @property
    def dim(self) -> int:
        """The embedding width."""
        return self.model.dim

    def embed_images(self, images: list) -> np.ndarray:
        """Unit image embeddings, from the objects the detector finds in each image."""
        import torch

        from builder.domains.shapes.nets.embed import object_inputs

        model, out = self.model, []
        with torch.inference_mode():
            for s in range(0, len(images), self.batch_size):
                chunk = [as_rgb_array(im) for im in images[s: s + self.batch_size]]
                x = object_inputs(chunk, self.detector).to(self.device)
                out.append(model.encode_images(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Unit text embeddings for captions or queries."""
        import torch

        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings")
        model, out = self.model, []
        with torch.inference_mode():
            for s in range(0, len(texts), self.batch_size):
                out.append(model.encode_texts(list(texts[s: s + self.batch_size])).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
