"""The Improve step on the default planner: self-training on a customer's own phrasings."""

from __future__ import annotations

import pytest

from builder import Cancelled, improve_planner, propose_programs, workspace_planner
from builder.api.programs import workspace_tree_parser
from builder.core.taskcard import load_task_card
from builder.core.workspace import Workspace
from builder.domains.shapes.world.cards import make_task_card
from builder.interfaces.views import improve_chart_html
from builder.planner import tree as T
from builder.planner.compose.parse import TreeParser
from builder.planner.prompt import PlanRequest
from builder.planner.semantic import load_semantic_planner

# Phrasings of "count the red objects" that the shipped planner reads wrongly (it answers
# "how many other objects share the colour" or counts every object).
CUSTOMER = ["Tot up everything red.", "Tot up all the red things.", "Tot up every red item.", "Tot up the reds.",
            "Tot up anything red.", "Tot up the red ones."]


def test_improve_adapts_the_planner_to_a_customers_phrasing_and_later_proposals_use_it(tmp_path):
    card_path = make_task_card(tmp_path / "task", "count", "red objects", n=24, seed=3, name="customer",
                               queries=CUSTOMER)
    ws = Workspace.init(tmp_path / "ws", load_task_card(card_path), images_from=card_path.parent)
    seen = []
    report = improve_planner(ws, rounds=1, k=8, steps=40, eval_fraction=0.5, replay=100,
                             progress=lambda msg, frac: seen.append((msg, frac)))
    # 6 queries: 3 evaluate, 1 validates, 2 train; 4 images each
    assert report["queries"] == 6
    assert (report["train_examples"], report["val_examples"], report["eval_examples"]) == (8, 4, 12)
    # the evaluation queries were never trained on: the planner learnt the phrasing, not the queries
    assert report["before"]["accuracy"] < 0.75  # the frozen planner fails on these phrasings
    assert report["after"]["accuracy"] == 1.0 and report["never_worse"]
    assert report["kinds_reader"]["rounds"][0]["queries_rewarded"] == 2  # the 20-kind reader
    assert report["rounds"][0]["queries_rewarded"] >= 1  # the composing parser
    assert seen and seen[-1][1] == 1.0
    assert (ws.root / "checkpoints" / "planner" / "model.safetensors").is_file()
    # the composing parser, adapted, reads the phrasings (the evaluation ones included) as a count of the
    # red objects at least as often as the shipped one (which reads 5 of 6 and refuses "Tot up the reds.")
    red = T.key({"op": "count", "set": T.select("red")})
    shipped, adapted_trees = TreeParser.load(), workspace_tree_parser(ws)
    assert adapted_trees is not shipped

    def right(parser) -> int:
        parses = [parser.parse(q, "count") for q in CUSTOMER]
        return sum(bool(p.candidates) and T.key(p.candidates[0][0]) == red for p in parses)

    right_shipped, right_adapted = right(shipped), right(adapted_trees)
    assert right_adapted >= right_shipped and right_adapted >= 4, (right_shipped, right_adapted)
    # later proposals in this workspace come from the adapted planner
    adapted = workspace_planner(ws)
    assert adapted is not load_semantic_planner()
    src = adapted.propose([PlanRequest(CUSTOMER[0], None, None, False, "count")], k=1)[0][0]
    assert src.strip().endswith('return image.count("red object")')
    chart = improve_chart_html(report)
    assert "<svg" in chart and "round 1" in chart and "n=12" in chart
    versions, _ = propose_programs(ws, k=2)
    assert versions and all(v.origin == "planner" for v in versions)


def test_improve_can_be_cancelled_and_saves_no_planner(tmp_path):
    card_path = make_task_card(tmp_path / "task", "count", "red objects", n=6, seed=4, queries=CUSTOMER)
    ws = Workspace.init(tmp_path / "ws", load_task_card(card_path), images_from=card_path.parent)
    with pytest.raises(Cancelled, match="no planner was saved"):
        improve_planner(ws, rounds=3, k=2, steps=5, replay=0, should_stop=lambda: True)
    assert not (ws.root / "checkpoints" / "planner").exists()
    assert not (ws.root / "checkpoints" / "planner_report.json").exists()


