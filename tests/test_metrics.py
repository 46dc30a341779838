"""Scoring outputs: exact match, IoU >= 0.5 one-to-one, choice index; wrong types score 0."""

import pytest

from builder.core.metrics import as_boxes, box_iou, boxes_match, score


@pytest.mark.parametrize(
    ("kind", "value", "expected", "ok"),
    [
        ("text", " Red. ", "red", True),
        ("text", "blue", "red", False),
        ("text", 3, "3", True),
        ("text", True, "yes", True),
        ("text", None, "red", False),
        ("text", ["red"], "red", False),
        ("bool", "Yes", True, True),
        ("bool", False, True, False),
        ("bool", "maybe", False, False),
        ("count", 3, 3, True),
        ("count", "3", 3, True),
        ("count", 3.0, 3, True),
        ("count", 2, 3, False),
        ("choice", 1, 1, True),
        ("choice", True, 1, False),  # a bool is not an index
        ("choice", "1", 1, False),  # a digit string is not an index
        ("choice", 1.5, 1, False),
        ("choice", None, 0, False),
    ],
)
def test_score(kind, value, expected, ok):
    assert score(kind, value, expected) is ok


def test_boxes():
    exp = [[10, 10, 30, 30], [50, 50, 70, 70]]
    patches = [{"box": [51, 49, 71, 70], "image": 0, "score": 0.9}, {"box": [10, 11, 30, 31], "image": 0}]
    assert score("boxes", patches, exp)  # order does not matter
    assert score("boxes", {"box": [10, 10, 30, 30]}, [[10, 10, 30, 30]])  # a single patch
    assert not score("boxes", patches[:1], exp)  # missing one
    assert not score("boxes", patches + patches[:1], exp)  # an extra one
    assert not score("boxes", [[0, 0, 5, 5], [50, 50, 70, 70]], exp)
    assert score("boxes", [], [])
    assert not score("boxes", "a box", exp) and not score("boxes", [[1, 2, 3]], exp)
    assert as_boxes([{"box": [1, 2, 3, 4]}]) == [[1.0, 2.0, 3.0, 4.0]]
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3)
    assert box_iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0
    # One-to-one pairing: two predictions on the same object do not cover two objects.
    assert not boxes_match([[0, 0, 10, 10], [0, 0, 10, 10]], [[0, 0, 10, 10], [20, 20, 30, 30]])
