"""Loss curve and before/after plots of a fine-tuning run (PIL; matplotlib is not a dependency)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def plot_history(history: dict | str | Path, out_png: str | Path, size=(640, 360)) -> Path:
    """Draw training loss per step (blue, smoothed) and validation loss per epoch (red dots)."""
    from PIL import Image, ImageDraw

    if not isinstance(history, dict):
        history = json.loads(Path(history).read_text())
    train = [(h["step"], h["loss"]) for h in history.get("train", [])]
    val = [(h["step"], h["loss"]) for h in history.get("val", []) if h.get("loss") == h.get("loss")]
    if not train:
        raise ValueError("history has no training steps to plot")
    w, h = size
    pad = 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    xs = [s for s, _ in train + val]
    ys = [v for _, v in train + val]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = min(ys), max(max(ys), min(ys) + 1e-6)

    def pt(s, v):
        return pad + (s - x0) / (x1 - x0) * (w - 2 * pad), h - pad - (v - y0) / (y1 - y0) * (h - 2 * pad)

    d.rectangle((pad, pad, w - pad, h - pad), outline="gray")
    k = max(1, len(train) // 50)  # moving average so the curve reads at a glance
    smooth = [(train[i][0], float(np.mean([v for _, v in train[max(0, i - k):i + 1]]))) for i in range(len(train))]
    d.line([pt(s, v) for s, v in smooth], fill=(40, 80, 220), width=2)
    for s, v in val:
        x, y = pt(s, v)
        d.ellipse((x - 4, y - 4, x + 4, y + 4), fill=(220, 40, 40))
    d.text((pad, 10), f"loss: train (blue), validation (red); y {y0:.3f}..{y1:.3f}", fill="black")
    d.text((pad, h - pad + 8), f"step {x0}..{x1}", fill="black")
    out = Path(out_png)
    img.save(out)
    return out


def plot_before_after(before: dict, after: dict, out_png: str | Path, title: str = "before / after",
                      size=(640, 360)) -> Path:
    """Bar chart of accuracy before (gray) and after (blue), overall and per question type, from
    two ``evaluate`` results (``accuracy``, ``n``, ``by_qtype``)."""
    from PIL import Image, ImageDraw

    groups = [("all", before.get("accuracy") or 0.0, after.get("accuracy") or 0.0)]
    for k in sorted(set(before.get("by_qtype", {})) | set(after.get("by_qtype", {}))):
        groups.append((k, before.get("by_qtype", {}).get(k, 0.0), after.get("by_qtype", {}).get(k, 0.0)))
    w, h = size
    pad, top = 40, 36
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    d.text((pad, 8), f"{title}  (n = {after.get('n', before.get('n'))}; gray before, blue after)", fill="black")
    base_y, plot_h = h - pad, h - pad - top
    d.line((pad, base_y, w - 10, base_y), fill="gray")
    for frac in (0.5, 1.0):
        y = base_y - frac * plot_h
        d.line((pad, y, w - 10, y), fill=(225, 225, 225))
        d.text((4, y - 6), f"{frac:.1f}", fill="gray")
    slot = (w - pad - 10) / max(1, len(groups))
    for i, (name, b, a) in enumerate(groups):
        x = pad + i * slot + slot * 0.1
        bw = slot * 0.38
        for j, (v, col) in enumerate(((b, (170, 170, 170)), (a, (40, 80, 220)))):
            x0 = x + j * bw
            d.rectangle((x0, base_y - v * plot_h, x0 + bw - 2, base_y), fill=col)
        d.text((x, base_y + 4), name[:11], fill="black")
    out = Path(out_png)
    img.save(out)
    return out