def test_a_round_that_breaks_the_planner_is_not_kept(tmp_path, monkeypatch):
    # A training round that wrecks the head (here: its weights scrambled) loses the labelled
    # examples of the validation queries the planner solved; keep-best keeps the head it started from.
    import copy

    import torch

    from builder.methods import improve

    def scrambled(mix, head=None, **kw):
        broken = copy.deepcopy(head)
        gen = torch.Generator().manual_seed(0)  # a seeded scramble: the test must not depend on the draw
        with torch.no_grad():
            for p in broken.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 3)
        return broken, {"loss_last": 0.0}

    monkeypatch.setattr(improve, "train_parser", scrambled)
    plain = ["How many red objects?", "Count the red objects.", "How many red things are there?"]
    card_path = make_task_card(tmp_path / "task", "count", "red objects", n=6, seed=5, queries=plain)
    ws = Workspace.init(tmp_path / "ws", load_task_card(card_path), images_from=card_path.parent)
    start = {k: v.clone() for k, v in load_semantic_planner().parser.head.state_dict().items()}
    report = improve_planner(ws, rounds=1, k=2, steps=5, eval_fraction=0.5, replay=0)
    assert report["kinds_reader"]["rounds"][0]["accepted"] is False
    assert report["kinds_reader"]["rounds"][0]["val_top1"] < 1.0  # the scrambled head did lose examples
    assert report["after"]["accuracy"] == report["before"]["accuracy"] == 1.0
    kept = workspace_planner(ws).parser.head.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in start.items())
    assert "not kept" in improve_chart_html(report)


# ---- honest splits: by query string, keep-best on validation, the replay-only arm ------------------
def test_split_examples_puts_each_query_string_in_one_split(tmp_path):
    from builder.methods.improve import _cuts, split_examples

    # (evaluation, validation) out of n queries: from three on, every split gets one
    assert [_cuts(n, 0.5, 0.25) for n in (1, 2, 3, 4, 8)] == [(0, 0), (1, 0), (1, 1), (2, 1), (4, 1)]

    queries = [f"How many red objects are in picture {i}?" for i in range(8)]
    card_path = make_task_card(tmp_path / "task", "count", "red objects", n=16, seed=6, queries=queries)
    card = load_task_card(card_path)
    split = split_examples(card, card_path.parent)
    parts = (split.training, split.validation, split.evaluation)
    assert split.by == "query" and split.queries == 8 and tuple(map(len, parts)) == (3, 1, 4)
    names = [{t.query for t in part} for part in parts]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert set().union(*names) == set(queries)
    assert all(len(t.examples) == 2 for part in parts for t in part)  # every image of a query
    assert [t.query for t in split_examples(card, card_path.parent).evaluation] == [t.query for t in split.evaluation]
    # too few distinct queries: cut by image, and the split says so
    two = make_task_card(tmp_path / "two", "count", "red objects", n=8, seed=6, queries=queries[:2])
    by_image = split_examples(load_task_card(two), two.parent)
    assert by_image.by == "image" and [len(p) for p in (by_image.training, by_image.validation, by_image.evaluation)] == [2, 2, 2]
    assert [sum(len(t.examples) for t in p) for p in (by_image.training, by_image.validation, by_image.evaluation)] == [2, 2, 4]


def test_self_train_refuses_splits_that_share_a_query():
    from builder.core.errors import UserError
    from builder.methods.improve import AdaptConfig, QueryTask, self_train

    a, b = QueryTask("How many red objects?", "count", [0]), QueryTask("Count the circles.", "count", [0])
    with pytest.raises(ValueError, match="both the training and the evaluation split"):
        self_train(None, [a], [a], lambda *_: [True], AdaptConfig(), val_tasks=[b])
    with pytest.raises(UserError, match="keep-best needs labelled validation examples"):
        self_train(load_semantic_planner(), [a], [b], lambda *_: [True], AdaptConfig())


def _scrambling(seen_mixes):
    import copy

    import torch

    def train(mix, head=None, **kw):
        seen_mixes.append(mix)
        broken = copy.deepcopy(head)
        with torch.no_grad():
            for p in broken.parameters():
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 3)
        return broken, {"loss_last": 0.0}

    return train


