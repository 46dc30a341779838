"""The detection-conditioned teacher (the shapes-world default): questions and answers from what the shapes detector sees."""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from augment.seltda.labels import TEACHER_QTYPES, UNANSWERABLE, format_qa
from augment.seltda.truth import world_answer
from builder.core.artifacts import Artifact
from builder.core.images import illumination_normalise
from builder.core.qa import as_qa
from builder.domains.shapes.world.scene import SIZES, Scene, SceneObject
from builder.domains.shapes.world.tasks import ANSWER_VOCAB, make_example, question_patterns


def _detected_scene(objects, width: int, height: int) -> Scene:
    """The detections as a scene graph (what the teacher saw, not ground truth)."""
    return Scene(width, height, tuple(SceneObject(o.shape, o.color, o.size, tuple(o.box)) for o in objects))


class DetectionTeacher(Artifact):
    """Questions and answers from what the shapes detector sees (module docstring).

    ``train`` learns the question-type mix of the labelled set; ``generate_scored`` writes
    ``n`` labels per image with a confidence each.
    """

    architecture = "seltda-detection-teacher"

    def __init__(self, qtype_prior: dict[str, float] | None = None, min_score: float = 0.7):
        from builder.tools.backends.shapes import ShapesDetector

        self.qtype_prior = dict(qtype_prior or {q: 1.0 for q in TEACHER_QTYPES})
        self.min_score = float(min_score)
        # two views: different light estimates and chroma thresholds; they must agree
        self.views = ((ShapesDetector(), 31), (ShapesDetector(chroma_threshold=45), 45))
        self.answers = list(ANSWER_VOCAB) + list(SIZES)

    def train(self, items: Sequence, seed: int = 0, progress: bool = False, **_) -> dict:
        """Estimate the question-type mix of the labelled items (add-half smoothing)."""
        counts = Counter()
        # "What color is the object left of the red star?" also fits the attribute pattern
        # (object name "object left of the red star"): relational patterns are tried first
        patterns = sorted(question_patterns(), key=lambda p: p[0] != "relate_attr")
        for q in (as_qa(x) for x in items):
            text = " ".join(q.question.lower().split()).rstrip("?.").strip()
            qtype = next((t for t, rx in patterns if rx.match(text)), None)
            if qtype in TEACHER_QTYPES:
                counts[qtype] += 1
        self.qtype_prior = {q: counts[q] + 0.5 for q in TEACHER_QTYPES}
        total = sum(self.qtype_prior.values())
        self.qtype_prior = {q: round(v / total, 4) for q, v in self.qtype_prior.items()}
        return {"qtype_prior": self.qtype_prior, "parsed": sum(counts.values())}

    def views_of(self, image: np.ndarray) -> tuple[list[Scene], float]:
        """The image's scene graph under each detector view, and the lowest detection score of
        the first view (0 when it finds nothing)."""
        h, w = image.shape[:2]
        found = [det.objects(illumination_normalise(image, kernel=k)) for det, k in self.views]
        return [_detected_scene(objs, w, h) for objs in found], min((o.score for o in found[0]), default=0.0)

    def generate_scored(self, images: Sequence[np.ndarray], n: int = 2, top_p: float = 0.9,
                        temperature: float = 1.0, seed: int = 0, **_) -> list[list[tuple[str, float]]]:
        """``n`` (text, confidence) labels per image; unanswerable ones say so (confidence 0)."""
        qtypes = list(self.qtype_prior)
        p = np.array([self.qtype_prior[q] for q in qtypes], np.float64) ** (1 / max(temperature, 1e-6))
        p /= p.sum()
        order = np.argsort(-p)
        keep = np.zeros(len(p), bool)
        keep[order[(np.cumsum(p[order]) - p[order]) < top_p]] = True  # nucleus over question types
        p = np.where(keep, p, 0)
        p /= p.sum()
        out = []
        for image in images:
            image = np.asarray(image, np.uint8)
            # seeded by the pixels, not the position in a batch: any batching gives the same labels
            rng = np.random.default_rng([seed % 2**63, zlib.crc32(image.tobytes()), 17])
            (main, *others), score = self.views_of(image)
            labels = []
            for _ in range(n):
                ex = None
                for _try in range(4):
                    qtype = qtypes[int(rng.choice(len(qtypes), p=p))]
                    ex = make_example(main, rng, "vqa", qtype, 0.0) if main.objects else None
                    if ex is not None:
                        break
                if ex is None:
                    continue
                second = [world_answer(v, ex["query"]) for v in others]
                if any(a is None for a in second):
                    labels.append((format_qa(ex["query"], UNANSWERABLE), 0.0))
                    continue
                agree = all(a == ex["expected"] for a in second)
                labels.append((format_qa(ex["query"], ex["expected"]), round(score if agree else 0.0, 4)))
            out.append(labels)
        return out

    def generate(self, images: Sequence[np.ndarray], n: int = 2, top_p: float = 0.9, temperature: float = 1.0,
                 max_len: int | None = None, seed: int = 0) -> list[list[str]]:
        """Texts only (see ``generate_scored``)."""
        return [[t for t, _ in row] for row in self.generate_scored(images, n, top_p, temperature, seed)]

    def artifact_config(self) -> dict:
        return {"qtype_prior": self.qtype_prior, "min_score": self.min_score}

    def _save_files(self, folder: Path) -> None:
        pass  # the question-type prior is its whole state (in config.json)

    @classmethod
    def _from_files(cls, folder: Path, config: dict, info: dict) -> DetectionTeacher:
        return cls(config["qtype_prior"], config["min_score"])
