"""Step-by-step traces of a program run, and their HTML rendering (as VisProg's ``inspect=True``).

The host records every tool call: name, patch, arguments, result, duration and whether it
came from the cache. Traces are plain data (saved with runs); the HTML view draws the patch
and any returned boxes on the image, one step after another. A video input is shown as a strip
of sampled frames: a ``track`` step draws its tracks' boxes on them, and the result strip marks
the event frame (a collision's frame) in red.
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
STRIP_FRAMES = 6  # frames sampled for a video's strip
TRACK_OUTLINES = ("#ff2d55", "#1e90ff", "#00c853", "#ff9f0a", "#af52de", "#00c7be", "#5856d6", "#a2845e")
EVENT_OUTLINE = "#d00000"


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
        """Append a tool call as the next numbered step and return it."""
        step = TraceStep(step=len(self.steps) + 1, **kw)
        self.steps.append(step)
        return step

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the steps as dicts) for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trace:
        """Inverse of ``to_dict``; missing fields take their defaults."""
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
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.NEAREST)
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


def is_video(media: Any) -> bool:
    """True for a lazily decoded video input (``builder.core.video.VideoReader``), not an image array."""
    return hasattr(media, "frames") and hasattr(media, "info")


def strip_frames(n_frames: int, n: int = STRIP_FRAMES, start: int = 0, stop: int | None = None,
                 mark: int | None = None) -> list[int]:
    """``n`` frame indices spread evenly over ``start``..``stop - 1``; a ``mark`` inside the range
    replaces the nearest one, so the event frame is always shown."""
    stop = n_frames if stop is None else min(int(stop), n_frames)
    start = max(0, int(start))
    if stop <= start:
        return []
    n = max(1, min(int(n), stop - start))
    idx = [start + round(k * (stop - 1 - start) / (n - 1)) for k in range(n)] if n > 1 else [start]
    if mark is not None and start <= int(mark) < stop and int(mark) not in idx:
        idx[min(range(n), key=lambda k: abs(idx[k] - int(mark)))] = int(mark)
    return sorted(set(idx))


def video_strip(video, tracks: list | None = None, n: int = STRIP_FRAMES, start: int = 0, stop: int | None = None,
                mark: int | None = None, side: int = 128) -> list[tuple[int, Image.Image]]:
    """Sampled frames of ``video`` (a ``VideoReader``) as (frame index, picture) pairs, each with
    the boxes ``tracks`` (plain-data tracks, as the ``track`` tool returns them) have there, one
    outline colour per track; the ``mark`` frame gets a thick red frame."""
    idx = strip_frames(len(video), n, start, stop, mark)
    out = []
    for f, arr in zip(idx, video.frames(idx), strict=True):
        img = Image.fromarray(arr).convert("RGB")
        scale = side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(img)
        for k, t in enumerate(tracks or []):
            box = dict(zip(t.get("frames", []), t.get("boxes", []), strict=False)).get(f)
            if box is not None:
                x0, y0, x1, y1 = (c * scale for c in box)
                draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=TRACK_OUTLINES[k % len(TRACK_OUTLINES)], width=2)
        if mark is not None and f == int(mark):
            draw.rectangle([0, 0, img.width - 1, img.height - 1], outline=EVENT_OUTLINE, width=4)
        out.append((f, img))
    return out


def strip_image(frames: list[tuple[int, Image.Image]], gap: int = 4) -> Image.Image:
    """The strip's frames side by side in one picture (for files and documentation)."""
    if not frames:
        return Image.new("RGB", (1, 1), "white")
    h = max(im.height for _, im in frames)
    out = Image.new("RGB", (sum(im.width for _, im in frames) + gap * (len(frames) - 1), h + 14), "white")
    draw, x = ImageDraw.Draw(out), 0
    for f, im in frames:
        out.paste(im, (x, 0))
        draw.text((x + 2, h + 1), f"frame {f}", fill="#333")
        x += im.width + gap
    return out


