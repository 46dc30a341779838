"""Ground truth for measuring pseudo-label precision (shapes world only; never used to make labels)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from augment.seltda.labels import PseudoLabel
from builder.core.errors import UserError
from builder.domains.shapes.vocab import parse_phrase
from builder.domains.shapes.world.language import relation_holds
from builder.domains.shapes.world.tasks import question_patterns, spatial_margin


def world_answer(scene, question: str) -> str | None:
    """The ground-truth answer to a shapes-world question about ``scene``, or None when the
    question does not parse or has no unambiguous answer (references not unique, relation
    too close to call). For measuring pseudo-label precision only."""
    q = " ".join(question.lower().split()).rstrip("?.").strip()
    objs = list(scene.objects)

    def spec(name):
        return parse_phrase(name, strict=True)

    def unique(name):
        m = [o for o in objs if spec(name).matches(o)]
        return m[0] if len(m) == 1 else None

    for qtype, rx in question_patterns():
        m = rx.match(q)
        if not m:
            continue
        g = m.groupdict()
        try:
            if qtype in ("attribute", "size"):
                o = unique(g["obj"])
                attr = g.get("attr") or "size"
                return getattr(o, attr) if o else None
            if qtype == "count":
                n = sum(spec(g["objs"]).matches(o) for o in objs)
                return str(n) if n <= 9 else None
            if qtype == "exists":
                return "yes" if any(spec(g.get("a_obj") or g.get("objs")).matches(o) for o in objs) else "no"
            if qtype == "relation":
                a, b = unique(g["a"]), unique(g["b"])
                if a is None or b is None or a is b:
                    return None
                v = relation_holds(a, b, g["rel"], spatial_margin(scene))
                return None if v is None else ("yes" if v else "no")
            if qtype == "relate_attr":
                b = unique(g["b"])
                if b is None or g["attr"] == "size":
                    return None
                # the one object in that relation to b, and no other too close to call
                verdicts = [(o, relation_holds(o, b, g["rel"], spatial_margin(scene))) for o in objs if o is not b]
                hits = [o for o, v in verdicts if v is True]
                ok = len(hits) == 1 and all(v is not None for _, v in verdicts)
                return getattr(hits[0], g["attr"]) if ok else None
            if qtype == "compare":
                nx = sum(spec(g["xs"]).matches(o) for o in objs)
                ny = sum(spec(g["ys"]).matches(o) for o in objs)
                return "yes" if nx > ny else "no"
            if qtype == "same_color":
                o = unique(g["obj"])
                return str(sum(x.color == o.color for x in objs) - 1) if o else None
        except (ValueError, UserError):  # unknown words in an object name
            continue
    return None


def precision(labels: Sequence[PseudoLabel], scenes: Sequence) -> dict:
    """Share of labels whose answer equals the ground truth (unanswerable questions count as
    wrong), overall and by the parsed question type."""
    if not labels:
        return {"precision": None, "n": 0, "answerable": None}
    right, answerable = [], 0
    for lab in labels:
        truth = world_answer(scenes[lab.image], lab.question)
        answerable += truth is not None
        right.append(truth is not None and truth == lab.answer)
    return {"precision": round(float(np.mean(right)), 4), "n": len(labels),
            "answerable": round(answerable / len(labels), 4)}


def count_answers(labels: Sequence[PseudoLabel]) -> dict[str, int]:
    """How often each answer occurs (a collapsed teacher answers one thing)."""
    return dict(Counter(lab.answer for lab in labels).most_common())
