"""Reading search: detections stored at index time, meaning trees evaluated over them for every
image at once (checked against the ground-truth interpreter on scene graphs), and the ranking,
negation, thresholds and refusals of ``search_read``."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

from builder.domains.shapes.world.scene import render_array, render_scene, sample_scene
from builder.methods.tree_search import (
    TableEval,
    Unsearchable,
    read_query,
    score_images,
    search_form,
    search_read,
    sentences,
)
from builder.planner import tree as T
from builder.planner import tree_truth
from builder.planner.compose.parse import Parse
from builder.planner.compose.sample import TreeSampler
from builder.tools.backends.shapes import ShapesDetector
from builder.tools.detections import ObjectTable, attribute_values, detect_objects

VALUES = attribute_values()


def _truth_table(scenes) -> ObjectTable:
    """The scenes' ground-truth objects as a table (what a perfect detector would store)."""
    per = []
    for sc in scenes:
        n = len(sc.objects)
        per.append({"box": np.array([o.box for o in sc.objects], np.float32).reshape(n, 4),
                    "score": np.ones(n, np.float32),
                    **{a: np.array([VALUES[a].index(getattr(o, a)) for o in sc.objects], np.int8) for a in VALUES}})
    return ObjectTable.from_images(per, [sc.width for sc in scenes])


def test_detect_objects_through_the_engine_interface_finds_the_scene():
    det = ShapesDetector()
    for seed in range(12):
        sc = sample_scene(seed)
        found = detect_objects(det, render_array(sc))
        got = sorted(tuple(VALUES[a][c] for a, c in zip(VALUES, f, strict=True))
                     for f in zip(found["color"], found["shape"], found["size"], strict=True))
        assert got == sorted((o.color, o.shape, o.size) for o in sc.objects)


class _Boxes:
    """A detector engine that finds two boxes but names only one colour (an open-vocabulary detector)."""

    backend_id, version = "test:boxes", "1"

    def detect(self, image, query, threshold=None):
        from builder.tools.engines import Detection

        boxes = {"objects": [(0, 0, 10, 10), (20, 20, 30, 30)], "red objects": [(1, 0, 10, 10)]}
        return [Detection(b, 0.9, query) for b in boxes.get(query, [])]


def test_attributes_no_query_found_stay_unknown():
    found = detect_objects(_Boxes(), np.zeros((40, 40, 3), np.uint8))
    assert found["color"].tolist() == [VALUES["color"].index("red"), -1]
    assert found["shape"].tolist() == [-1, -1]


@pytest.mark.parametrize("kind", [T.BOOL, T.NUM, T.SET])
def test_table_eval_agrees_with_the_ground_truth_interpreter(kind):
    scenes = [sample_scene(s) for s in range(40)]
    table = _truth_table(scenes)
    ev = TableEval(table)
    sampler = TreeSampler(np.random.default_rng(7))  # open nouns too: nothing detected matches one
    compared = 0
    for _ in range(150):
        tree = sampler.tree(kind)
        got = ev.run(tree)
        for i, sc in enumerate(scenes):
            want = tree_truth.answer(tree, sc)
            if want is None:
                continue  # ill-posed on this scene: no single right answer
            if kind == T.SET:
                mine = table.box[table.offsets[i]:table.offsets[i + 1]][got[table.offsets[i]:table.offsets[i + 1]]]
                assert sorted(map(list, mine.astype(int).tolist())) == sorted(want), (T.key(tree), i)
            else:
                assert got[i] == want, (T.key(tree), i)
            compared += 1
    assert compared > 2000


