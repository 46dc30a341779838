"""Step-by-step traces of a program run, and their HTML rendering (as VisProg's ``inspect=True``).

The host records every tool call: name, patch, arguments, result, duration and whether it
came from the cache. Traces are plain data (saved with runs); the HTML view draws the patch
and any returned boxes on the image, one step after another.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

MAX_TEXT = 300


@dataclass
class TraceStep:
    """One tool call."""

    step: int
    tool: str
    ref: Any  # {"image": i, "box": [...]} or a list of them
    args: list
    result: Any = None
    error: str | None = None
    duration_ms: float = 0.0
    cached: bool = False


@dataclass
class Trace:
    """All tool calls of one run, plus the program, its value or error and its printed output."""

    source: str = ""
    steps: list[TraceStep] = field(default_factory=list)
    value: Any = None
    error: str | None = None
    stdout: str = ""

    def add(self, **kw) -> TraceStep:
        step = TraceStep(step=len(self.steps) + 1, **kw)
        self.steps.append(step)
        return step

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trace:
        steps = [TraceStep(**s) for s in d.get("steps", [])]
        return cls(d.get("source", ""), steps, d.get("value"), d.get("error"), d.get("stdout", ""))


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _png_data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def draw_boxes(
    image: np.ndarray, boxes: list, outline: str = "#ff2d55", patch_box=None, max_side: int = 256
) -> Image.Image:
    """The image with ``boxes`` drawn (and the queried patch dashed in blue), scaled for display."""
    img = Image.fromarray(image).convert("RGB")
    scale = max(1.0, max_side / max(img.size))
    if scale != 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    w = max(1, round(scale))
    if patch_box is not None:
        draw.rectangle([c * scale for c in patch_box], outline="#1e90ff", width=w)
    for box in boxes:
        x0, y0, x1, y1 = (c * scale for c in box)
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=outline, width=w + 1)
    return img


def _result_boxes(step: TraceStep) -> list:
    res = step.result
    if isinstance(res, list) and res and isinstance(res[0], dict) and "box" in res[0]:
        return [d["box"] for d in res]
    return []


def trace_to_html(trace: Trace, images: list[np.ndarray], title: str = "Program trace") -> str:
    """A self-contained HTML page: the program, then one card per tool call, then the result."""
    parts = [
        "<div class='vf-trace' style='font-family:system-ui,sans-serif;font-size:13px'>",
        f"<h3 style='margin:4px 0'>{html.escape(title)}</h3>",
        "<pre style='background:#f6f8fa;padding:8px;border-radius:6px'>"
        f"{html.escape(trace.source)}</pre>",
    ]
    if images:
        thumbs = "".join(
            f"<img src='{_png_data_uri(draw_boxes(img, []))}' style='margin-right:6px' title='image {i}'>"
            for i, img in enumerate(images)
        )
        parts.append(f"<div><b>Input</b><br>{thumbs}</div>")
    for s in trace.steps:
        refs = s.ref if isinstance(s.ref, list) else [s.ref]
        pics = ""
        for r in refs:
            if isinstance(r, dict) and 0 <= r.get("image", -1) < len(images):
                boxes = _result_boxes(s) if len(refs) == 1 else []
                pics += f"<img src='{_png_data_uri(draw_boxes(images[r['image']], boxes, patch_box=r['box']))}'>"
        status = f"<span style='color:#c00'>error: {html.escape(s.error)}</span>" if s.error else (
            f"→ <code>{html.escape(_short(s.result))}</code>"
        )
        parts.append(
            "<div style='border:1px solid #ddd;border-radius:6px;padding:6px;margin:6px 0'>"
            f"<b>{s.step}. {html.escape(s.tool)}</b>({html.escape(_short(s.args)[1:-1])}) {status}"
            f" <small style='color:#888'>{s.duration_ms:.1f} ms{' · cached' if s.cached else ''}</small>"
            f"<div>{pics}</div></div>"
        )
    if trace.stdout:
        parts.append(f"<div><b>printed</b><pre>{html.escape(trace.stdout)}</pre></div>")
    if trace.error:
        parts.append(f"<div style='color:#c00'><b>Error:</b> {html.escape(trace.error)}</div>")
    else:
        final = ""
        boxes = _result_boxes(TraceStep(0, "", None, [], result=trace.value if isinstance(trace.value, list)
                                        else [trace.value]))
        if boxes and images:
            final = f"<br><img src='{_png_data_uri(draw_boxes(images[0], boxes, outline='#00c853'))}'>"
        parts.append(f"<div><b>Result:</b> <code>{html.escape(_short(trace.value))}</code>{final}</div>")
    parts.append("</div>")
    return "\n".join(parts)
