"""Task cards: what the customer wants, in words and examples, as YAML on disk.

A card names the task, describes it, fixes the output kind and the metric, and lists examples
(image or images, query, optional choices, expected output). Loading a malformed card raises
``TaskCardError`` naming the file, the field and the problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from builder.core.atomic import atomic_write_text
from builder.core.errors import UserError


class OutputKind(StrEnum):
    """What a program for the task returns."""

    text = "text"  # a short answer string
    bool = "bool"  # yes / no
    count = "count"  # type: ignore[assignment]  # a non-negative integer (shadows str.count by design)
    boxes = "boxes"  # a list of [x0, y0, x1, y1] boxes
    choice = "choice"  # the index of the right caption or image
    frame = "frame"  # a video frame index
    summary = "summary"  # a structured summary of a video event (objects, frame, before, after)


class Metric(StrEnum):
    """How an output is scored against the expected one (binary per example)."""

    exact_match = "exact_match"  # normalised string equality
    iou50 = "iou50"  # every expected box matched one-to-one with IoU >= 0.5
    choice_accuracy = "choice_accuracy"  # the chosen index is the expected one
    frame_within_2 = "frame_within_2"  # a frame index at most 2 frames from the expected one
    summary_fields = "summary_fields"  # every field of a summary right (see metrics.summary_field_scores)


DEFAULT_METRIC = {
    OutputKind.text: Metric.exact_match,
    OutputKind.bool: Metric.exact_match,
    OutputKind.count: Metric.exact_match,
    OutputKind.boxes: Metric.iou50,
    OutputKind.choice: Metric.choice_accuracy,
    OutputKind.frame: Metric.frame_within_2,
    OutputKind.summary: Metric.summary_fields,
}
SUMMARY_FIELDS = ("objects", "frame", "before", "after")

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
MAX_EXAMPLES = 10_000


class Example(BaseModel):
    """One example: image path(s) relative to the card's folder, the query, the expected output.

    A path ending in .mp4/.m4v/.mov is a video: the program receives a ``VideoSegment`` for it."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    image: str | list[str]
    query: str = ""
    choices: list[str] | None = None
    expected: Any

    @field_validator("image")
    @classmethod
    def _images_not_empty(cls, v):
        paths = [v] if isinstance(v, str) else v
        if not paths:
            raise ValueError("needs at least one image path")
        if any(not p.strip() for p in paths):
            raise ValueError("image paths must not be empty")
        return v

    @property
    def images(self) -> list[str]:
        """The image paths as a list (one entry for single-image examples)."""
        return [self.image] if isinstance(self.image, str) else list(self.image)


