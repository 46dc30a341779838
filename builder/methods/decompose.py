"""Selective question decomposition (Khan et al., NeurIPS 2023), for any VQA engine.

Answer the question; if the engine's confidence is below ``tau``, generate sub-questions,
answer them, and re-answer with them as context. Two sub-question generators ship:

* ``WorldDecomposer`` (shapes world, templated): recognises the world's question types and
  breaks them into object-level steps: ``find`` the candidate objects with the detector, then
  ask the VQA engine about each crop ("What color is this object?", "What shape is this
  object?"). The shapes VQA model takes no text context, so the sub-answers are combined by a
  fixed rule per question type (documented on ``WorldDecomposer.combine``): counts count the
  crops whose answers match every named attribute, existence is count > 0, attributes are
  read from the single matching crop, spatial relations compare box centres, comparisons
  compare two counts.
* ``TextDecomposer``: any callable question -> sub-questions (``planner_subquestions`` wraps
  a planner, e.g. one behind an OpenAI-compatible endpoint); sub-questions are asked about the whole image and the engine is
  re-asked with ``"Context: q1? a1. q2? a2. Question: q"`` (engines that read text context,
  such as BLIP).

``SelectiveVQA`` wraps an engine with either generator and a threshold; ``sweep`` reports the
never / always / selective accuracy over a range of thresholds, with flips wrong->right and
right->wrong relative to never decomposing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm.auto import tqdm

from builder.core.errors import UserError
from builder.core.metrics import normalise_text
from builder.domains import vocabulary
from builder.domains.shapes.world.tasks import question_patterns as world_question_patterns
from builder.planner.meaning import ATTRIBUTE_QUESTION
from builder.tools.engines import Answer, Detector, VQAEngine, as_rgb_array

_VOCAB = vocabulary("shapes")
RELATION_WORDS = _VOCAB.relations
CROP_QUESTION = ATTRIBUTE_QUESTION  # the crop questions programs ask (one table: builder.planner.meaning)


@dataclass
class SubQA:
    """One sub-question and its answer (``box`` for object-level steps)."""

    question: str
    answer: str
    confidence: float = 1.0
    box: tuple[int, int, int, int] | None = None


@dataclass
class Decomposition:
    """The sub-questions asked and the answer they lead to (None when they decide nothing)."""

    subs: list[SubQA] = field(default_factory=list)
    answer: str | None = None
    rule: str = ""


@dataclass
class SelectiveAnswer:
    """The final answer, the first answer, and the decomposition when one was made."""

    text: str
    confidence: float
    first: Answer
    decomposed: bool
    decomposition: Decomposition | None = None

    def to_dict(self) -> dict:
        """Plain data (the nested answer and decomposition as dicts) for JSON reports."""
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# Shapes-world question patterns
# ----------------------------------------------------------------------------------------------

def question_patterns() -> tuple[tuple[str, re.Pattern], ...]:
    """(qtype, regex) for the shapes-world VQA phrasings this decomposer parses (no OCR questions)."""
    return world_question_patterns(("read",))


def parse_world_question(question: str) -> tuple[str, dict[str, str]] | None:
    """(qtype, slots) of a shapes-world question, or None for any other text."""
    q = " ".join(question.lower().split()).rstrip("?.").strip()
    for qtype, rx in question_patterns():
        m = rx.match(q)
        if m:
            return qtype, {k: v for k, v in m.groupdict().items() if v is not None}
    return None


def _attributes(name: str) -> dict[str, str] | None:
    """{size, color, shape} named in an object phrase ("the large red circles"), None if unknown words."""
    try:
        spec = _VOCAB.parse(name, strict=True)
    except UserError:
        return None
    return spec.attributes


def _center(box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _holds(a, b, rel: str) -> bool:
    (ax, ay), (bx, by) = _center(a), _center(b)
    return {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[rel]


class WorldDecomposer:
    """Templated sub-questions for the shapes world (see the module docstring).

    Candidates come from ``detector.detect(image, "<size> object")`` (size is geometry, which the
    detector measures; colour and shape are asked of the VQA engine crop by crop).
    """

    def __init__(self, detector: Detector, vqa: VQAEngine, pad: int = 1):
        self.detector, self.vqa, self.pad = detector, vqa, pad

    def _crop(self, image: np.ndarray, box) -> np.ndarray:
        h, w = image.shape[:2]
        x0, y0, x1, y1 = box
        p = self.pad
        return image[max(0, y0 - p):min(h, y1 + p), max(0, x0 - p):min(w, x1 + p)]

    def _objects(self, image, size: str | None, subs: list[SubQA]) -> list[tuple]:
        query = f"{size} object" if size else "object"
        dets = self.detector.detect(image, query)
        subs.append(SubQA(f"find({query!r})", str(len(dets))))
        return [tuple(int(v) for v in d.box) for d in dets]

    def _ask(self, image, box, attr: str, subs: list[SubQA]) -> str:
        a = self.vqa.answer(self._crop(image, box), CROP_QUESTION[attr])
        subs.append(SubQA(CROP_QUESTION[attr], normalise_text(a.text) or "", a.confidence, box))
        return normalise_text(a.text) or ""

    def _matching(self, image, name: str, subs: list[SubQA]) -> list[tuple] | None:
        attrs = _attributes(name)
        if attrs is None:
            return None
        boxes = self._objects(image, attrs.get("size"), subs)
        keep = []
        for box in boxes:
            # every named colour/shape must be confirmed by the crop's answer
            if all(self._ask(image, box, k, subs) == v for k, v in attrs.items() if k != "size"):
                keep.append(box)
        return keep

    def decompose(self, image: np.ndarray, question: str) -> Decomposition:
        """Sub-questions and the combined answer (``combine`` rules); answer None if not a world
        question or the steps are inconclusive (e.g. a reference that is not unique)."""
        parsed = parse_world_question(question)
        d = Decomposition()
        if parsed is None:
            d.rule = "not a shapes-world question"
            return d
        qtype, g = parsed
        d.answer, d.rule = self.combine(image, qtype, g, d.subs)
        return d

    def combine(self, image, qtype: str, g: dict, subs: list[SubQA]) -> tuple[str | None, str]:
        """The rule for each question type:

        count: number of candidate crops whose colour/shape answers match every named attribute;
        exists: "yes" if that count > 0; compare: count(xs) > count(ys);
        attribute / size: the one matching crop's answer (size: the detector's size class);
        relation: box centres of the unique A and B; relate_attr: the unique object in that
        relation to B, then its crop's answer; same_color: the crop colour of the unique
        object, then the number of other crops with that colour.
        """
        if qtype in ("count", "exists", "compare"):
            return self._combine_counts(image, qtype, g, subs)
        if qtype in ("attribute", "size", "same_color"):
            return self._combine_unique(image, qtype, g, subs)
        if qtype in ("relation", "relate_attr"):
            return self._combine_relation(image, qtype, g, subs)
        return None, f"no rule for {qtype}"

    def _combine_counts(self, image, qtype: str, g: dict, subs: list[SubQA]) -> tuple[str | None, str]:
        if qtype in ("count", "exists"):
            m = self._matching(image, g.get("objs") or g.get("a_obj"), subs)
            if m is None:
                return None, "unknown words"
            return (str(len(m)) if qtype == "count" else ("yes" if m else "no")), f"{qtype}: matching crops"
        mx, my = self._matching(image, g["xs"], subs), self._matching(image, g["ys"], subs)
        if mx is None or my is None:
            return None, "unknown words"
        return ("yes" if len(mx) > len(my) else "no"), "compare: two counts"

    def _combine_unique(self, image, qtype: str, g: dict, subs: list[SubQA]) -> tuple[str | None, str]:
        m = self._matching(image, g["obj"], subs)
        if not m or len(m) != 1:
            return None, "reference not unique"
        if qtype == "size":
            for size in ("small", "large"):
                if m[0] in self._objects(image, size, subs):
                    return size, "size: detector size class"
            return None, "size unknown"
        if qtype == "attribute":
            return self._ask(image, m[0], g["attr"], subs), "attribute: crop answer"
        color = self._ask(image, m[0], "color", subs)
        others = [b for b in self._objects(image, None, subs) if b != m[0]]
        return str(sum(self._ask(image, b, "color", subs) == color for b in others)), "same_color: crop colours"

    def _combine_relation(self, image, qtype: str, g: dict, subs: list[SubQA]) -> tuple[str | None, str]:
        if qtype == "relation":
            a, b = self._matching(image, g["a"], subs), self._matching(image, g["b"], subs)
            if not a or not b or len(a) != 1 or len(b) != 1:
                return None, "reference not unique"
            return ("yes" if _holds(a[0], b[0], g["rel"]) else "no"), "relation: box centres"
        b = self._matching(image, g["b"], subs)
        if not b or len(b) != 1:
            return None, "reference not unique"
        hits = [o for o in self._objects(image, None, subs) if o != b[0] and _holds(o, b[0], g["rel"])]
        if len(hits) != 1:
            return None, "related object not unique"
        return self._ask(image, hits[0], g["attr"], subs), "relate_attr: crop answer"


class TextDecomposer:
    """Sub-questions from any generator (question -> list of questions), answered on the whole
    image; the engine is re-asked with them as context. Use with engines that read context."""

    def __init__(self, generate: Callable[[str], list[str]], vqa: VQAEngine):
        self.generate, self.vqa = generate, vqa

    def decompose(self, image: np.ndarray, question: str) -> Decomposition:
        """Ask the generated sub-questions (at most 8) on the whole image, then re-ask
        ``question`` with their answers as context.
        """
        subs = []
        for sq in self.generate(question)[:8]:
            a = self.vqa.answer(image, sq)
            subs.append(SubQA(sq, a.text, a.confidence))
        if not subs:
            return Decomposition(rule="no sub-questions")
        context = " ".join(f"{s.question.rstrip('?')}? {s.answer}." for s in subs)
        final = self.vqa.answer(image, f"Context: {context} Question: {question}")
        return Decomposition(subs, final.text, "re-asked with context")


SUBQUESTION_PROMPT = (
    "Break the question about an image into at most {n} simpler questions about the image, "
    "one per line, each ending with '?'.\nQuestion: {q}\nSimpler questions:\n"
)


def planner_subquestions(planner, max_subs: int = 4, max_new_tokens: int = 96) -> Callable[[str], list[str]]:
    """A sub-question generator for ``TextDecomposer`` backed by a planner (any
    ``builder.planner.backends.Planner``: an OpenAI-compatible endpoint or a local model),
    decoding greedily; lines that are not questions are ignored."""

    def generate(question: str) -> list[str]:
        text = planner.complete([SUBQUESTION_PROMPT.format(n=max_subs, q=question)], 1, 0.0, 1.0, max_new_tokens)[0][0]
        subs = [line.strip(" -*0123456789.)\t") for line in text.splitlines()]
        return [q for q in subs if q.endswith("?") and len(q.split()) >= 3][:max_subs]

    return generate


class SelectiveVQA:
    """A VQA engine that decomposes only when its first answer's confidence is below ``tau``."""

    def __init__(self, vqa: VQAEngine, decomposer, tau: float = 0.5):
        self.vqa, self.decomposer, self.tau = vqa, decomposer, float(tau)
        self.backend_id = f"selective({getattr(vqa, 'backend_id', 'vqa')})"
        self.version = f"{getattr(vqa, 'version', '?')}+tau{self.tau:g}"

    def answer(self, image, question: str) -> SelectiveAnswer:
        """The engine's answer, or the decomposition's when confidence < tau and it decides."""
        image = as_rgb_array(image)
        first = self.vqa.answer(image, question)
        if first.confidence >= self.tau:
            return SelectiveAnswer(first.text, first.confidence, first, False)
        d = self.decomposer.decompose(image, question)
        if d.answer is None:  # inconclusive: keep the first answer
            return SelectiveAnswer(first.text, first.confidence, first, True, d)
        return SelectiveAnswer(d.answer, first.confidence, first, True, d)


