"""The end-to-end demo on the embedded shapes world: ``visforge demo OUT_DIR [--scripted]``.

By default it executes ``notebooks/00_end_to_end.ipynb`` through papermill (the notebook is the
product's main surface; a source checkout has it); ``--scripted`` runs the core steps as plain
Python and needs only an installed VisForge: describe a task (a task card with examples) ->
workspace -> planner and engineer candidates run on the examples in the sandbox with traces and
scores -> accept the best -> export -> an HTML report.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from builder import (
    Runtime,
    accept_program,
    add_program,
    card_from_data,
    export_solution,
    propose_programs,
    run_examples,
    save_task,
    shapes_task_data,
)
from builder.interfaces.views import trace_html

# The notebooks live in a source checkout beside the packages (they are not package data).
NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"

# Candidate programs an engineer might try first; the planner adds its own where available.
ENGINEER_CANDIDATES = [
    'def execute(image):\n    return image.count("red object")\n',
    'def execute(image):\n    n = 0\n    for obj in image.find("object"):\n'
    '        if obj.verify("Is this object red?"):\n            n += 1\n    return n\n',
]


def log(msg: str) -> None:
    """Print a timestamped progress line (flushed, so it shows while the demo runs)."""
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(out: str | Path = "demo-out") -> dict:
    """Run the demo into ``out``; returns the summary it also writes as JSON."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: choose a new folder or remove it")
    t_start = time.perf_counter()
    summary: dict = {"not_run": {}}

    log("1/5 describe: a task card with 12 shapes-world examples")
    card = card_from_data(shapes_task_data("count", "red objects", n=12, seed=0, staging=out / "task"))
    ws = save_task(out / "workspace", card)
    card = ws.load_task()
    summary["task"] = {"name": card.name, "examples": len(card.examples), "query": card.examples[0].query}

    log("2/5 plan: candidate programs, each run on every example in the sandbox")
    versions = [add_program(ws, src, origin="engineer") for src in ENGINEER_CANDIDATES]
    proposed, note = propose_programs(ws, k=8, temperature=1.0)
    log(f"   {note}")
    scored = []
    with Runtime(ws, workers=2) as runtime:  # engines, sandbox and tool cache, built once
        for pv in versions + proposed:
            res = run_examples(ws, pv.version, runtime)  # saved as the version's run
            log(f"   {pv.tag} ({pv.origin}): {res.correct}/{res.n} correct, {res.errors} errors")
            scored.append((res.accuracy, -len(pv.source), pv, res))
    best_acc, _, best, best_res = max(scored, key=lambda t: (t[0], t[1]))
    accept_program(ws, best.version)
    log(f"   accepted {best.tag} with accuracy {best_acc:.2f}")
    first = best_res.results[0]
    (out / "trace.html").write_text(trace_html(ws, first, title=f"{best.tag} on {first.id}"), encoding="utf-8")
    summary["programs"] = [{"version": pv.version, "origin": pv.origin, "accuracy": acc} for acc, _, pv, _ in scored]
    summary["accepted"] = {"version": best.version, "accuracy": best_acc}

    log("3/5 improve the planner, 4/5 adapt the engines: the notebook demo runs these")
    summary["not_run"]["adapt"] = "self-training, SelTDA and fine-tuning run in the notebook demo (without --scripted)"

    log("5/5 export")
    result = export_solution(ws, out / "export")
    summary["export"] = {"project": str(result.project_dir), "wheel": str(result.wheel),
                         "install": result.install_commands}

    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report(out, summary, best.source, best_res)
    log(f"done in {summary['seconds']} s: report {out / 'report.html'}, workspace {ws.root}")
    for step, why in summary["not_run"].items():
        log(f"   not run here: {step}: {why}")
    return summary


