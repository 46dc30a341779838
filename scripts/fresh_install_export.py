"""Fresh-venv check: ``pip install visforge[ml,serve]`` (no dev extra) is enough to export a solution.

Builds the visforge wheel from this checkout, installs it with the ``ml`` and ``serve`` extras into
a new virtual environment (dependencies through pip as configured: index, find-links and the pip
cache), then, from a folder outside the checkout, generates a world, makes a task card, creates a
workspace, accepts a program and runs ``visforge export``. Prints one JSON object with the time
of each step; exits non-zero (naming the step and its output) when one fails.

    .venv/bin/python scripts/fresh_install_export.py [--keep DIR]

Slow (a few minutes: torch and transformers are installed into the new environment), so the
test suite runs it only when VISFORGE_FRESH_INSTALL=1 (tests/test_wheel_install.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = 'def execute(image):\n    return image.count("red object")\n'


class StepFailed(RuntimeError):
    """A step's command failed."""


def _run(step: str, cmd: list, cwd: Path, env: dict, timings: dict, timeout: float = 1200) -> str:
    t0 = time.monotonic()
    try:
        out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise StepFailed(f"{step}: no result within {timeout:g} s") from None
    timings[step] = round(time.monotonic() - t0, 1)
    if out.returncode != 0:
        raise StepFailed(f"{step} failed (exit {out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def check(tmp: Path) -> dict:
    """Run every step under ``tmp``; returns the timings and what export wrote."""
    sys.path.insert(0, str(ROOT))
    from builder.methods.export import build_visforge_wheel

    timings: dict = {}
    t0 = time.monotonic()
    wheel = build_visforge_wheel(tmp / "dist")
    timings["build_wheel"] = round(time.monotonic() - t0, 1)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    venv = tmp / "venv"
    _run("venv", [sys.executable, "-m", "venv", venv], tmp, env, timings)
    py = venv / "bin" / "python"
    _run("pip_install_ml_serve", [py, "-m", "pip", "install", "-q", f"{wheel}[ml,serve]"], tmp, env, timings)
    freeze = _run("pip_freeze", [py, "-m", "pip", "freeze"], tmp, env, timings)
    dev_only = [p for p in ("ruff", "mypy", "playwright", "schemathesis", "pytest-xdist") if f"\n{p}==" in f"\n{freeze}"]
    if dev_only:
        raise StepFailed(f"the fresh environment holds dev packages {dev_only}: not a clean check")
    work = tmp / "outside"
    work.mkdir()
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    visforge = venv / "bin" / "visforge"
    where = _run("import", [py, "-c", "import builder; print(builder.__file__)"], work, env, timings)
    if str(venv) not in where:
        raise StepFailed(f"builder was imported from {where.strip()}, not the fresh environment")
    _run("world", [visforge, "world", "generate", "--out", "world", "--n", "4"], work, env, timings)
    _run("card", [py, "-c", "from builder.domains.shapes.world.cards import make_task_card; "
                  "make_task_card('task', kind='count', target='red objects', n=4, seed=0)"], work, env, timings)
    _run("workspace", [visforge, "workspace", "init", "ws", "--task", "task/task.yaml"], work, env, timings)
    (work / "program.py").write_text(PROGRAM)
    _run("accept", [visforge, "workspace", "add-program", "ws", "program.py", "--accept"], work, env, timings)
    out = _run("export", [visforge, "export", "ws", "--out", "solution"], work, env, timings)
    wheels = sorted(p.name for p in (work / "solution").rglob("*.whl"))
    if not wheels or not (work / "solution" / "tests").is_dir():
        raise StepFailed(f"export wrote no wheel or no tests:\n{out[-3000:]}")
    timings["total"] = round(sum(timings.values()), 1)
    return {"ok": True, "seconds": timings, "wheels": wheels}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one)")
    a = ap.parse_args(argv)
    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="visforge-fresh-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        result = check(tmp)
    except StepFailed as e:
        print(json.dumps({"ok": False, "error": str(e)}, indent=1))
        return 1
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
