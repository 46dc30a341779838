"""Tests of the offline ``shapes`` engines. Scene ground truth serves only as the test oracle."""

from __future__ import annotations

import collections
import dataclasses
import json

import numpy as np
import pytest
import torch

from builder.domains.shapes.nets import vqa as vqa_net
from builder.domains.shapes.training import vqa as vqa_train
from builder.domains.shapes.vocab import SHAPES, parse_phrase
from builder.domains.shapes.world.scene import COLORS, render_array, sample_scene, shape_mask
from builder.domains.shapes.world.tasks import make_example
from builder.tools.backends.shapes import (
    ShapesCaptioner,
    ShapesDetector,
    ShapesMatcher,
    ShapesVQA,
    parse_caption,
)
from builder.tools.engines import Captioner, Detection, Detector, Matcher, VQAEngine
from builder.tools.host import Engines, ToolHost

SEED = 4242  # not a training seed (training uses 0 and 10_000)


@pytest.fixture(scope="module")
def detector():
    return ShapesDetector()


@pytest.fixture(scope="module")
def vqa():
    torch.set_num_threads(1)
    return ShapesVQA()


def _scenes(n, domain="clean"):
    return [sample_scene(np.random.default_rng([SEED, i]), domain) for i in range(n)]


def test_engines_satisfy_protocols(detector, vqa):
    assert isinstance(detector, Detector)
    assert isinstance(vqa, VQAEngine)
    assert isinstance(ShapesCaptioner(detector), Captioner)
    assert isinstance(ShapesMatcher(detector), Matcher)
    assert detector.backend_id == "shapes:detector" and detector.version
    assert vqa.version.startswith("1+")


def test_detector_finds_exactly_the_objects_of_clean_scenes(detector):
    for scene in _scenes(30):
        found = detector.objects(render_array(scene))
        want = sorted((o.box, o.shape, o.color, o.size) for o in scene.objects)
        got = sorted((o.box, o.shape, o.color, o.size) for o in found)
        assert got == want


def test_detect_filters_by_query(detector):
    scene = _scenes(1)[0]
    img = render_array(scene)
    everything = detector.detect(img, "objects")
    assert len(everything) == len(scene.objects)
    assert all(isinstance(d, Detection) and 0 <= d.score <= 1 for d in everything)
    obj = scene.objects[0]
    for query in (f"{obj.color} {obj.shape}", f"the {obj.size} {obj.color} {obj.shape}s", f"all {obj.color} things"):
        boxes = {d.box for d in detector.detect(img, query)}
        assert obj.box in boxes
        assert all(any(o.box == b and o.color == obj.color for o in scene.objects) for b in boxes)
    assert detector.detect(img, "car") == []
    assert detector.detect(img, "red car") == []
    assert detector.detect(img, "") == []


@pytest.mark.parametrize("text, expected", [
    ("red circle", ("red", "circle", None, None, True)),
    ("the large blue squares", ("blue", "square", "large", None, True)),
    ("circles", (None, "circle", None, None, True)),
    ("an object", (None, None, None, None, True)),
    ("shapes", (None, None, None, None, True)),
    ("big shiny green star", ("green", "star", "large", None, True)),  # synonym; unknown modifier ignored
    ("giant red circle", ("red", "circle", "large", None, True)),  # was ignored: found circles of any size
    ("no teal discs", ("cyan", "circle", None, 0, True)),
    ("two red hexagons", ("red", "hexagon", None, 2, True)),
    ("There are 3 small triangles.", (None, "triangle", "small", 3, True)),
    ("banana", (None, None, None, None, False)),
    ("red banana", ("red", None, None, None, False)),
])
def test_parse_phrase_lenient(text, expected):
    q = parse_phrase(text)
    assert (q.color, q.shape, q.size, q.count, q.known) == expected


def test_parse_caption_relations_and_counts():
    kinds = [c[0] for c in parse_caption("There is a red circle left of a small blue square.")]
    assert kinds == ["exists", "exists", "relation"]
    assert parse_caption("The image shows exactly 2 cyan stars.")[0][0] == "count"
    assert parse_caption("three objects: a red circle, a blue square, a green star")[0][1].count == 3


