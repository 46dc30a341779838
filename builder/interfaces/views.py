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

from PIL import Image
from pygments import highlight as _hl
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from builder import OutputKind, Workspace, diff_text
from builder.core.images import load_pil_image
from builder.core.video import is_video_path, load_media
from builder.tools.trace import Trace, trace_to_html


def video_thumbnail(path: str | Path, side: int = 96):
    """A video's middle frame, fitted into ``side`` pixels, with a play mark and its length, so a
    video example reads as a video at a glance."""
    from PIL import ImageDraw

    video = load_media(path)
    try:
        im = Image.fromarray(video.frame(len(video) // 2)).convert("RGB")
        duration = video.info.duration
    finally:
        video.close()
    im.thumbnail((side, side))
    draw = ImageDraw.Draw(im, "RGBA")
    r = max(5, min(im.size) // 6)
    cx, cy = im.width // 2, im.height // 2
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(0, 0, 0, 110))
    draw.polygon([(cx - r // 3, cy - r // 2), (cx - r // 3, cy + r // 2), (cx + r // 2, cy)], fill=(255, 255, 255, 230))
    label = f"{duration:.1f} s"
    draw.rectangle([0, im.height - 11, 6 * len(label) + 3, im.height], fill=(0, 0, 0, 140))
    draw.text((2, im.height - 11), label, fill=(255, 255, 255, 255))
    return im


def frame_strip(path: str | Path, n: int = 6, side: int = 48):
    """``n`` frames of a video, evenly spaced from the first to the last, side by side (each
    fitted into ``side`` pixels, its frame number in the corner): the clip's motion at a glance."""
    from PIL import ImageDraw

    video = load_media(path)
    try:
        count = len(video)
        indices = sorted({round(i * (count - 1) / max(1, n - 1)) for i in range(n)})
        tiles = []
        for i in indices:
            im = Image.fromarray(video.frame(i)).convert("RGB")
            im.thumbnail((side, side))
            ImageDraw.Draw(im).text((2, 1), str(i), fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
            tiles.append(im)
    finally:
        video.close()
    strip = Image.new("RGB", (sum(t.width for t in tiles) + len(tiles) - 1, max(t.height for t in tiles)), "white")
    x = 0
    for t in tiles:
        strip.paste(t, (x, 0))
        x += t.width + 1
    return strip


def frame_strip_html(path: str | Path, n: int = 6, side: int = 48) -> str:
    """A video's frame strip (``frame_strip``) as an <img> (class ``vf-strip``), or a red note
    naming the file when it cannot be decoded."""
    try:
        im = frame_strip(path, n, side)
    except Exception as e:  # noqa: BLE001 - a bad file is shown, never fatal
        return f"<span style='color:#b00020'>{html.escape(Path(str(path)).name)}: {html.escape(_clip(str(e)))}</span>"
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return (f"<img class='vf-strip' src='{uri}' width='{im.width}' height='{im.height}' "
            f"title='{html.escape(Path(str(path)).name)}: {n} frames, first to last' style='display:block'>")


def thumbnail_uri(path: str | Path, side: int = 96) -> str:
    """A small PNG data URI of an image file, or of a video's middle frame with a play mark
    (saved notebooks stay small)."""
    return _thumbnail(path, side)[0]


def _thumbnail(path: str | Path, side: int) -> tuple[str, tuple[int, int], tuple[int, int]]:
    """(PNG data URI, thumbnail size, original size) of an image, or of a video's middle frame."""
    if is_video_path(str(path)):
        im = video_thumbnail(path, side)
        size = im.size
    else:
        im = load_pil_image(path)
        size = im.size
        im.thumbnail((side, side))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), im.size, size


def picture_for_drawing(path: str | Path, side: int = 320) -> tuple[str, tuple[int, int], tuple[int, int]]:
    """(PNG data URI, size to show it at, original size) of an image scaled to fit ``side``
    pixels, up or down, so that boxes can be drawn on a small image too."""
    im = load_pil_image(path)
    size = im.size
    scale = side / max(size)
    shown = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    if scale < 1:
        im = im.resize(shown)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), shown, size


EXPECTED_COLOR, PREDICTED_COLOR, WRONG_COLOR = "#1b9e5a", "#2f6fdf", "#d62728"


def as_boxes(value: Any) -> list[list[float]] | None:
    """A value read as a list of [x0, y0, x1, y1] boxes (image pixels), or None when it is not one
    (dicts with a ``box``/``bbox`` are read too)."""
    if not isinstance(value, list | tuple):
        return None
    out = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("box", item.get("bbox"))
        if not (isinstance(item, list | tuple) and len(item) == 4
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in item)):
            return None
        out.append([float(v) for v in item])
    return out


def answer_text(value: Any, limit: int = 40) -> str:
    """A short text for an answer: "2 boxes", "yes", "3", or the (clipped) text."""
    boxes = as_boxes(value)
    if boxes is not None and (boxes or isinstance(value, list)):
        return f"{len(boxes)} box{'es' if len(boxes) != 1 else ''}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _clip(value if isinstance(value, str) else json.dumps(value), limit)


def annotated_thumbnail(path: str | Path, side: int = 96, expected: Any = None, predicted: Any = None, *,
                        show_expected: bool = True, show_predicted: bool = False, correct: bool | None = None,
                        error: str = "") -> str:
    """A thumbnail with the answers drawn on it: boxes as rectangles in image coordinates (the
    expected ones green and dashed, the predicted ones blue, red when wrong), any other answer
    (a count, yes/no, text) as a badge "expected 3 · got 2". A file that cannot be decoded is a
    red box naming it."""
    try:
        uri, (w, h), (W, H) = _thumbnail(path, side)  # noqa: N806 - original width and height
    except Exception:  # noqa: BLE001 - a bad file is shown, never fatal
        return safe_thumbnail(path, side)
    shown = []  # (css class, colour, dashed, value)
    if show_expected:
        shown.append(("vf-box-expected", EXPECTED_COLOR, True, expected))
    if show_predicted:
        shown.append(("vf-box-predicted", WRONG_COLOR if correct is False else PREDICTED_COLOR, False, predicted))
    rects, badge = [], []
    for cls, color, dashed, value in shown:
        boxes = as_boxes(value)
        if boxes is not None and not is_video_path(str(path)):
            dash = " stroke-dasharray='4 2'" if dashed else ""
            rects += [f"<rect class='{cls}' x='{x0:.1f}' y='{y0:.1f}' width='{max(0.0, x1 - x0):.1f}' "
                      f"height='{max(0.0, y1 - y0):.1f}' fill='none' stroke='{color}' stroke-width='2' "
                      f"vector-effect='non-scaling-stroke'{dash}/>" for x0, y0, x1, y1 in boxes]
        word = "expected" if cls == "vf-box-expected" else "got"
        if error and cls == "vf-box-predicted":
            badge.append("<span style='color:#ffb4b4'>error</span>")
        elif value is not None or cls == "vf-box-predicted":
            tint = "#9ff0c0" if dashed else "#cfe0ff" if correct is not False else "#ffb4b4"
            badge.append(f"<span style='color:{tint}'>{word} {html.escape(answer_text(value, 16))}</span>")
    svg = (f"<svg class='vf-overlay' viewBox='0 0 {W} {H}' width='{w}' height='{h}' preserveAspectRatio='none' "
           f"style='position:absolute;left:0;top:0'>{''.join(rects)}</svg>") if rects else ""
    label = (f"<div class='vf-badge' style='position:absolute;left:0;bottom:0;right:0;background:rgba(0,0,0,.62);"
             f"font:10px/1.25 sans-serif;padding:1px 3px'>{' · '.join(badge)}</div>") if badge else ""
    title = html.escape(Path(str(path)).name)
    kind = "vf-thumb vf-video" if is_video_path(str(path)) else "vf-thumb"
    return (f"<div class='vf-annot' title='{title}' style='position:relative;display:inline-block;width:{w}px;"
            f"height:{h}px'><img class='{kind}' src='{uri}' style='display:block;width:{w}px;height:{h}px'>"
            f"{svg}{label}</div>")


def search_hit_html(hit, side: int = 96) -> str:
    """One search hit: its thumbnail (text->image) or its text (image->text), rank and score."""
    score = f"{hit.score:.3f}" + (f" <span style='color:#888'>(sim {hit.similarity:.3f})</span>"
                                  if hit.verified is not None else "")
    if Path(hit.item).is_file():
        body = (f"<img src='{thumbnail_uri(hit.item, side)}' style='width:{side}px;height:{side}px;"
                f"object-fit:contain' title='{html.escape(hit.item)}'><br>")
    else:
        body = f"<div style='max-width:{2 * side}px'>{html.escape(hit.item)}</div>"
    return (f"<div class='vf-hit' style='display:inline-block;margin:4px;text-align:center;"
            f"font-size:12px;vertical-align:top'>{body}#{hit.rank} {score}</div>")


def search_results_html(hits: list, side: int = 96) -> str:
    """Search hits as a grid of thumbnails (text->image) or a ranked list (image->text), with scores."""
    if not hits:
        return "<i>no results</i>"
    return "<div class='vf-search-results'>" + "".join(search_hit_html(h, side) for h in hits) + "</div>"


def search_status(query: str, hits) -> str:
    """The status line over a search's results (HTML): how the query was read and what to do next,
    or, when it could not be read, that there are no results and why."""
    q = html.escape(query)
    refusal, reading = getattr(hits, "refusal", None), getattr(hits, "reading", None)
    if refusal:
        return (f"<span class='vf-search-refusal' style='color:#b00'>No results for <i>{q}</i>: "
                f"{html.escape(refusal)}</span>")
    read = f" (read as: <b>{html.escape(reading.text)}</b>)" if reading is not None and reading.text else ""
    matched = getattr(hits, "matched", None)
    if matched is not None:
        read += f"; {matched} indexed image(s) match" + (", the closest others follow" if matched < len(hits) else "")
    return (f"{len(hits)} result(s) for <i>{q}</i>{read}: type the expected answer under each image you want "
            "as an example")


def hit_name(hit) -> str:
    """How a search hit is named to the user: its rank and file name ("#2 scene001.png")."""
    return f"#{hit.rank} {Path(hit.item).name}"


def results_table_html(results: list[dict[str, Any]] | list, limit: int = 200,
                       images: dict[str, str | Path] | None = None, side: int = 96) -> str:
    """Per-example pass/fail as an HTML table (accepts ``ExampleResult``s or their dicts); with
    ``images`` ({example id: image path}) each row starts with the example's picture, the
    expected (green, dashed) and predicted boxes or counts drawn on it. Answers are short texts
    ("2 boxes", "3", "yes"), never clipped JSON."""
    rows = []
    for r in list(results)[:limit]:
        d = r if isinstance(r, dict) else r.__dict__
        thumb = ""
        if images is not None:
            path = images.get(str(d.get("id")))
            pic = annotated_thumbnail(path, side, d.get("expected"), d.get("value"), show_predicted=True,
                                      correct=bool(d.get("correct")), error=d.get("error") or "") if path else ""
            if path and is_video_path(str(path)):  # a clip: its frames, first to last, under its thumbnail
                pic += frame_strip_html(path, 5, 40)
            thumb = f"<td>{pic}</td>"
        ok = d.get("correct")
        mark = ("<span class='vf-pass' style='color:#0a7d28;font-weight:bold'>pass</span>" if ok else
                "<span class='vf-fail' style='color:#b00020;font-weight:bold'>fail</span>")
        error = d.get("error")
        out = (f"<span style='color:#b00020' title='{html.escape(str(error)[:2000])}'>{html.escape(_clip(str(error)))}"
               "</span>") if error else html.escape(answer_text(d.get("value"), 80))
        rows.append(
            f"<tr>{thumb}<td>{html.escape(str(d.get('id')))}</td><td><code>{html.escape(answer_text(d.get('expected'), 80))}"
            f"</code></td><td><code>{out}</code></td><td>{mark}</td></tr>"
        )
    return ("<table class='vf-results' style='border-collapse:collapse;font-size:12px' border='1' cellpadding='3'>"
            "<tr>" + ("<th>picture</th>" if images is not None else "") +
            "<th>example</th><th>expected</th><th>output</th><th>result</th></tr>" + "".join(rows) + "</table>")


def _clip(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def trace_html(ws: Workspace, result: dict[str, Any] | Any, title: str | None = None) -> str:
    """The step-by-step trace of one example result (images with boxes drawn), as HTML."""
    d = result if isinstance(result, dict) else result.__dict__
    if not d.get("trace"):
        return "<i>no trace recorded for this example</i>"
    card = ws.load_task()
    # Example ids as the runner names them (an example without an id is "ex<i>").
    by_id = {ex.id or f"ex{i}": ex for i, ex in enumerate(card.examples)}
    ex = by_id.get(d.get("id"))
    images = [load_media(ws.resolve_image(p)) for p in ex.images] if ex is not None else []
    return trace_to_html(Trace.from_dict(d["trace"]), images, title=title or f"Trace of {d.get('id')}",
                         output=card.output)


def write_trace_pages(folder: str | Path, results: list[tuple[str, list[str], dict[str, Any] | None]],
                      output: OutputKind, title_prefix: str = "") -> list[Path]:
    """One HTML page per example trace, ``<folder>/<id>.html``: ``results`` holds (example id,
    its image paths, its recorded trace or None). Returns the pages written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pages = []
    for example_id, image_paths, trace in results:
        if trace is None:
            continue
        images = [load_media(p) for p in image_paths]
        page = trace_to_html(Trace.from_dict(trace), images, title=f"{title_prefix}{example_id}", output=output)
        pages.append(folder / f"{example_id}.html")
        pages[-1].write_text(page, encoding="utf-8")
    return pages


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


SMALL_SAMPLE = 30  # below this many examples an accuracy gets its interval and a warning


def wilson_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion measured on ``n`` examples."""
    if n <= 0:
        return 0.0, 1.0
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bars_svg(bars: list[tuple[str, float | None]], title: str = "", maximum: float = 1.0,
             fmt: str = "{:.0%}", width: int = 360, n: int | None = None) -> str:
    """A horizontal bar chart (inline SVG, no plotting library): one labelled bar per value.

    ``n``: how many examples each accuracy was measured on. It is shown in the title; below
    ``SMALL_SAMPLE`` every bar also gets its 95% interval (drawn as a whisker) and the chart a
    warning that such a sample cannot show a gain.
    """
    row, label_w, pad = 26, 110, 6
    small = n is not None and n < SMALL_SAMPLE
    if n is not None:
        title = f"{title} (n={n})" if title else f"n={n}"
    height = pad * 2 + row * len(bars) + (18 if title else 0) + (30 if small else 0)
    span = width - label_w - (120 if small else 60)  # room right of the bars for the value (and interval)
    top = 18 if title else 0
    parts = [f"<svg class='vf-chart' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"style='font:12px sans-serif'>"]
    if title:
        parts.append(f"<text x='0' y='13' font-weight='bold'>{html.escape(title)}</text>")
    colors = ["#9aa5b1", "#2f6fdf", "#1b9e5a", "#d97706"]
    for i, (label, value) in enumerate(bars):
        y = top + pad + i * row
        v = 0.0 if value is None else float(value)
        w = max(0.0, min(1.0, v / maximum if maximum else 0.0)) * span
        text = "n/a" if value is None else fmt.format(value)
        end = w  # where the value's text may start
        parts.append(f"<text x='0' y='{y + 15}'>{html.escape(label)}</text>"
                     f"<rect x='{label_w}' y='{y + 3}' width='{w:.1f}' height='16' fill='{colors[i % len(colors)]}'/>")
        if small and value is not None:
            lo, hi = wilson_interval(v, n)
            text += f" [{lo:.0%}-{hi:.0%}]"
            end = max(w, hi * span)
            parts.append(f"<line class='vf-ci' x1='{label_w + lo * span:.1f}' x2='{label_w + hi * span:.1f}' "
                         f"y1='{y + 11}' y2='{y + 11}' stroke='#222' stroke-width='1.5'/>")
        parts.append(f"<text x='{label_w + end + 5:.1f}' y='{y + 15}'>{html.escape(text)}</text>")
    if small:
        parts.append(f"<text class='vf-small-n' x='0' y='{height - 20}' fill='#b45309'>only {n} examples: "
                     f"95% intervals in brackets;<tspan x='0' dy='15'>a sample this small cannot show a gain</tspan>"
                     "</text>")
    parts.append("</svg>")
    return "".join(parts)


def curve_svg(series: dict[str, list[tuple[float, float]]], title: str = "", width: int = 360,
              height: int = 160) -> str:
    """Line chart of named (x, y) series as inline SVG (loss curves)."""
    pts = [p for s in series.values() for p in s if p[1] == p[1]]
    if not pts:
        return "<i>no curve to draw</i>"
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-6)
    pad, top = 30, 20

    def xy(x, y):
        return (pad + (x - x0) / (x1 - x0) * (width - 2 * pad),
                height - pad - (y - y0) / (y1 - y0) * (height - pad - top))

    colors = ["#2f6fdf", "#d62728", "#1b9e5a"]
    parts = [f"<svg class='vf-chart' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"style='font:11px sans-serif'><text x='0' y='13' font-weight='bold'>{html.escape(title)}</text>",
             f"<rect x='{pad}' y='{top}' width='{width - 2 * pad}' height='{height - pad - top}' fill='none' "
             "stroke='#ccc'/>",
             f"<text x='2' y='{top + 10}'>{y1:.3g}</text><text x='2' y='{height - pad}'>{y0:.3g}</text>"]
    for i, (name, s) in enumerate(series.items()):
        c = colors[i % len(colors)]
        line = " ".join("{:.1f},{:.1f}".format(*xy(x, y)) for x, y in s if y == y)
        if len(s) > 1:
            parts.append(f"<polyline fill='none' stroke='{c}' stroke-width='2' points='{line}'/>")
        else:
            parts.extend(f"<circle cx='{xy(x, y)[0]:.1f}' cy='{xy(x, y)[1]:.1f}' r='3' fill='{c}'/>" for x, y in s)
        parts.append(f"<text x='{width - 2 * pad - 60}' y='{top + 12 + 12 * i}' fill='{c}'>{html.escape(name)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def safe_thumbnail(path: str | Path, side: int = 72) -> str:
    """An <img> of an image file (a video's middle frame, class ``vf-video``), or a red box naming
    the file when it cannot be decoded."""
    try:
        kind = "vf-thumb vf-video" if is_video_path(str(path)) else "vf-thumb"
        return f"<img class='{kind}' src='{thumbnail_uri(path, side)}' title='{html.escape(Path(str(path)).name)}'>"
    except Exception as e:  # noqa: BLE001 - a bad file is shown, never fatal
        return (f"<div class='vf-badimg' style='width:{side}px;height:{side}px;border:1px solid #b00020;"
                f"color:#b00020;font-size:10px;overflow:hidden'>{html.escape(Path(str(path)).name)}: "
                f"{html.escape(str(e)[-80:])}</div>")


def improve_chart_html(report: dict) -> str:
    """Before/after accuracy of an Improve (self-training) report, per round, with kept readings."""
    if not report or "before" not in report:
        return ""
    bars = [("before", report["before"]["accuracy"])]
    bars += [(f"round {r['round']} ({r.get('kept_total', 0)} kept{'' if r.get('accepted', True) else ', not kept'})",
              r["eval"]["accuracy"]) for r in report.get("rounds", [])]
    n = report.get("eval_examples")
    title = "Improve: planner accuracy on held-out examples"
    families = report["before"].get("per_family", {})
    rows = "".join(
        f"<tr><td>{html.escape(f)}</td><td>{v:.2f}</td><td>{report['after']['per_family'].get(f, 0):.2f}</td></tr>"
        for f, v in families.items()) if report.get("after") else ""
    table = (f"<table border='1' cellpadding='3' style='border-collapse:collapse'><tr><th>family</th><th>before</th>"
             f"<th>after</th></tr>{rows}</table>") if rows else ""
    kinds = report.get("kinds_reader")
    note = ""
    if kinds and "before" in kinds:  # the 20-kind reader is adapted first; its own accuracy, apart
        steps = ", ".join(f"round {r['round']} {r['eval']['accuracy']:.2f}{'' if r.get('accepted', True) else ' (not kept)'}"
                          for r in kinds.get("rounds", []))
        note = (f"<p style='font-size:90%'>20-kind reader alone: before {kinds['before']['accuracy']:.2f}"
                f"{', ' + html.escape(steps) if steps else ''}. The bars are the planner that proposes "
                "(composing parser with the 20-kind reader).</p>")
    return f"<div>{bars_svg(bars, title, width=460, n=n if isinstance(n, int) else None)}{table}{note}</div>"
