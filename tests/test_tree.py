"""The meaning language: validation, compilation to programs, and agreement with ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
import world_oracle

from builder.domains.shapes.world.scene import sample_scene
from builder.executor import validate
from builder.planner import tree as T
from builder.planner.meaning import KIND_NAMES, KINDS
from builder.planner.phrasings import random_meaning
from builder.planner.tree_compile import compile_tree
from builder.planner.tree_sample import from_meaning, random_tree
from builder.planner.tree_text import render
from builder.planner.tree_truth import answer
from builder.planner.truth import answer as kind_answer

BLUE = T.select(color="blue")


@pytest.mark.parametrize("bad, message", [
    ({"op": "count"}, "tree.set: missing"),
    ({"op": "count", "set": {"op": "number", "value": 2}}, "expected a Set, got a Num"),
    ({"op": "frobnicate"}, "unknown op 'frobnicate'"),
    ({"op": "select", "color": "mauve"}, "'mauve' is not a color"),
    ({"op": "select", "shape": "star", "noun": "truck"}, "exclusive"),
    ({"op": "union", "sets": [BLUE]}, "two or more"),
    ({"op": "number", "value": True}, "whole number"),
    ({"op": "count", "set": BLUE, "extra": 1}, "unknown field(s) extra"),
    ([1, 2], "expected an object"),
])
def test_malformed_trees_are_refused_with_the_spot_named(bad, message):
    with pytest.raises(T.TreeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        T.check(bad)


def test_output_kind_must_fit_the_root_type():
    with pytest.raises(T.TreeError, match="cannot answer a boxes request"):
        compile_tree({"op": "count", "set": BLUE}, "boxes")
    assert compile_tree({"op": "count", "set": BLUE}, "text").endswith('return str(image.count("blue object"))\n')


def test_key_ignores_the_order_of_commutative_operands():
    a = {"op": "union", "sets": [BLUE, T.select(shape="star")]}
    b = {"op": "union", "sets": [T.select(shape="star"), {"op": "select", "color": "blue"}]}
    assert T.key(a) == T.key(b)
    assert T.key({"op": "sub", "args": [{"op": "number", "value": 1}, {"op": "number", "value": 2}]}) != T.key(
        {"op": "sub", "args": [{"op": "number", "value": 2}, {"op": "number", "value": 1}]})


def test_a_negation_compiles_to_a_readable_program():
    src = compile_tree({"op": "count", "set": {"op": "complement", "set": BLUE}}, "count")
    assert src == ('def execute(image):\n'
                   '    blue = image.find("blue object")\n'
                   '    objects = image.find("object")\n'
                   '    others = [p for p in objects if not any(p.iou(q) > 0.5 for q in blue)]\n'
                   '    return len(others)\n')
    assert render({"op": "count", "set": {"op": "complement", "set": BLUE}}) == \
        "the number of objects that are not blue objects"


def _scenes(n, seed=7):
    return [sample_scene(np.random.default_rng([seed, i]), "clean", None, (3, 8), i % 3 == 0) for i in range(n)]


def _run(src, scenes, multi):
    objs = [[o.to_json() for o in s.objects] for s in scenes]
    return world_oracle.run_program(src, objs, [(s.width, s.height) for s in scenes], multi)


def _agree(tree, output, scenes, multi=False):
    """(checked, disagreements): the compiled program on the oracle against the tree's ground truth."""
    expected = answer(tree, scenes if multi else scenes[0])
    if expected is None:
        return 0, []
    src = compile_tree(tree, output)
    validate(src)
    try:
        got = _run(src, scenes, multi)
    except ValueError:  # the oracle refuses to describe a patch holding several objects
        return 0, []
    if output == "boxes":
        got = [p.box for p in got]
    ok = world_oracle.outputs_match(output, got, expected)
    return 1, [] if ok else [(json.dumps(tree), src, got, expected)]


def test_every_previous_kind_is_a_tree_with_the_same_ground_truth():
    rng = np.random.default_rng(3)
    checked = 0
    for scene in _scenes(120):
        for kind in KIND_NAMES:
            if kind in ("choose_caption", "choose_image"):
                continue
            m = random_meaning(rng, kind)
            tree = from_meaning(m)
            T.check(tree)
            old, new = kind_answer(m, scene), answer(tree, scene)
            if old is None or new is None:
                continue
            if KINDS[kind][1][0] == "boxes":
                assert sorted(old) == sorted(new), (kind, m.to_dict(), old, new)
            else:
                assert old == new, (kind, m.to_dict(), old, new)
            checked += 1
    assert checked > 800


def test_random_compositions_compile_and_agree_with_ground_truth():
    rng = np.random.default_rng(11)
    checked, wrong = 0, []
    scenes = _scenes(60)
    for i in range(600):
        kind = (T.NUM, T.BOOL, T.SET, T.TEXT, T.CHOICE)[i % 5]
        tree = random_tree(rng, kind, depth=4)
        if kind == T.CHOICE:
            picked = [scenes[(i + j) % len(scenes)] for j in range(3)]
            c, w = _agree(tree, "choice", picked, multi=True)
        else:
            output = T.OUTPUTS_OF[kind][0]
            c, w = _agree(tree, output, [scenes[i % len(scenes)]])
        checked += c
        wrong += w
    assert not wrong, wrong[:3]
    assert checked > 250


@pytest.mark.parametrize("name", ["compose_blind.jsonl", "compose_open_vocab.jsonl"])
def test_the_blind_sets_are_valid_trees_of_their_output_kind(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "data" / name
    items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(items) >= 30
    for item in items:
        assert item["output"] in T.OUTPUTS_OF[T.check(item["tree"])], item["id"]
        if item["tree"]["op"] != "best_caption":
            compile_tree(item["tree"], item["output"])


def test_the_previous_kinds_are_recognised_and_compositions_are_not():
    from builder.planner.tree_sample import is_question_kind

    rng = np.random.default_rng(5)
    for kind in KIND_NAMES:
        if kind in ("caption_check", "choose_image"):
            continue
        for _ in range(20):
            assert is_question_kind(from_meaning(random_meaning(rng, kind))), kind
    negation = {"op": "count", "set": {"op": "complement", "set": BLUE}}
    total = {"op": "add", "args": [{"op": "count", "set": BLUE}, {"op": "count", "set": T.select(shape="star")}]}
    threshold = {"op": "compare", "cmp": ">=", "left": {"op": "count", "set": BLUE}, "right": {"op": "number", "value": 4}}
    for tree in (negation, total, threshold, {"op": "count", "set": {"op": "union", "sets": [BLUE, BLUE]}}):
        assert not is_question_kind(tree)
