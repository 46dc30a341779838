"""The shapes world's object detector: classical computer vision, no learning.

Shapes-world objects are saturated colours and everything else (backgrounds, textures, clutter
lines and blobs) is gray, so chroma separates objects from background; contour geometry names
the shape, hue names the colour and the side length relative to the image (and to the other
objects) names the size. The colour names and their reference hues come from the world's
palette: the world's public language, not any scene's ground truth.

``ObjectDetector`` sees pixels only. The detector engine (``builder.tools.backends.shapes.
ShapesDetector``) adds query matching on top of it.
"""

from __future__ import annotations

import colorsys
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from builder.core.images import as_rgb_array
from builder.domains.shapes.vocab import SHAPES
from builder.domains.shapes.world.scene import COLORS, shape_mask

# Reference hue (degrees) of each colour name.
COLOR_HUES = {name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] * 360 for name, rgb in COLORS.items()}


# Segmentation: object colours have chroma (max - min channel) >= ~95 even after palette jitter,
# gray backgrounds ~0, clutter lines <= 30, and 3x3-median-filtered pixel noise stays well below.
CHROMA_THRESHOLD = 55
# Nominal object side as a fraction of image width: small 0.12, large 0.22; the split point is
# their geometric mean, used only when a scene holds one size class.
SIZE_SPLIT = 0.162
# Two objects whose sides differ by this factor belong to different size classes (nominal 1.83).
SIZE_RATIO = 1.4
BLUR_LEVELS = (0.0, 0.8, 1.5, 2.2)  # blur radii (pixels) the shape classifier considers
OBJECT_CACHE_SIZE = 4096  # images whose detected objects a detector remembers
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


@dataclass(frozen=True)
class ShapeObject:
    """One detected object with its attributes (what the detector saw, not ground truth)."""

    box: tuple[int, int, int, int]
    shape: str
    color: str
    size: str
    score: float
    area: int

    @property
    def center(self) -> tuple[float, float]:
        """The box centre ``(x, y)`` in pixels."""
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    def name(self) -> str:
        """The object's name as a program would query it, e.g. "small red circle"."""
        return f"{self.size} {self.color} {self.shape}"


def _hue_name(rgb) -> tuple[str, float]:
    """Nearest colour name by hue, and a confidence from the hue margin to the runner-up."""
    h = colorsys.rgb_to_hsv(*(float(c) / 255 for c in rgb))[0] * 360
    dist = sorted((min(abs(h - ref), 360 - abs(h - ref)), name) for name, ref in COLOR_HUES.items())
    margin = dist[1][0] - dist[0][0]
    return dist[0][1], float(min(1.0, 0.5 + margin / 26))


@lru_cache(maxsize=4096)
def _silhouette(shape: str, side: int, sigma: float) -> np.ndarray:
    """The mask a ``shape`` of ``side`` pixels leaves after Gaussian blur ``sigma`` and a
    half-level threshold (what the detector extracts), cropped to its box."""
    m = np.pad(np.asarray(shape_mask(shape, side), np.float32) / 255, 4)
    if sigma > 0:
        m = cv2.GaussianBlur(m, (0, 0), sigma)
    if m.max() <= 0:  # a 1-pixel circle draws nothing
        return np.ones((1, 1), bool)
    m = m > 0.5 * min(1.0, float(m.max()))  # tiny shapes blur below 0.5 everywhere
    ys, xs = np.nonzero(m)
    return m[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]


