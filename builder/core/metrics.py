"""Scoring a program's output against an expected output (binary per example).

Used for the engineer's pass/fail per example, for batch accuracy and as the reward of
reinforced self-training: exact match for answers, IoU >= 0.5 for boxes, the right index for
choices, a video frame within 2 frames, every field of an event summary. A wrong type or an error scores 0 rather than raising.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from builder.core.taskcard import SUMMARY_FIELDS, Metric, OutputKind

_YES = {"yes", "true", "y"}
_NO = {"no", "false", "n"}


def normalise_text(value: Any) -> str | None:
    """Canonical answer text: lower-case, trimmed, bools as yes/no, whole floats as ints."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:g}"
    if isinstance(value, str):
        text = " ".join(value.strip().lower().split()).rstrip(".")
        return text
    return None


def as_boxes(value: Any) -> list[list[float]] | None:
    """Boxes from a program output: a patch dict, a box, or a list of either; None if neither."""
    if isinstance(value, dict) and "box" in value:
        value = [value]
    if _is_box(value):
        value = [value]
    if not isinstance(value, list):
        return None
    boxes = []
    for item in value:
        if isinstance(item, dict) and "box" in item:
            item = item["box"]
        if not _is_box(item):
            return None
        boxes.append([float(c) for c in item])
    return boxes


def _is_box(v: Any) -> bool:
    return (
        isinstance(v, (list, tuple))
        and len(v) == 4
        and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in v)
    )


def box_iou(a, b) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def boxes_match(pred: list, expected: list, threshold: float = 0.5) -> bool:
    """True if the boxes pair up one-to-one (same count) with IoU >= threshold each."""
    if len(pred) != len(expected):
        return False
    if not pred:
        return True
    iou = np.array([[box_iou(p, e) for e in expected] for p in pred])
    rows, cols = linear_sum_assignment(-iou)  # the best one-to-one pairing
    return bool(np.all(iou[rows, cols] >= threshold))


FRAME_TOLERANCE = 2


def _as_frame(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        return None
    return int(value)


def summary_field_scores(value: Any, expected: dict) -> dict[str, bool]:
    """Each summary field scored on its own: ``objects`` (the same names, any order), ``frame``
    (within ``FRAME_TOLERANCE``), ``before`` and ``after`` (every object's motion right)."""
    if not isinstance(value, dict):
        return {f: False for f in SUMMARY_FIELDS}
    objs = value.get("objects")
    frame, exp_frame = _as_frame(value.get("frame")), expected["frame"]

    def motions(d):
        if not isinstance(d, dict):
            return None
        return {normalise_text(k): normalise_text(v) for k, v in d.items()}

    return {
        "objects": isinstance(objs, list) and sorted(normalise_text(o) or "" for o in objs)
        == sorted(normalise_text(o) or "" for o in expected["objects"]),
        "frame": frame is not None and abs(frame - exp_frame) <= FRAME_TOLERANCE,
        "before": motions(value.get("before")) == motions(expected["before"]),
        "after": motions(value.get("after")) == motions(expected["after"]),
    }


def score(output: OutputKind | str, value: Any, expected: Any, metric: Metric | str | None = None) -> bool:
    """Whether ``value`` counts as correct for ``expected`` under the task's output kind."""
    output = OutputKind(output)
    metric = Metric(metric) if metric is not None else None
    if metric is Metric.frame_within_2 or (metric is None and output is OutputKind.frame):
        frame = _as_frame(value)
        return frame is not None and abs(frame - int(expected)) <= FRAME_TOLERANCE
    if metric is Metric.summary_fields or (metric is None and output is OutputKind.summary):
        return isinstance(expected, dict) and all(summary_field_scores(value, expected).values())
    if metric is Metric.iou50 or (metric is None and output is OutputKind.boxes):
        pred, exp = as_boxes(value), as_boxes(expected)
        return pred is not None and exp is not None and boxes_match(pred, exp)
    if metric is Metric.choice_accuracy or (metric is None and output is OutputKind.choice):
        # Strictly an integer index: a digit string from e.g. str(image.count(...)) would
        # otherwise be rewarded by chance in self-training.
        if isinstance(value, bool) or not isinstance(value, int):
            return False
        return value == int(expected)
    if output is OutputKind.bool:
        v = normalise_text(value)
        e = normalise_text(expected)
        if v in _YES | _NO and e in _YES | _NO:
            return (v in _YES) == (e in _YES)
        return False
    v, e = normalise_text(value), normalise_text(expected)
    return v is not None and v == e