def test_search_form_and_scores():
    red = T.select(color="red")
    assert search_form(red) == {"op": "exists", "set": red}
    cond = {"op": "exists", "set": red}
    assert search_form({"op": "first_image", "cond": cond}) == cond
    with pytest.raises(Unsearchable, match="text answer"):
        search_form({"op": "attribute", "attr": "color", "set": red, "options": None})
    scenes = [sample_scene(s) for s in range(30)]
    table = _truth_table(scenes)
    both = {"op": "all_of", "args": [cond, {"op": "exists", "set": T.select(shape="star")}]}
    holds, score = score_images(both, table)
    for sc, h, s in zip(scenes, holds, score, strict=True):
        red_, star = (any(o.color == "red" for o in sc.objects), any(o.shape == "star" for o in sc.objects))
        assert h == (red_ and star)
        assert s == (1.0 if h else 0.25 * (red_ + star))  # a near miss ranks above a plain miss
    most = {"op": "argmax_image", "num": {"op": "count", "set": T.select(shape="circle")}}
    holds, score = score_images(most, table)
    circles = np.array([sum(o.shape == "circle" for o in sc.objects) for sc in scenes])
    assert holds.all() and np.argmax(score) == np.argmax(circles)


def test_sentences_split_a_description():
    assert sentences("There is a red circle. There are two stars; a hexagon.") == [
        "There is a red circle.", "There are two stars", "a hexagon."]
    assert sentences("a red circle") == ["a red circle"]


class _Parser:
    """A stand-in for ``TreeParser``: fixed trees per sentence, or a refusal."""

    def __init__(self, trees: dict):
        self.trees = trees
        self.seen: list[str] = []

    def parse(self, query, output=None, k=8, closed_vocabulary=False, engines="shapes"):
        self.seen.append(query)
        tree = self.trees.get(query)
        if isinstance(tree, str):
            return Parse(refusal=tree)
        return Parse([(tree, 0.9)])


NO_GREEN = {"op": "not", "arg": {"op": "exists", "set": T.select(color="green")}}
THREE_STARS = {"op": "compare", "cmp": ">=", "left": {"op": "count", "set": T.select(shape="star")},
               "right": {"op": "number", "value": 3}}


def test_read_query_combines_sentences_and_refuses_with_the_reason():
    parser = _Parser({"no green.": NO_GREEN, "three stars.": THREE_STARS,
                      "a truck.": "cannot see 'truck' with the shapes engines"})
    r = read_query("no green. three stars.", parser)
    assert r.tree == {"op": "all_of", "args": [NO_GREEN, THREE_STARS]} and r.refusal is None
    r = read_query("no green. a truck.", parser)
    assert r.tree is None and "'truck'" in r.refusal
    parser.trees["what colour."] = {"op": "attribute", "attr": "color", "set": T.select(shape="star"),
                                    "options": None}
    assert "text answer" in read_query("what colour.", parser).refusal


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """120 rendered scenes indexed with detections (no embedder needed for reading)."""
    from builder.api.tasks import ensure_shapes_workspace
    from builder.methods.image_index import SearchIndex, build_index
    from builder.tools.backends.shapes import ShapesEmbedder

    root = tmp_path_factory.mktemp("idx")
    folder = root / "img"
    folder.mkdir()
    scenes = {}
    for s in range(120):
        sc = sample_scene(s)
        scenes[f"scene{s:03d}.png"] = sc
        render_scene(sc).save(folder / f"scene{s:03d}.png")
    ws = ensure_shapes_workspace(root / "ws", n=2)
    res = build_index(ws, folder, embedder=ShapesEmbedder(), detector=ShapesDetector(), progress=False)
    assert res.objects == sum(len(sc.objects) for sc in scenes.values())
    return ws, SearchIndex.open(ws), scenes


def test_negation_and_thresholds_search_every_image(indexed):
    _, index, scenes = indexed
    parser = _Parser({"no green": NO_GREEN, "three stars": THREE_STARS})
    for query, holds in (("no green", lambda sc: not any(o.color == "green" for o in sc.objects)),
                         ("three stars", lambda sc: sum(o.shape == "star" for o in sc.objects) >= 3)):
        want = {name for name, sc in scenes.items() if holds(sc)}
        assert 0 < len(want) < len(scenes)
        hits = search_read(index, None, query, k=len(scenes), parser=parser)
        top = [Path(h.item).name for h in hits[: len(want)]]
        assert set(top) == want  # every image where it holds, first, not only embedding neighbours
        assert all(h.score == 1.0 for h in hits[: len(want)]) and hits[len(want)].score < 1.0