def _centered_iou(a: np.ndarray, b: np.ndarray) -> float:
    h, w = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
    ca, cb = np.zeros((h, w), bool), np.zeros((h, w), bool)
    ca[(h - a.shape[0]) // 2:][: a.shape[0], (w - a.shape[1]) // 2:][:, : a.shape[1]] = a
    cb[(h - b.shape[0]) // 2:][: b.shape[0], (w - b.shape[1]) // 2:][:, : b.shape[1]] = b
    return float((ca & cb).sum() / max(1, (ca | cb).sum()))


def _classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """Name a shape by analysis by synthesis: the best IoU between the mask and each shape's
    silhouette rendered at nearby sizes and blur levels (blur shaves tips and fills a star's
    notches, which fixed geometric thresholds cannot follow)."""
    mask = mask.astype(bool)
    side = max(mask.shape)
    best: dict[str, float] = {}
    for shape in SHAPES:
        best[shape] = max(_centered_iou(mask, _silhouette(shape, s, sigma))
                          for s in (side, side + 1, side + 2) for sigma in BLUR_LEVELS)
    ranked = sorted(best.items(), key=lambda kv: -kv[1])
    margin = ranked[0][1] - ranked[1][1]
    return ranked[0][0], float(min(1.0, 0.5 + 4 * margin))



class ObjectDetector:
    """Every shapes-world object in an image with its attributes (classical CV, no learning).

    ``objects(image)`` lists the objects left to right with tight boxes (x1/y1 exclusive);
    ``segment`` and ``describe_blob`` are the cheap per-frame pass of video tracking.
    ``chroma_threshold``: the chroma (max - min channel) above which a pixel is an object's.
    """

    def __init__(self, chroma_threshold: float = CHROMA_THRESHOLD):
        self.chroma_threshold = float(chroma_threshold)
        # The objects of recently seen images (by pixel digest): hybrid search verifies many
        # captions against the same shortlisted images.
        self._seen: OrderedDict[bytes, list[ShapeObject]] = OrderedDict()
        self._seen_lock = threading.Lock()

    def _masks(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(core mask, raw chroma, smoothed image). A 3x3 median removes pixel noise but rounds
        star tips and fills notches; final boxes use raw pixels next to the core, so clean boxes
        stay exact."""
        raw = img.max(axis=2).astype(np.int16) - img.min(axis=2).astype(np.int16)
        smooth = cv2.medianBlur(img, 3)
        chroma = smooth.max(axis=2).astype(np.int16) - smooth.min(axis=2).astype(np.int16)
        core = (chroma > self.chroma_threshold).astype(np.uint8)
        core = cv2.morphologyEx(core, cv2.MORPH_OPEN, _CROSS)  # odd kernel: no half-pixel shift
        return core, raw, smooth

    def objects(self, image) -> list[ShapeObject]:
        """Every object in the image, left to right."""
        img = as_rgb_array(image)
        key = hashlib.blake2b(img.tobytes(), digest_size=16, person=str(img.shape).encode()[:16]).digest()
        with self._seen_lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return list(self._seen[key])
        objs = self._objects(img)
        with self._seen_lock:
            self._seen[key] = objs
            while len(self._seen) > OBJECT_CACHE_SIZE:
                self._seen.popitem(last=False)
        return list(objs)

    def _objects(self, img: np.ndarray) -> list[ShapeObject]:
        H, W = img.shape[:2]
        core, raw, smooth = self._masks(img)
        if not core.any():
            return []
        # hue of the smoothed image, the one the core mask comes from (a raw gray pixel in a
        # star's notch has hue 0, "red", but its median-filtered value is the star's colour)
        hsv = cv2.cvtColor(smooth, cv2.COLOR_RGB2HSV_FULL)
        hue = hsv[:, :, 0].astype(np.float32) * (360.0 / 256.0)
        # per-pixel colour names split touching objects of different colours
        refs = np.array(list(COLOR_HUES.values()), np.float32)
        d = np.abs(hue[:, :, None] - refs[None, None, :])
        label = np.argmin(np.minimum(d, 360 - d), axis=2)
        raw_hue = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL)[:, :, 0].astype(np.float32) * (360.0 / 256.0)
        d = np.abs(raw_hue[:, :, None] - refs[None, None, :])
        raw_label = np.argmin(np.minimum(d, 360 - d), axis=2)
        min_area = max(6, round(12 * (H * W) / 128**2))
        found = []
        for ci in range(len(refs)):
            m = (core & (label == ci)).astype(np.uint8)
            n, comp, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
            for k in range(1, n):
                if stats[k, cv2.CC_STAT_AREA] < min_area:
                    continue
                x, y, w, h = (int(v) for v in stats[k, :4])
                x0, y0, x1, y1 = max(0, x - 2), max(0, y - 2), min(W, x + w + 2), min(H, y + h + 2)
                blob = (comp[y0:y1, x0:x1] == k).astype(np.uint8)
                # Grow back the raw pixels of this colour that the median/opening shaved off
                # (tips, thin corners), step by step so the growth never jumps a background gap
                # to a neighbour of the same colour. Raw pixels count from half the object's own
                # chroma: a blurred edge crosses that level at the true edge, so blur neither
                # grows flat edges nor (much) shrinks corners.
                patch = raw[y0:y1, x0:x1]
                level = max(self.chroma_threshold, 0.5 * float(np.median(patch[blob.astype(bool)])))
                allowed = ((patch > level) & (raw_label[y0:y1, x0:x1] == ci)).astype(np.uint8)
                pix = blob & allowed
                for _ in range(2):
                    pix = cv2.dilate(pix, np.ones((3, 3), np.uint8)) & allowed
                if pix.sum() < blob.sum() // 2:  # raw pixels disagree (heavy noise): trust the core
                    pix = blob
                ys, xs = np.nonzero(pix)
                bx0, by0, bx1, by1 = x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1
                shape_mask = pix[by0 - y0: by1 - y0, bx0 - x0: bx1 - x0]
                shape, s_conf = _classify_shape(shape_mask)
                inner = cv2.erode(blob, np.ones((3, 3), np.uint8))
                sel = inner if inner.sum() >= 4 else blob
                color, c_conf = _hue_name(np.median(img[y0:y1, x0:x1][sel.astype(bool)], axis=0))
                found.append((int(bx0), int(by0), int(bx1), int(by1), shape, color, int(pix.sum()),
                              min(s_conf, c_conf)))
        sides = [max(b[2] - b[0], b[3] - b[1]) for b in found]
        split = self._size_split(sides, W)
        objs = [ShapeObject(b[:4], b[4], b[5], "large" if s > split else "small", round(b[7], 3), b[6])
                for b, s in zip(found, sides, strict=True)]
        return sorted(objs, key=lambda o: (o.center[0], o.center[1]))

    @staticmethod
    def _size_split(sides: list[int], width: int) -> float:
        # Two size classes: when the scene shows both, split between them (robust to a global
        # object_scale shift); otherwise fall back to the nominal split relative to the image.
        if not sides:
            return 0.0
        lo, hi = min(sides), max(sides)
        if hi / max(1, lo) >= SIZE_RATIO:
            s = sorted(sides)
            gaps = [(s[i + 1] / max(1, s[i]), i) for i in range(len(s) - 1)]
            _, i = max(gaps)
            return (s[i] * s[i + 1]) ** 0.5
        return SIZE_SPLIT * width


    # ---- video: a cheap per-frame pass for tracking ------------------------------------------
    def segment(self, image) -> list[tuple[tuple[int, int, int, int], str, int]]:
        """Every object blob in a frame as (box, colour name, area), without naming its shape.

        The per-frame detector of the tracker: a few whole-frame OpenCV operations (chroma from
        HSV, a hue look-up table splitting touching objects of different colours, connected
        components per colour), about 20 times cheaper than ``objects``. ``describe_blob`` names
        a blob's shape once per track.
        """
        img = as_rgb_array(image)
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL)
        h, s, v = cv2.split(hsv)
        chroma = cv2.multiply(s, v, scale=1 / 255)  # = max - min channel
        _, core = cv2.threshold(chroma, self.chroma_threshold, 1, cv2.THRESH_BINARY)
        labels = cv2.multiply(cv2.LUT(h, _HUE_LUT), core)
        min_area = max(6, round(12 * img.shape[0] * img.shape[1] / 128**2))
        names = list(COLOR_HUES)
        out = []
        # Outer contours are far cheaper than connected components on a sparse mask; a blob
        # holding two colours (objects in contact) is split by colour inside its box.
        for c in cv2.findContours(labels, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]:
            x, y, w, hh = cv2.boundingRect(c)
            if w * hh < min_area:
                continue
            crop = labels[y:y + hh, x:x + w]
            counts = np.bincount(crop.ravel(), minlength=len(names) + 1)
            colours = [ci for ci in range(1, len(names) + 1) if counts[ci] >= min_area]
            if len(colours) == 1:
                out.append(((x, y, x + w, y + hh), names[colours[0] - 1], int(counts[colours[0]])))
                continue
            for ci in colours:
                part = (crop == ci).view(np.uint8)
                for pc in cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]:
                    px, py, pw, ph = cv2.boundingRect(pc)
                    area = int(np.count_nonzero(part[py:py + ph, px:px + pw]))
                    if area >= min_area:
                        out.append(((x + px, y + py, x + px + pw, y + py + ph), names[ci - 1], area))
        return out

    def describe_blob(self, image, box, color: str) -> tuple[str, float]:
        """(shape name, confidence) of the ``color`` blob inside ``box`` of a frame.

        The blob's silhouette comes from every pixel's position between the background colour
        (the median of the crop's rim) and the object's colour (the median of its chroma mask):
        pixels past the midpoint are the object. Unlike the chroma mask alone this keeps the
        full-resolution luma edge, which H.264's 4:2:0 colour subsampling does not blur, so a
        small hexagon stays a hexagon.
        """
        img = as_rgb_array(image)
        H, W = img.shape[:2]
        x0, y0, x1, y1 = max(0, box[0] - 2), max(0, box[1] - 2), min(W, box[2] + 2), min(H, box[3] + 2)
        crop = np.ascontiguousarray(img[y0:y1, x0:x1])
        if crop.shape[0] < 3 or crop.shape[1] < 3:
            return "object", 0.0
        hsv = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV_FULL)
        chroma = hsv[:, :, 1].astype(np.float32) * hsv[:, :, 2] / 255
        ci = list(COLOR_HUES).index(color) + 1
        core = (chroma > self.chroma_threshold) & (cv2.LUT(hsv[:, :, 0], _HUE_LUT) == ci)
        if core.sum() < 3:
            return "object", 0.0
        px = crop.astype(np.float32)
        rim = np.concatenate([px[0], px[-1], px[:, 0], px[:, -1]])
        bg, fg = np.median(rim, axis=0), np.median(px[core], axis=0)
        d = fg - bg
        if float(d @ d) < 1.0:
            return "object", 0.0
        mask = (((px - bg) @ d) / float(d @ d) > 0.5).astype(np.uint8)
        n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if n < 2:
            return "object", 0.0
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        x, y, w, h = (int(v) for v in stats[k, :4])
        return _classify_shape(comp[y:y + h, x:x + w] == k)

    def size_names(self, sides: list[int], width: int) -> list[str]:
        """"small"/"large" for objects of the given sides in one scene (as ``objects`` names them)."""
        split = self._size_split(sides, width)
        return ["large" if s > split else "small" for s in sides]


def _hue_lut() -> np.ndarray:
    """OpenCV's full-range hue byte -> 1 + index of the nearest colour name."""
    refs = np.array(list(COLOR_HUES.values()), np.float32)
    hues = np.arange(256, dtype=np.float32) * (360.0 / 256.0)
    d = np.abs(hues[:, None] - refs[None, :])
    return (1 + np.argmin(np.minimum(d, 360 - d), axis=1)).astype(np.uint8)


_HUE_LUT = _hue_lut()
