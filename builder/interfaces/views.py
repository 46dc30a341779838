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


def search_results_html(hits: list, side: int = 96) -> str:
    """Search hits as a grid of thumbnails (text->image) or a ranked list (image->text), with scores."""
    if not hits:
        return "<i>no results</i>"
    cells = []
    for h in hits:
        score = f"{h.score:.3f}" + (f" <span style='color:#888'>(sim {h.similarity:.3f})</span>"
                                    if h.verified is not None else "")
        if Path(h.item).is_file():
            body = (f"<img src='{thumbnail_uri(h.item, side)}' style='width:{side}px;height:{side}px;"
                    f"object-fit:contain' title='{html.escape(h.item)}'><br>")
        else:
            body = f"<div style='max-width:{2 * side}px'>{html.escape(h.item)}</div>"
        cells.append(f"<div class='vf-hit' style='display:inline-block;margin:4px;text-align:center;"
                     f"font-size:12px;vertical-align:top'>{body}#{h.rank} {score}</div>")
    return "<div class='vf-search-results'>" + "".join(cells) + "</div>"



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
