"""Parameter tuning: lifting constants (valid programs, layout kept) and fixing a bad threshold."""

import numpy as np
import pytest
from PIL import Image

from builder.core.taskcard import parse_task_card
from builder.core.workspace import Workspace
from builder.executor import validate
from builder.methods.tune import TuneError, apply_params, lift_constants, tune_workspace
from builder.tools.engines import Detection
from builder.tools.host import Engines

SRC = '''def execute(image, query):
    # keep confident detections only
    objs = [p for p in image.find("square") if p.score > 0.95]
    first = image.find("square")[0] if objs else None
    return len(objs)
'''


def test_lift_constants_keeps_layout_and_validates():
    lifted = lift_constants(SRC)
    assert [p.name for p in lifted.params] == ["score_threshold"]
    assert lifted.params[0].value == 0.95 and (lifted.params[0].low, lifted.params[0].high) == (0.0, 1.0)
    assert lifted.source.splitlines()[0] == "def execute(image, query, score_threshold=0.95):"
    assert "# keep confident detections only" in lifted.source and "[0]" in lifted.source  # subscripts stay
    validate(lifted.source)
    tuned = apply_params(lifted, {"score_threshold": 0.5})
    assert "score_threshold=0.5)" in tuned and "p.score > score_threshold" in tuned
    validate(tuned)
    with pytest.raises(KeyError):
        apply_params(lifted, {"nope": 1})
    with pytest.raises(TuneError, match="no numeric constants"):
        lift_constants("def execute(image):\n    return image.find('x')[0]\n")


class BrightnessDetector:
    """One detection per lit block; its score is the block's brightness (faint blocks are noise)."""

    backend_id, version = "test:brightness", "1"

    def detect(self, image, query, threshold=None):
        from scipy import ndimage

        labels, _ = ndimage.label(image[:, :, 0] > 40)
        out = []
        for sl in ndimage.find_objects(labels):
            ys, xs = sl
            out.append(Detection((xs.start, ys.start, xs.stop, ys.stop), float(image[ys, xs, 0].mean()) / 255, query))
        return out


def test_tuning_fixes_a_bad_threshold(tmp_path):
    rng = np.random.default_rng(0)
    examples = []
    for i in range(16):
        img = np.zeros((24, 120, 3), np.uint8)
        n_real, n_faint = int(rng.integers(0, 4)), int(rng.integers(0, 3))
        for k in range(n_real + n_faint):
            img[6:16, 4 + 14 * k: 14 + 14 * k] = 200 if k < n_real else 80  # scores 0.78 vs 0.31
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        examples.append({"image": f"{i}.png", "query": "How many squares?", "expected": n_real})
    card = parse_task_card({"name": "count-bright", "description": "Count the bright squares.", "output": "count",
                            "examples": examples})
    ws = Workspace.init(tmp_path / "ws", card, images_from=tmp_path)
    pv = ws.add_program(SRC, origin="engineer")
    ws.accept(pv.version)
    res, new = tune_workspace(ws, n_trials=12, heldout_fraction=0.25, seed=0,
                              engines=Engines(detector=BrightnessDetector()), progress=False, workers=1)
    assert 0.31 < res.params["score_threshold"] < 0.78
    assert res.tuned["tune"] == 1.0 and res.tuned["heldout"] == 1.0
    assert res.untuned["heldout"] < 1.0 and res.untuned["tune"] < 1.0
    saved = ws.program(new.version)
    assert saved.origin == "tuned" and saved.parent == pv.version
    assert saved.params["values"] == res.params and saved.params["untuned"] == res.untuned
    validate(saved.source)
