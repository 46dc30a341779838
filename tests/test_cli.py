"""The visforge CLI, run as a real process: a thin layer over the API."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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


# ---- long commands run as jobs: Ctrl-C (SIGINT) cancels them cleanly ----------------------------
def _interrupt_when(proc, ready, timeout=120):
    """Send SIGINT to ``proc`` once ``ready()`` holds; returns (exit code, stderr, seconds it took to stop)."""
    import signal
    import time

    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, "the command did not get going"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    t0 = time.time()
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err, time.time() - t0


def test_run_is_cancelled_by_sigint(tmp_path):
    import time

    card = make_task_card(tmp_path / "task", kind="count", target="red objects", n=3)
    loop = tmp_path / "loop.py"
    loop.write_text("def execute(image):\n    n = 0\n    while True:\n        n += 1\n    return n\n")
    proc = subprocess.Popen([*CLI, "run", str(loop), "--task", str(card), "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import psutil

    seen: list[float] = []

    def running() -> bool:  # sandbox workers started, and the engines had a moment to load
        if not seen and psutil.Process(proc.pid).children(recursive=True):
            seen.append(time.time())
        return bool(seen) and time.time() - seen[0] > 3

    code, err, seconds = _interrupt_when(proc, running)
    assert code == 130 and "cancelled" in err, err
    assert seconds < 20  # the programs were killed, not waited for (their timeout is 30 s)


def test_finetune_is_cancelled_by_sigint_and_leaves_no_checkpoint(tmp_path):
    import torch

    from builder.core.workspace import Workspace
    from builder.domains.shapes.nets import vqa as sv
    from builder.domains.shapes.training import vqa as sv_train
    from builder.methods.finetune import save_qa_dataset

    card = make_task_card(tmp_path / "task", kind="count", target="red objects", n=2)
    assert cli("workspace", "init", tmp_path / "ws", "--task", card).returncode == 0
    ws = Workspace.open(tmp_path / "ws")
    data = sv_train.build_dataset(30, 0, "clean")
    save_qa_dataset(ws.dir("datasets", "real"), [(q.image, q.question, q.answer) for q in data])
    torch.manual_seed(0)
    init = sv.ShapesVQANet(sv.build_vocab(q.question for q in data), image_size=32, ch=8, n_blocks=1, emb=8,
                           hidden=16).save_pretrained(tmp_path / "init")
    run = ws.root / "checkpoints" / "stopped"
    proc = subprocess.Popen([*CLI, "finetune", str(ws.root), "--dataset", "real", "--run", "stopped", "--model",
                             str(init), "--epochs", "30", "--patience", "0", "--throttle-s", "0.1",
                             "--replay-fraction", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    code, err, _ = _interrupt_when(proc, lambda: (run / "run.json").is_file())
    assert code == 130 and "cancelled" in err, err
    assert not run.exists()
    jobs = [json.loads(p.read_text()) for p in (ws.root / "jobs").glob("*.json")]
    assert [(j["step"], j["state"]) for j in jobs] == [("finetune", "cancelled")]


def test_plan_with_a_workspace_uses_its_planner(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from builder.api import programs
    from builder.interfaces.cli import app

    card = make_task_card(tmp_path / "task", kind="count", target="red objects", n=2)
    assert cli("workspace", "init", tmp_path / "ws", "--task", card).returncode == 0
    adapted = 'def execute(image):\n    return image.count("red object")\n'

    class AdaptedPlanner:  # stands in for checkpoints/planner (what Improve saved)
        def propose(self, requests, k=1, temperature=1.0, top_p=1.0):
            return [[adapted] for _ in requests]

    monkeypatch.setattr(programs, "workspace_planner", lambda ws: AdaptedPlanner())
    res = CliRunner().invoke(app, ["plan", "--workspace", str(tmp_path / "ws"), "--k", "2"])
    assert res.exit_code == 0, res.output
    assert "# v0001\n" + adapted in res.output  # the adapted planner leads (stderr may hold load progress)
    shown = json.loads(cli("workspace", "show", tmp_path / "ws").stdout)
    assert shown["programs"] == 2  # the adapted planner's reading, then the composing parser's


def _job_running(ws_root: Path, step: str):
    def ready() -> bool:
        for p in (ws_root / "jobs").glob("*.json"):
            try:
                rec = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if rec.get("step") == step and rec.get("state") == "running":
                return True
        return False

    return ready


def _jobs(ws_root: Path) -> list[tuple[str, str]]:
    return [(j["step"], j["state"]) for j in (json.loads(p.read_text()) for p in (ws_root / "jobs").glob("*.json"))]


def test_improve_is_cancelled_by_sigint_and_saves_no_planner(tmp_path):
    card = make_task_card(tmp_path / "task", kind="count", target="red objects", n=6)
    ws = tmp_path / "ws"
    assert cli("workspace", "init", ws, "--task", card).returncode == 0
    proc = subprocess.Popen([*CLI, "improve", str(ws), "--rounds", "50", "--steps", "400"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    code, err, _ = _interrupt_when(proc, _job_running(ws, "improve"), timeout=180)
    assert code == 130 and "cancelled" in err, err
    assert not (ws / "checkpoints" / "planner").exists()
    assert _jobs(ws) == [("improve", "cancelled")]


def test_export_is_cancelled_by_sigint_and_leaves_no_export(tmp_path):
    card = make_task_card(tmp_path / "task", kind="count", target="red objects", n=2)
    ws = tmp_path / "ws"
    assert cli("workspace", "init", ws, "--task", card).returncode == 0
    program = tmp_path / "p.py"
    program.write_text('def execute(image):\n    return image.count("red object")\n')
    assert cli("workspace", "add-program", ws, program, "--accept").returncode == 0
    proc = subprocess.Popen([*CLI, "export", str(ws)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    code, err, _ = _interrupt_when(proc, _job_running(ws, "export"))
    assert code == 130 and "cancelled" in err, err
    exports = ws / "exports"
    assert not exports.exists() or not any(exports.iterdir())  # no export, no hidden half-built folder
    assert _jobs(ws) == [("export", "cancelled")]


def test_engine_training_commands_write_artifacts_at_reduced_size(tmp_path):
    from builder.core.artifacts import read_record
    from builder.tools.backends.shapes import ShapesEmbedder, ShapesVQA

    small = ["--n-scenes", 20, "--perception-steps", 2, "--steps", 3, "--batch-size", 8, "--eval-scenes", 0,
             "--threads", 1]
    run = cli("engines", "train-vqa", "--out", tmp_path / "vqa", *small)
    assert run.returncode == 0, run.stderr
    record = read_record(tmp_path / "vqa")
    assert record["architecture"] == "shapes-vqa-slots-v3" and record["info"]["steps"] == 3
    assert "train-vqa --out" in record["info"]["command"]
    again = cli("engines", "train-vqa", "--out", tmp_path / "tuned", "--init", tmp_path / "vqa", *small)
    assert again.returncode == 0, again.stderr
    assert read_record(tmp_path / "tuned")["info"]["init"] == str(tmp_path / "vqa")
    ShapesVQA(weights=tmp_path / "tuned").answer(np.zeros((40, 40, 3), np.uint8), "What color is this?")
    # a folder in the layout of before (config.json without a record) names the conversion command
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.safetensors").write_bytes((tmp_path / "vqa" / "model.safetensors").read_bytes())
    (old / "config.json").write_text(json.dumps({"arch": "slots-v3", **record["config"]}))
    bad = cli("engines", "train-vqa", "--out", tmp_path / "x", "--init", old, *small)
    assert bad.returncode == 2 and f"scripts/convert_artifacts.py {old}" in bad.stderr, bad.stderr
    emb = cli("engines", "train-embed", "--out", tmp_path / "emb", "--n-scenes", 32, "--steps", 2,
              "--batch-size", 8, "--threads", 1)
    assert emb.returncode == 0, emb.stderr
    assert read_record(tmp_path / "emb")["info"]["steps_done"] == 2
    assert ShapesEmbedder(weights=tmp_path / "emb").embed_texts(["a red circle"]).shape == (1, 128)