# ----------------------------------------------------------------------------------------------
# Never / always / selective, with flips
# ----------------------------------------------------------------------------------------------


def _right(pred: str | None, expected: str) -> bool:
    return pred is not None and normalise_text(pred) == normalise_text(expected)


def sweep(vqa: VQAEngine, decomposer, items: Sequence, taus: Sequence[float] = (0.3, 0.5, 0.7, 0.9),
          progress: bool = True) -> dict:
    """Accuracy of never / always / selective decomposition over ``taus`` on (image, question,
    expected) items, with flips relative to never decomposing.

    Each item's first answer and decomposition are computed once; a threshold then selects.
    ``always`` decomposes every question (inconclusive decompositions keep the first answer, as
    in ``SelectiveVQA``).
    """
    rows = []
    for item in tqdm(items, desc="decompose", disable=not progress):
        image, question, expected = as_rgb_array(item[0]), str(item[1]), str(item[2])
        first = vqa.answer(image, question)
        d = decomposer.decompose(image, question)
        rows.append((first, d, expected))
    if not rows:
        raise ValueError("sweep needs at least one item")

    def score(tau: float | None) -> dict:
        right = flips_up = flips_down = decomposed = 0
        for first, d, expected in rows:
            use = tau is None or first.confidence < tau
            pred = d.answer if use and d.answer is not None else first.text
            decomposed += use
            was, now = _right(first.text, expected), _right(pred, expected)
            right += now
            flips_up += (not was) and now
            flips_down += was and not now
        n = len(rows)
        return {"accuracy": round(right / n, 4), "decomposed": round(decomposed / n, 4),
                "wrong_to_right": flips_up, "right_to_wrong": flips_down}

    never = score(-1.0)
    return {"n": len(rows), "never": never, "always": score(None),
            "selective": {f"{t:g}": score(float(t)) for t in taus},
            "decomposition_conclusive": round(sum(d.answer is not None for _, d, _ in rows) / len(rows), 4),
            "decomposition_accuracy": round(sum(_right(d.answer, e) for _, d, e in rows) / len(rows), 4)}
