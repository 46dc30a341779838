"""A one-page HTML report of a workspace: task, program versions with scores, the accepted
program, its per-example results and trace of one example, and the export (if any)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from builder import Workspace, latest_runs
from builder.interfaces.views import highlight, improve_chart_html, results_table_html, trace_html


def write_report(workspace: Workspace | str | Path, path: str | Path, export: Any = None,
                 notes: list[str] | None = None, improve: dict | None = None) -> Path:
    """Write the report to ``path`` and return it. ``export`` is an ``ExportResult`` (or its dict);
    ``improve`` an Improve (self-training) report, drawn as a before/after chart."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    card = ws.load_task()
    runs = latest_runs(ws)
    acc = ws.accepted
    def score(v: int) -> str:
        return f"{runs[v]['accuracy']:.2f}" if v in runs else "—"

    rows = "".join(
        f"<tr><td>{'★' if acc and p.version == acc.version else ''}{p.tag}</td><td>{html.escape(p.origin)}</td>"
        f"<td>{score(p.version)}</td>"
        f"<td><pre style='margin:0'>{html.escape(p.source)}</pre></td></tr>"
        for p in ws.programs()
    )
    accepted = "<p><i>no accepted program</i></p>"
    if acc is not None:
        accepted = highlight(acc.source)
        run = runs.get(acc.version)
        if run:
            accepted += f"<p><b>{run['correct']}/{run['n']} examples passed</b></p>"
            accepted += results_table_html(run["results"])
            if run["results"]:
                accepted += trace_html(ws, run["results"][0], title=f"{acc.tag} on {run['results'][0]['id']}")
    exp = ""
    if export is not None:
        d = export.to_dict() if hasattr(export, "to_dict") else dict(export)
        exp = (f"<h2>Export</h2><p>project <code>{html.escape(str(d.get('project_dir')))}</code>, wheel "
               f"<code>{html.escape(str(d.get('wheel')))}</code></p>"
               f"<pre>{html.escape(chr(10).join(d.get('install_commands') or []))}</pre>")
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes or [])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>VisForge report: {html.escape(card.name)}</title>
</head><body style="font-family:system-ui,sans-serif;max-width:1000px;margin:auto">
<h1>VisForge: {html.escape(card.name)}</h1><p>{html.escape(card.description)}</p>
<p>output <b>{card.output}</b>, metric <b>{card.metric}</b>, {len(card.examples)} examples;
query: <b>{html.escape(card.examples[0].query if card.examples else '')}</b></p>
<h2>Program versions</h2><table border="1" cellpadding="4" style="border-collapse:collapse">
<tr><th>version</th><th>origin</th><th>accuracy</th><th>source</th></tr>{rows}</table>
<h2>Accepted program</h2>{accepted}{exp}
{f'<h2>Improve</h2>{improve_chart_html(improve)}' if improve else ''}
{f'<h2>Notes</h2><ul>{notes_html}</ul>' if notes_html else ''}
<p><small>{html.escape(json.dumps(ws.summary()))}</small></p></body></html>"""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
