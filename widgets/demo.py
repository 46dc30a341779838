"""Run the end-to-end notebook headless (papermill): the notebook-first demo.

``run_notebook_demo(out_dir)`` executes ``notebooks/00_end_to_end.ipynb`` into ``out_dir``; the
notebook creates a workspace there, plans, runs, accepts, exports and writes ``report.html``
and ``summary.json``. ``builder.demo`` can call this instead of (or after) its scripted steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook_demo(out_dir: str | Path, n_examples: int = 12, k: int = 8, build_wheel: bool = True,
                      kernel_name: str = "python3", notebook: str | Path | None = None,
                      log_output: bool = False, **parameters: Any) -> dict[str, Any]:
    """Execute the end-to-end notebook into ``out_dir``; returns the summary the notebook wrote.

    Outputs: ``out_dir/00_end_to_end.ipynb`` (executed), ``workspace/``, ``report.html``,
    ``summary.json`` and the export under ``workspace/exports/`` (a wheel when ``build_wheel``).
    """
    import papermill as pm

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    src = Path(notebook) if notebook is not None else NOTEBOOKS_DIR / "00_end_to_end.ipynb"
    if not src.is_file():
        raise FileNotFoundError(f"{src}: the end-to-end notebook is missing (a source checkout has notebooks/)")
    params = {"workspace_dir": str(out / "workspace"), "out_dir": str(out), "n_examples": n_examples,
              "k": k, "build_wheel": build_wheel, **parameters}
    pm.execute_notebook(str(src), str(out / src.name), parameters=params, kernel_name=kernel_name,
                        cwd=str(out), log_output=log_output, progress_bar=False)
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))
