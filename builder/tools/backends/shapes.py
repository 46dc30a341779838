"""Offline default engines for the shapes world: detector, VQA, captioner and matcher.

They see only pixels and the query text. The detector is classical computer vision: shapes-world
objects are saturated colours and everything else (backgrounds, textures, clutter lines and
blobs) is gray, so chroma separates objects from background; contour geometry names the shape,
hue names the colour and the side length relative to the image (and to the other objects) names
the size. The captioner and matcher are built on the detector. The VQA engine is a small learned
network (``builder.tools.backends.shapes_vqa``) with default weights in ``weights/``.

The vocabulary (colour names and their reference hues, shape and size names) is the world's
public language, not any scene's ground truth.
"""

from __future__ import annotations

import colorsys
import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from builder.tools.engines import Answer, Detection, as_rgb_array
from builder.world.scene import COLORS, SHAPES, SIZES, shape_mask

DETECTOR_VERSION = "1"
CAPTIONER_VERSION = "1"
MATCHER_VERSION = "1"

# Reference hue (degrees) of each colour name.
COLOR_HUES = {name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] * 360 for name, rgb in COLORS.items()}
ANY_NOUNS = {"object", "thing", "shape", "item"}
STOP_WORDS = {"the", "a", "an", "all", "any", "every", "each", "some", "of", "find", "locate", "there", "is",
              "are", "in", "image", "picture", "please", "that", "which", "with", "and", "to"}
SIZE_SYNONYMS = {"big": "large", "little": "small", "tiny": "small", "huge": "large"}
NUMBER_WORDS = {"zero": 0, "no": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9, "ten": 10}
NUMBER_NAMES = {v: k for k, v in NUMBER_WORDS.items() if k != "no"}
RELATIONS = ("left of", "right of", "above", "below")

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


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _singular(word: str) -> str:
    if word.endswith("s") and (word[:-1] in SHAPES or word[:-1] in ANY_NOUNS):
        return word[:-1]
    return word


@dataclass(frozen=True)
class ObjectQuery:
    """A parsed object phrase: attributes (None = any); ``known`` is False for an unknown noun."""

    size: str | None = None
    color: str | None = None
    shape: str | None = None
    count: int | None = None
    known: bool = True

    def matches(self, obj: ShapeObject) -> bool:
        """True if ``obj`` has every attribute named here (never for an unknown noun)."""
        return self.known and all(v is None or getattr(obj, f) == v
                                  for f, v in (("size", self.size), ("color", self.color), ("shape", self.shape)))

    def partial(self, obj: ShapeObject) -> float:
        """Fraction of the named attributes ``obj`` has (tie-break for near misses)."""
        named = [(f, v) for f, v in (("size", self.size), ("color", self.color), ("shape", self.shape)) if v]
        if not self.known or not named:
            return 0.0
        return sum(getattr(obj, f) == v for f, v in named) / len(named)


def parse_object_query(text: str) -> ObjectQuery:
    """Parse "the large red circles", "two blue squares", "objects", "red" ...

    Articles and unknown modifiers are ignored; the last content word is the noun. A noun that is
    not a shape, colour, size or generic word ("car") gives ``known=False`` (matches nothing).
    """
    size = color = shape = count = None
    noun_known, saw_content = True, False
    for raw in _words(text):
        w = _singular(raw)
        if w in STOP_WORDS and w != "no":
            continue
        saw_content = True
        w = SIZE_SYNONYMS.get(w, w)
        if w in NUMBER_WORDS or w.isdigit():
            count = NUMBER_WORDS.get(w, int(w) if w.isdigit() else None)
            continue
        if w in SIZES:
            size = w
        elif w in COLORS:
            color = w
        elif w in SHAPES:
            shape = w
        elif w in ANY_NOUNS:
            pass
        else:
            noun_known = False  # unknown so far; a later known noun overrides (unknown modifier)
            continue
        noun_known = True
    return ObjectQuery(size, color, shape, count, noun_known and saw_content)


# ---- detector -------------------------------------------------------------------------------
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
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    def name(self) -> str:
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


