"""Shapes-world scenes: sampling with exact ground truth, domain-shift knobs and PIL rendering.

A scene is a list of flat-coloured objects (shape, colour, size, optional text label) on a
background. Objects are drawn without anti-aliasing from per-object masks, so every ground-truth
box is the exact bounding box of the object's pixels ([x0, y0, x1, y1], x1/y1 exclusive).
Appearance (background texture, clutter, blur, noise) is derived from ``Scene.render_seed``,
so rendering a scene twice gives identical pixels.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from builder.domains.shapes.vocab import COLORS as COLOR_NAMES
from builder.domains.shapes.vocab import SHAPES, SIZES

# Base colours are at least 25.8 degrees apart in hue (orange-yellow), so a hue shift below
# 12.9 degrees (MAX_PALETTE_SHIFT plus per-object jitter) keeps every colour nearest its own name.
# Colour name (the vocabulary's order) -> base RGB.
COLORS: dict[str, tuple[int, int, int]] = dict(zip(COLOR_NAMES, (
    (220, 40, 40),  # red
    (245, 145, 25),  # orange
    (230, 225, 30),  # yellow
    (40, 170, 60),  # green
    (30, 190, 200),  # cyan
    (40, 80, 220),  # blue
    (140, 60, 190),  # purple
), strict=True))
# Object side as a fraction of the image width, before Domain.object_scale.
SIZE_FRACTION = {"small": 0.12, "large": 0.22}
# Labels avoid O/0 and I/1 in random codes so OCR answers are unambiguous.
LABEL_WORDS = ("STOP", "EXIT", "GO", "UP", "NEW", "SALE", "BUS", "CAR")
LABEL_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
LABEL_DIGITS = "23456789"
LABEL_SHAPES = ("square", "circle")

BACKGROUND_KINDS = ("plain", "noise", "stripes", "checker", "gradient")
DEFAULT_IMAGE_SIZE = 128
MAX_PALETTE_SHIFT = 11.0
PALETTE_JITTER = 1.5  # extra per-object hue jitter (degrees)
DEFAULT_TEXT_IMAGE_SIZE = 256
BACKGROUND_GRAY = 215


@dataclass(frozen=True)
class Domain:
    """Domain-shift knobs for sampling and rendering a scene.

    ``background``: one of BACKGROUND_KINDS, or "textured" to draw a non-plain kind per scene.
    ``palette_shift``: maximum global hue rotation in degrees (also enables small saturation
    and brightness jitter); colours stay nearest to their ground-truth name.
    ``pixel_noise``: standard deviation of Gaussian pixel noise (0-255 scale).
    ``blur``: Gaussian blur radius in pixels. ``object_scale``: multiplies object sizes.
    ``clutter``: number of distractor lines/blobs (never objects). ``max_iou``: maximum IoU
    between object boxes (0 means no overlap, with at least ``min_gap`` pixels between them).
    ``hue_warp``: strength in [0, 1] of a customer camera's non-linear colour response (``warp_hue``):
    every hue moves towards the next named colour's by up to ``HUE_WARP_REACH`` of the gap, so at
    1 a red object renders orange-ish and an orange one yellow-ish (grays stay gray; ground-truth
    names stay). ``outline``: objects drawn as anti-aliased outlines of this stroke width (pixels)
    over a translucent wash of their colour instead of flat fills (0: filled).
    """

    name: str = "custom"
    background: str = "plain"
    palette_shift: float = 0.0
    pixel_noise: float = 0.0
    blur: float = 0.0
    object_scale: float = 1.0
    clutter: int = 0
    max_iou: float = 0.0
    min_gap: int = 2
    lighting: float = 1.0
    light_falloff: float = 0.0
    hue_warp: float = 0.0
    outline: int = 0

    def __post_init__(self):
        if self.background not in BACKGROUND_KINDS + ("textured",):
            raise ValueError(f"unknown background {self.background!r}; use one of {BACKGROUND_KINDS + ('textured',)}")
        if not 0 <= self.palette_shift <= MAX_PALETTE_SHIFT:
            raise ValueError(f"palette_shift must be in [0, {MAX_PALETTE_SHIFT}] degrees so colours stay nameable")
        if self.object_scale <= 0 or self.pixel_noise < 0 or self.blur < 0 or self.clutter < 0:
            raise ValueError(f"invalid domain knobs: {self}")
        if not 0 <= self.max_iou < 1:
            raise ValueError("max_iou must be in [0, 1)")
        if not 0.3 <= self.lighting <= 1.5 or not 0 <= self.light_falloff < 1:
            raise ValueError("lighting must be in [0.3, 1.5] and light_falloff in [0, 1)")
        if not 0 <= self.hue_warp <= 1 or self.outline < 0:
            raise ValueError("hue_warp must be in [0, 1] and outline >= 0")


PRESETS: dict[str, Domain] = {
    "clean": Domain(name="clean"),
    "textured": Domain(name="textured", background="textured"),
    "noisy": Domain(name="noisy", background="noise", pixel_noise=18.0),
    "blur": Domain(name="blur", blur=1.5),
    "palette": Domain(name="palette", palette_shift=10.0),
    "small": Domain(name="small", object_scale=0.6),
    "clutter": Domain(name="clutter", clutter=8),
    "overlap": Domain(name="overlap", max_iou=0.15, min_gap=0),
    "shifted": Domain(name="shifted", background="textured", palette_shift=8.0, pixel_noise=10.0,
                      blur=0.8, object_scale=0.8, clutter=4),
    # The SelTDA target domain: scenes at dusk (dim, unevenly lit, noisy). Engines trained on
    # daylight scenes (every preset above) lose much of their accuracy here; only unlabelled
    # dusk images are used to adapt them.
    "dusk": Domain(name="dusk", background="textured", palette_shift=4.0, pixel_noise=8.0, clutter=3,
                   lighting=0.45, light_falloff=0.3),
    # Customer-camera shifts that need learning (a global photometric correction such as
    # ``augment.seltda.illumination_normalise`` cannot undo them; bench/seltda_bench.py measures it):
    # "camera": a non-linear hue response (the customer's red renders orange-ish, orange yellow-ish, ...);
    # "sketch": outlined, anti-aliased drawing with sensor noise and blur.
    "camera": Domain(name="camera", background="textured", palette_shift=3.0, pixel_noise=6.0, clutter=2,
                     hue_warp=1.0),
    "sketch": Domain(name="sketch", background="textured", pixel_noise=12.0, blur=0.8, clutter=2, outline=2),
}

# Knob ranges of ``random_domain`` (domain randomisation for training the VQA engine). They
# cover the daylight presets (clean ... shifted); lighting stays 1, so "dusk" is out of range.
RANDOM_DOMAIN_RANGES = {"palette_shift": (0.0, 10.0), "pixel_noise": (0.0, 18.0), "blur": (0.0, 1.5),
                        "object_scale": (0.6, 1.0), "clutter": (0, 8)}


def random_domain(rng: np.random.Generator) -> Domain:
    """A random daylight domain: clean with probability 0.3, else each knob on with probability
    0.5 and a uniform value in ``RANDOM_DOMAIN_RANGES`` (background "textured" or "plain")."""
    if rng.random() < 0.3:
        return PRESETS["clean"]
    kw: dict = {"background": "textured" if rng.random() < 0.6 else "plain"}
    for knob, (lo, hi) in RANDOM_DOMAIN_RANGES.items():
        if rng.random() < 0.5:
            kw[knob] = int(rng.integers(lo, hi + 1)) if isinstance(lo, int) else float(rng.uniform(lo, hi))
    return Domain(name="random", **kw)


def get_domain(domain: str | Domain) -> Domain:
    """Resolve a preset name (see PRESETS) or pass a Domain through."""
    if isinstance(domain, Domain):
        return domain
    if domain not in PRESETS:
        raise ValueError(f"unknown domain preset {domain!r}; presets: {sorted(PRESETS)}")
    return PRESETS[domain]


@dataclass(frozen=True)
class SceneObject:
    """One object's ground truth. ``rgb`` is the colour actually painted (after palette shift)."""

    shape: str
    color: str
    size: str
    box: tuple[int, int, int, int]
    text: str | None = None
    rgb: tuple[int, int, int] = (0, 0, 0)
    origin: tuple[int, int] = (0, 0)  # top-left of the nominal square the mask is drawn in
    side: int = 0

    @property
    def center(self) -> tuple[float, float]:
        """Box centre (x, y), the same convention as ImagePatch.center_x/center_y."""
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    def to_json(self) -> dict:
        """Plain-data ground truth."""
        return {"shape": self.shape, "color": self.color, "size": self.size, "box": list(self.box),
                "text": self.text, "rgb": list(self.rgb)}