def test_refused_query_gets_no_hits_and_the_reason(indexed):
    _, index, _ = indexed
    hits = search_read(index, None, "a truck", parser=_Parser({"a truck": "cannot see 'truck' with the shapes engines"}))
    assert list(hits) == [] and "'truck'" in hits.refusal


def test_reindex_skips_known_images_and_old_indexes_get_detections(indexed, tmp_path):
    import json

    from builder.methods.image_index import SearchIndex, build_index
    from builder.tools.backends.shapes import ShapesEmbedder
    from builder.tools.detections import DETECTIONS_FILE

    ws, index, scenes = indexed
    folder = Path(index.items[0]["path"]).parent

    class Counting(ShapesDetector):
        calls = 0

        def detect(self, image, query, threshold=None):
            Counting.calls += 1
            return super().detect(image, query, threshold)

    res = build_index(ws, folder, embedder=ShapesEmbedder(), detector=Counting(), progress=False)
    assert (res.added, res.already_indexed, Counting.calls) == (0, len(scenes), 0)
    # an index written before detections were stored: its known images are detected once
    meta = json.loads((index.folder / "meta.json").read_text())
    meta.pop("detector")
    (index.folder / "meta.json").write_text(json.dumps(meta))
    (index.folder / DETECTIONS_FILE).unlink()
    assert SearchIndex.open(ws).objects is None
    res = build_index(ws, folder, embedder=ShapesEmbedder(), detector=Counting(), progress=False)
    assert res.redetected == len(scenes) and res.objects == len(index.objects)
    again = SearchIndex.open(ws)
    assert np.array_equal(again.objects.counts, index.objects.counts)
    assert np.array_equal(again.objects.color, index.objects.color)


def _holds(tree, scenes) -> list[bool]:
    form = search_form(tree)
    return [bool(tree_truth.answer(form, sc)) for sc in scenes]


# Search-box descriptions (not questions) read by the shipped composing parser; the gold trees are
# compared by their ground truth on scenes, so any equivalent reading passes.
_STAR, _SQUARE = T.select(shape="star"), T.select(shape="square")
BUT_NO = {"op": "all_of", "args": [{"op": "exists", "set": T.select(shape="circle")},
                                   {"op": "not", "arg": {"op": "exists", "set": T.select(shape="hexagon")}}]}
DESCRIPTIONS = [
    pytest.param("pictures with a circle but no hexagons", BUT_NO, marks=pytest.mark.xfail(
        strict=True, reason="known: the shipped parser scopes the negation over both ('not (circles and hexagons)')")),
    ("only red things", {"op": "every", "set": {"op": "objects"}, "in": T.select(color="red")}),
    ("four or more squares",
     {"op": "compare", "cmp": ">=", "left": {"op": "count", "set": _SQUARE}, "right": {"op": "number", "value": 4}}),
    ("a blue star and a red circle",
     {"op": "all_of", "args": [{"op": "exists", "set": T.select("blue", "star")},
                               {"op": "exists", "set": T.select("red", "circle")}]}),
    ("images without any yellow objects", {"op": "not", "arg": {"op": "exists", "set": T.select(color="yellow")}}),
    ("neither stars nor squares",
     {"op": "not", "arg": {"op": "any_of", "args": [{"op": "exists", "set": _STAR}, {"op": "exists", "set": _SQUARE}]}}),
]


@pytest.mark.parametrize("query, gold", DESCRIPTIONS)
def test_the_shipped_parser_reads_search_descriptions(query, gold):
    scenes = [sample_scene(s) for s in range(300, 360)]
    reading = read_query(query)
    assert reading.refusal is None, reading.refusal
    assert _holds(reading.tree, scenes) == _holds(gold, scenes), reading.text
