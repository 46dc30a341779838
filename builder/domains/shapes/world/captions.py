"""Multi-clause scene captions for image-text search: training captions and distinctive queries.

A caption is a list of ``Caption`` clauses (exists / relation / count) rendered as sentences.
Phrasings come from the world's ITM caption patterns (``tasks._CAPTIONS``), split the same way:
"train" patterns (plus the bare phrases the captioner writes) for training encoders, "heldout"
patterns only for evaluation. Ground truth is used here for labels only.

``distinctive_caption`` adds true clauses until the caption holds for its scene and is
definitely false for every other scene of a collection, so text->image and image->text
retrieval each have exactly one right answer.
"""

from __future__ import annotations

import numpy as np

from builder.domains.shapes.world.language import Caption
from builder.domains.shapes.world.scene import Scene
from builder.domains.shapes.world.tasks import _CAPTIONS, caption_distractors, spatial_margin, true_caption

CLAUSE_KINDS = ("exists", "relation", "count")
# Bare phrases (what the captioner writes) are extra training phrasings; never held out.
_BARE = {"exists": "{a_obj}.", "relation": "{a_obj} {rel} {b_obj}.", "count": "{k} {objs}."}
PATTERNS: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {k: tuple(_CAPTIONS[k][0]) + (_BARE[k],) for k in CLAUSE_KINDS},
    "heldout": {k: tuple(_CAPTIONS[k][1]) for k in CLAUSE_KINDS},
}


def render_clauses(clauses: list[Caption], rng: np.random.Generator, split: str = "train") -> str:
    """The clauses as sentences in ``split``'s phrasings, first letters capitalised."""
    if split not in PATTERNS:
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    out = []
    for c in clauses:
        options = PATTERNS[split][c.kind]
        text = options[int(rng.integers(len(options)))].format(**c.fill())
        out.append(text[0].upper() + text[1:])
    return " ".join(out)


def random_clauses(scene: Scene, rng: np.random.Generator, n: int) -> list[Caption]:
    """Up to ``n`` distinct true clauses about the scene, kinds drawn at random."""
    out: list[Caption] = []
    for _ in range(3 * n):
        if len(out) >= n:
            break
        kind = CLAUSE_KINDS[int(rng.choice(3, p=(0.4, 0.4, 0.2)))]
        cap = true_caption(scene, rng, kind)
        if cap is not None and cap not in out:
            out.append(cap)
    return out


def hard_negative(clauses: list[Caption], scene: Scene, rng: np.random.Generator) -> list[Caption] | None:
    """The clauses with one changed (an attribute, the relation or the count) so they are false."""
    margin = spatial_margin(scene)
    for i in rng.permutation(len(clauses)):
        false = [d for d in caption_distractors(clauses[i]) if d.holds(scene.objects, margin) is False]
        if false:
            return clauses[:i] + [false[int(rng.integers(len(false)))]] + clauses[i + 1:]
    return None


def clauses_hold(clauses: list[Caption], scene: Scene) -> bool | None:
    """True if every clause holds, False if one is definitely false, None when too close to call."""
    margin = spatial_margin(scene)
    verdicts = [c.holds(scene.objects, margin) for c in clauses]
    if any(v is False for v in verdicts):
        return False
    return True if all(v is True for v in verdicts) else None


def distinctive_caption(scenes: list[Scene], i: int, rng: np.random.Generator, max_clauses: int = 5,
                        candidates: int = 8) -> list[Caption] | None:
    """Clauses true for ``scenes[i]`` and definitely false for every other scene, or None.

    Greedy: start from a relation clause, then add the candidate clause that rules out the most
    remaining scenes.
    """
    scene = scenes[i]
    rest = [j for j in range(len(scenes)) if j != i]
    chosen: list[Caption] = []
    first = true_caption(scene, rng, "relation") or true_caption(scene, rng, "exists")
    pool = [first] if first else []
    while rest and len(chosen) < max_clauses:
        pool += [c for c in (true_caption(scene, rng, CLAUSE_KINDS[int(rng.integers(3))])
                             for _ in range(candidates)) if c is not None and c not in chosen]
        if not pool:
            return None
        best, best_rest = None, None
        for c in dict.fromkeys(pool):
            left = [j for j in rest if c.holds(scenes[j].objects, spatial_margin(scenes[j])) is not False]
            if best_rest is None or len(left) < len(best_rest):
                best, best_rest = c, left
            if first is not None and c == first:  # always start from the relation
                break
        chosen.append(best)
        rest, pool = best_rest, []
    return chosen if not rest else None
