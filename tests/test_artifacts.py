"""The one artifact format: round trip, registry, and clear errors for folders that do not load."""

import json

import pytest

from builder.core.artifacts import (
    Artifact,
    ArtifactError,
    load_artifact,
    read_record,
    registered_architectures,
)


class Prior(Artifact):
    """A tiny non-tensor artifact for the tests."""

    architecture = "test-prior"
    format_version = 2

    def __init__(self, weights: dict):
        self.weights = weights

    def artifact_config(self) -> dict:
        return {"weights": self.weights}

    def _save_files(self, folder):
        pass

    @classmethod
    def _from_files(cls, folder, config, info):
        return cls(config["weights"])


def test_round_trip_records_architecture_version_and_config(tmp_path):
    Prior({"a": 0.25}).save_pretrained(tmp_path / "p")
    record = json.loads((tmp_path / "p" / "config.json").read_text())
    assert record == {"architecture": "test-prior", "format_version": 2, "config": {"weights": {"a": 0.25}}}
    assert Prior.from_pretrained(tmp_path / "p").weights == {"a": 0.25}
    assert load_artifact(tmp_path / "p").weights == {"a": 0.25}
    assert registered_architectures()["test-prior"] is Prior


@pytest.mark.parametrize("content, problem", [
    ("{not json", "malformed JSON"),
    ('{"format_version": 1, "config": {}}', "records no architecture"),
    ('{"architecture": "test-prior", "config": {}}', "integer format_version"),
    ('{"architecture": "nobody", "format_version": 1, "config": {}}', "unknown architecture 'nobody'"),
    ('{"architecture": "test-prior", "format_version": 3, "config": {"weights": {}}}', "newer than"),
    ('{"architecture": "test-prior", "format_version": 1, "config": {}}', "config does not fit 'test-prior'"),
])
def test_bad_folders_name_the_folder_and_the_problem(tmp_path, content, problem):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "config.json").write_text(content)
    with pytest.raises(ArtifactError, match=problem) as e:
        load_artifact(folder)
    assert str(folder) in str(e.value)


def test_missing_record_and_wrong_class(tmp_path):
    with pytest.raises(ArtifactError, match="no config.json"):
        read_record(tmp_path)
    from builder.planner.semantic import SemanticParser

    Prior({}).save_pretrained(tmp_path / "p")
    with pytest.raises(ArtifactError, match="not a 'semantic-parser'"):
        SemanticParser.from_pretrained(tmp_path / "p")


def test_committed_weights_are_recorded_artifacts():
    from builder.planner.causal import WEIGHTS_DIR as CAUSAL
    from builder.planner.semantic import WEIGHTS_DIR as PARSER
    from builder.planner.video import HEAD_DIR

    assert read_record(PARSER)["architecture"] == "semantic-parser"
    assert read_record(CAUSAL)["architecture"] == "transformers-planner"
    assert read_record(HEAD_DIR)["architecture"] == "video-kind-head"


def _tiny_vqa():
    import torch

    from builder.domains.shapes.nets.vqa import ShapesVQANet, build_vocab

    torch.manual_seed(0)
    return ShapesVQANet(build_vocab(["How many red circles are there?"]), image_size=32, ch=8, n_blocks=1, emb=8,
                        hidden=16, n_slots=4)


def _tiny_embedder():
    import torch

    from builder.domains.shapes.nets.embed import DualEncoder

    torch.manual_seed(0)
    return DualEncoder(["<pad>", "<unk>", "red", "circle", "left", "of"], emb=8, hidden=12, dim=16)


def test_shapes_vqa_round_trip_gives_identical_answers(tmp_path):
    import numpy as np
    import torch

    from builder.domains.shapes.nets.vqa import ShapesVQANet

    model = _tiny_vqa()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the buffers must travel too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
    model.info = {"command": "test"}
    model.save_pretrained(tmp_path / "vqa")
    record = read_record(tmp_path / "vqa")
    assert record["architecture"] == "shapes-vqa-slots-v3" and record["info"] == {"command": "test"}
    assert record["config"]["n_slots"] == 4 and record["config"]["answers"] == list(model.answers)
    again = load_artifact(tmp_path / "vqa")
    assert type(again) is ShapesVQANet and again.config == model.config and not again.training
    images = [np.random.default_rng(i).integers(0, 255, (40, 30, 3), dtype=np.uint8) for i in range(3)]
    questions = ["How many red circles are there?", "What color?", "zorgle"]
    x = torch.rand(3, 3, 32, 32)
    tokens, lengths = model.encode_questions(questions)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, tokens, lengths), again(x, tokens, lengths))
    assert model.predict(images, questions) == again.predict(images, questions)


