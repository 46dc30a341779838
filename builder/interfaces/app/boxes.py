"""Drawing boxes with the mouse: the Task card labels a grounding example by dragging over its image."""

from __future__ import annotations

from pathlib import Path

import panel as pn
import param

from builder.interfaces.views import picture_for_drawing


class BoxDrawer(pn.reactive.ReactiveHTML):
    """An example's image with its boxes over it; dragging the mouse adds a box.

    ``boxes`` holds the boxes in the image's own pixels ([x0, y0, x1, y1] each, whole numbers),
    whatever size the image is shown at; the browser converts the mouse positions. ``show(path,
    boxes)`` loads an image; its Clear button (in the browser) or ``clear()`` removes the boxes.
    """

    src = param.String(default="", doc="The image as shown (a data URI).")
    natural_width = param.Integer(default=1, doc="The image's width in its own pixels.")
    natural_height = param.Integer(default=1, doc="The image's height in its own pixels.")
    display_width = param.Integer(default=1, doc="The width it is shown at (CSS pixels).")
    display_height = param.Integer(default=1, doc="The height it is shown at (CSS pixels).")
    boxes = param.List(default=[], doc="The boxes, [x0, y0, x1, y1] in image pixels.")

    _template = """<div id="wrap" class="vf-draw" style="position:relative; user-select:none; touch-action:none">
<img id="pic" draggable="false" style="position:absolute; left:0; top:0; width:100%; height:100%"></img>
<svg id="layer" class="vf-draw-layer" xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="none"
 style="position:absolute; left:0; top:0; width:100%; height:100%; cursor:crosshair"></svg></div>
<button id="clear" class="vf-draw-clear" type="button" onclick="${script('clear')}"
 style="margin-top:4px">Clear boxes</button>"""

    _scripts = {
        "render": """
const NS = 'http://www.w3.org/2000/svg';
const rect = (b, cls) => {
  const r = document.createElementNS(NS, 'rect');
  r.setAttribute('class', cls);
  r.setAttribute('x', Math.min(b[0], b[2])); r.setAttribute('y', Math.min(b[1], b[3]));
  r.setAttribute('width', Math.abs(b[2] - b[0])); r.setAttribute('height', Math.abs(b[3] - b[1]));
  r.setAttribute('fill', 'rgba(27,158,90,0.15)'); r.setAttribute('stroke', '#1b9e5a');
  r.setAttribute('stroke-width', '2'); r.setAttribute('vector-effect', 'non-scaling-stroke');
  return r;
};
state.draw = () => {
  wrap.style.width = data.display_width + 'px'; wrap.style.height = data.display_height + 'px';
  pic.src = data.src;
  layer.setAttribute('viewBox', `0 0 ${data.natural_width} ${data.natural_height}`);
  while (layer.firstChild) layer.removeChild(layer.firstChild);
  for (const b of data.boxes) layer.appendChild(rect(b, 'vf-drawn'));
};
state.point = (e) => {
  const r = layer.getBoundingClientRect();
  const clamp = (v, hi) => Math.max(0, Math.min(hi, v));
  return [clamp((e.clientX - r.left) / r.width * data.natural_width, data.natural_width),
          clamp((e.clientY - r.top) / r.height * data.natural_height, data.natural_height)];
};
layer.addEventListener('pointerdown', (e) => {
  if (!data.src) return;
  e.preventDefault();
  state.start = state.point(e);
  state.live = rect([...state.start, ...state.start], 'vf-drawing');
  layer.appendChild(state.live);
  try { layer.setPointerCapture(e.pointerId); } catch (_) {}
});
layer.addEventListener('pointermove', (e) => {
  if (!state.start) return;
  const p = state.point(e), s = state.start;
  state.live.setAttribute('x', Math.min(s[0], p[0])); state.live.setAttribute('y', Math.min(s[1], p[1]));
  state.live.setAttribute('width', Math.abs(p[0] - s[0])); state.live.setAttribute('height', Math.abs(p[1] - s[1]));
});
layer.addEventListener('pointerup', (e) => {
  if (!state.start) return;
  const p = state.point(e), s = state.start;
  state.start = null;
  const box = [Math.round(Math.min(s[0], p[0])), Math.round(Math.min(s[1], p[1])),
               Math.round(Math.max(s[0], p[0])), Math.round(Math.max(s[1], p[1]))];
  if (box[2] - box[0] < 2 || box[3] - box[1] < 2) { state.draw(); return; }  // a click is not a box
  data.boxes = [...data.boxes, box];
});
state.draw();
""",
        "clear": "data.boxes = []; state.draw();",
        "src": "state.draw()",
        "boxes": "state.draw()",
        "display_width": "state.draw()",
        "display_height": "state.draw()",
    }

    def show(self, path: str | Path, boxes: list[list[float]] | None = None, side: int = 320) -> None:
        """Load the image at ``path`` (shown fitted into ``side`` pixels) with its ``boxes``."""
        uri, (w, h), (width, height) = picture_for_drawing(path, side)
        self.param.update(src=uri, natural_width=width, natural_height=height, display_width=w, display_height=h,
                          boxes=[[round(v) for v in b] for b in (boxes or [])])

    def clear(self) -> None:
        """Remove every box."""
        self.boxes = []