def write_report(out: Path, summary: dict, source: str, res) -> None:
    """A one-page HTML report: the task, the candidates, the accepted program, per-example results."""
    rows = "".join(
        f"<tr><td>{html.escape(r.id)}</td><td>{html.escape(json.dumps(r.expected))}</td>"
        f"<td>{html.escape(json.dumps(r.value))}</td><td>{'✔' if r.correct else '✘'}</td>"
        f"<td>{html.escape(r.error or '')}</td></tr>"
        for r in res.results
    )
    progs = "".join(
        f"<li>v{p['version']:04d} ({p['origin']}): accuracy {p['accuracy']:.2f}</li>" for p in summary["programs"]
    )
    not_run = "".join(f"<li>{html.escape(why)}</li>" for why in summary["not_run"].values()) or "<li>nothing</li>"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>VisForge demo</title></head>
<body style="font-family:system-ui,sans-serif;max-width:900px;margin:auto">
<h1>VisForge demo: {html.escape(summary['task']['name'])}</h1>
<p>Query: <b>{html.escape(summary['task']['query'])}</b> on {summary['task']['examples']} examples.</p>
<h2>Candidates</h2><ul>{progs}</ul>
<h2>Accepted program</h2><pre style="background:#f6f8fa;padding:8px">{html.escape(source)}</pre>
<p><a href="trace.html">Step-by-step trace on the first example</a></p>
<h2>Per example</h2><table border="1" cellpadding="4" style="border-collapse:collapse">
<tr><th>example</th><th>expected</th><th>output</th><th>ok</th><th>error</th></tr>{rows}</table>
<h2>Not run in this demo</h2><ul>{not_run}</ul>
<p>Finished in {summary['seconds']} s.</p></body></html>"""
    (out / "report.html").write_text(page)


def run_notebook_demo(out_dir: str | Path, n_examples: int = 12, k: int = 8, build_wheel: bool = True,
                      kernel_name: str = "python3", notebook: str | Path | None = None,
                      log_output: bool = False, **parameters: Any) -> dict[str, Any]:
    """Execute the end-to-end notebook into ``out_dir``; returns the summary the notebook wrote.

    Outputs: ``out_dir/00_end_to_end.ipynb`` (executed), ``workspace/``, ``report.html``,
    ``summary.json`` and the export under ``workspace/exports/`` (a wheel when ``build_wheel``).
    """
    import papermill as pm  # optional dependency (the "notebook" extra)

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    src = Path(notebook) if notebook is not None else NOTEBOOKS_DIR / "00_end_to_end.ipynb"
    if not src.is_file():
        raise FileNotFoundError(f"{src}: the end-to-end notebook is missing (a source checkout has notebooks/; "
                                "an installed VisForge runs the scripted demo)")
    params = {"workspace_dir": str(out / "workspace"), "out_dir": str(out), "n_examples": n_examples,
              "k": k, "build_wheel": build_wheel, **parameters}
    pm.execute_notebook(str(src), str(out / src.name), parameters=params, kernel_name=kernel_name,
                        cwd=str(out), log_output=log_output, progress_bar=False)
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def main_notebook(out: str | Path = "demo-out") -> dict:
    """Run the demo by executing the end-to-end notebook with papermill."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: choose a new folder or remove it")
    log("executing notebooks/00_end_to_end.ipynb with papermill: task -> plan -> run -> accept -> "
        "improve -> augment -> fine-tune -> export -> report")
    t0 = time.perf_counter()
    summary = run_notebook_demo(out, n_examples=12, k=8, build_wheel=True, adapt=True)
    acc = summary.get("accepted") or {}
    log(f"done in {time.perf_counter() - t0:.0f} s: accepted v{acc.get('version', 0):04d} "
        f"(accuracy {acc.get('accuracy', 0):.2f})")
    log(f"   executed notebook {out / '00_end_to_end.ipynb'}; report {out / 'report.html'}")
    for key in ("wheel", "report"):
        if summary.get(key):
            log(f"   {key}: {summary[key]}")
    for step, figures in (summary.get("adaptation") or {}).items():
        log(f"   {step}: {json.dumps(figures, default=str)[:300]}")
    for step, why in (summary.get("not_run") or {}).items():
        log(f"   not run in the demo: {step}: {why}")
    return summary


