"""Generated task cards are balanced: a program that returns one constant answer passes at most
half of a card's examples (a locate card is not mostly empty, a count card not mostly zero)."""

from __future__ import annotations

import pytest

from builder.core.metrics import score
from builder.core.taskcard import load_task_card
from builder.domains.shapes.world.cards import KINDS, make_task_card
from builder.domains.shapes.world.video_tasks import VIDEO_KINDS, make_video_task_card


def constant_answers(card) -> list:
    """Every constant a lazy program might return: each expected answer, and the empty ones."""
    empty = {"count": [0], "bool": [False, True], "boxes": [[]], "frame": [0]}.get(card.output.value, [])
    return [ex.expected for ex in card.examples] + empty


def best_constant_score(card) -> float:
    """The best accuracy any constant answer gets on the card, scored with the card's metric."""
    def accuracy(value) -> float:
        return sum(score(card.output.value, value, ex.expected, card.metric) for ex in card.examples) / len(card.examples)
    return max(accuracy(v) for v in constant_answers(card))


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("target", ["red objects", "square", "small blue circle"])
def test_no_constant_answer_passes_more_than_half_of_an_image_card(tmp_path, kind, target):
    for n in (2, 5, 8):
        for seed in (0, 1):
            card = load_task_card(make_task_card(tmp_path / f"{n}-{seed}", kind, target, n=n, seed=seed))
            assert len(card.examples) == n
            limit = 0.5 if (n % 2 == 0 or kind != "exists") else (n + 1) / (2 * n)  # yes/no, odd n: one more
            best = best_constant_score(card)
            assert best <= limit, (kind, target, n, seed, [ex.expected for ex in card.examples])


def test_the_locate_card_of_the_issue_is_not_mostly_empty(tmp_path):
    """The card that expected [] in 4 of 5 examples: a program returning [] scored 80%."""
    card = load_task_card(make_task_card(tmp_path, "locate", "red objects", n=5, seed=0))
    assert sum(ex.expected == [] for ex in card.examples) <= 2
    assert best_constant_score(card) <= 0.4


@pytest.mark.parametrize("kind", ["crossing_count", "leaves", "collision_frame"])
def test_no_constant_answer_passes_more_than_half_of_a_video_card(tmp_path, kind):
    for seed in (0, 3):
        card = load_task_card(make_video_task_card(tmp_path / str(seed), kind, n=6, seed=seed, n_frames=60))
        assert card.output.value == VIDEO_KINDS[kind]
        if kind == "collision_frame":  # scored within 2 frames: a constant frame near many passes them
            frames = [ex.expected for ex in card.examples]
            assert max(sum(abs(f - c) <= 2 for f in frames) for c in range(0, 61)) <= 3, frames
        assert best_constant_score(card) <= 0.5, [ex.expected for ex in card.examples]