def test_shapes_embedder_round_trip_keeps_fp16_weights(tmp_path):
    import torch
    from safetensors.torch import load_file

    from builder.domains.shapes.nets.embed import MAX_OBJECTS, OBJ_FEATURES, DualEncoder

    model = _tiny_embedder().eval()
    with torch.no_grad():  # fp16 on disk: start from fp16-exact weights so outputs compare exactly
        for p in model.parameters():
            p.copy_(p.half().float())
    model.save_pretrained(tmp_path / "emb")
    assert {v.dtype for v in load_file(str(tmp_path / "emb" / "model.safetensors")).values()} == {torch.float16}
    again = DualEncoder.from_pretrained(tmp_path / "emb")
    assert read_record(tmp_path / "emb")["config"] == {"vocab": model.config["vocab"], "emb": 8, "hidden": 12,
                                                       "dim": 16}
    objects = torch.rand(2, MAX_OBJECTS, OBJ_FEATURES)
    texts = ["a red circle", "left of a circle, and a red zorgle"]
    with torch.no_grad():
        assert torch.equal(model.encode_images(objects), again.encode_images(objects))
        assert torch.equal(model.encode_texts(texts), again.encode_texts(texts))
    with pytest.raises(ArtifactError, match="not a 'shapes-vqa-slots-v3'"):
        load_artifact(tmp_path / "emb", expected=type(_tiny_vqa()))


def _write_old_layout(model, folder, arch: str, training: dict) -> None:
    """A folder as the former ``save_model`` wrote it: config.json without a record."""
    from builder.core.artifacts import save_state

    folder.mkdir()
    save_state(folder, model)
    (folder / "config.json").write_text(json.dumps({"arch": arch, **model.config, "training": training}))


def test_old_layout_folder_names_itself_and_the_conversion(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import torch

    from builder.domains.shapes.nets.vqa import ShapesVQANet
    from builder.tools.backends.shapes import ShapesVQA

    model = _tiny_vqa().eval()
    old = tmp_path / "epoch-0003"
    _write_old_layout(model, old, "slots-v3", {"steps": 3})
    hint = f"python scripts/convert_artifacts.py {old}"
    for load in (ShapesVQANet.from_pretrained, load_artifact, ShapesVQA):
        with pytest.raises(ArtifactError, match="records no architecture") as e:
            load(old)
        assert str(old) in str(e.value) and hint in str(e.value)
    before = (old / "model.safetensors").read_bytes()
    script = Path(__file__).resolve().parents[1] / "scripts" / "convert_artifacts.py"
    done = subprocess.run([sys.executable, str(script), str(old)], capture_output=True, text=True, check=True)
    assert "shapes VQA network" in done.stdout
    assert (old / "model.safetensors").read_bytes() == before  # the weights' bytes are untouched
    record = read_record(old)
    assert record["architecture"] == "shapes-vqa-slots-v3" and record["info"] == {"steps": 3}
    again = ShapesVQANet.from_pretrained(old)
    # a SelTDA shapes teacher made before the change: its answerer/ converts with it
    teacher = tmp_path / "teacher"
    Prior({}).save_pretrained(teacher)
    _write_old_layout(model, teacher / "answerer", "slots-v3", {})
    done = subprocess.run([sys.executable, str(script), str(teacher)], capture_output=True, text=True, check=True)
    assert "answerer/: shapes VQA network" in done.stdout
    assert isinstance(load_artifact(teacher / "answerer"), ShapesVQANet)
    x, (tokens, lengths) = torch.rand(2, 3, 32, 32), model.encode_questions(["How many?", "red circles"])
    with torch.no_grad():
        assert torch.equal(model(x, tokens, lengths), again(x, tokens, lengths))


def test_committed_shapes_weights_are_recorded_artifacts():
    from builder.domains.shapes.nets import embed, vqa

    assert read_record(vqa.DEFAULT_WEIGHTS)["architecture"] == "shapes-vqa-slots-v3"
    assert read_record(embed.DEFAULT_WEIGHTS)["architecture"] == "shapes-dual-encoder"
    assert isinstance(load_artifact(embed.DEFAULT_WEIGHTS), embed.DualEncoder)