@dataclass(frozen=True)
class Scene:
    """A sampled scene: its objects, image size, domain and the seed its appearance derives from."""

    width: int
    height: int
    objects: tuple[SceneObject, ...]
    domain: Domain = field(default_factory=Domain)
    background: str = "plain"
    render_seed: int = 0

    def to_json(self) -> dict:
        """Plain-data ground truth of the scene (without pixels)."""
        return {"width": self.width, "height": self.height, "domain": self.domain.name,
                "background": self.background, "objects": [o.to_json() for o in self.objects]}


@lru_cache(maxsize=512)
def shape_mask(shape: str, side: int) -> Image.Image:
    """Binary ("L", 0/255) mask of a shape drawn in a side x side square, no anti-aliasing."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}")
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    s = side - 1
    if shape == "circle":
        draw.ellipse((0, 0, s, s), fill=255)
    elif shape == "square":
        draw.rectangle((0, 0, s, s), fill=255)
    elif shape == "triangle":
        draw.polygon([(s / 2, 0), (s, s), (0, s)], fill=255)
    elif shape == "hexagon":  # flat top and bottom: wider than tall, unlike the circle
        h = s * math.sqrt(3) / 2
        y0 = (s - h) / 2
        draw.polygon([(s / 4, y0), (3 * s / 4, y0), (s, s / 2), (3 * s / 4, y0 + h), (s / 4, y0 + h), (0, s / 2)],
                     fill=255)
    else:  # star: five points, fat enough to stay one blob at small sizes
        c, r_out, r_in = s / 2, s / 2, s * 0.23
        pts = []
        for k in range(10):
            r = r_out if k % 2 == 0 else r_in
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((c + r * math.cos(a), c + r * math.sin(a) + s * 0.05))
        draw.polygon(pts, fill=255)
    return mask


def _shift_color(rgb, hue_deg: float, sat: float, val: float) -> tuple[int, int, int]:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    r, g, b = colorsys.hsv_to_rgb((h + hue_deg / 360) % 1.0, min(1.0, s * sat), min(1.0, v * val))
    return (round(r * 255), round(g * 255), round(b * 255))


# The named colours' hues in degrees, ascending (red 0 ... purple ~277).
_HUE_ANCHORS = tuple(sorted(colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] * 360 for rgb in COLORS.values()))
HUE_WARP_REACH = 0.55  # at hue_warp 1, a named colour's hue moves 55% of the way to the next one


def warp_hue(hue_deg: np.ndarray, strength: float) -> np.ndarray:
    """The camera's hue response: a monotone, piecewise-linear map of the hue circle that moves each
    named colour's hue ``strength * HUE_WARP_REACH`` of the way to the next named colour's (and the
    hues between them along), so it is invertible but not a rotation or a per-channel gain."""
    anchors = np.array(_HUE_ANCHORS + (_HUE_ANCHORS[0] + 360,))
    moved = anchors[:-1] + strength * HUE_WARP_REACH * np.diff(anchors)
    moved = np.append(moved, moved[0] + 360)
    h = np.mod(np.asarray(hue_deg, np.float64) - anchors[0], 360) + anchors[0]
    return np.mod(np.interp(h, anchors, moved), 360)


def _apply_hue_warp(img: Image.Image, strength: float) -> Image.Image:
    import cv2

    hsv = cv2.cvtColor(np.asarray(img, np.float32) / 255, cv2.COLOR_RGB2HSV)  # H in degrees
    hsv[:, :, 0] = warp_hue(hsv[:, :, 0], strength).astype(np.float32)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return Image.fromarray(np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8), "RGB")


@lru_cache(maxsize=512)
def _soft_masks(shape: str, side: int, stroke: int) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased coverage (float in [0, 1]) of a shape and of its inside ``stroke`` px in,
    drawn at 4x and averaged down."""
    big = shape_mask(shape, side * 4)
    inner = big.filter(ImageFilter.MinFilter(2 * 4 * stroke + 1)) if stroke else big

    def down(m: Image.Image) -> np.ndarray:
        return np.asarray(m.resize((side, side), Image.Resampling.BOX), np.float32) / 255

    return down(big), down(inner)