def strip_html(frames: list[tuple[int, Image.Image]], tracks: list | None = None, mark: int | None = None) -> str:
    """A strip as HTML: one ``<img class='vf-frame'>`` per frame with its index below (the event
    frame captioned), then a legend of the tracks' outline colours."""
    cells = []
    for f, im in frames:
        event = mark is not None and f == int(mark)
        caption = f"frame {f}" + (" · event" if event else "")
        cells.append(f"<figure class='vf-frame-cell' style='display:inline-block;margin:0 4px 0 0;text-align:center'>"
                     f"<img class='vf-frame{' vf-event' if event else ''}' src='{_png_data_uri(im)}' "
                     f"title='{caption}'><figcaption style='font-size:11px;"
                     f"{'color:' + EVENT_OUTLINE + ';font-weight:bold' if event else 'color:#555'}'>{caption}"
                     "</figcaption></figure>")
    legend = " ".join(f"<span style='color:{TRACK_OUTLINES[k % len(TRACK_OUTLINES)]}'>&#9632;</span> "
                      f"{html.escape(str(t.get('label', t.get('id', k))))}" for k, t in enumerate(tracks or []))
    return (f"<div class='vf-strip' data-frames='{len(frames)}'>{''.join(cells)}"
            + (f"<div style='font-size:11px'>{legend}</div>" if legend else "") + "</div>")


def event_frame(value: Any, output: str | None = None) -> int | None:
    """The frame a result points at: a summary's ``frame``, or the value itself for the
    ``frame`` output kind; None otherwise."""
    if isinstance(value, dict) and isinstance(value.get("frame"), int) and not isinstance(value["frame"], bool):
        return value["frame"]
    if output == "frame" and isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _track_results(trace: Trace) -> list:
    tracks = []
    for s in trace.steps:
        if s.tool == "track" and isinstance(s.result, list):
            tracks = [t for t in s.result if isinstance(t, dict) and "boxes" in t]
    return tracks


def _media_view(media, boxes: list, patch_box=None, frame: int | None = None, outline: str = "#ff2d55") -> str:
    """An input (image, or one frame of a video) with boxes, as an <img>."""
    if is_video(media):
        if frame is None:
            return strip_html(video_strip(media))
        media = media.frame(int(frame))
    return f"<img src='{_png_data_uri(draw_boxes(media, boxes, outline=outline, patch_box=patch_box))}'>"


def trace_to_html(trace: Trace, images: list, title: str = "Program trace", output: str | None = None) -> str:
    """A self-contained HTML page: the program, then one card per tool call, then the result.

    ``images`` are the example's inputs: image arrays, or ``VideoReader``s for videos (shown as
    strips of sampled frames with the tracks' boxes). ``output`` (the task's output kind) tells
    which frame a plain integer result points at.
    """
    parts = [
        "<div class='vf-trace' style='font-family:system-ui,sans-serif;font-size:13px'>",
        f"<h3 style='margin:4px 0'>{html.escape(title)}</h3>",
        "<pre style='background:#f6f8fa;padding:8px;border-radius:6px'>"
        f"{html.escape(trace.source)}</pre>",
    ]
    mark = None if trace.error else event_frame(trace.value, output)
    if images:
        thumbs = "".join(
            strip_html(video_strip(img)) if is_video(img) else
            f"<img src='{_png_data_uri(draw_boxes(img, []))}' style='margin-right:6px' title='image {i}'>"
            for i, img in enumerate(images)
        )
        parts.append(f"<div><b>Input</b><br>{thumbs}</div>")
    for s in trace.steps:
        refs = s.ref if isinstance(s.ref, list) else [s.ref]
        pics = ""
        for r in refs:
            if isinstance(r, dict) and 0 <= r.get("video", -1) < len(images) and is_video(images[r["video"]]):
                tracks = [t for t in s.result if isinstance(t, dict)] if isinstance(s.result, list) else []
                pics += strip_html(video_strip(images[r["video"]], tracks, start=r.get("start", 0),
                                               stop=r.get("stop"), mark=mark), tracks, mark)
            elif isinstance(r, dict) and 0 <= r.get("image", -1) < len(images):
                boxes = _result_boxes(s) if len(refs) == 1 else []
                pics += _media_view(images[r["image"]], boxes, patch_box=r.get("box"), frame=r.get("frame"))
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
        videos = [m for m in images if is_video(m)]
        if videos:
            tracks = _track_results(trace)
            if isinstance(trace.value, dict) and isinstance(trace.value.get("objects"), list):
                named = {str(o) for o in trace.value["objects"]}  # a summary: its objects only
                tracks = [t for t in tracks if t.get("label") in named] or tracks
            final = "<br>" + strip_html(video_strip(videos[0], tracks, mark=mark), tracks, mark)
        else:
            boxes = _result_boxes(TraceStep(0, "", None, [], result=trace.value if isinstance(trace.value, list)
                                            else [trace.value]))
            if boxes and images:
                final = f"<br><img src='{_png_data_uri(draw_boxes(images[0], boxes, outline='#00c853'))}'>"
        parts.append(f"<div><b>Result:</b> <code>{html.escape(_short(trace.value))}</code>{final}</div>")
    parts.append("</div>")
    return "\n".join(parts)
