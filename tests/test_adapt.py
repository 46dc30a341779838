"""The Improve step on the default planner: self-training on a customer's own phrasings."""

from __future__ import annotations

import pytest

from builder import Cancelled, improve_planner, propose_programs, workspace_planner
from builder.core.taskcard import load_task_card
from builder.core.workspace import Workspace
from builder.domains.shapes.world.cards import make_task_card
from builder.interfaces.views import improve_chart_html
from builder.planner.prompt import PlanRequest
from builder.planner.semantic import load_semantic_planner

# Phrasings of "count the red objects" that the shipped planner reads wrongly (it answers
# "how many other objects share the colour" for the first two).
CUSTOMER = ["Tot up everything red.", "Reds in frame?"]


def test_improve_adapts_the_planner_to_a_customers_phrasing_and_later_proposals_use_it(tmp_path):
    card_path = make_task_card(tmp_path / "task", "count", "red objects", n=8, seed=3, name="customer",
                               queries=CUSTOMER)
    ws = Workspace.init(tmp_path / "ws", load_task_card(card_path), images_from=card_path.parent)
    seen = []
    report = improve_planner(ws, rounds=1, k=8, steps=40, eval_fraction=0.5, replay=100,
                             progress=lambda msg, frac: seen.append((msg, frac)))
    assert report["eval_examples"] == 4 and report["train_examples"] == 4
    assert report["before"]["accuracy"] < 0.75  # the frozen planner fails on these phrasings
    assert report["after"]["accuracy"] == 1.0
    assert report["rounds"][0]["queries_rewarded"] == 2
    assert seen and seen[-1][1] == 1.0
    assert (ws.root / "checkpoints" / "planner" / "model.safetensors").is_file()
    # later proposals in this workspace come from the adapted planner
    adapted = workspace_planner(ws)
    assert adapted is not load_semantic_planner()
    src = adapted.propose([PlanRequest(CUSTOMER[0], None, None, False, "count")], k=1)[0][0]
    assert src.strip().endswith('return image.count("red object")')
    chart = improve_chart_html(report)
    assert "<svg" in chart and "round 1" in chart and "n=4" in chart
    versions, _ = propose_programs(ws, k=2)
    assert versions and all(v.origin == "planner" for v in versions)


def test_improve_can_be_cancelled_and_saves_no_planner(tmp_path):
    card_path = make_task_card(tmp_path / "task", "count", "red objects", n=4, seed=4, queries=CUSTOMER)
    ws = Workspace.init(tmp_path / "ws", load_task_card(card_path), images_from=card_path.parent)
    with pytest.raises(Cancelled, match="no planner was saved"):
        improve_planner(ws, rounds=3, k=2, steps=5, replay=0, should_stop=lambda: True)
    assert not (ws.root / "checkpoints" / "planner").exists()
    assert not (ws.root / "checkpoints" / "planner_report.json").exists()


def test_a_round_that_breaks_the_planner_is_not_kept(tmp_path, monkeypatch):
    # A training round that wrecks the head (here: its weights scrambled) loses the labelled
    # examples the planner solved; the keep-best check keeps the head it started from.
    import copy

    import torch

    from builder.methods import improve

    def scrambled(mix, head=None, **kw):
        broken = copy.deepcopy(head)
        with torch.no_grad():
            for p in broken.parameters():
                p.copy_(torch.randn_like(p) * 3)
        return broken, {"loss_last": 0.0}

    monkeypatch.setattr(improve, "train_parser", scrambled)
    card_path = make_task_card(tmp_path / "task", "count", "red objects", n=8, seed=5, queries=["How many red objects?"])
    ws = Workspace.init(tmp_path / "ws", load_task_card(card_path), images_from=card_path.parent)
    start = {k: v.clone() for k, v in load_semantic_planner().parser.head.state_dict().items()}
    report = improve_planner(ws, rounds=1, k=2, steps=5, eval_fraction=0.5, replay=0)
    assert report["rounds"][0]["accepted"] is False
    assert report["rounds"][0]["train_top1"] < 1.0  # the scrambled head did lose examples
    assert report["after"]["accuracy"] == report["before"]["accuracy"] == 1.0
    kept = workspace_planner(ws).parser.head.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in start.items())
    assert "not kept" in improve_chart_html(report)
