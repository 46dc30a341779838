"""The teacher's text format, pseudo-labels, their structural filter and nucleus sampling."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from builder.domains.shapes.world.tasks import QTYPES

UNANSWERABLE = "unanswerable"  # the answer a teacher writes when it cannot answer its question
TEACHER_QTYPES = tuple(q for q in QTYPES["vqa"] if q != "read")

QA_PATTERN = re.compile(r"^\s*question\s*:\s*(?P<q>.+?)\s*answer\s*:\s*(?P<a>.+?)\s*$", re.IGNORECASE | re.DOTALL)


def format_qa(question: str, answer: str) -> str:
    """The teacher's target text."""
    return f"Question: {question.strip()} Answer: {answer.strip()}"


def parse_qa(text: str) -> tuple[str, str] | None:
    """(question, answer) from ``"Question: q Answer: a"``, or None if it does not parse.

    A parse needs a question of at least two words and a non-empty answer; both are trimmed,
    the answer lower-cased and stripped of a final period.
    """
    if not isinstance(text, str):
        return None
    m = QA_PATTERN.match(text)
    if not m:
        return None
    q = " ".join(m.group("q").split())
    a = " ".join(m.group("a").split()).lower().rstrip(".").strip()
    if len(q.split()) < 2 or not a or "question:" in a or "answer:" in q.lower():
        return None
    return q, a


def _norm_question(q: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", q.lower()))


@dataclass
class PseudoLabel:
    """One generated label for an unlabelled image (``image`` indexes the input list)."""

    image: int
    text: str
    question: str = ""
    answer: str = ""
    confidence: float = 1.0


@dataclass
class FilterReport:
    """Counts of what structural filtering kept and dropped (and why)."""

    total: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"unparsable": 0, "unanswerable": 0,
                                                             "low_confidence": 0, "answer_not_in_vocabulary": 0,
                                                             "duplicate": 0, "contradictory": 0})

    def to_dict(self) -> dict:
        return {"total": self.total, "kept": self.kept, "dropped": dict(self.dropped)}


def filter_pseudo_labels(labels: Sequence[PseudoLabel], answer_vocab: Sequence[str] | None,
                         min_confidence: float = 0.0) -> tuple[list[PseudoLabel], FilterReport]:
    """Drop unparsable texts, questions the teacher marked unanswerable, labels whose teacher
    confidence is below ``min_confidence``, answers outside ``answer_vocab`` (None: any answer),
    exact duplicates, and contradictory pairs — every label of an image whose (normalised)
    question got two different answers is dropped, since at most one can be right."""
    rep = FilterReport(total=len(labels))
    vocab = {a.lower() for a in answer_vocab} if answer_vocab is not None else None
    parsed: list[PseudoLabel] = []
    for lab in labels:
        qa = parse_qa(lab.text)
        if qa is None:
            rep.dropped["unparsable"] += 1
            continue
        if qa[1] == UNANSWERABLE:
            rep.dropped["unanswerable"] += 1
            continue
        if lab.confidence < min_confidence:
            rep.dropped["low_confidence"] += 1
            continue
        if vocab is not None and qa[1] not in vocab:
            rep.dropped["answer_not_in_vocabulary"] += 1
            continue
        parsed.append(PseudoLabel(lab.image, lab.text, qa[0], qa[1], lab.confidence))
    answers: dict[tuple[int, str], set[str]] = defaultdict(set)
    for lab in parsed:
        answers[(lab.image, _norm_question(lab.question))].add(lab.answer)
    seen: set[tuple[int, str, str]] = set()
    kept = []
    for lab in parsed:
        key = (lab.image, _norm_question(lab.question))
        if len(answers[key]) > 1:
            rep.dropped["contradictory"] += 1
        elif key + (lab.answer,) in seen:
            rep.dropped["duplicate"] += 1
        else:
            seen.add(key + (lab.answer,))
            kept.append(lab)
    rep.kept = len(kept)
    return kept, rep


# ----------------------------------------------------------------------------------------------
# Nucleus sampling
# ----------------------------------------------------------------------------------------------


def nucleus_sample(logits, top_p: float = 0.9, temperature: float = 1.0, generator=None):
    """Sample one index per row from the smallest set of tokens whose probability reaches top_p."""
    import torch

    probs = torch.softmax(logits / max(temperature, 1e-6), dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    cum = sorted_p.cumsum(-1)
    keep = (cum - sorted_p) < top_p  # a token is kept if the mass before it is below top_p
    keep[..., 0] = True
    sorted_p = sorted_p * keep
    pick = torch.multinomial(sorted_p / sorted_p.sum(-1, keepdim=True), 1, generator=generator)
    return order.gather(-1, pick).squeeze(-1)