class ShapesDetector:
    """Open-vocabulary detector for shapes-world objects (classical CV, no learning).

    ``detect(image, "large red circle")`` returns one ``Detection`` per matching object with a
    tight box (x1/y1 exclusive). ``objects(image)`` returns every object with its attributes.
    """

    backend_id = "shapes:detector"
    version = DETECTOR_VERSION

    def __init__(self, threshold: float = 0.0, chroma_threshold: float = CHROMA_THRESHOLD):
        self.threshold = float(threshold)
        self.chroma_threshold = float(chroma_threshold)
        self.version = f"{DETECTOR_VERSION}+t{self.threshold:g}+c{self.chroma_threshold:g}"
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

    def detect(self, image, query: str, threshold: float | None = None) -> list[Detection]:
        """Objects matching ``query`` ("red circle", "objects", ...); an unknown noun finds nothing."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        q = parse_object_query(query)
        if not q.known:
            return []
        limit = self.threshold if threshold is None else float(threshold)
        label = query.strip() or "object"
        return [Detection(o.box, o.score, label) for o in self.objects(image) if q.matches(o) and o.score >= limit]


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


# ---- learned engines --------------------------------------------------------------------------
class _LearnedWeights:
    """A learned engine's weights folder: checked when the engine is built (a clear error naming
    the training command), hashed into ``version`` (cached tool results never outlive a
    retrain), and the torch model loaded once, on first use, by ``_load(weights, device)``."""

    _train_command: str  # named in the error when the weights are missing

    def _use_weights(self, weights: str | Path | None, default: Path, device: str) -> str:
        """Set ``weights`` and ``device``; returns the weights' version string."""
        self.weights = Path(weights) if weights is not None else default
        self.device = device
        path = self.weights / "model.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"{self.weights}: no model.safetensors (train with "
                                    f"`{self._train_command}`)")
        self._model = None
        self._lock = threading.Lock()
        return f"1+{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"

    @property
    def model(self):
        """The torch model (loaded on first access)."""
        with self._lock:
            if self._model is None:
                self._model = self._load(self.weights, self.device)
            return self._model


# ---- VQA --------------------------------------------------------------------------------------
class ShapesVQA(_LearnedWeights):
    """Learned shapes-world VQA (perception slots + question-conditioned reading, closed answer vocabulary).

    ``ShapesVQA()`` loads the bundled default weights, ``ShapesVQA(weights="dir")`` a folder
    written by ``save``. The model loads on first use. ``model`` exposes the torch module for
    fine-tuning (see ``shapes_vqa.train``); ``version`` includes a hash of the weights, so cached
    tool results never outlive a fine-tune.
    """

    backend_id = "shapes:vqa"

    _train_command = "visforge engines train-vqa --out DIR"

    @staticmethod
    def _load(weights: Path, device: str):
        from builder.tools.backends.shapes_vqa import load_model

        return load_model(weights, device)

    def __init__(self, weights: str | Path | None = None, device: str = "cpu"):
        from builder.tools.backends import shapes_vqa

        self.version = self._use_weights(weights, shapes_vqa.DEFAULT_WEIGHTS, device)

    def answer(self, image, question: str) -> Answer:
        """Answer ``question`` about ``image``; confidence is the softmax probability."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("question must be a non-empty string")
        text, conf = self.model.predict([as_rgb_array(image)], [question])[0]
        return Answer(text, round(conf, 6))

    def answer_batch(self, images: list, questions: list[str]) -> list[Answer]:
        """Answer many (image, question) pairs in one forward pass."""
        if len(images) != len(questions):
            raise ValueError("images and questions differ in length")
        preds = self.model.predict([as_rgb_array(im) for im in images], list(questions))
        return [Answer(t, round(c, 6)) for t, c in preds]

    def save(self, out_dir) -> Path:
        """Write the current weights (e.g. after fine-tuning) to ``out_dir``."""
        from builder.tools.backends.shapes_vqa import save_model

        return save_model(self.model, out_dir)


# ---- captioner --------------------------------------------------------------------------------
def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _relation(a: ShapeObject, b: ShapeObject) -> str:
    """Dominant-axis relation of ``a`` to ``b`` by box centres."""
    dx, dy = b.center[0] - a.center[0], b.center[1] - a.center[1]
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


class ShapesCaptioner:
    """Deterministic captions from detections, e.g. "a large red circle left of a small blue square"."""

    backend_id = "shapes:captioner"
    version = CAPTIONER_VERSION

    def __init__(self, detector: ShapesDetector | None = None):
        self.detector = detector or ShapesDetector()
        self.version = f"{CAPTIONER_VERSION}+det{self.detector.version}"

    def caption(self, image) -> str:
        """One sentence naming every detected object (left to right)."""
        objs = self.detector.objects(image)
        if not objs:
            return "no objects"
        if len(objs) == 1:
            return _article(objs[0].name())
        if len(objs) == 2:
            return f"{_article(objs[0].name())} {_relation(objs[0], objs[1])} {_article(objs[1].name())}"
        count = NUMBER_NAMES.get(len(objs), str(len(objs)))
        return f"{count} objects: " + ", ".join(_article(o.name()) for o in objs)


# ---- matcher ----------------------------------------------------------------------------------
_REL_PATTERN = re.compile(r"\b(?:to the )?(left of|right of|above|below|on top of|under|beneath)\b")
_REL_CANON = {"on top of": "above", "under": "below", "beneath": "below"}


def _holds(a: ShapeObject, b: ShapeObject, rel: str) -> bool:
    (ax, ay), (bx, by) = a.center, b.center
    return {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[rel]


def parse_caption(text: str) -> list[tuple]:
    """Constraints in a caption (see ``_parse_caption``); parsed once per distinct text."""
    return list(_parse_caption(text))


@lru_cache(maxsize=8192)
def _parse_caption(text: str) -> tuple:
    """Constraints in a caption: ("exists", q), ("count", q) or ("relation", qa, rel, qb).

    Clauses are split at ",", ";", ":" and "and"; a clause with a relation word relates the
    phrase before it to the phrase after it; a number makes a count ("There are 2 red circles").
    """
    out: list[tuple] = []
    for clause in re.split(r"[,;:.]|\band\b", text.lower()):
        if not _words(clause):
            continue
        m = _REL_PATTERN.search(clause)
        if m:
            rel = _REL_CANON.get(m.group(1), m.group(1))
            qa, qb = parse_object_query(clause[: m.start()]), parse_object_query(clause[m.end():])
            out += [_object_constraint(qa), _object_constraint(qb), ("relation", qa, rel, qb)]
            continue
        q = parse_object_query(clause)
        if q.size or q.color or q.shape or q.count is not None or not q.known:
            out.append(_object_constraint(q))
    return tuple(out)


def _object_constraint(q: ObjectQuery) -> tuple:
    return ("count", q) if q.count is not None else ("exists", q)


class ShapesMatcher:
    """Image-text matching by checking a caption's constraints against detections.

    Score = fraction of constraints satisfied plus a tie-break below 0.01 for near misses (an
    object with most of the named attributes, a count off by one), so higher is a better fit.
    """

    backend_id = "shapes:matcher"
    version = MATCHER_VERSION

    def __init__(self, detector: ShapesDetector | None = None):
        self.detector = detector or ShapesDetector()
        self.version = f"{MATCHER_VERSION}+det{self.detector.version}"

    def scores(self, image, texts: list[str]) -> list[float]:
        """One score in [0, 1.01) per text."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings")
        objs = self.detector.objects(image)
        return [self._score(objs, t) for t in texts]

    @staticmethod
    def _score(objs: list[ShapeObject], text: str) -> float:
        constraints = parse_caption(text)
        if not constraints:
            return 0.0
        hits, near = 0.0, 0.0
        for c in constraints:
            if c[0] == "exists":
                ok = any(c[1].matches(o) for o in objs)
                near += 1.0 if ok else max((c[1].partial(o) for o in objs), default=0.0)
            elif c[0] == "count":
                n = sum(c[1].matches(o) for o in objs)
                ok = n == c[1].count
                near += 1.0 / (1 + abs(n - c[1].count))
            else:
                _, qa, rel, qb = c
                ok = any(_holds(a, b, rel) for a in objs for b in objs if a is not b and qa.matches(a) and qb.matches(b))
                near += float(ok)
            hits += float(ok)
        return round(hits / len(constraints) + 0.009 * near / len(constraints), 6)