def test_vqa_default_weights_beat_bar_on_heldout_scenes(vqa):
    # QA from scenes never used in training, training phrasings. The committed weights score
    # about 0.99 on clean scenes (scene-level 0.993, crop questions 0.998 on 1,340 QA); the
    # majority answer ("yes") would score about 0.22. Crop questions (what programs ask after
    # find()) and scene-level reasoning questions get their own bars.
    data = vqa_train.build_dataset(12, SEED, "clean", "train")[:100]
    result = vqa_train.evaluate(vqa.model, data)
    assert result["n"] == 100
    assert result["overall"] >= 0.95, result
    crops = [ex for ex in data if ex.meta["qtype"].startswith("crop_")]
    assert len(crops) >= 30 and vqa_train.evaluate(vqa.model, crops)["overall"] >= 0.97
    scene = [ex for ex in vqa_train.build_dataset(30, SEED + 1, "clean", "train")
             if ex.meta["qtype"] in vqa_train.SCENE_QTYPES]
    assert len(scene) >= 150 and vqa_train.evaluate(vqa.model, scene)["overall"] >= 0.93
    ans = vqa.answer(data[0].image, data[0].question)
    assert ans.text in vqa_net.ANSWERS and 0 < ans.confidence <= 1


def test_vqa_answers_crop_questions(vqa, detector):
    right = total = 0
    for scene in _scenes(10):
        img = render_array(scene)
        for o in scene.objects:
            x0, y0, x1, y1 = o.box
            crop = img[y0:y1, x0:x1]
            right += vqa.answer(crop, "What color is this object?").text == o.color
            right += vqa.answer(crop, "What shape is this object?").text == o.shape
            total += 2
    assert right / total >= 0.85


def test_vqa_oov_words_and_bad_input(vqa):
    img = render_array(_scenes(1)[0])
    assert vqa.answer(img, "Zorgle blarp?").text in vqa_net.ANSWERS  # all <unk>, no crash
    with pytest.raises(ValueError):
        vqa.answer(img, "  ")
    with pytest.raises(ValueError):
        vqa.answer(img.astype(np.float32), "What color is this?")