def _paste_outlined(img: Image.Image, obj: SceneObject, stroke: int) -> Image.Image:
    """The object as an anti-aliased outline in its colour over a 30% wash of it."""
    outer, inner = _soft_masks(obj.shape, obj.side, stroke)
    x, y, s = obj.origin[0], obj.origin[1], obj.side
    arr = np.asarray(img, np.float32).copy()
    patch = arr[y:y + s, x:x + s]
    rgb = np.array(obj.rgb, np.float32)
    a_out = outer[:patch.shape[0], :patch.shape[1], None]
    a_in = inner[:patch.shape[0], :patch.shape[1], None]
    filled = patch * (1 - a_out) + rgb * a_out
    washed = 0.7 * patch + 0.3 * rgb
    arr[y:y + s, x:x + s] = filled * (1 - a_in) + washed * a_in
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def _random_label(rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return LABEL_WORDS[rng.integers(len(LABEL_WORDS))]
    return LABEL_CHARS[rng.integers(len(LABEL_CHARS))] + LABEL_DIGITS[rng.integers(len(LABEL_DIGITS))]


def _boxes_conflict(a, b, domain: Domain) -> bool:
    if domain.max_iou <= 0:
        g = domain.min_gap
        return not (a[2] + g <= b[0] or b[2] + g <= a[0] or a[3] + g <= b[1] or b[3] + g <= a[1])
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union > domain.max_iou


def sample_scene(rng: np.random.Generator | int, domain: str | Domain = "clean", image_size: int | None = None,
                 n_objects: tuple[int, int] = (3, 6), text_labels: bool = False) -> Scene:
    """Sample a scene: ``n_objects`` (inclusive range) objects placed by rejection sampling.

    Objects that cannot be placed within the overlap limits after a bounded number of tries
    are dropped, so a crowded request may yield fewer objects (never fewer than one).
    With ``text_labels``, large squares/circles carry labels and at least one object is labelled.
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    dom = get_domain(domain)
    size = image_size or (DEFAULT_TEXT_IMAGE_SIZE if text_labels else DEFAULT_IMAGE_SIZE)
    if size < 48:
        raise ValueError("image_size must be at least 48 pixels")
    lo, hi = n_objects
    if not 1 <= lo <= hi:
        raise ValueError(f"invalid n_objects range {n_objects}")
    count = int(rng.integers(lo, hi + 1))
    hue = float(rng.uniform(-dom.palette_shift, dom.palette_shift))
    background = dom.background
    if background == "textured":
        background = BACKGROUND_KINDS[1 + int(rng.integers(len(BACKGROUND_KINDS) - 1))]
    color_names = list(COLORS)
    objects: list[SceneObject] = []
    nominal: list[tuple[int, int, int, int]] = []
    labels_used: set[str] = set()
    for i in range(count):
        shape = SHAPES[rng.integers(len(SHAPES))]
        sz = SIZES[rng.integers(len(SIZES))]
        if text_labels and i == 0:  # guarantee one labelled object
            shape, sz = LABEL_SHAPES[rng.integers(len(LABEL_SHAPES))], "large"
        color = color_names[rng.integers(len(color_names))]
        # +-5% size jitter keeps the two size classes well apart (0.12 vs 0.22)
        side = max(6, round(size * SIZE_FRACTION[sz] * dom.object_scale * rng.uniform(0.95, 1.05)))
        for _ in range(60):
            x = int(rng.integers(1, size - side))
            y = int(rng.integers(1, size - side))
            cand = (x, y, x + side, y + side)
            if not any(_boxes_conflict(cand, b, dom) for b in nominal):
                break
        else:
            continue
        if dom.palette_shift > 0:
            jitter = rng.uniform(-PALETTE_JITTER, PALETTE_JITTER)
            rgb = _shift_color(COLORS[color], hue + jitter, rng.uniform(0.85, 1.0), rng.uniform(0.88, 1.0))
        else:
            rgb = COLORS[color]
        text = None
        if text_labels and sz == "large" and shape in LABEL_SHAPES and (i == 0 or rng.random() < 0.6):
            text = _random_label(rng)
            while text in labels_used:
                text = _random_label(rng)
            labels_used.add(text)
        bx0, by0, bx1, by1 = shape_mask(shape, side).getbbox()
        nominal.append(cand)
        objects.append(SceneObject(shape, color, sz, (x + bx0, y + by0, x + bx1, y + by1), text, rgb, (x, y), side))
    return Scene(size, size, tuple(objects), dom, background, int(rng.integers(2**31)))


def _background(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    h, w, g = scene.height, scene.width, BACKGROUND_GRAY
    kind = scene.background
    if kind == "plain":
        return np.full((h, w, 3), g, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    lo, hi = int(rng.integers(165, 195)), int(rng.integers(215, 240))
    if kind == "noise":
        base = rng.normal((lo + hi) / 2, 14, size=(h, w))
    elif kind == "stripes":
        period = int(rng.integers(6, 16))
        angle = rng.uniform(0, math.pi)
        proj = xx * math.cos(angle) + yy * math.sin(angle)
        base = np.where((proj // (period / 2)) % 2 == 0, lo, hi)
    elif kind == "checker":
        cell = int(rng.integers(6, 18))
        base = np.where(((xx // cell) + (yy // cell)) % 2 == 0, lo, hi)
    else:  # gradient
        angle = rng.uniform(0, 2 * math.pi)
        proj = xx * math.cos(angle) + yy * math.sin(angle)
        proj = (proj - proj.min()) / max(1e-6, float(np.ptp(proj)))
        base = lo + (hi - lo) * proj
    gray = np.clip(base, 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def _draw_clutter(draw: ImageDraw.ImageDraw, scene: Scene, rng: np.random.Generator) -> None:
    # Distractors are thin lines and small gray blobs: visible structure that is not an object.
    w, h = scene.width, scene.height
    for _ in range(scene.domain.clutter):
        if rng.random() < 0.5:
            pts = [tuple(int(v) for v in rng.integers(0, (w, h))) for _ in range(2)]
            tone = int(rng.integers(60, 150))
            draw.line(pts, fill=(tone, tone, tone + int(rng.integers(0, 30))), width=1)
        else:
            r = max(2, round(w * rng.uniform(0.015, 0.035)))
            cx, cy = (int(v) for v in rng.integers(0, (w, h)))
            tone = int(rng.integers(90, 160))
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(tone, tone, tone))


@lru_cache(maxsize=64)
def _font(px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=px)


def _fit_font(text: str, obj: SceneObject) -> ImageFont.FreeTypeFont:
    usable = obj.side * (0.86 if obj.shape == "square" else 0.68)
    px = max(8, round(obj.side * 0.42))
    while px > 8 and _font(px).getlength(text) > usable:
        px -= 1
    return _font(px)


def render_scene(scene: Scene) -> Image.Image:
    """Render a scene to an RGB PIL image (deterministic for the scene)."""
    rng = np.random.default_rng(scene.render_seed)
    img = Image.fromarray(_background(scene, rng), "RGB")
    draw = ImageDraw.Draw(img)
    _draw_clutter(draw, scene, rng)
    for obj in scene.objects:
        if scene.domain.outline:
            img = _paste_outlined(img, obj, scene.domain.outline)
            draw = ImageDraw.Draw(img)
        else:
            img.paste(obj.rgb, obj.origin, shape_mask(obj.shape, obj.side))
        if obj.text:
            luminance = 0.299 * obj.rgb[0] + 0.587 * obj.rgb[1] + 0.114 * obj.rgb[2]
            ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
            cx, cy = obj.origin[0] + obj.side / 2, obj.origin[1] + obj.side / 2
            draw.text((cx, cy), obj.text, fill=ink, font=_fit_font(obj.text, obj), anchor="mm")
    if scene.domain.hue_warp > 0:
        img = _apply_hue_warp(img, scene.domain.hue_warp)
    if scene.domain.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(scene.domain.blur))
    dom = scene.domain
    if dom.lighting != 1.0 or dom.light_falloff > 0:
        gain = np.full((scene.height, scene.width), dom.lighting, np.float32)
        if dom.light_falloff > 0:  # a directional light: linear falloff along a random direction
            angle = rng.uniform(0, 2 * math.pi)
            yy, xx = np.mgrid[0:scene.height, 0:scene.width]
            proj = xx * math.cos(angle) + yy * math.sin(angle)
            proj = (proj - proj.min()) / max(1e-6, float(np.ptp(proj)))
            gain = gain * (1 - dom.light_falloff * proj).astype(np.float32)
        arr = np.asarray(img, dtype=np.float32) * gain[:, :, None]
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
    if dom.pixel_noise > 0:
        arr = np.asarray(img, dtype=np.float32) + rng.normal(0, dom.pixel_noise, (scene.height, scene.width, 3))
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
    return img


def render_array(scene: Scene) -> np.ndarray:
    """Render a scene to an (H, W, 3) uint8 RGB array, the format engines take."""
    return np.asarray(render_scene(scene), dtype=np.uint8)


def with_domain(scene: Scene, domain: str | Domain) -> Scene:
    """The same layout rendered under another domain's appearance knobs (background, clutter,
    blur, noise). Layout knobs (object_scale, overlap) and painted colours keep their values."""
    dom = get_domain(domain)
    background = dom.background
    if background == "textured":
        background = BACKGROUND_KINDS[1 + scene.render_seed % (len(BACKGROUND_KINDS) - 1)]
    return dataclasses.replace(scene, domain=dom, background=background)