class TaskCard(BaseModel):
    """A customer task: description, output kind, metric and examples."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = Field(min_length=1)
    output: OutputKind
    metric: Metric | None = None
    examples: list[Example] = Field(default_factory=list, max_length=MAX_EXAMPLES)

    @field_validator("name")
    @classmethod
    def _name_is_slug(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(
                "must be lower-case letters, digits, '-' or '_', starting with a letter (at most 64)"
            )
        return v

    @model_validator(mode="after")
    def _check_examples(self) -> TaskCard:
        if self.metric is None:
            self.metric = DEFAULT_METRIC[self.output]
        for i, ex in enumerate(self.examples):
            try:
                ex.expected = normalise_expected(self.output, ex.expected, ex)
            except ValueError as e:
                # Re-raised as a pydantic error so the location names the example and field.
                raise _FieldError(("examples", i, "expected"), str(e)) from None
        return self


class _FieldError(ValueError):
    def __init__(self, loc: tuple, msg: str):
        super().__init__(msg)
        self.loc = loc


class TaskCardError(UserError, ValueError):
    """A task card could not be loaded; the message names the file, the field and the problem."""


def normalise_expected(kind: OutputKind, value: Any, example: Example | None = None) -> Any:
    """Check an expected output against the output kind and return it in canonical form.

    Raises ValueError naming the problem; ``example`` (when given) bounds a choice index.
    """
    check = _EXPECTED_CHECKS.get(kind) if isinstance(kind, OutputKind) else None
    if check is None:
        raise ValueError(f"unknown output kind {kind!r}")
    return check(value, example)


def _expected_text(value: Any, example: Example | None) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a short text answer, got {type(value).__name__} {value!r}")
    return str(value)


def _expected_bool(value: Any, example: Example | None) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("yes", "no", "true", "false"):
        return value.strip().lower() in ("yes", "true")
    raise ValueError(f"expected yes/no (a bool), got {value!r}")


def _expected_count(value: Any, example: Example | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a non-negative integer count, got {value!r}")
    return value


def _expected_boxes(value: Any, example: Example | None) -> list:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of boxes [x0, y0, x1, y1], got {value!r}")
    boxes = []
    for j, box in enumerate(value):
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in box)
        ):
            raise ValueError(f"box {j} must be [x0, y0, x1, y1] numbers, got {box!r}")
        x0, y0, x1, y1 = box
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"box {j} {box} has x1 <= x0 or y1 <= y0")
        boxes.append([float(c) if isinstance(c, float) else c for c in box])
    return boxes


def _expected_choice(value: Any, example: Example | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected the index of the right choice (an integer), got {value!r}")
    if example is not None:
        n = len(example.choices) if example.choices else len(example.images)
        if n < 2:
            raise ValueError("a choice example needs at least two choices or two images")
        if not 0 <= value < n:
            raise ValueError(f"choice index {value} is outside 0..{n - 1}")
    return value


def _expected_frame(value: Any, example: Example | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a frame index (a non-negative integer), got {value!r}")
    return value


def _expected_summary(value: Any, example: Example | None) -> dict:
    if not isinstance(value, dict) or set(value) != set(SUMMARY_FIELDS):
        raise ValueError(f"expected a summary with exactly the fields {', '.join(SUMMARY_FIELDS)}, got {value!r}")
    objs, frame = value["objects"], value["frame"]
    if not isinstance(objs, list) or not all(isinstance(o, str) for o in objs):
        raise ValueError("summary objects must be a list of object names")
    if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
        raise ValueError(f"summary frame must be a non-negative integer, got {frame!r}")
    for f in ("before", "after"):
        if not isinstance(value[f], dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in value[f].items()):
            raise ValueError(f"summary {f} must map object names to what they did")
    return {"objects": sorted(objs), "frame": frame, "before": dict(value["before"]), "after": dict(value["after"])}


_EXPECTED_CHECKS: dict[OutputKind, Callable[[Any, Example | None], Any]] = {
    OutputKind.text: _expected_text,
    OutputKind.bool: _expected_bool,
    OutputKind.count: _expected_count,
    OutputKind.boxes: _expected_boxes,
    OutputKind.choice: _expected_choice,
    OutputKind.frame: _expected_frame,
    OutputKind.summary: _expected_summary,
}


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(card)"


def parse_task_card(data: Any, source: str = "<task card>") -> TaskCard:
    """Validate already-parsed YAML/JSON data as a task card."""
    if not isinstance(data, dict):
        raise TaskCardError(f"{source}: the card must be a mapping of fields, got {type(data).__name__}")
    try:
        return TaskCard.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, _FieldError):
                problems.append(f"{_format_loc(ctx_err.loc)}: {ctx_err}")
                continue
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            elif err["type"] == "missing":
                msg = "required field is missing"
            problems.append(f"{_format_loc(tuple(err['loc']))}: {msg}")
        raise TaskCardError(f"{source}: " + "; ".join(problems)) from None


def load_task_card(path: str | Path, check_images: bool = False) -> TaskCard:
    """Load and validate a task card from YAML. With ``check_images`` every image must exist."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskCardError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise TaskCardError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(e, "problem", None) or str(e)
        raise TaskCardError(f"{path}: not valid YAML{where}: {problem}") from None
    card = parse_task_card(data, str(path))
    if check_images:
        missing = [
            f"examples[{i}].image: {p} does not exist"
            for i, ex in enumerate(card.examples)
            for p in ex.images
            if not (path.parent / p).is_file()
        ]
        if missing:
            raise TaskCardError(f"{path}: " + "; ".join(missing))
    return card


def dump_task_card(card: TaskCard) -> str:
    """The card as YAML text."""
    return yaml.safe_dump(card.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True)


def save_task_card(card: TaskCard, path: str | Path) -> Path:
    """Write the card as YAML, atomically (a crash leaves the previous file intact)."""
    path = Path(path)
    atomic_write_text(path, dump_task_card(card))
    return path


def new_example_ids(examples: list[Example] | list[dict[str, Any]], prefix: str, n: int) -> list[str]:
    """``n`` example ids ``<prefix><4 digits>`` not yet used by ``examples`` (cards, uploads and
    search results all name their examples this way, so each can be edited or deleted by id)."""
    taken = {ex.get("id") if isinstance(ex, dict) else ex.id for ex in examples}
    out: list[str] = []
    i = len(examples)
    while len(out) < n:
        candidate = f"{prefix}{i:04d}"
        if candidate not in taken:
            out.append(candidate)
            taken.add(candidate)
        i += 1
    return out
