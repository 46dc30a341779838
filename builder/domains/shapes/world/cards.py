"""Customer-style task cards made from shapes-world scenes (the demo and the tests use them).

A task card fixes one question for every image ("Count the red objects", "Is there a blue
circle?", "Box every small square"); the expected outputs come from the scenes' ground truth.
Scenes are drawn so that the answers are balanced: a program that returns one constant answer
(``[]``, ``0``, ``False``, ``3``) passes at most half of the examples (``balance_caps``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from builder.core.taskcard import TaskCard, parse_task_card, save_task_card
from builder.domains.shapes.vocab import parse_phrase
from builder.domains.shapes.world.scene import Scene, render_scene, sample_scene

KINDS = {"count": "count", "exists": "bool", "locate": "boxes"}
# Scenes drawn per example before a card gives up balancing its answers (a rare target).
MAX_DRAWS = 2000


def make_task_card(
    out_dir: str | Path,
    kind: str = "count",
    target: str = "red objects",
    n: int = 12,
    seed: int = 0,
    domain: str = "clean",
    name: str | None = None,
    description: str | None = None,
    queries: list[str] | None = None,
) -> Path:
    """Write ``n`` scene images and a task card asking the same question of each; returns the card path.

    ``kind``: "count" (how many ``target``), "exists" (is there a ``target``) or "locate" (boxes
    of every ``target``). Scenes are drawn so that the answers are balanced (``balance_caps``):
    at most half of the examples have none of the target, and no count repeats in more than half.
    ``queries``: the customer's own phrasings of that question, used in turn by the examples
    (default: one plain phrasing).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    spec = parse_phrase(target, strict=True)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    query = {
        "count": f"How many {spec.name(plural=True)} are there?",
        "exists": f"Is there a {spec.name()}?",
        "locate": f"Find every {spec.name()}.",
    }[kind]
    examples = []
    rng = np.random.default_rng([seed, 7])
    for i in range(n):
        scene, expected = _balanced_scene(rng, domain, spec, kind, n, [ex["expected"] for ex in examples], target)
        path = f"images/{i:04d}.png"
        render_scene(scene).save(out / path, format="PNG")
        asked = queries[i % len(queries)] if queries else query
        examples.append({"id": f"ex{i:04d}", "image": path, "query": asked, "expected": expected})
    card: TaskCard = parse_task_card(
        {
            "name": name or f"{kind}-{spec.name(plural=True).replace(' ', '-')}",
            "description": description or {
                "count": f"Count the {spec.name(plural=True)} in each image.",
                "exists": f"Tell whether each image contains a {spec.name()}.",
                "locate": f"Draw a box around every {spec.name()} in each image.",
            }[kind],
            "output": KINDS[kind],
            "examples": examples,
        },
        source=str(out / "task.yaml"),
    )
    return save_task_card(card, out / "task.yaml")


def balance_caps(output: str, n: int) -> dict[str, int]:
    """How many of ``n`` examples one constant answer may pass: ``none`` (0, no, no boxes) and
    ``other`` (any one count, yes, frame). At most half, or for yes/no with an odd ``n`` the one
    example more that cannot be avoided."""
    half = max(1, n // 2)
    return {"none": half, "other": max(1, n - half) if output == "bool" else half}


def fits_balance(output: str, answers: list, new, n: int) -> bool:
    """Whether ``new`` may join ``answers`` (of a card of ``n`` examples) with no constant answer
    passing more than ``balance_caps`` allows: equal answers (boxes: as many boxes), frames within
    2 of each other (the frame metric's tolerance); summaries always differ."""
    caps = balance_caps(output, n)
    if output == "summary":
        return True
    if output == "frame":
        hits = max(sum(abs(a - c) <= 2 for a in [*answers, new]) for c in range(new - 2, new + 3))
        return hits <= caps["other"]
    hits = sum(_key(output, a) == _key(output, new) for a in [*answers, new])
    return hits <= (caps["other"] if _key(output, new) else caps["none"])


def _key(output: str, answer):
    """What a constant program's answer is compared on: the answer, or for boxes how many."""
    return len(answer) if output == "boxes" else answer


def _balanced_scene(rng: np.random.Generator, domain: str, spec, kind: str, n: int, answers: list,
                    target: str) -> tuple[Scene, object]:
    """Draw scenes until one's answer ``fits_balance``; returns it and its answer. After
    ``MAX_DRAWS`` draws (a rare target) the first scene with the target is taken."""
    fallback = None
    for _ in range(MAX_DRAWS):
        scene = sample_scene(rng, domain, n_objects=(4, 8))
        answer = _answer(kind, [o for o in scene.objects if spec.matches(o)])
        if fits_balance(KINDS[kind], answers, answer, n):
            return scene, answer
        if answer and fallback is None:
            fallback = (scene, answer)
    if fallback is None:
        raise ValueError(f"no scene in {MAX_DRAWS} draws has a {target!r}: cannot balance the task's examples")
    # Only the target's counts are then less varied: the "none" answers stay within their cap.
    return fallback


def _answer(kind: str, matching: list):
    if kind == "count":
        return len(matching)
    if kind == "exists":
        return bool(matching)
    return [list(o.box) for o in matching]
