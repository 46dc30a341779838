"""SelTDA on a workspace: the Augment step of the notebooks, widgets and app."""

from __future__ import annotations

from pathlib import Path

from augment.seltda.detection import DetectionTeacher
from augment.seltda.generative import ShapesTeacher
from augment.seltda.labels import filter_pseudo_labels
from augment.seltda.pseudo import build_student_set, pseudo_label
from builder.core.images import load_image
from builder.core.progress import report as report_progress
from builder.core.qa import load_qa_dataset, save_qa_dataset


def augment_workspace(ws, labelled: str = "examples", unlabelled: str | Path = "unlabelled", name: str = "seltda",
                      ratio: float = 1.0, n_per_image: int = 2, top_p: float = 0.9, qgen_steps: int = 400,
                      seed: int = 0, progress: bool = True, teacher: str = "detection",
                      min_confidence: float = 0.6) -> dict:
    """SelTDA on a workspace with the shapes default: fit a teacher to ``datasets/<labelled>``
    (a QA dataset, e.g. the task's examples), pseudo-label the images of ``unlabelled`` (a folder,
    or a name under ``datasets/``), filter them (answerability, confidence >= ``min_confidence``,
    structure), and save real + synthetic at ``ratio`` as ``datasets/<name>`` for the Fine-tune
    step. ``teacher``: "detection" (``DetectionTeacher``, the default) or "generative"
    (``ShapesTeacher``, ``qgen_steps`` of training). Returns counts, the filter report and examples.
    """
    real = load_qa_dataset(ws.dir("datasets", labelled))
    folder = Path(unlabelled)
    if not folder.is_absolute():
        folder = ws.dir("datasets") / unlabelled
    paths = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if not paths:
        raise ValueError(f"{folder}: no unlabelled images (.png/.jpg/.webp) to pseudo-label")
    images = [load_image(p) for p in paths]
    report_progress(f"fitting the {teacher} teacher to {len(real)} examples", 0.0, done=0, total=len(images),
                    unit="images")
    if teacher == "detection":
        model = DetectionTeacher(min_score=min_confidence)
        model.train(real)
    elif teacher == "generative":
        from builder.tools.backends.shapes import ShapesVQA  # loads torch (the "ml" extra)

        model = ShapesTeacher.create(ShapesVQA().model, [q.question for q in real])
        model.train(real, qgen_steps=qgen_steps, seed=seed, progress=progress)
        min_confidence = 0.0
    else:
        raise ValueError(f"unknown teacher {teacher!r}; use 'detection' or 'generative'")
    model.save_pretrained(ws.dir("checkpoints", f"{name}-teacher"))
    raw = pseudo_label(model, images, n_per_image=n_per_image, top_p=top_p, seed=seed, progress=progress)
    report_progress(f"filtering {len(raw)} pseudo-labels", 1.0, done=len(images), total=len(images),
                    unit="images")
    kept, report = filter_pseudo_labels(raw, model.answers, min_confidence=min_confidence)
    student = build_student_set(real, kept, images, ratio, seed=seed)
    path = save_qa_dataset(ws.dir("datasets", name), student, overwrite=True)
    return {"dataset": str(path), "real": len(real), "synthetic": len(student) - len(real),
            "unlabelled_images": len(images), "teacher": teacher, "filter": report.to_dict(),
            "examples": [{"image": paths[lab.image].name, "question": lab.question, "answer": lab.answer}
                         for lab in kept[:10]]}
