"""The one (image, question, answer) type and its dataset folder: fine-tuning and SelTDA share both.

A dataset folder (e.g. ``Workspace.dir("datasets", name)``)::

    images/<sha256-prefix>.png   each distinct image once, named by its content
    items.jsonl                  one JSON object per item: {"image", "question", "answer", "meta"}

``save_qa_dataset`` writes ``items.jsonl`` under a temporary name and renames it, so a dataset
appears complete or not at all; ``load_qa_dataset`` checks every line and names the file, the
line and the problem when one is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from builder.core.errors import UserError
from builder.core.images import ImageError, as_rgb_array, illumination_normalise, load_image

DATASET_FILE = "items.jsonl"


class QADatasetError(UserError, ValueError):
    """A QA item or dataset folder is malformed (the message names the file, line and problem)."""


class QADatasetExists(QADatasetError, FileExistsError):
    """``save_qa_dataset`` would replace an existing dataset without ``overwrite``."""


class QADatasetMissing(QADatasetError, FileNotFoundError):
    """The folder holds no ``items.jsonl``."""


@dataclass
class QA:
    """One training or evaluation triple. ``meta`` carries anything else (qtype, source, objects, ...)."""

    image: np.ndarray
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


def as_qa(item) -> QA:
    """A ``QA`` from a QA, an (image, question, answer[, meta]) tuple or a dict with those keys
    (keys other than image, question and answer become meta)."""
    if isinstance(item, QA):
        return item
    if isinstance(item, dict):
        missing = [k for k in ("image", "question", "answer") if k not in item]
        if missing:
            raise QADatasetError(f"a QA item needs image, question and answer; missing {missing}")
        meta = {k: v for k, v in item.items() if k not in ("image", "question", "answer")}
        return _checked(item["image"], item["question"], item["answer"], meta)
    if isinstance(item, (tuple, list)) and len(item) in (3, 4):
        meta = item[3] if len(item) == 4 else {}
        if not isinstance(meta, dict):
            raise QADatasetError(f"the fourth element of a QA tuple is its meta dict, got {type(meta).__name__}")
        return _checked(item[0], item[1], item[2], dict(meta))
    raise QADatasetError("expected a QA, an (image, question, answer[, meta]) tuple or a dict, "
                         f"got {type(item).__name__}")


def normalised(items: Iterable[QA]) -> list[QA]:
    """The items with their images illumination-normalised (``images.illumination_normalise``; each
    distinct image once): the test-time normalisation baseline of fine-tuning and SelTDA."""
    done: dict[int, np.ndarray] = {}
    out = []
    for q in items:
        if id(q.image) not in done:
            done[id(q.image)] = illumination_normalise(q.image)
        out.append(QA(done[id(q.image)], q.question, q.answer, q.meta))
    return out


def _checked(image, question, answer, meta: dict) -> QA:
    if not isinstance(question, str) or not question.strip():
        raise QADatasetError(f"a QA question must be a non-empty string, got {question!r}")
    if not isinstance(answer, (str, int, float, bool)) or not str(answer).strip():
        raise QADatasetError(f"a QA answer must be a non-empty string, got {answer!r}")
    try:
        pixels = as_rgb_array(image)
    except (ValueError, AttributeError) as e:
        raise QADatasetError(f"bad QA image: {e}") from None
    return QA(pixels, question, str(answer), meta)


def _image_name(image: np.ndarray) -> str:
    digest = hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest()[:16]
    return f"images/{digest}.png"


def save_qa_dataset(root: str | Path, items: Iterable, overwrite: bool = False) -> Path:
    """Write ``items`` (anything ``as_qa`` accepts) as a dataset folder at ``root`` (module docstring)."""
    from PIL import Image

    root = Path(root)
    if (root / DATASET_FILE).exists() and not overwrite:
        raise QADatasetExists(f"{root}: dataset exists; pass overwrite=True to replace it")
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for item in map(as_qa, items):
        rel = _image_name(item.image)
        if not (root / rel).exists():
            tmp = root / f"{rel}.tmp{os.getpid()}"
            Image.fromarray(item.image).save(tmp, format="PNG")
            os.replace(tmp, root / rel)
        lines.append(json.dumps({"image": rel, "question": item.question, "answer": item.answer, "meta": item.meta}))
    tmp = root / f"{DATASET_FILE}.tmp{os.getpid()}"
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, root / DATASET_FILE)  # the dataset appears complete or not at all
    return root


def load_qa_dataset(root: str | Path) -> list[QA]:
    """Read a dataset folder written by ``save_qa_dataset`` (images through the guarded loader)."""
    root = Path(root)
    path = root / DATASET_FILE
    if not path.is_file():
        raise QADatasetMissing(f"{root}: no {DATASET_FILE}; not a QA dataset folder")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise QADatasetError(f"expected a JSON object, got {type(row).__name__}")
            meta = row.get("meta", {})
            if not isinstance(meta, dict):
                raise QADatasetError(f"meta must be an object, got {type(meta).__name__}")
            out.append(_checked(load_image(root / row["image"]), row["question"], row["answer"], meta))
        except KeyError as e:
            raise QADatasetError(f"{path}:{n}: unreadable item (no {e} field)") from None
        except (json.JSONDecodeError, OSError, ImageError, QADatasetError) as e:
            raise QADatasetError(f"{path}:{n}: unreadable item ({e})") from None
    return out
