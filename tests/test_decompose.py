"""Selective decomposition: thresholding, flip counting on fake engines, world decomposition."""

import numpy as np

from builder.domains.shapes.world import build_world, render_array
from builder.methods.decompose import (
    Decomposition,
    SelectiveVQA,
    TextDecomposer,
    WorldDecomposer,
    parse_world_question,
    planner_subquestions,
    sweep,
)
from builder.tools.engines import Answer


class TableVQA:
    """Answers from a table keyed by question text (the image is ignored)."""

    backend_id, version = "fake:vqa", "1"

    def __init__(self, table):
        self.table = table
        self.calls = []

    def answer(self, image, question):
        self.calls.append(question)
        return Answer(*self.table.get(question, ("?", 0.0)))


class TableDecomposer:
    def __init__(self, table):
        self.table = table

    def decompose(self, image, question):
        return Decomposition(answer=self.table.get(question), rule="table")


def test_flips_counted_on_fake_engine():
    img = np.zeros((8, 8, 3), np.uint8)
    # (first answer, confidence) / decomposition answer / expected
    first = {"q1": ("yes", 0.9), "q2": ("no", 0.2), "q3": ("2", 0.4), "q4": ("red", 0.6), "q5": ("3", 0.1)}
    decomp = {"q1": "no", "q2": "yes", "q3": "3", "q4": "red", "q5": None}
    items = [(img, "q1", "yes"), (img, "q2", "yes"), (img, "q3", "2"), (img, "q4", "blue"), (img, "q5", "3")]
    rep = sweep(TableVQA(first), TableDecomposer(decomp), items, taus=(0.3, 0.5, 0.95), progress=False)
    assert rep["never"] == {"accuracy": 0.6, "decomposed": 0.0, "wrong_to_right": 0, "right_to_wrong": 0}
    # always: q1 right->wrong, q2 wrong->right, q3 right->wrong, q4 stays wrong, q5 inconclusive keeps "3"
    assert rep["always"] == {"accuracy": 0.4, "decomposed": 1.0, "wrong_to_right": 1, "right_to_wrong": 2}
    # tau 0.3: q2 (0.2) and q5 (0.1) decompose -> q2 flips up
    assert rep["selective"]["0.3"] == {"accuracy": 0.8, "decomposed": 0.4, "wrong_to_right": 1, "right_to_wrong": 0}
    # tau 0.5: q2, q3, q5 -> q2 up, q3 down
    assert rep["selective"]["0.5"] == {"accuracy": 0.6, "decomposed": 0.6, "wrong_to_right": 1, "right_to_wrong": 1}
    assert rep["selective"]["0.95"] == rep["always"]
    assert rep["decomposition_conclusive"] == 0.8 and rep["decomposition_accuracy"] == 0.2


def test_selective_vqa_threshold_and_inconclusive():
    img = np.zeros((8, 8, 3), np.uint8)
    vqa = TableVQA({"q": ("no", 0.4)})
    sel = SelectiveVQA(vqa, TableDecomposer({"q": "yes"}), tau=0.5)
    out = sel.answer(img, "q")
    assert out.decomposed and out.text == "yes" and out.first.text == "no"
    assert not SelectiveVQA(vqa, TableDecomposer({"q": "yes"}), tau=0.3).answer(img, "q").decomposed
    kept = SelectiveVQA(vqa, TableDecomposer({}), tau=0.5).answer(img, "q")
    assert kept.decomposed and kept.text == "no"


def test_text_decomposer_reasks_with_context():
    img = np.zeros((8, 8, 3), np.uint8)
    vqa = TableVQA({"Is there a cat?": ("yes", 0.9),
                    "Context: Is there a cat? yes. Question: What animal is it?": ("cat", 0.8)})
    d = TextDecomposer(lambda q: ["Is there a cat?"], vqa).decompose(img, "What animal is it?")
    assert d.answer == "cat" and [s.answer for s in d.subs] == ["yes"]


def test_planner_backed_subquestions():
    class FakePlanner:
        def complete(self, prompts, k, temperature, top_p, max_new_tokens=None):
            assert "Question: How many cats?" in prompts[0] and temperature == 0.0
            return [["1. Is there a cat?\n2. Is there a second cat?\nnot a question\n"]]

    assert planner_subquestions(FakePlanner())("How many cats?") == ["Is there a cat?", "Is there a second cat?"]


def test_parse_world_question():
    assert parse_world_question("How many red circles are there?") == ("count", {"objs": "red circles"})
    assert parse_world_question("Is the blue square left of the star?") == (
        "relation", {"a": "blue square", "rel": "left of", "b": "star"})
    assert parse_world_question("What is the airspeed of a swallow?") is None


class GroundTruthDetector:
    """Detector answering from scene ground truth (test stand-in for the shapes detector)."""

    backend_id, version = "gt:detector", "1"

    def __init__(self, scene):
        self.scene = scene

    def detect(self, image, query, threshold=None):
        from builder.domains.shapes.vocab import parse_phrase
        from builder.tools.engines import Detection

        spec = parse_phrase(query, strict=True)
        return [Detection(o.box, 1.0, query) for o in self.scene.objects if spec.matches(o)]


class CropVQA:
    """Answers crop questions from the scene object at the crop's place (test stand-in)."""

    backend_id, version = "gt:vqa", "1"

    def __init__(self, scene):
        self.scene, self.full = scene, render_array(scene)

    def answer(self, image, question):
        import cv2

        y, x = np.unravel_index(np.argmin(cv2.matchTemplate(self.full, image, cv2.TM_SQDIFF)), (
            self.full.shape[0] - image.shape[0] + 1, self.full.shape[1] - image.shape[1] + 1))
        for o in self.scene.objects:
            cx, cy = o.center
            if x <= cx < x + image.shape[1] and y <= cy < y + image.shape[0]:
                return Answer(o.color if "color" in question else o.shape, 1.0)
        return Answer("?", 0.0)


def test_world_decomposition_is_right_with_perfect_steps():
    scenes, exs = build_world(25, 2, "clean", families=("vqa",))
    done = right = 0
    for e in exs:
        if e["qtype"] == "read":
            continue
        scene = scenes[e["scene_ids"][0]]
        dec = WorldDecomposer(GroundTruthDetector(scene), CropVQA(scene)).decompose(render_array(scene), e["query"])
        if dec.answer is not None:
            done += 1
            right += dec.answer == e["expected"]
    assert done >= 20 and right / done >= 0.85