def test_keep_best_is_decided_on_the_validation_queries_not_the_trained_ones(monkeypatch):
    # The training queries' examples reward any reading (so a head that wrecks everything still
    # "solves" them); only the start's reading answers the validation and evaluation queries.
    # Deciding on the trained examples would keep the wrecked head; on validation it is refused.
    import torch

    from builder.methods import improve

    monkeypatch.setattr(improve, "train_parser", _scrambling([]))
    start = load_semantic_planner()
    train = [improve.QueryTask(q, "count", [0, 1]) for q in ("How many red objects?", "Count the blue circles.")]
    val = [improve.QueryTask("How many green squares are there?", "count", [0, 1])]
    held = [improve.QueryTask("Count the yellow triangles.", "count", [0, 1])]
    right = {t.query: start.propose([t.request()], k=1)[0][0] for t in val + held}

    def scorer(program, task, examples):
        return [task.query not in right or program == right[task.query]] * len(examples)

    planner, report = improve.self_train(start, train, held, scorer, improve.AdaptConfig(rounds=1, replay=0, k=2),
                                         val_tasks=val)
    row = report["rounds"][0]
    assert row["queries_rewarded"] == 2 and row["accepted"] is False and row["val_top1"] == 0.0
    assert report["after"]["accuracy"] == report["before"]["accuracy"] == 1.0 and report["never_worse"]
    kept, first = planner.parser.head.state_dict(), start.parser.head.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in first.items())


def test_the_replay_only_arm_trains_on_replay_alone_and_the_full_method_adds_the_rewarded_readings(monkeypatch):
    from builder.methods import improve

    mixes = []
    monkeypatch.setattr(improve, "train_parser", _scrambling(mixes))
    start = load_semantic_planner()
    train = [improve.QueryTask("Tot up everything red.", "count", [0])]
    val = [improve.QueryTask("How many green squares are there?", "count", [0])]
    scorer = lambda program, task, examples: [True] * len(examples)  # noqa: E731
    for explore in (False, True):
        cfg = improve.AdaptConfig(rounds=1, replay=30, replay_patterns=1, k=2, oversample=2, explore=explore)
        _, report = improve.self_train(start, train, [], scorer, cfg, val_tasks=val)
        assert report["rounds"][0]["trained_on"] == len(mixes[-1])
    replay_only, full = mixes
    assert len(replay_only) == 30 and not any(e["words"][:2] == ["Tot", "up"] for e in replay_only)
    assert len(full) == 32 and sum(e["words"][:2] == ["Tot", "up"] for e in full) == 2
    assert [e["words"] for e in full[2:]] == [e["words"] for e in replay_only]  # the same replay mix


def test_a_tree_round_that_breaks_the_composing_parser_is_not_kept(monkeypatch):
    # The composing parser's rounds are kept by the same rule: a decoder whose weights are scrambled
    # loses the validation query it read right, so the planner keeps the parser it started from.
    import copy

    import torch

    from builder.methods import improve, improve_trees
    from builder.planner.compose.planner import ComposingPlanner

    def scrambled(parser, examples, replay, *args, **kw):
        model = copy.deepcopy(parser.model)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 3)
        return TreeParser(model, parser.info, parser.vocabulary), {"loss_last": 0.0}

    monkeypatch.setattr(improve_trees, "finetune_parser", scrambled)
    start = ComposingPlanner()
    train = [improve.QueryTask("How many red objects are not circles?", "count", [0])]
    val = [improve.QueryTask("How many shapes are neither blue nor green?", "count", [0])]
    held = [improve.QueryTask("Count the squares that aren't red.", "count", [0])]
    right = {t.query: start.propose([t.request()], k=1)[0][0] for t in val + held}

    def scorer(program, task, examples):
        return [task.query not in right or program == right[task.query]] * len(examples)

    planner, report = improve_trees.self_train_trees(start, train, held, scorer,
                                                     improve.AdaptConfig(rounds=1, replay=0, k=2), val_tasks=val)
    row = report["rounds"][0]
    assert row["queries_rewarded"] == 1 and row["accepted"] is False and row["val_top1"] == 0.0
    assert report["after"]["accuracy"] == report["before"]["accuracy"] == 1.0 and report["never_worse"]
    assert planner.parser is start.parser