# ---- embedder ---------------------------------------------------------------------------------
class ShapesEmbedder(_LearnedWeights):
    """The shapes-world dual encoder (``shapes_embed.DualEncoder``): images and captions in one space.

    Images go through ``detector`` (frozen) and the trained set encoder; texts through the
    trained clause encoder.

    ``ShapesEmbedder()`` loads the bundled weights (``weights/embed``), ``weights="dir"`` others.
    ``version`` includes a hash of the weights, so cached embeddings never outlive a retrain.
    """

    backend_id = "shapes:embedder"

    _train_command = "visforge engines train-embed --out DIR"

    @staticmethod
    def _load(weights: Path, device: str):
        from builder.tools.backends.shapes_embed import load_model

        return load_model(weights, device)

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", batch_size: int = 256,
                 detector: ShapesDetector | None = None):
        from builder.tools.backends import shapes_embed

        self.detector = detector or ShapesDetector()
        version = self._use_weights(weights, shapes_embed.DEFAULT_WEIGHTS, device)
        self.version = f"{version}+det{self.detector.version}"
        self.batch_size = int(batch_size)

    @property
    def dim(self) -> int:
        return self.model.dim

    def embed_images(self, images: list) -> np.ndarray:
        import torch

        from builder.tools.backends.shapes_embed import object_inputs

        model, out = self.model, []
        with torch.inference_mode():
            for s in range(0, len(images), self.batch_size):
                chunk = [as_rgb_array(im) for im in images[s: s + self.batch_size]]
                x = object_inputs(chunk, self.detector).to(self.device)
                out.append(model.encode_images(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings")
        model, out = self.model, []
        with torch.inference_mode():
            for s in range(0, len(texts), self.batch_size):
                out.append(model.encode_texts(list(texts[s: s + self.batch_size])).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
