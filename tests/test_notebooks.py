"""Every notebook runs headless under papermill with small parameters, in a hermetic Jupyter setup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pm = pytest.importorskip("papermill")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SMALL = {"n_examples": 3, "seed": 1}
# Saved notebooks carry widget state; images are capped so they stay small.
MAX_NOTEBOOK_BYTES = 2_000_000


@pytest.fixture(scope="session")
def jupyter_env(tmp_path_factory):
    """Jupyter/IPython dirs in tmp (nothing written to ~), and the venv's kernel (--sys-prefix)."""
    base = tmp_path_factory.mktemp("jupyter")
    env = {
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTER_DATA_DIR": str(base / "data"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "IPYTHONDIR": str(base / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "HF_HUB_OFFLINE": "1",
        "MPLBACKEND": "agg",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # Keeps the kernel inside the venv so "python3" resolves to this interpreter.
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix"], check=True,
                   capture_output=True, timeout=120)
    yield base
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def execute(name: str, out_dir: Path, **params) -> dict:
    out = out_dir / f"{name}.ipynb"
    pm.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=params, kernel_name="python3",
                        cwd=str(out_dir), progress_bar=False)
    nb = json.loads(out.read_text())
    assert out.stat().st_size < MAX_NOTEBOOK_BYTES, f"{name}: saved notebook is {out.stat().st_size} bytes"
    return nb


def outputs_text(nb: dict) -> str:
    parts = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            parts.append("".join(o.get("text", "")))
            parts.append("".join(o.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_every_notebook_has_a_parameters_cell():
    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["00_end_to_end", "01_task", "02_plan", "03_improve", "04_augment", "05_finetune", "06_export"]
    for name in names:
        nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, name
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), f"{name}: saved outputs"


def test_end_to_end_notebook_demo(jupyter_env, tmp_path):
    from widgets import run_notebook_demo

    summary = run_notebook_demo(tmp_path, n_examples=3, k=2, build_wheel=False, seed=1)
    assert summary["task"]["examples"] == 3 and summary["programs"]
    assert Path(summary["export"]).is_dir() and summary["wheel"] is None
    report = (tmp_path / "report.html").read_text()
    assert "Accepted program" in report and "<img" in report
    assert (tmp_path / "00_end_to_end.ipynb").stat().st_size < MAX_NOTEBOOK_BYTES


# Reduced sizes: each step notebook does its step, small (the whole chain twice in about a minute).
STEPS = {
    "03_improve": {"k": 2, "steps": 5, "replay": 0},
    "04_augment": {"n_unlabelled": 4, "n_per_image": 1},
    "05_finetune": {"epochs": 1, "batch_size": 8, "replay_items": 24},
    "06_export": {"target_kind": "project"},
}


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


def test_every_step_notebook_does_its_step_twice_on_one_workspace(jupyter_env, tmp_path):
    """Top to bottom, twice in a row, on the same workspace: each step notebook performs its step
    (a new planner checkpoint, a synthetic dataset, a fine-tune checkpoint, an export) and a
    re-run neither fails nor duplicates anything."""
    from builder.core.qa import load_qa_dataset
    from builder.core.workspace import Workspace

    ws_dir = tmp_path / "ws"
    ws = str(ws_dir)
    planner_report = ws_dir / "checkpoints" / "planner_report.json"
    for round_ in (1, 2):
        out = tmp_path / f"round{round_}"
        out.mkdir()
        nb = execute("01_task", out, workspace_dir=ws, **SMALL)
        assert "examples[0].expected" in outputs_text(nb)  # the validation message the notebook shows
        nb = execute("02_plan", out, workspace_dir=ws, k=2, **SMALL)
        assert "accepted v" in outputs_text(nb)
        edits = [p.source for p in Workspace.open(ws).programs() if "checked by hand" in p.source]
        assert len(edits) == 1 and edits[0].count("checked by hand") == 1, edits

        before = _mtime(planner_report)
        nb = execute("03_improve", out, workspace_dir=ws, **SMALL, **STEPS["03_improve"])
        assert "planner saved to" in outputs_text(nb)
        assert (ws_dir / "checkpoints" / "planner").is_dir() and _mtime(planner_report) > before

        nb = execute("04_augment", out, workspace_dir=ws, **SMALL, **STEPS["04_augment"])
        assert "synthetic pairs" in outputs_text(nb)
        seltda = load_qa_dataset(ws_dir / "datasets" / "seltda")
        real = load_qa_dataset(ws_dir / "datasets" / "examples")
        assert len(seltda) > len(real) == SMALL["n_examples"], (len(seltda), len(real))

        nb = execute("05_finetune", out, workspace_dir=ws, **SMALL, **STEPS["05_finetune"])
        assert "seltda: accuracy" in outputs_text(nb)
        result = json.loads((ws_dir / "checkpoints" / "notebook" / "result.json").read_text())
        assert Path(result["best_checkpoint"]).is_dir() and result["after"]["n"] >= 1

        nb = execute("06_export", out, workspace_dir=ws, **SMALL, **STEPS["06_export"])
        summary = Workspace.open(ws).summary()
        assert summary["accepted"] and summary["exports"] and "examples" in summary["datasets"]
        text = outputs_text(nb)
        assert "install (inside the project folder)" in text and "wheelhouse" not in text  # no wheel was built

        card = Workspace.open(ws).load_task()
        assert len(card.examples) == SMALL["n_examples"]
    first = json.loads((tmp_path / "round1" / "01_task.ipynb").read_text())
    assert "Error" not in outputs_text(first)


def test_a_step_notebook_with_its_step_off_only_shows_the_widget(jupyter_env, tmp_path):
    ws_dir = tmp_path / "ws"
    nb = execute("03_improve", tmp_path, workspace_dir=str(ws_dir), run_improve=False, **SMALL)
    assert "not run (run_improve=False)" in outputs_text(nb)
    assert not (ws_dir / "checkpoints" / "planner").exists()


def test_augment_notebook_on_a_boxes_task_says_the_step_does_not_apply(jupyter_env, tmp_path):
    ws_dir = tmp_path / "ws"
    nb = execute("04_augment", tmp_path, workspace_dir=str(ws_dir), kind="locate", target="square",
                 **SMALL, **STEPS["04_augment"])
    assert "Augment not run: Augment (SelTDA) applies to VQA tasks" in outputs_text(nb)
    assert not (ws_dir / "datasets" / "seltda").exists()
