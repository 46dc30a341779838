"""The visforge CLI, run as a real process: a thin layer over the API."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

from builder.domains.shapes.world.cards import make_task_card

CLI = [sys.executable, "-m", "builder.interfaces.cli"]


def cli(*args, cwd=None):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_world_generate_is_deterministic(tmp_path):
    a = cli("world", "generate", "--out", tmp_path / "a", "--n", 20, "--seed", 3)
    b = cli("world", "generate", "--out", tmp_path / "b", "--n", 20, "--seed", 3)
    assert a.returncode == 0 and b.returncode == 0, a.stderr
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 20 + 3
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    bad = cli("world", "generate", "--out", tmp_path / "c", "--n", 2, "--domain", "mars")
    assert bad.returncode == 2 and "unknown domain preset 'mars'" in bad.stderr


def test_task_validate_and_workspace(tmp_path):
    card = make_task_card(tmp_path / "task", kind="exists", target="blue circle", n=4)
    ok = cli("task", "validate", card)
    assert ok.returncode == 0 and "ok (exists-blue-circles: bool" in ok.stdout
    data = yaml.safe_load(card.read_text())
    data["examples"][2]["expected"] = "perhaps"
    broken = tmp_path / "task" / "broken.yaml"
    broken.write_text(yaml.safe_dump(data))
    res = cli("task", "validate", broken)
    assert res.returncode == 2 and "broken.yaml: examples[2].expected: expected yes/no" in res.stderr

    assert cli("workspace", "init", tmp_path / "ws", "--task", card).returncode == 0
    shown = cli("workspace", "show", tmp_path / "ws")
    summary = json.loads(shown.stdout)
    assert summary["task"]["examples"] == 4 and summary["programs"] == 0
    assert len(list(Path(tmp_path / "ws" / "images").iterdir())) == 4
    again = cli("workspace", "init", tmp_path / "ws", "--task", card)
    assert again.returncode == 2 and "already a workspace" in again.stderr


def test_cards_expected_from_ground_truth(tmp_path):
    from builder.core.taskcard import load_task_card

    card = load_task_card(make_task_card(tmp_path, kind="count", target="red objects", n=10), check_images=True)
    assert card.output.value == "count" and len(card.examples) == 10
    assert len({ex.expected for ex in card.examples}) > 1, "answers should vary across examples"
    loc = load_task_card(make_task_card(tmp_path / "l", kind="locate", target="square", n=3))
    assert all(isinstance(ex.expected, list) for ex in loc.examples)
