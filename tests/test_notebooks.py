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


def test_step_notebooks_share_one_workspace(jupyter_env, tmp_path):
    ws = str(tmp_path / "ws")
    nb = execute("01_task", tmp_path, workspace_dir=ws, **SMALL)
    assert "examples[0].expected" in outputs_text(nb)  # the validation message the notebook shows
    nb = execute("02_plan", tmp_path, workspace_dir=ws, k=2, **SMALL)
    assert "accepted v" in outputs_text(nb)
    for name in ("03_improve", "04_augment", "05_finetune"):
        execute(name, tmp_path, workspace_dir=ws, **SMALL)
    nb = execute("06_export", tmp_path, workspace_dir=ws, target_kind="project", **SMALL)
    from builder.core.workspace import Workspace

    summary = Workspace.open(ws).summary()
    assert summary["accepted"] and summary["exports"] and "examples" in summary["datasets"]


def test_every_notebook_runs_twice_on_one_workspace(jupyter_env, tmp_path):
    """Top to bottom, twice in a row, on the same workspace: no errors, nothing lost."""
    from builder.core.workspace import Workspace

    ws = str(tmp_path / "ws")
    for round_ in (1, 2):
        out = tmp_path / f"round{round_}"
        out.mkdir()
        execute("01_task", out, workspace_dir=ws, **SMALL)
        execute("02_plan", out, workspace_dir=ws, k=2, **SMALL)
        for name in ("03_improve", "04_augment", "05_finetune"):
            execute(name, out, workspace_dir=ws, **SMALL)
        execute("06_export", out, workspace_dir=ws, target_kind="project", **SMALL)
        card = Workspace.open(ws).load_task()
        assert len(card.examples) == SMALL["n_examples"]
    first = json.loads((tmp_path / "round1" / "01_task.ipynb").read_text())
    assert "Error" not in outputs_text(first)
