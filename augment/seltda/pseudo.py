"""Pseudo-labelling (in-process or over a Ray Data actor pool), the student's training set and its augmentation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from augment.seltda.labels import PseudoLabel
from builder.core.artifacts import ArtifactError, load_artifact
from builder.core.images import load_image
from builder.core.progress import report as report_progress
from builder.core.qa import QA, as_qa
from builder.core.seeding import derive_seed, numpy_rng
from builder.run.ray import ray_session


def load_teacher(path: str | Path):
    """A teacher folder saved by ``save_pretrained`` (any kind: its config.json names it; the
    package's ``__init__`` imports every teacher module, so each architecture is registered)."""
    from augment.seltda.blip import BlipTeacher
    from augment.seltda.detection import DetectionTeacher
    from augment.seltda.generative import ShapesTeacher

    teacher = load_artifact(path)
    if not isinstance(teacher, (DetectionTeacher, ShapesTeacher, BlipTeacher)):
        raise ArtifactError(f"{path}: holds a {teacher.architecture!r}, not a SelTDA teacher")
    return teacher


def _read_image(item) -> np.ndarray:
    return item if isinstance(item, np.ndarray) else load_image(item)


def pseudo_label(teacher, images: Sequence, n_per_image: int = 2, top_p: float = 0.9, batch_size: int = 128,
                 seed: int = 0, progress: bool = True) -> list[PseudoLabel]:
    """Raw (unfiltered) teacher outputs for unlabelled images (arrays or paths)."""
    if not 1 <= n_per_image <= 8:
        raise ValueError(f"n_per_image must be in 1..8, got {n_per_image}")
    out: list[PseudoLabel] = []
    for s in tqdm(range(0, len(images), batch_size), desc="pseudo-labels", disable=not progress,
                  total=-(-len(images) // batch_size)):
        chunk = [_read_image(x) for x in images[s:s + batch_size]]
        scored = _generate_scored(teacher, chunk, n_per_image, top_p, derive_seed(seed, "batch", s))
        out += [PseudoLabel(s + i, t, confidence=c) for i, ts in enumerate(scored) for t, c in ts]
        done = min(len(images), s + batch_size)
        report_progress("pseudo-labelling", done=done, total=len(images), unit="images")
    return out


def _generate_scored(teacher, images, n: int, top_p: float, seed: int) -> list[list[tuple[str, float]]]:
    """(text, confidence) per label; teachers without confidences give 1.0."""
    if hasattr(teacher, "generate_scored"):
        return teacher.generate_scored(images, n=n, top_p=top_p, seed=seed)
    return [[(t, 1.0) for t in row] for row in teacher.generate(images, n=n, top_p=top_p, seed=seed)]


class _RayTeacher:
    """One Ray actor: loads the teacher folder once, labels batches of image paths."""

    def __init__(self, teacher_dir: str, n: int, top_p: float, seed: int):
        import torch

        torch.set_num_threads(1)
        self.teacher, self.n, self.top_p, self.seed = load_teacher(teacher_dir), n, top_p, seed

    def __call__(self, batch: dict) -> dict:
        images = [_read_image(str(p)) for p in batch["path"]]
        first = int(batch["order"][0])
        scored = _generate_scored(self.teacher, images, self.n, self.top_p, derive_seed(self.seed, "batch", first))
        return {"order": batch["order"], "texts": np.array([json.dumps(t) for t in scored], dtype=object)}


def pseudo_label_ray(teacher_dir: str | Path, image_paths: Sequence[str | Path], n_per_image: int = 2,
                     top_p: float = 0.9, workers: int = 2, batch_size: int = 64, seed: int = 0,
                     progress: bool = True) -> list[PseudoLabel]:
    """``pseudo_label`` over a large folder with a Ray Data actor pool (each actor loads the
    saved teacher once). Returns labels in input order."""
    ray = ray_session(workers, progress)
    ds = ray.data.from_items([{"order": i, "path": str(p)} for i, p in enumerate(image_paths)])
    ds = ds.map_batches(_RayTeacher, fn_constructor_args=(str(teacher_dir), n_per_image, top_p, seed),
                        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers))
    rows = sorted(ds.take_all(), key=lambda r: int(r["order"]))
    return [PseudoLabel(int(r["order"]), t, confidence=float(c)) for r in rows for t, c in json.loads(r["texts"])]



def augment_image(image: np.ndarray, rng: np.random.Generator, max_shift: int = 2, noise: float = 6.0) -> np.ndarray:
    """Photometric jitter and a small translation; never a flip (left/right answers would flip),
    never a hue change (colour names are answers)."""
    img = image.astype(np.float32)
    img = (img - 128) * rng.uniform(0.85, 1.15) + 128 + rng.uniform(-15, 15)  # contrast, brightness
    if noise:
        img = img + rng.normal(0, rng.uniform(0, noise), img.shape)
    dx, dy = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    img = np.roll(img, (dy, dx), axis=(0, 1))  # small shifts keep every object (margins are >= 1 px)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_augment(seed: int = 0):
    """An ``augment`` callable for ``builder.methods.finetune.finetune`` (its RNG derives from torch's
    per-epoch seed, so a resumed run replays the same augmentations)."""
    import torch

    def aug(image: np.ndarray) -> np.ndarray:
        return augment_image(image, numpy_rng(seed, int(torch.randint(2**31, (1,)))))

    return aug


def build_student_set(real: Sequence, labels: Sequence[PseudoLabel], images: Sequence, ratio: float,
                      seed: int = 0) -> list[QA]:
    """Real + synthetic items at ``ratio`` synthetic:real (e.g. 1 for 1:1, 2 for 2:1).

    Synthetic items are drawn without replacement from the filtered ``labels`` (images index
    into ``images``); if there are too few, all are used and ``meta["short"]`` says so.
    """
    if ratio < 0:
        raise ValueError("ratio must be >= 0")
    # new items: the caller's items (and their meta) stay as they are
    real = [QA(q.image, q.question, q.answer, {"source": "real", **q.meta}) for q in map(as_qa, real)]
    want = round(ratio * len(real))
    order = numpy_rng(seed, 31).permutation(len(labels))[:want]
    synth = []
    for i in order:
        lab = labels[int(i)]
        synth.append(QA(_read_image(images[lab.image]), lab.question, lab.answer,
                        {"source": "synthetic", "image_index": lab.image, "short": want > len(labels)}))
    return real + synth
