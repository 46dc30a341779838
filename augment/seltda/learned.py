"""The learned SelTDA teacher: the VQA model fine-tuned on the labelled target set asks and answers.

SelTDA (Khan et al., CVPR 2023) fine-tunes the vision-language model itself on the small labelled
target set and lets it write question-answer pairs for unlabelled target images. Here:

* the answerer is the shapes VQA network fine-tuned on the labelled target items (by the caller,
  e.g. ``builder.methods.finetune.finetune``; ``VQATeacher.create`` copies it);
* the question generator is ``ShapesTeacher``'s image-conditioned GRU, trained on the labelled
  questions with teacher forcing;
* for each unlabelled image, ``generate_scored`` samples questions, then answers each one
  several times: on the image and on ``views - 1`` photometric/shift augmentations of it (never a
  flip or a hue change), and on the image with the question re-phrased by another training
  template of its type. The answer is the argmax of the mean answer distribution; its
  confidence is the mean probability of that answer, and 0 unless every view and paraphrase
  gives the same argmax (consistency). Questions in no known phrasing are marked unanswerable.
  A question that names an object ("the red star") is kept only if the teacher itself, asked
  "How many red stars are there?" the same way, answers 1 consistently (its own answerability
  check: the world asks only about unique objects).

The teacher sees pixels and question text only: no scene graph, detector or answer function
(``augment.seltda.truth`` measures precision afterwards, outside the teacher).
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from augment.seltda.generative import ShapesTeacher
from augment.seltda.labels import UNANSWERABLE, format_qa
from augment.seltda.pseudo import augment_image
from builder.core.artifacts import load_state, save_state
from builder.domains.shapes.world.tasks import TEMPLATES, question_patterns


def _normal(question: str) -> str:
    return " ".join(question.lower().split()).rstrip("?.").strip()


@lru_cache(maxsize=1)
def _train_patterns() -> list[tuple[str, str, object]]:
    """(qtype, template text, regex) of the training phrasings only (held-out ones stay unseen)."""
    texts = {(t.qtype, t.text) for t in TEMPLATES if t.family == "vqa" and t.split == "train" and t.qtype != "read"}
    by_text = {}
    for (qtype, rx), tmpl in zip(question_patterns(), _all_vqa_texts(), strict=True):
        if (qtype, tmpl) in texts:
            by_text[tmpl] = (qtype, tmpl, rx)
    # relational patterns first: "what color is the object left of the red star" also fits "attribute"
    return sorted(by_text.values(), key=lambda p: p[0] != "relate_attr")


def _all_vqa_texts() -> list[str]:
    from builder.domains.shapes.world.tasks import SIZE_PHRASINGS

    return [t.text for t in TEMPLATES if t.family == "vqa"] + list(SIZE_PHRASINGS)


def parse_question(question: str) -> tuple[str, str, dict] | None:
    """(qtype, template, slot values) of a question in a training phrasing, else None."""
    q = _normal(question)
    for qtype, tmpl, rx in _train_patterns():
        m = rx.match(q)
        if m:
            return qtype, tmpl, m.groupdict()
    return None


# Slots that name one object, per question type: the teacher checks it sees exactly one of each.
REFERENCE_SLOTS = {"attribute": ("obj",), "relation": ("a", "b"), "relate_attr": ("b",), "same_color": ("obj",)}


def reference_checks(question: str) -> list[str]:
    """Count questions ("How many red stars are there?") for the objects a question names as
    unique; [] when it names none or does not parse."""
    from builder.core.errors import UserError
    from builder.domains.shapes.vocab import parse_phrase

    parsed = parse_question(question)
    if parsed is None:
        return []
    qtype, _, slots = parsed
    out = []
    for slot in REFERENCE_SLOTS.get(qtype, ()):
        try:
            out.append(f"How many {parse_phrase(slots[slot], strict=True).name(plural=True)} are there?")
        except (UserError, ValueError):
            return ["?"]  # an object phrase the world does not know: fails the check
    return out


def paraphrases(question: str) -> list[str]:
    """The question in the other training templates of its type that take the same slots."""
    parsed = parse_question(question)
    if parsed is None:
        return []
    qtype, tmpl, slots = parsed
    out = []
    for t in TEMPLATES:
        if t.family == "vqa" and t.split == "train" and t.qtype == qtype and t.text != tmpl:
            try:
                out.append(t.text.format(**slots))
            except KeyError:  # another slot set ("Is there {a_obj}?" vs "Are there any {objs}?")
                continue
    return out


class VQATeacher(ShapesTeacher):
    """The learned teacher (module docstring): a fine-tuned VQA answerer and a question generator."""

    architecture = "seltda-vqa-teacher"

    def __init__(self, qgen, answerer, views: int = 4):
        super().__init__(qgen, answerer)
        self.views = int(views)
        self.last_stats: Counter = Counter()  # what the latest generate_scored kept and why it dropped

    @classmethod
    def create(cls, answerer, questions: Sequence[str], views: int = 4, **qgen_kw) -> VQATeacher:
        """A teacher around a copy of ``answerer`` (the VQA model fine-tuned on the labelled target
        set) with a fresh question generator over the words of ``questions``."""
        base = ShapesTeacher.create(answerer, questions, **qgen_kw)
        return cls(base.qgen, base.answerer, views)

    def _view_images(self, image: np.ndarray) -> list[np.ndarray]:
        # seeded by the pixels: the same image always gets the same views, in any batch
        rng = np.random.default_rng([zlib.crc32(np.ascontiguousarray(image).tobytes()), 23])
        return [image] + [augment_image(image, rng) for _ in range(self.views - 1)]

    def answer_distributions(self, images: Sequence[np.ndarray], questions: Sequence[Sequence[str]]):
        """For each image and each of its questions: (answer, confidence, consistent), from the mean
        answer distribution over the views of the image and the question's paraphrases."""
        import torch

        out = []
        self.answerer.eval()
        with torch.no_grad():
            for image, qs in zip(images, questions, strict=True):
                if not qs:
                    out.append([])
                    continue
                image = np.asarray(image, np.uint8)
                views = self._view_images(image)
                slots = self.answerer.slots(self.answerer.perception(self._answer_images(views)))
                probs = [[] for _ in qs]
                for v in range(len(views)):  # every question on every view
                    one = type(slots)(*(t[v:v + 1].expand(len(qs), *t.shape[1:]) for t in slots))
                    tokens, lengths = self.answerer.encode_questions(list(qs))
                    for k, p in enumerate(self.answerer.reason(one, tokens, lengths).softmax(-1)):
                        probs[k].append(p)
                original = type(slots)(*(t[:1] for t in slots))
                for k, q in enumerate(qs):  # paraphrases on the image itself
                    alts = paraphrases(q)
                    if alts:
                        tokens, lengths = self.answerer.encode_questions(alts)
                        one = type(slots)(*(t.expand(len(alts), *t.shape[1:]) for t in original))
                        probs[k] += list(self.answerer.reason(one, tokens, lengths).softmax(-1))
                row = []
                for ps in probs:
                    stack = torch.stack(ps)
                    mean = stack.mean(0)
                    best = int(mean.argmax())
                    row.append((self.answers[best], float(mean[best]), bool((stack.argmax(-1) == best).all())))
                out.append(row)
        return out

    def answer(self, images: Sequence[np.ndarray], questions: Sequence[str]) -> list[tuple[str, float]]:
        """The teacher used directly as the answerer: (answer, confidence) per (image, question)."""
        res = self.answer_distributions(images, [[q] for q in questions])
        return [(r[0][0], r[0][1]) for r in res]

    def generate_scored(self, images: Sequence[np.ndarray], n: int = 2, top_p: float = 0.9,
                        temperature: float = 1.0, seed: int = 0, **_) -> list[list[tuple[str, float]]]:
        """``n`` (text, confidence) labels per image; inconsistent answers get confidence 0 and
        questions in no known phrasing are marked unanswerable (``last_stats`` counts both)."""
        import torch

        if not len(images):
            return []
        images = [np.asarray(im, np.uint8) for im in images]
        questions = self.sample_questions(images, n, top_p, temperature, generator=torch.Generator().manual_seed(seed))
        per_image = [questions[i * n:(i + 1) * n] for i in range(len(images))]
        known = [[q for q in qs if parse_question(q)] for qs in per_image]
        asked = [list(dict.fromkeys(ok + [c for q in ok for c in reference_checks(q)])) for ok in known]
        answers = self.answer_distributions(images, asked)
        out = []
        for qs, ask, ans in zip(per_image, asked, answers, strict=True):
            got = dict(zip(ask, ans, strict=True))
            out.append([self._label(q, got) for q in qs])
        return out

    def _label(self, q: str, got: dict) -> tuple[str, float]:
        """One (text, confidence) label from the answers ``got`` to the asked questions."""
        self.last_stats["questions"] += 1
        if q not in got:
            self.last_stats["unknown_phrasing"] += 1
            return format_qa(q or "?", UNANSWERABLE), 0.0
        refs = [got.get(c, ("", 0.0, False)) for c in reference_checks(q)]
        if not all(a == "1" and ok for a, _, ok in refs):
            self.last_stats["reference_not_unique"] += 1
            return format_qa(q, UNANSWERABLE), 0.0
        a, conf, consistent = got[q]
        self.last_stats["consistent" if consistent else "inconsistent"] += 1
        return format_qa(q, a), round(conf if consistent else 0.0, 4)

    def artifact_config(self) -> dict:
        return {"qgen": dict(self.qgen.config), "views": self.views}

    def _save_files(self, folder: Path) -> None:
        save_state(folder, self.qgen)
        self.answerer.save_pretrained(folder / "answerer")

    @classmethod
    def _from_files(cls, folder: Path, config: dict, info: dict) -> VQATeacher:
        from augment.seltda.generative import _shapes_teacher_module
        from builder.domains.shapes.nets import vqa as sv

        qg = _shapes_teacher_module()(**config["qgen"])
        load_state(folder, qg)
        return cls(qg.eval(), sv.ShapesVQANet.from_pretrained(folder / "answerer"), config["views"])
