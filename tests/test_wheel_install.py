"""VisForge as a normal (non-editable) wheel install: world, workspace, accept and export work
from a folder outside the checkout, with templates and weights read as package data."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from builder.methods.export import build_visforge_wheel

pytestmark = pytest.mark.slow

PROGRAM = 'def execute(image):\n    return image.count("red object")\n'


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def test_export_from_a_non_editable_install(tmp_path):
    wheel = build_visforge_wheel(tmp_path / "dist")
    # A fresh venv without pip; the dependencies come from this environment's site-packages,
    # appended after the venv's own (a .pth line adds a path but does not run that folder's .pth
    # files, so this environment's editable VisForge stays out of sight).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "zz_visforge_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, timeout=300)

    work = tmp_path / "outside"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    where = _run([str(py), "-c", "import builder, templates; print(builder.__file__, templates.__file__)"], work, env)
    assert all(str(site) in p for p in where.split()), where  # the installed copy, not the checkout

    visforge = str(venv / "bin" / "visforge")
    _run([visforge, "world", "generate", "--out", "world", "--n", "4"], work, env)
    assert (work / "world" / "examples.jsonl").is_file()
    _run([str(py), "-c", "from builder.domains.shapes.world.cards import make_task_card; "
          "make_task_card('task', kind='count', target='red objects', n=4, seed=0)"], work, env)
    _run([visforge, "workspace", "init", "ws", "--task", "task/task.yaml"], work, env)
    (work / "program.py").write_text(PROGRAM)
    _run([visforge, "workspace", "add-program", "ws", "program.py", "--accept"], work, env)
    out = _run([visforge, "export", "ws", "--out", "solution"], work, env)
    assert '"wheel"' in out
    assert list((work / "solution").rglob("*.whl")), out
    assert (work / "solution" / "tests").is_dir()


@pytest.mark.skipif(os.environ.get("VISFORGE_FRESH_INSTALL") != "1",
                    reason="slow (installs torch and transformers into a new venv): set VISFORGE_FRESH_INSTALL=1")
def test_fresh_venv_with_ml_serve_extras_exports():
    """``pip install visforge[ml,serve]`` into a new venv (no dev extra), then ``visforge export``
    succeeds (scripts/fresh_install_export.py does the steps and reports each one's time)."""
    import json

    script = Path(__file__).resolve().parents[1] / "scripts" / "fresh_install_export.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=3600)
    result = json.loads(out.stdout)
    assert out.returncode == 0 and result["ok"], result.get("error", out.stderr[-3000:])
    wheels = set(result["wheels"])
    assert any(w.startswith("visforge-") for w in wheels) and len(wheels) >= 2, result  # VisForge and the solution
