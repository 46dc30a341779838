"""Customer-style task cards made from shapes-world scenes (the demo and the tests use them).

A task card fixes one question for every image ("Count the red objects", "Is there a blue
circle?", "Box every small square"); the expected outputs come from the scenes' ground truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from builder.core.taskcard import TaskCard, parse_task_card, save_task_card
from builder.domains.shapes.vocab import parse_phrase
from builder.domains.shapes.world.scene import render_scene, sample_scene

KINDS = {"count": "count", "exists": "bool", "locate": "boxes"}


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
    of every ``target``). Scenes are drawn so that the answers vary across the examples.
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
        scene = sample_scene(rng, domain, n_objects=(4, 8))
        matching = [o for o in scene.objects if spec.matches(o)]
        if kind == "count":
            expected = len(matching)
        elif kind == "exists":
            expected = bool(matching)
        else:
            expected = [list(o.box) for o in matching]
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
