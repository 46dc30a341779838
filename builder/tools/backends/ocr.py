"""OCR with RapidOCR: PP-OCRv4 text detection + recognition, run by onnxruntime.

The ONNX models ship inside the ``rapidocr-onnxruntime`` wheel, so this engine works offline
with real pretrained weights. Install it with ``pip install --no-deps rapidocr-onnxruntime``
(its ``opencv-python`` requirement would replace the headless OpenCV) plus ``visforge[ocr]``.

onnxruntime writes a small cache under ``~/.cache/Microsoft`` when it starts a session; only
``HOME`` moves it, so hermetic runs (tests, sandboxes) point ``HOME`` at a scratch directory
before the first ``read``.
"""

from __future__ import annotations

import threading
from importlib import metadata

import numpy as np

from builder.tools.engines import TextSpan, as_rgb_array

# Bump when this backend's outputs change for the same RapidOCR version and inputs.
BEHAVIOUR_VERSION = "1"


def _dist_version(name: str) -> str:
    # Package metadata, not an import: building the engine must stay cheap.
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


def reading_order(spans: list[TextSpan]) -> list[TextSpan]:
    """Sort spans top-to-bottom by line, then left-to-right within a line.

    Two spans share a line when their vertical centres are closer than half the smaller
    height, so words on one slightly uneven baseline stay together instead of being ordered
    by a pixel of difference in their top edges.
    """
    lines: list[list[TextSpan]] = []
    for span in sorted(spans, key=lambda s: (s.box[1] + s.box[3]) / 2):
        centre, height = (span.box[1] + span.box[3]) / 2, span.box[3] - span.box[1]
        if lines:
            line = lines[-1]
            line_centre = sum((s.box[1] + s.box[3]) / 2 for s in line) / len(line)
            line_height = min(s.box[3] - s.box[1] for s in line)
            if abs(centre - line_centre) < 0.5 * min(height, line_height):
                line.append(span)
                continue
        lines.append([span])
    return [span for line in lines for span in sorted(line, key=lambda s: (s.box[0], s.box[1]))]


class RapidOCREngine:
    """Reads text with RapidOCR (PP-OCRv4); the ONNX sessions start on the first ``read``.

    ``min_score`` drops recognitions RapidOCR scores below it (its own default, 0.5);
    ``threads`` caps onnxruntime's intra-op threads (``None``: onnxruntime decides), which
    matters on small shared machines.
    """

    def __init__(self, min_score: float = 0.5, threads: int | None = None):
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"RapidOCREngine: min_score must be in [0, 1], got {min_score}")
        if threads is not None and threads < 1:
            raise ValueError(f"RapidOCREngine: threads must be at least 1, got {threads}")
        self.min_score = float(min_score)
        self.threads = threads
        self.backend_id = f"rapidocr:{_dist_version('rapidocr-onnxruntime')}"
        self.version = (
            f"{BEHAVIOUR_VERSION}/onnxruntime-{_dist_version('onnxruntime')}/min_score={self.min_score}"
        )
        self._lock = threading.Lock()
        self._ocr = None

    def _load(self):
        if self._ocr is None:
            with self._lock:
                if self._ocr is None:
                    try:
                        from rapidocr_onnxruntime import RapidOCR
                    except ImportError as e:
                        raise ImportError(
                            "RapidOCREngine needs rapidocr-onnxruntime: "
                            "pip install --no-deps rapidocr-onnxruntime && pip install visforge[ocr]"
                        ) from e
                    options = {"text_score": self.min_score}
                    if self.threads is not None:
                        options["intra_op_num_threads"] = self.threads
                    self._ocr = RapidOCR(**options)
        return self._ocr

    def warmup(self) -> None:
        """Start the ONNX sessions now instead of on the first ``read``."""
        self._load()

    def read(self, image: np.ndarray) -> list[TextSpan]:
        """All text in ``image`` as spans in reading order; [] when there is none."""
        image = as_rgb_array(image)
        h, w = image.shape[:2]
        ocr = self._load()
        # RapidOCR takes numpy arrays as OpenCV BGR (it converts only files and PIL images).
        result, _ = ocr(np.ascontiguousarray(image[:, :, ::-1]))
        spans = []
        for quad, text, score in result or []:
            pts = np.asarray(quad, dtype=np.float64).reshape(-1, 2)
            # The axis-aligned box around the (possibly rotated) quad, rounded outwards and
            # clipped to the image; x1/y1 exclusive.
            x0 = int(np.clip(np.floor(pts[:, 0].min()), 0, w))
            y0 = int(np.clip(np.floor(pts[:, 1].min()), 0, h))
            x1 = int(np.clip(np.ceil(pts[:, 0].max()) + 1, 0, w))
            y1 = int(np.clip(np.ceil(pts[:, 1].max()) + 1, 0, h))
            text = str(text).strip()
            if text and x1 > x0 and y1 > y0:
                spans.append(TextSpan(text=text, box=(x0, y0, x1, y1), score=float(score)))
        return reading_order(spans)
