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