def test_reduced_training_command_writes_loadable_weights(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "w"
    args = {"perception_steps": 4, "steps": 12, "joint_steps": 2, "n_scenes": 40, "batch_size": 32,
            "eval_scenes": 0, "log_every": 6}
    vqa_train.train_command(out, **args)
    vqa_train.train_command(tmp_path / "again", **args)
    engine = ShapesVQA(weights=out)
    assert ShapesVQA(weights=tmp_path / "again").version == engine.version  # same seed, same bytes
    record = json.loads((out / "config.json").read_text())
    assert record["architecture"] == "shapes-vqa-slots-v3" and record["info"]["steps"] == 12
    img = render_array(_scenes(1)[0])
    assert engine.answer(img, "How many circles are there?").text in vqa_net.ANSWERS
    # resume / fine-tune from those weights on plain (image, question, answer) triples
    triples = [(img, "How many objects are there?", str(len(_scenes(1)[0].objects)))] * 8
    hist = vqa_train.train(engine.model, triples, steps=3, batch_size=4, lr=1e-4, log_every=1, log=lambda m: None)
    assert len(hist["loss"]) == 3


def test_slots_are_the_objectness_peaks():
    # Two objects: objectness peaks at cells (2, 3) and (6, 1) of an 8x8 grid; every other cell is
    # empty. The slots must be those two cells (strongest first), with the attributes read there
    # and positions at the cell centres moved by the predicted sub-cell offsets.
    aux = torch.full((1, vqa_net.AUX_CHANNELS, 8, 8), -6.0)
    aux[0, 0, 3, 2], aux[0, 0, 1, 6] = 5.0, 3.0
    aux[0, 1 + 2, 3, 2] = 9.0  # third colour at the first peak
    aux[0, -2:] = 0.0  # centred in their cells ...
    aux[0, -2, 1, 6] = 0.5493  # ... but the second object a quarter cell right (0.5 * tanh = 0.25)
    slots = vqa_net.extract_slots(aux, 4)
    assert slots.obj.shape == (1, 1, 1, 4)
    assert slots.obj[0, 0, 0, :2].min() > 0.9 and slots.obj[0, 0, 0, 2:].max() < 0.01
    assert int(slots.color[0, :, 0, 0].argmax()) == 2
    assert torch.allclose(slots.pos[0, :, 0, 0], torch.tensor([(2.5 / 8) * 2 - 1, (3.5 / 8) * 2 - 1]))
    assert torch.allclose(slots.pos[0, :, 0, 1], torch.tensor([(6.75 / 8) * 2 - 1, (1.5 / 8) * 2 - 1]),
                          atol=1e-4)


def test_save_load_round_trip_identical(vqa, tmp_path):
    vqa.save(tmp_path / "copy")
    other = ShapesVQA(weights=tmp_path / "copy")
    assert other.version == vqa.version
    img = render_array(_scenes(2)[1])
    for q in ("How many red objects are there?", "Is there a blue star?", "What color is this?"):
        a, b = vqa.answer(img, q), other.answer(img, q)
        assert a == b


def test_missing_weights_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        ShapesVQA(weights=tmp_path)


def test_matcher_picks_true_caption(detector):
    matcher = ShapesMatcher(detector)
    right = total = 0
    for i, scene in enumerate(_scenes(40)):
        rng = np.random.default_rng([SEED, i, 9])
        ex = make_example(scene, rng, "itm", ("text_exists", "text_relation", "text_count")[i % 3], 0.5)
        if ex is None:
            continue
        scores = matcher.scores(render_array(scene), ex["choices"])
        right += int(np.argmax(scores)) == ex["expected"]
        total += 1
    assert total >= 25 and right / total >= 0.9


def test_captioner_mentions_every_object(detector):
    captioner = ShapesCaptioner(detector)
    for scene in _scenes(10):
        cap = captioner.caption(render_array(scene))
        want = collections.Counter(f"{o.size} {o.color} {o.shape}" for o in scene.objects)
        assert all(cap.count(name) >= k for name, k in want.items()), cap
    blank = np.full((64, 64, 3), 215, np.uint8)
    assert captioner.caption(blank) == "no objects"
    assert detector.detect(blank, "objects") == []


def test_tools_through_the_host(detector, vqa):
    scene = _scenes(3)[2]
    img = render_array(scene)
    host = ToolHost(Engines(detector=detector, vqa=vqa, captioner=ShapesCaptioner(detector),
                            matcher=ShapesMatcher(detector)), [img])
    whole = {"image": 0, "box": [0, 0, img.shape[1], img.shape[0]]}
    found = host("find", whole, ["object"])
    assert sorted(tuple(f["box"]) for f in found) == sorted(o.box for o in scene.objects)
    assert isinstance(host("query", {"image": 0, "box": found[0]["box"]}, ["What color is this object?"]), str)
    assert isinstance(host("caption", whole, []), str)
    assert 0 <= host("best_text_match", whole, [["There is a red circle.", "There is a blue star."]]) <= 1


def test_photos_are_seen_at_512_pixels_and_read_as_right(detector, vqa):
    """The shapes engines declare a 512-pixel working side: a 1600-pixel photo of a scene reaches
    them at 512 pixels, and the objects found there, in the photo's coordinates, are the scene's."""
    from PIL import Image

    engines = Engines(detector=detector, vqa=vqa, captioner=ShapesCaptioner(detector), matcher=ShapesMatcher(detector))
    assert engines.working_side() == 512
    for scene in _scenes(10):
        photo = np.asarray(Image.fromarray(render_array(scene)).resize((1600, 1600), Image.Resampling.BICUBIC))
        host = ToolHost(engines, [photo])
        assert host.images[0].shape[:2] == (512, 512)
        found = host("find", {"image": 0, "box": [0, 0, 1600, 1600]}, ["object"])
        scale = 1600 / scene.width
        got = sorted((f["box"][0] // scale, f["box"][1] // scale) for f in found)
        want = sorted((o.box[0], o.box[1]) for o in scene.objects)
        assert len(got) == len(want) and all(abs(g[0] - w[0]) <= 2 and abs(g[1] - w[1]) <= 2
                                             for g, w in zip(got, want, strict=True)), (got, want)


def _moved(scene, dx, dy):
    """The scene with every object's nominal square reflected (left-right when ``dx``, top-bottom
    when ``dy``); objects keep their upright masks, so only positions change."""
    objs = []
    for o in scene.objects:
        x = scene.width - o.origin[0] - o.side if dx else o.origin[0]
        y = scene.height - o.origin[1] - o.side if dy else o.origin[1]
        sx, sy = x - o.origin[0], y - o.origin[1]
        objs.append(dataclasses.replace(o, origin=(x, y), box=(o.box[0] + sx, o.box[1] + sy, o.box[2] + sx, o.box[3] + sy)))
    return dataclasses.replace(scene, objects=tuple(objs))


def _restyled(scene, j, color=None, shape=None):
    """The scene with object ``j`` repainted in ``color`` or redrawn as ``shape`` (same place, side)."""
    o = scene.objects[j]
    if shape is not None:
        x0, y0, x1, y1 = shape_mask(shape, o.side).getbbox()
        o = dataclasses.replace(o, shape=shape, box=(o.origin[0] + x0, o.origin[1] + y0, o.origin[0] + x1, o.origin[1] + y1),
                                text=o.text if shape in ("square", "circle") else None)
    if color is not None:
        o = dataclasses.replace(o, color=color, rgb=COLORS[color])
    return dataclasses.replace(scene, objects=scene.objects[:j] + (o,) + scene.objects[j + 1:])


def _counterfactuals(scenes, i, rng):
    """Other images to ask scene ``i``'s question of: another scene, the same objects mirrored
    left-right or top-bottom (relations flip), or one object repainted or reshaped (attributes
    and colour counts change). The first whose true answer differs is used."""
    n = len(scenes)
    yield scenes[(i + 1 + int(rng.integers(n - 1))) % n]
    scene = scenes[i]
    yield _moved(scene, True, False)
    yield _moved(scene, False, True)
    for j in rng.permutation(len(scene.objects)):
        o = scene.objects[j]
        yield _restyled(scene, j, color=[c for c in COLORS if c != o.color][int(rng.integers(len(COLORS) - 1))])
        yield _restyled(scene, j, shape=[s for s in SHAPES if s != o.shape][int(rng.integers(len(SHAPES) - 1))])


def _swap_pairs(n_scenes: int, domain: str = "clean", heldout: float = 0.0):
    """Scene-level questions asked of their own image and of a counterfactual image, kept where
    the ground-truth answer differs between the two images (every scene-level question type)."""
    from augment.seltda import world_answer

    scenes = [sample_scene(np.random.default_rng([SEED, 77, i]), domain) for i in range(n_scenes)]
    rows = []
    for i, scene in enumerate(scenes):
        rng = np.random.default_rng([SEED, 78, i])
        for qtype in vqa_train.SCENE_QTYPES:
            ex = make_example(scene, rng, "vqa", qtype, heldout)
            if ex is None or ex["expected"] not in vqa_net.ANSWERS:
                continue
            for other in _counterfactuals(scenes, i, rng):
                swapped = world_answer(other, ex["query"])
                if swapped is not None and swapped != ex["expected"] and swapped in vqa_net.ANSWERS:
                    rows.append((render_array(scene), render_array(other), ex["query"], qtype))
                    break
    return rows


def _changed_by_type(model, rows):
    own = model.predict([r[0] for r in rows], [r[2] for r in rows])
    swapped = model.predict([r[1] for r in rows], [r[2] for r in rows])
    by_type = collections.defaultdict(list)
    for a, b, r in zip(own, swapped, rows, strict=True):
        by_type[r[3]].append(a[0] != b[0])
    return by_type


@pytest.mark.parametrize("domain", ["clean", "shifted"])
def test_vqa_image_swap_changes_scene_level_answers(vqa, domain):
    # A model that answers from the question alone (the majority answer per question) keeps its
    # answer when the image is swapped; the shipped weights must look: where the true answer
    # changes with the image, the prediction must change for >= 80% of the questions, and for at
    # least half of every scene-level question type (relations included; measured: clean 0.98
    # overall, the lowest type compare 0.88; shifted 0.93, compare 0.57).
    by_type = _changed_by_type(vqa.model, _swap_pairs(40, domain))
    summary = {t: (round(float(np.mean(v)), 2), len(v)) for t, v in sorted(by_type.items())}
    assert all(len(by_type[t]) >= 15 for t in vqa_train.SCENE_QTYPES), summary
    assert np.mean([c for v in by_type.values() for c in v]) >= 0.8, summary
    assert all(np.mean(v) >= 0.5 for v in by_type.values()), summary


@pytest.mark.parametrize("domain", ["clean", "shifted"])
def test_vqa_image_swap_on_held_out_phrasings(vqa, domain):
    # The same check with the world's held-out phrasings (never trained on). Measured: clean 0.81,
    # shifted 0.83 overall; relate_attr 0.29 / 0.20 (on new wording of that question the engine
    # mostly answers from the words), so only the overall share is held to a bar here.
    by_type = _changed_by_type(vqa.model, _swap_pairs(40, domain, heldout=1.0))
    summary = {t: (round(float(np.mean(v)), 2), len(v)) for t, v in sorted(by_type.items())}
    assert all(len(by_type[t]) >= 15 for t in vqa_train.SCENE_QTYPES), summary
    assert np.mean([c for v in by_type.values() for c in v]) >= 0.75, summary


def test_image_swap_check_fails_a_blind_model():
    # The check itself: a model that ignores pixels changes no prediction.
    class Blind:
        def predict(self, images, questions):
            return [("yes" if q.startswith(("Is", "Are")) else "1", 1.0) for q in questions]

    by_type = _changed_by_type(Blind(), _swap_pairs(20))
    assert set(by_type) == set(vqa_train.SCENE_QTYPES)
    assert not any(c for v in by_type.values() for c in v)
