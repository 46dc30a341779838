"""HTML views shared by the interfaces (the notebook widgets and the Panel app).

Pure functions from workflow data (workspaces, run results, program sources) to HTML strings
with inline styles, so saved notebooks and the app render the same without a stylesheet.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from pygments import highlight as _hl
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from builder.core.images import load_image, load_pil_image
from builder.core.workspace import Workspace
from builder.tools.trace import Trace, trace_to_html
from builder.workflow import diff_text


def thumbnail_uri(path: str | Path, side: int = 96) -> str:
    """A small PNG data URI of an image file (saved notebooks stay small)."""
    im = load_pil_image(path)
    im.thumbnail((side, side))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()



def results_table_html(results: list[dict[str, Any]] | list, limit: int = 200) -> str:
    """Per-example pass/fail as an HTML table (accepts ``ExampleResult``s or their dicts)."""
    rows = []
    for r in list(results)[:limit]:
        d = r if isinstance(r, dict) else r.__dict__
        ok = d.get("correct")
        mark = ("<span class='vf-pass' style='color:#0a7d28;font-weight:bold'>pass</span>" if ok else
                "<span class='vf-fail' style='color:#b00020;font-weight:bold'>fail</span>")
        out = d.get("error") or json.dumps(d.get("value"))
        rows.append(
            f"<tr><td>{html.escape(str(d.get('id')))}</td><td><code>{html.escape(_clip(json.dumps(d.get('expected'))))}"
            f"</code></td><td><code>{html.escape(_clip(out))}</code></td><td>{mark}</td></tr>"
        )
    return ("<table class='vf-results' style='border-collapse:collapse;font-size:12px' border='1' cellpadding='3'>"
            "<tr><th>example</th><th>expected</th><th>output</th><th>result</th></tr>" + "".join(rows) + "</table>")


def _clip(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def trace_html(ws: Workspace, result: dict[str, Any] | Any, title: str | None = None) -> str:
    """The step-by-step trace of one example result (images with boxes drawn), as HTML."""
    from builder.run.local import examples_from_card

    d = result if isinstance(result, dict) else result.__dict__
    if not d.get("trace"):
        return "<i>no trace recorded for this example</i>"
    card = ws.load_task()
    by_id = {ex.id: ex for ex in examples_from_card(card, ws.root)}
    ex = by_id.get(d.get("id"))
    images = [load_image(p) for p in ex.images] if ex is not None else []
    return trace_to_html(Trace.from_dict(d["trace"]), images, title=title or f"Trace of {d.get('id')}")


def highlight(source: str) -> str:
    """Python source as syntax-highlighted HTML (inline styles: no stylesheet needed)."""
    return _hl(source, PythonLexer(), HtmlFormatter(noclasses=True, style="friendly", nobackground=False))


def diff_html(a: str, b: str, a_label: str = "a", b_label: str = "b") -> str:
    """The unified diff coloured as HTML (additions green, removals red)."""
    text = diff_text(a, b, a_label, b_label)
    if not text:
        return "<i>no differences</i>"
    lines = []
    for line in text.splitlines():
        color = ("#0a7d28" if line.startswith("+") and not line.startswith("+++") else
                 "#b00020" if line.startswith("-") and not line.startswith("---") else
                 "#555" if line.startswith("@@") else "#222")
        lines.append(f"<span style='color:{color}'>{html.escape(line)}</span>")
    return "<pre class='vf-diff' style='font-size:12px;background:#fafafa;padding:6px'>" + "\n".join(lines) + "</pre>"


def accuracy_bars_svg(bars: list[tuple[str, float, str]], title: str, width: int = 460) -> str:
    """A bar chart (inline SVG) of accuracies in [0, 1]: (label, value, caption under the bar)."""
    h, top, bottom = 180, 28, 40
    slot = (width - 40) / max(1, len(bars))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h + bottom}" role="img" '
             f'aria-label="{html.escape(title)}" style="font:11px system-ui,sans-serif">',
             f'<text x="4" y="14" font-weight="bold">{html.escape(title)}</text>',
             f'<line x1="30" y1="{h}" x2="{width - 6}" y2="{h}" stroke="#888"/>']
    for i, (label, value, caption) in enumerate(bars):
        v = max(0.0, min(1.0, float(value)))
        x, bh = 34 + i * slot, (h - top) * v
        color = "#9aa5b1" if i == 0 else "#2f7d4f"
        parts += [f'<rect x="{x:.0f}" y="{h - bh:.0f}" width="{slot * 0.7:.0f}" height="{bh:.0f}" fill="{color}"/>',
                  f'<text x="{x:.0f}" y="{h - bh - 4:.0f}">{v:.2f}</text>',
                  f'<text x="{x:.0f}" y="{h + 14}">{html.escape(label)}</text>',
                  f'<text x="{x:.0f}" y="{h + 28}" fill="#555">{html.escape(caption)}</text>']
    return "".join(parts) + "</svg>"


def improve_chart_html(report: dict) -> str:
    """Before/after accuracy of an Improve (self-training) report, per round, with kept readings."""
    if not report or "before" not in report:
        return ""
    bars = [("before", report["before"]["accuracy"], "frozen planner")]
    for r in report.get("rounds", []):
        bars.append((f"round {r['round']}", r["eval"]["accuracy"], f"{r.get('kept_total', 0)} kept"))
    n = report.get("eval_examples")
    title = "Improve: planner accuracy on held-out examples" + (f" (n={n})" if n else "")
    families = report["before"].get("per_family", {})
    rows = "".join(
        f"<tr><td>{html.escape(f)}</td><td>{v:.2f}</td><td>{report['after']['per_family'].get(f, 0):.2f}</td></tr>"
        for f, v in families.items()) if report.get("after") else ""
    table = (f"<table border='1' cellpadding='3' style='border-collapse:collapse'><tr><th>family</th><th>before</th>"
             f"<th>after</th></tr>{rows}</table>") if rows else ""
    return f"<div class='vf-chart'>{accuracy_bars_svg(bars, title)}{table}</div>"
