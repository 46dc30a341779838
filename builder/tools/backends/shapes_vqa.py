"""The learned shapes-world VQA model: perception, object slots, question-conditioned reading.

Why this architecture: a VQA model that pools a feature map answers whole-scene questions
(counts, comparisons, relations) from the question alone when it is small and trained for
minutes on 2 CPU cores (measured: the previous FiLM network changed under 10% of its count
answers when the image was swapped). So the model first perceives objects, as detection-based
VQA models do with region features: dense CenterNet-style heads (objectness, colour, shape,
size, centre) at stride 4, trained with labels from the world's scene graphs; the strongest
objectness peaks become slots; the question (a bidirectional GRU whose soft filters attend to
their own words) selects, counts and relates slots, and an MLP picks the answer. Every step
from the pixels to the answer is differentiable except which cells are peaks, so fine-tuning
on question-answer pairs alone (SelTDA, domain adaptation) still adapts perception.

Everything a later fine-tuning step (SelTDA pseudo-labels, domain adaptation) needs is public:

* ``build_dataset(n_scenes, seed, domain, split)`` renders shapes-world scenes and returns
  ``QA`` rows (``image``, ``question``, ``answer``, ``qtype``, ``split``). Ground truth is read
  here only to write labels; the model sees pixels and question text alone.
* ``train(model, dataset, steps=...)`` trains on any sequence whose items have
  ``item[0]`` = (H, W, 3) uint8 image, ``item[1]`` = question, ``item[2]`` = answer; plain
  ``(image, question, answer)`` triples work.
* ``evaluate``, ``save_model``/``load_model`` (safetensors + ``config.json`` with the vocab).

Train the default weights (see ``weights/README.md`` for how the committed ones were made)::

    visforge engines train-vqa --out builder/tools/backends/weights

A reduced run (seconds): ``... train-vqa --out /tmp/w --n-scenes 200 --perception-steps 20 --steps 30``.
Resume or fine-tune from existing weights with ``--init DIR``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from builder.world.language import ObjectSpec
from builder.world.scene import COLORS, SHAPES, SIZES, get_domain, random_domain, render_array, sample_scene
from builder.world.tasks import QTYPES, TEMPLATES, make_example

DEFAULT_WEIGHTS = Path(__file__).parent / "weights"
ARCH = "slots-v3"
# Closed answer vocabulary: no OCR answers (text reading belongs to the OCR engine).
ANSWERS: tuple[str, ...] = tuple(COLORS) + SHAPES + SIZES + ("yes", "no") + tuple(str(d) for d in range(10))
PAD, UNK = "<pad>", "<unk>"
PAD_GRAY = 128  # fill used to pad non-square inputs to a square
N_ATTR = len(COLORS) + len(SHAPES) + len(SIZES)
AUX_CHANNELS = 1 + N_ATTR + 2  # objectness, attribute logits, sub-cell centre offset (x, y)

# Scene-level question types taken from the world generator ("read" needs OCR: excluded).
SCENE_QTYPES = tuple(q for q in QTYPES["vqa"] if q != "read")

# Questions about a single-object crop, as programs ask them after find(). Only the "train"
# phrasings are used for training; "heldout" ones measure generalisation to new wording.
CROP_TEMPLATES = {
    "crop_color": (["What color is this object?", "What color is this?", "What is the color of this object?"],
                   ["Which color does this object have?", "Tell me the color of this object."]),
    "crop_shape": (["What shape is this object?", "What shape is this?", "What is the shape of this object?"],
                   ["Which shape does this object have?", "Tell me the shape of this object."]),
    "crop_is_color": (["Is this {color}?", "Is this object {color}?"], ["Is the object {color}?"]),
    "crop_is_shape": (["Is this a {shape}?", "Is this object a {shape}?"], ["Is the object a {shape}?"]),
}
# Sampling weight of each question type in training: whole-scene reasoning is what is hard to
# learn (the crop questions are learnt in a few hundred steps), so it gets most of the batches.
QTYPE_WEIGHTS = {"count": 2.0, "same_color": 2.0, "compare": 1.5, "relation": 1.5, "relate_attr": 1.5,
                 "exists": 1.0, "attribute": 1.0, "size": 0.5, "crop_color": 0.4, "crop_shape": 0.4,
                 "crop_is_color": 0.4, "crop_is_shape": 0.4}
# "mix": every training scene draws its own daylight domain (scene.random_domain).
MIX_DOMAIN = "mix"
# Size questions about a named object (the world generator only asks colour and shape).
SIZE_TEMPLATES = (["What size is the {obj}?", "Is the {obj} small or large?"], ["Tell me the size of the {obj}."])


class QA(NamedTuple):
    """One VQA example. Training reads only the first three fields."""

    image: np.ndarray
    question: str
    answer: str
    qtype: str = ""
    split: str = "train"
    objects: tuple = ()  # (x0, y0, x1, y1, colour, shape, size) per object, pixels: auxiliary labels


def _object_labels(objs, dx: float = 0.0, dy: float = 0.0) -> tuple:
    return tuple((o.box[0] - dx, o.box[1] - dy, o.box[2] - dx, o.box[3] - dy, list(COLORS).index(o.color),
                  SHAPES.index(o.shape), SIZES.index(o.size)) for o in objs)


# ---- text and pixels ------------------------------------------------------------------------
def tokenize(text: str) -> list[str]:
    """Lower-case word tokens; punctuation is dropped (questions differ in '?' vs '.')."""
    return re.findall(r"[a-z0-9]+", text.lower())


def build_vocab(questions) -> list[str]:
    """Word list for the question encoder: pad, unk, every attribute word, then words seen."""
    words = [PAD, UNK] + list(COLORS) + list(SHAPES) + [s + "s" for s in SHAPES] + list(SIZES)
    words += [str(d) for d in range(10)]
    seen = sorted({w for q in questions for w in tokenize(q)})
    return list(dict.fromkeys(words + seen))


def square_placement(h: int, w: int, size: int) -> tuple[int, int, float]:
    """(left, top, scale) that ``resize_square`` applies: pixel (x, y) of the input lands at
    ((x + left) * scale, (y + top) * scale)."""
    side = max(h, w)
    if side <= size:  # small images (object crops) keep their pixel scale, centred on a canvas
        return (size - w) // 2, (size - h) // 2, 1.0
    return (side - w) // 2, (side - h) // 2, size / side


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB uint8 image as a ``size`` x ``size`` input (uint8 HWC). Larger images are padded to
    a square (keeping the aspect ratio, which tells hexagons from circles) and shrunk; smaller
    ones (object crops) are centred on a gray canvas at their own scale, so an object looks the
    same size in a crop as in its scene."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    left, top, scale = square_placement(h, w, size)
    side = size if scale == 1.0 else max(h, w)
    if (h, w) != (side, side):
        image = cv2.copyMakeBorder(image, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT,
                                   value=(PAD_GRAY,) * 3)
    if side == size:
        return np.ascontiguousarray(image)
    return cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_AREA)


def to_tensor(images_u8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1]."""
    x = torch.as_tensor(images_u8)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


# ---- the model ------------------------------------------------------------------------------
def _coords(x: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device).view(1, 1, h, 1).expand(b, 1, h, w)
    xs = torch.linspace(-1, 1, w, device=x.device).view(1, 1, 1, w).expand(b, 1, h, w)
    return torch.cat([x, xs, ys], 1)


class Slots(NamedTuple):
    """What perception found, one column per slot (the K strongest objectness peaks): shapes
    (b, C, 1, K), so sums over the last two axes read as sums over objects."""

    obj: torch.Tensor  # objectness probability (squared: empty slots add up to ~nothing)
    color: torch.Tensor  # colour distribution
    shape: torch.Tensor
    size: torch.Tensor
    pos: torch.Tensor  # (x, y) centre in [-1, 1]


class Perception(nn.Module):
    """Dense perception at stride 4 (a 32x32 grid for 128 px): per cell, objectness of an object
    centred there, its colour, shape and size, and the centre's sub-cell offset (CenterNet-style
    heads). Dilated residual blocks give every cell a receptive field larger than any object."""

    def __init__(self, ch: int, n_blocks: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(5, ch // 2, 2, stride=2), nn.BatchNorm2d(ch // 2), nn.ReLU(),
            nn.Conv2d(ch // 2, ch, 3, stride=2, padding=1), nn.BatchNorm2d(ch), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ch, ch, 3, padding=2 ** k, dilation=2 ** k), nn.BatchNorm2d(ch), nn.ReLU())
            for k in range(n_blocks))
        self.head = nn.Sequential(nn.Conv2d(ch + 2, ch, 1), nn.ReLU(), nn.Conv2d(ch, AUX_CHANNELS, 1))
        with torch.no_grad():  # objectness starts at a prior of 0.1 (CenterNet): most cells are empty
            self.head[-1].bias[0] = -2.19

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(_coords(images))
        for block in self.blocks:
            x = x + block(x)
        return self.head(_coords(x))


def extract_slots(aux: torch.Tensor, k: int) -> Slots:
    """The ``k`` strongest local maxima of objectness (3x3 peaks) and what the heads say there.
    Selecting the peaks is discrete; the values read at them stay differentiable."""
    nc, ns = len(COLORS), len(SHAPES)
    b, c, g, _ = aux.shape
    logit = aux[:, :1]
    peak = logit == F.max_pool2d(logit, 3, 1, 1)
    score = torch.where(peak, logit, torch.full_like(logit, -1e4)).flatten(1)
    top = score.topk(min(k, g * g), dim=1).indices  # (b, k)
    at = aux.flatten(2).gather(2, top[:, None, :].expand(b, c, top.shape[1]))[:, :, None, :]  # (b, c, 1, k)
    gx, gy = (top % g).to(aux.dtype), (top // g).to(aux.dtype)
    off = torch.tanh(at[:, 1 + N_ATTR:]) * 0.5
    pos = torch.stack([gx, gy], 1)[:, :, None, :] + 0.5 + off  # in cells
    return Slots(torch.sigmoid(at[:, :1]) ** 2, at[:, 1:1 + nc].softmax(1), at[:, 1 + nc:1 + nc + ns].softmax(1),
                 at[:, 1 + nc + ns:1 + N_ATTR].softmax(1), pos * (2 / g) - 1)


class SlotReader(nn.Module):
    """Question-conditioned soft selection over the slots (a differentiable reading of "the red
    stars", "the object left of the blue circle").

    Three selections from the question code: A and B (soft attribute filters: which colours,
    shapes and sizes count), and C (a filter restricted to one side of B, the side chosen from the
    question). For each: how many slots match (a soft count), the strongest match, the colour,
    shape and size distributions and the position of what matched; plus where A lies relative
    to B, the counts of A and B and of A's colour as soft one-hots, and per-colour and per-shape
    totals. Everything is computed from pixels through perception.
    """

    def __init__(self, hidden: int, margin: float = 0.08, sharpness: float = 25.0):
        super().__init__()
        # Each selection reads its own attention-weighted mix of the question's words (A: the
        # first noun phrase, B: the one after "than" / "of the", ...), not one sentence code.
        self.words = nn.Linear(hidden, 4)
        self.select = nn.Linear(hidden, 3 * N_ATTR)
        nn.init.zeros_(self.select.weight)
        nn.init.constant_(self.select.bias, 3.0)  # start as "any object"
        self.relation = nn.Linear(2 * hidden, 5)  # left of, right of, above, below, none
        self.margin, self.sharpness = margin, sharpness
        per = 2 + N_ATTR + 2
        self.out_dim = 3 * per + 5 + 3 * 10 + 1 + 1 + len(COLORS) + len(SHAPES)

    def forward(self, q: torch.Tensor, words: torch.Tensor, mask: torch.Tensor, s: Slots) -> torch.Tensor:
        """``q``: the question code (b, hidden); ``words``: per-word states (b, T, hidden) with
        ``mask`` (b, T) true on real words."""
        b = q.shape[0]
        att = self.words(words).masked_fill(~mask[:, :, None], -1e4).softmax(1)  # (b, T, 4)
        ctx = att.transpose(1, 2) @ words  # (b, 4, hidden)
        w = torch.sigmoid(self.select(ctx[:, :3]).view(b, 3, 3, N_ATTR).diagonal(dim1=1, dim2=2).transpose(1, 2))
        nc, ns = len(COLORS), len(SHAPES)

        def match(k: int) -> torch.Tensor:
            wk = w[:, k]
            mc = (wk[:, :nc, None, None] * s.color).sum(1, keepdim=True)
            ms = (wk[:, nc:nc + ns, None, None] * s.shape).sum(1, keepdim=True)
            mz = (wk[:, nc + ns:, None, None] * s.size).sum(1, keepdim=True)
            return s.obj * mc * ms * mz  # (b, 1, 1, K)

        def read(m: torch.Tensor):
            cnt = m.sum((2, 3))
            norm = m / (cnt[:, :, None, None] + 1e-3)
            dist = [(norm * p).sum((2, 3)) for p in (s.color, s.shape, s.size, s.pos)]
            return cnt, torch.cat([cnt / 4, m.amax((2, 3))] + dist, 1), norm

        def sides(ref: torch.Tensor) -> torch.Tensor:
            d = s.pos - ref[:, :, None, None]
            k, mg = self.sharpness, self.margin
            return torch.cat([torch.sigmoid(k * (-d[:, :1] - mg)), torch.sigmoid(k * (d[:, :1] - mg)),
                              torch.sigmoid(k * (-d[:, 1:] - mg)), torch.sigmoid(k * (d[:, 1:] - mg))], 1)

        def onehot(n: torch.Tensor) -> torch.Tensor:
            return torch.exp(-((n - torch.arange(10, device=q.device, dtype=q.dtype)) ** 2) / 0.3)

        cnt_a, feat_a, norm_a = read(match(0))
        cnt_b, feat_b, _ = read(match(1))
        side = sides(feat_b[:, -2:])  # (b, 4, 1, K)
        wr = self.relation(torch.cat([q, ctx[:, 3]], 1)).softmax(-1)
        gate = (wr[:, :4, None, None] * side).sum(1, keepdim=True) + wr[:, 4:, None, None]
        _, feat_c, _ = read(match(2) * gate)
        a_vs_b = (norm_a * side).sum((2, 3))  # how much of A lies left of / right of / above / below B
        colours = (s.obj * s.color).sum((2, 3))
        shapes = (s.obj * s.shape).sum((2, 3))
        same = (feat_a[:, 2:2 + nc] * colours).sum(1, keepdim=True)  # objects sharing A's colour, A included
        more = torch.sigmoid(4 * (cnt_a - cnt_b))
        asked = (wr[:, :4] * a_vs_b).sum(1, keepdim=True)  # does A lie on the side the question names?
        return torch.cat([feat_a, feat_b, feat_c, a_vs_b, asked, onehot(cnt_a), onehot(cnt_b), onehot(same - 1),
                          same / 4, more, colours / 4, shapes / 4], 1)


class ShapesVQANet(nn.Module):
    """Perception, slots, then question-conditioned reasoning over the slots. ``config`` (plain
    JSON) holds sizes, vocab and answers.

    * Pixels: 128 px input, dense perception heads at stride 4 (``Perception``), trained with an
      auxiliary loss whose labels come from the world's scene graphs (training labels only).
    * Slots: the ``n_slots`` strongest objectness peaks with their attribute distributions and
      positions (``extract_slots``): objects, not grid cells, so counting is a sum over objects.
    * Question: a bidirectional GRU; each soft filter and the relation gate attend to their own
      words, and read over the slots (``SlotReader``); an MLP maps the question code and the
      reads to the closed answer set.
    """

    def __init__(self, vocab: list[str], answers: tuple[str, ...] = ANSWERS, image_size: int = 128, ch: int = 32,
                 n_blocks: int = 4, emb: int = 64, hidden: int = 128, n_slots: int = 12):
        super().__init__()
        self.config = {"arch": ARCH, "vocab": list(vocab), "answers": list(answers), "image_size": image_size,
                       "ch": ch, "n_blocks": n_blocks, "emb": emb, "hidden": hidden, "n_slots": n_slots}
        self.word_index = {w: i for i, w in enumerate(vocab)}
        self.embed = nn.Embedding(len(vocab), emb, padding_idx=0)
        self.gru = nn.GRU(emb, hidden // 2, batch_first=True, bidirectional=True)
        self.perception = Perception(ch, n_blocks)
        self.reader = SlotReader(hidden)
        self.head = nn.Sequential(nn.Linear(hidden + self.reader.out_dim, 256), nn.ReLU(),
                                  nn.Linear(256, len(answers)))

    @property
    def answers(self) -> list[str]:
        return self.config["answers"]

    def encode_questions(self, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (padded) and lengths; unknown words map to <unk>."""
        unk = self.word_index[UNK]
        ids = [[self.word_index.get(w, unk) for w in tokenize(q)] or [unk] for q in questions]
        lengths = torch.tensor([len(i) for i in ids])
        out = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
        for row, seq in enumerate(ids):
            out[row, : len(seq)] = torch.tensor(seq)
        return out, lengths

    def slots(self, aux: torch.Tensor) -> Slots:
        return extract_slots(aux, self.config["n_slots"])

    def reason(self, slots: Slots, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Answer logits from the slots and the question tokens."""
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(tokens), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, last = self.gru(packed)
        words, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        q = torch.cat([last[0], last[1]], 1)  # forward and backward final states
        mask = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths.to(tokens.device)[:, None]
        return self.head(torch.cat([q, self.reader(q, words, mask, slots)], 1))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                with_aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        aux = self.perception(images)
        logits = self.reason(self.slots(aux), tokens, lengths)
        return (logits, aux) if with_aux else logits

    @torch.no_grad()
    def predict(self, images: list[np.ndarray], questions: list[str]) -> list[tuple[str, float]]:
        """(answer, softmax probability) per (image, question), in eval mode."""
        was_training = self.training
        self.eval()
        try:
            size = self.config["image_size"]
            dev = next(self.parameters()).device
            x = to_tensor(np.stack([resize_square(im, size) for im in images])).to(dev)
            tokens, lengths = self.encode_questions(questions)
            probs = self(x, tokens.to(dev), lengths).softmax(-1)
            conf, idx = probs.max(-1)
        finally:
            self.train(was_training)
        return [(self.answers[i], float(c)) for i, c in zip(idx.tolist(), conf.tolist(), strict=True)]


def save_model(model: ShapesVQANet, out_dir, extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (architecture, vocab, answers, ``extra``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    config = {**model.config, **({"training": extra} if extra else {})}
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    return out


def load_model(weights_dir=DEFAULT_WEIGHTS, device: str = "cpu") -> ShapesVQANet:
    """Load a model saved by ``save_model``; raises FileNotFoundError/ValueError with the reason."""
    d = Path(weights_dir)
    for name in ("config.json", "model.safetensors"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d}: no {name}; train weights with "
                                    "`visforge engines train-vqa --out DIR`")
    cfg = json.loads((d / "config.json").read_text())
    if cfg.get("arch") != ARCH:
        raise ValueError(f"{d}: architecture {cfg.get('arch')!r} is not {ARCH!r}")
    model = ShapesVQANet(cfg["vocab"], tuple(cfg["answers"]), cfg["image_size"], cfg["ch"], cfg["n_blocks"],
                         cfg["emb"], cfg["hidden"], cfg["n_slots"])
    model.load_state_dict(load_file(str(d / "model.safetensors")))
    return model.to(device).eval()


# ---- data -----------------------------------------------------------------------------------
def _crop_box(box, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    # Detector boxes are tight but may be off by a pixel or two (blur, noise); sometimes a program
    # crops with a margin (ImagePatch.expand), so train on both.
    x0, y0, x1, y1 = box
    pad = rng.integers(0, 3, size=4) if rng.random() < 0.8 else rng.integers(0, 1 + max(x1 - x0, y1 - y0) // 3, size=4)
    return (max(0, x0 - int(pad[0])), max(0, y0 - int(pad[1])), min(width, x1 + int(pad[2])),
            min(height, y1 + int(pad[3])))


def _crop_questions(obj, rng: np.random.Generator, split: str) -> list[tuple[str, str, str]]:
    pick = {k: v[0 if split == "train" else 1] for k, v in CROP_TEMPLATES.items()}
    out = [(pick["crop_color"][rng.integers(len(pick["crop_color"]))], obj.color, "crop_color"),
           (pick["crop_shape"][rng.integers(len(pick["crop_shape"]))], obj.shape, "crop_shape")]
    # yes/no about colour or shape, balanced between true and false
    kind = "crop_is_color" if rng.random() < 0.5 else "crop_is_shape"
    values, truth = (tuple(COLORS), obj.color) if kind == "crop_is_color" else (SHAPES, obj.shape)
    value = truth if rng.random() < 0.5 else values[rng.integers(len(values))]
    tmpl = pick[kind][rng.integers(len(pick[kind]))]
    out.append((tmpl.format(color=value, shape=value), "yes" if value == truth else "no", kind))
    return out


def _size_question(scene, rng: np.random.Generator, split: str) -> tuple[str, str] | None:
    obj = scene.objects[rng.integers(len(scene.objects))]
    for fields in ((obj.color, obj.shape), (obj.color,), (obj.shape,)):
        same = [o for o in scene.objects if all(v in (o.color, o.shape) for v in fields)]
        if len(same) == 1:
            templates = SIZE_TEMPLATES[0 if split == "train" else 1]
            name = " ".join(fields) if obj.shape in fields else f"{fields[0]} object"
            return templates[rng.integers(len(templates))].format(obj=name), obj.size
    return None


def _equal_compare(scene, rng: np.random.Generator, split: str) -> tuple[str, str] | None:
    """"Are there more X than Y?" where X and Y are equally many (answer "no"): the world asks
    comparisons only of unequal counts, and a model that never sees a tie answers "yes" to
    "more large stars than purple hexagons" in a scene with neither."""
    def spec() -> ObjectSpec:
        if rng.random() < 0.5:  # often an absent kind of object: 0 against 0
            return ObjectSpec(color=list(COLORS)[rng.integers(len(COLORS))], shape=SHAPES[rng.integers(len(SHAPES))])
        o = scene.objects[rng.integers(len(scene.objects))]
        return ObjectSpec(*(v if rng.random() < 0.5 else None for v in (o.size, o.color, o.shape)))

    texts = [t.text for t in TEMPLATES if t.family == "vqa" and t.qtype == "compare" and t.split == split]
    for _ in range(20):
        x, y = spec(), spec()
        if x != y and sum(map(x.matches, scene.objects)) == sum(map(y.matches, scene.objects)):
            text = texts[rng.integers(len(texts))]
            return text.format(xs=x.name(plural=True), ys=y.name(plural=True)), "no"
    return None


def build_dataset(n_scenes: int, seed: int, domain="clean", split: str = "train", per_scene: int = 1,
                  crops_per_scene: int = 2, image_size: int | None = None) -> list[QA]:
    """Render ``n_scenes`` scenes and label questions about them (ground truth used for labels only).

    Per scene: every scene-level question type the scene supports (``per_scene`` rounds), one
    size question, and ``crops_per_scene`` object crops with three crop questions each.
    ``split`` "train" uses only training phrasings, "heldout" only held-out phrasings.
    ``domain`` is a preset name, a ``Domain`` or "mix" (a random daylight domain per scene).
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    dom = None if domain == MIX_DOMAIN else get_domain(domain)
    heldout_fraction = 0.0 if split == "train" else 1.0
    out: list[QA] = []
    for i in range(n_scenes):
        rng = np.random.default_rng([seed, i, 7])
        scene = sample_scene(rng, dom or random_domain(np.random.default_rng([seed, i, 11])), image_size)
        pixels = render_array(scene)
        labels = _object_labels(scene.objects)
        for _ in range(per_scene):
            for qtype in SCENE_QTYPES:
                ex = make_example(scene, rng, "vqa", qtype, heldout_fraction)
                if ex is not None and ex["expected"] in ANSWERS:
                    out.append(QA(pixels, ex["query"], ex["expected"], qtype, split, labels))
        sq = _size_question(scene, rng, split)
        if sq:
            out.append(QA(pixels, sq[0], sq[1], "size", split, labels))
        tie = _equal_compare(scene, np.random.default_rng([seed, i, 13]), split) if i % 3 == 0 else None
        if tie:
            out.append(QA(pixels, tie[0], tie[1], "compare", split, labels))
        for j in rng.permutation(len(scene.objects))[:crops_per_scene]:
            obj = scene.objects[j]
            x0, y0, x1, y1 = _crop_box(obj.box, scene.width, scene.height, rng)
            crop = np.ascontiguousarray(pixels[y0:y1, x0:x1])
            crop_labels = _object_labels([obj], x0, y0)
            out += [QA(crop, q, a, t, split, crop_labels) for q, a, t in _crop_questions(obj, rng, split)]
    return out


# ---- training -------------------------------------------------------------------------------
def _tensorize(model: ShapesVQANet, dataset) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor, tuple]:
    """Resized uint8 images (each distinct array once: QA rows of one scene share it), the row ->
    image index, questions, answer labels and the images' perception targets (``aux_targets``)."""
    size, slot, pics, idx, objs = model.config["image_size"], {}, [], [], []
    for ex in dataset:
        key = id(ex[0])
        if key not in slot:
            slot[key] = len(pics)
            pics.append(resize_square(ex[0], size))
            objs.append((ex[0].shape[:2], ex[5] if isinstance(ex, tuple) and len(ex) > 5 else ()))
        idx.append(slot[key])
    unknown = sorted({ex[2] for ex in dataset} - set(model.answers))
    if unknown:
        raise ValueError(f"answers outside the model's vocabulary: {unknown[:10]}")
    labels = torch.tensor([model.answers.index(ex[2]) for ex in dataset])
    return (torch.from_numpy(np.stack(pics)), torch.tensor(idx), [ex[1] for ex in dataset], labels,
            aux_targets(objs, size))


def grid_stride(image_size: int) -> int:
    """Input pixels per cell of the perception grid (a stride-2 patch stem, then a stride-2 conv)."""
    return 4


def aux_targets(objs, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: whether it carries object labels; an objectness heatmap (1 on the cell holding
    an object's centre, a Gaussian around it) with the centre's offset in its cell; and the
    colour/shape/size classes of every cell on an object (-100 elsewhere)."""
    stride = grid_stride(size)
    g = -(-size // stride)
    has = torch.tensor([bool(o) for _, o in objs])
    centre = torch.zeros(len(objs), 4, g, g)  # heatmap, offset x, offset y, 1 on centre cells
    attrs = torch.full((len(objs), 3, g, g), -100, dtype=torch.long)
    cells = torch.arange(g, dtype=torch.float32) + 0.5
    for i, ((h, w), labels) in enumerate(objs):
        left, top, scale = square_placement(h, w, size)
        for x0, y0, x1, y1, c, sh, sz in labels:
            cx0, cy0 = ((x0 + left) * scale / stride - 0.5, (y0 + top) * scale / stride - 0.5)
            cx1, cy1 = ((x1 + left) * scale / stride - 0.5, (y1 + top) * scale / stride - 0.5)
            gx0, gy0 = max(0, int(np.ceil(cx0))), max(0, int(np.ceil(cy0)))
            gx1, gy1 = min(g - 1, int(np.floor(cx1))), min(g - 1, int(np.floor(cy1)))
            attrs[i, :, gy0:gy1 + 1, gx0:gx1 + 1] = torch.tensor([c, sh, sz])[:, None, None]
            fx, fy = ((x0 + x1) / 2 + left) * scale / stride, ((y0 + y1) / 2 + top) * scale / stride
            sigma = max(0.6, (x1 - x0) * scale / stride / 6)
            heat = torch.exp(-((cells[None, :] - fx) ** 2 + (cells[:, None] - fy) ** 2) / (2 * sigma ** 2))
            centre[i, 0] = torch.maximum(centre[i, 0], heat)
            gx, gy = min(g - 1, max(0, int(fx))), min(g - 1, max(0, int(fy)))
            centre[i, :, gy, gx] = torch.tensor([1.0, fx - gx - 0.5, fy - gy - 0.5, 1.0])
            attrs[i, :, gy, gx] = torch.tensor([c, sh, sz])
    return has, centre, attrs


def aux_loss(aux: torch.Tensor, has: torch.Tensor, centre: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """Objectness (CenterNet's focal loss on the heatmap) + colour/shape/size (CE on object cells)
    + centre offsets, over the images that carry labels."""
    if not bool(has.any()):
        return aux.sum() * 0.0
    aux, centre, attrs = aux[has], centre[has], attrs[has]
    nc, ns = len(COLORS), len(SHAPES)
    p = torch.sigmoid(aux[:, 0]).clamp(1e-4, 1 - 1e-4)
    at = centre[:, 3] > 0
    pos = -((1 - p) ** 2 * torch.log(p))[at].sum()
    neg = -((1 - centre[:, 0]) ** 4 * p ** 2 * torch.log(1 - p))[~at].sum()
    loss = (pos + neg) / max(1, int(at.sum()))
    for k, (lo, hi) in enumerate(((1, 1 + nc), (1 + nc, 1 + nc + ns), (1 + nc + ns, 1 + N_ATTR))):
        loss = loss + F.cross_entropy(aux[:, lo:hi], attrs[:, k], ignore_index=-100)
    if bool(at.any()):
        off = torch.tanh(aux[:, 1 + N_ATTR:]) * 0.5
        loss = loss + 4 * F.smooth_l1_loss(off.permute(0, 2, 3, 1)[at], centre[:, 1:3].permute(0, 2, 3, 1)[at],
                                           beta=0.1)
    return loss


def _sample_weights(dataset, qtype_weights: dict | None) -> torch.Tensor | None:
    if not qtype_weights:
        return None
    qts = [ex[3] if isinstance(ex, tuple) and len(ex) > 3 else "" for ex in dataset]
    w = torch.tensor([float(qtype_weights.get(q, 1.0)) for q in qts])
    return None if bool((w == w[0]).all()) else w


class _Progress:
    """The mean loss every ``every`` steps (and at the last), with optional evaluation figures."""

    def __init__(self, steps: int, every: int, log, label: str = "step", evaluate=None):
        self.steps, self.every, self.log, self.label, self.evaluate = steps, every, log, label, evaluate
        self.history: dict = {"loss": [], "eval": []}
        self.t0, self.running = time.time(), 0.0

    def __call__(self, r: dict) -> None:
        step = r["step"]
        self.running += r["loss"]
        if step % self.every and step != self.steps:
            return
        n = self.every if step % self.every == 0 else step % self.every
        self.history["loss"].append((step, self.running / n))
        msg = f"{self.label} {step}/{self.steps} loss {self.running / n:.3f} {time.time() - self.t0:.0f}s"
        if self.evaluate is not None:
            msg += self.evaluate(step)
        self.log(msg)
        self.running = 0.0


def pretrain_perception(model: ShapesVQANet, dataset, steps: int = 1500, batch_size: int = 32, lr: float = 3e-3,
                        weight_decay: float = 1e-4, warmup: int = 100, seed: int = 0, log_every: int = 100,
                        log=print) -> dict:
    """Train the perception heads alone on the distinct labelled images of ``dataset`` (items
    with object labels in ``item[5]``): objectness heatmap, attributes and centre offsets."""
    from builder.core.seeding import torch_generator
    from builder.core.training import TrainConfig, train_loop

    gen = torch_generator(seed, "perception batches")
    images, _, _, _, (has, centre, attrs) = _tensorize(model, dataset)
    keep = has.nonzero().flatten()
    if not len(keep):
        raise ValueError("no item carries object labels (item[5]); nothing to train perception on")

    def batches(_epoch, _rng):
        while True:
            yield keep[torch.randint(len(keep), (batch_size,), generator=gen)]

    def loss_fn(perception, b):
        return aux_loss(perception(to_tensor(images[b])), has[b], centre[b], attrs[b])

    progress = _Progress(steps, log_every, log, "perception step")
    cfg = TrainConfig(steps=steps, lr=lr, weight_decay=weight_decay, schedule="cosine", warmup_steps=warmup,
                      grad_clip=1.0, seed=seed)
    train_loop(model.perception, batches, loss_fn, cfg, on_step=progress)
    model.eval()
    return {**progress.history, "seconds": round(time.time() - progress.t0, 1)}


@torch.no_grad()
def _frozen_slots(model: ShapesVQANet, images: torch.Tensor, batch_size: int = 256) -> Slots:
    """Slots of every image with perception in eval mode (for training the reasoning alone)."""
    model.eval()
    parts = [model.slots(model.perception(to_tensor(images[s:s + batch_size])))
             for s in range(0, len(images), batch_size)]
    return Slots(*(torch.cat(t) for t in zip(*parts, strict=True)))


def train(model: ShapesVQANet, dataset, steps: int = 3000, batch_size: int = 64, lr: float = 2e-3,
          weight_decay: float = 1e-4, warmup: int = 100, word_dropout: float = 0.1, seed: int = 0,
          log_every: int = 100, eval_set=None, log=print, qtype_weights: dict | None = None,
          aux_weight: float = 0.5, freeze_perception: bool = False) -> dict:
    """Train ``model`` in place on (image, question, answer) items; returns a small history.

    Cosine learning-rate decay after a linear warmup. ``word_dropout`` replaces question words by
    <unk> at random, so unseen words in new phrasings (which map to <unk>) are not out of
    distribution. ``qtype_weights`` (e.g. ``QTYPE_WEIGHTS``) samples items by their question type
    (``item[3]``). ``aux_weight``: weight of the auxiliary perception loss on items that carry
    object labels (``item[5]``, training labels from the world; the model never sees them as
    input). ``freeze_perception`` trains the question reasoning alone on slots computed once per
    image (fast: after ``pretrain_perception``). Call again with a lower ``lr`` to fine-tune.
    """
    from builder.core.seeding import torch_generator
    from builder.core.training import TrainConfig, train_loop

    if not len(dataset):
        raise ValueError("empty training set")
    gen = torch_generator(seed, "batches")
    images, index, questions, labels, (has, centre, attrs) = _tensorize(model, dataset)
    tokens_all, lengths_all = model.encode_questions(questions)
    frozen = _frozen_slots(model, images) if freeze_perception else None
    weights = _sample_weights(dataset, qtype_weights)

    def batches(_epoch, _rng):
        while True:
            if weights is None:
                b = torch.randint(len(dataset), (batch_size,), generator=gen)
            else:
                b = torch.multinomial(weights, batch_size, replacement=True, generator=gen)
            tokens, lengths = tokens_all[b], lengths_all[b]
            tokens = tokens[:, : int(lengths.max())]
            if word_dropout > 0:
                drop = (torch.rand(tokens.shape, generator=gen) < word_dropout) & (tokens > 0)
                tokens = tokens.masked_fill(drop, model.word_index[UNK])
            yield b, tokens, lengths

    def loss_fn(m, batch):
        b, tokens, lengths = batch
        img_b = index[b]
        if frozen is not None:  # perception's parameters get no gradient, so AdamW leaves them
            return F.cross_entropy(m.reason(Slots(*(t[img_b] for t in frozen)), tokens, lengths), labels[b])
        logits, aux = m(to_tensor(images[img_b]), tokens, lengths, with_aux=True)
        loss = F.cross_entropy(logits, labels[b])
        if aux_weight > 0 and bool(has[img_b].any()):
            loss = loss + aux_weight * aux_loss(aux, has[img_b], centre[img_b], attrs[img_b])
        return loss

    def scores(step: int) -> str:
        res = evaluate(model, eval_set)
        progress.history["eval"].append((step, res["overall"]))
        model.train()
        return f" eval {res['overall']:.3f} scene-level {res.get('scene_level', 0):.3f} crop {res.get('crop', 0):.3f}"

    progress = _Progress(steps, log_every, log, evaluate=scores if eval_set is not None else None)
    cfg = TrainConfig(steps=steps, lr=lr, weight_decay=weight_decay, schedule="cosine", warmup_steps=warmup,
                      grad_clip=1.0, seed=seed)
    train_loop(model, batches, loss_fn, cfg, on_step=progress)
    return {**progress.history, "seconds": round(time.time() - progress.t0, 1)}


def evaluate(model: ShapesVQANet, dataset, batch_size: int = 256) -> dict:
    """Accuracy overall and per ``qtype`` (items without a qtype count under "all")."""
    correct: dict[str, list[int]] = {}
    for s in range(0, len(dataset), batch_size):
        chunk = dataset[s: s + batch_size]
        preds = model.predict([ex[0] for ex in chunk], [ex[1] for ex in chunk])
        for ex, (ans, _) in zip(chunk, preds, strict=True):
            qtype = ex[3] if len(ex) > 3 and ex[3] else "all"
            correct.setdefault(qtype, []).append(int(ans == ex[2]))
    everything = [c for v in correct.values() for c in v]
    out = {"overall": round(float(np.mean(everything)), 4) if everything else 0.0, "n": len(everything)}
    for name, keep in (("scene_level", lambda t: t in SCENE_QTYPES), ("crop", lambda t: t.startswith("crop_"))):
        vals = [c for t, v in correct.items() if keep(t) for c in v]
        if vals:
            out[name] = round(float(np.mean(vals)), 4)
            out[f"n_{name}"] = len(vals)
    out["by_qtype"] = {k: round(float(np.mean(v)), 4) for k, v in sorted(correct.items())}
    return out


def train_command(out: str | Path, init: str | Path | None = None, n_scenes: int = 8000, per_scene: int = 1,
                  crops_per_scene: int = 2, perception_steps: int = 2500, steps: int = 5000, joint_steps: int = 0,
                  batch_size: int = 128, lr: float = 2e-3, word_dropout: float = 0.1, domain: str = MIX_DOMAIN,
                  seed: int = 0, threads: int = 1, eval_scenes: int = 150, log_every: int = 500,
                  weighted: bool = True) -> dict:
    """Train (or fine-tune from ``init``) the shapes VQA model and save it to ``out``.

    ``visforge engines train-vqa`` calls this. Three stages: ``perception_steps`` of perception
    alone (batch 32, labels from the scene graphs), ``steps`` of question reasoning on frozen
    slots (``batch_size``), then ``joint_steps`` of everything at a tenth of ``lr``. Training
    scenes draw a random daylight domain each ("mix"); ``weighted`` samples question types by
    ``QTYPE_WEIGHTS``. Returns the training record saved in config.json (with the final
    evaluation per question type).
    """
    torch.set_num_threads(threads)
    t0 = time.time()
    data = build_dataset(n_scenes, seed, domain, "train", per_scene, crops_per_scene)
    # evaluation scenes use another seed, so they are never training scenes
    evalset = build_dataset(eval_scenes, seed + 10_000, domain, "train") if eval_scenes else None
    print(f"{len(data)} training QA from {n_scenes} scenes in {time.time() - t0:.0f}s")
    torch.manual_seed(seed)  # the initial weights too, so a run is repeatable bit for bit
    model = load_model(init) if init else ShapesVQANet(build_vocab(ex[1] for ex in data))
    print(f"{sum(p.numel() for p in model.parameters())} parameters")
    weights = QTYPE_WEIGHTS if weighted else None
    seconds = {}
    if perception_steps:
        seconds["perception"] = pretrain_perception(model, data, perception_steps, lr=3 * lr / 2, seed=seed,
                                                    log_every=log_every)["seconds"]
    if steps:
        seconds["reasoning"] = train(model, data, steps=steps, batch_size=batch_size, lr=lr,
                                     word_dropout=word_dropout, seed=seed, log_every=log_every, eval_set=evalset,
                                     qtype_weights=weights, freeze_perception=True)["seconds"]
    if joint_steps:
        seconds["joint"] = train(model, data, steps=joint_steps, batch_size=32, lr=lr / 10,
                                 word_dropout=word_dropout, seed=seed + 1, log_every=log_every, eval_set=evalset,
                                 qtype_weights=weights)["seconds"]
    final = evaluate(model, evalset) if evalset else None
    cmd = (f"visforge engines train-vqa --out {out} --n-scenes {n_scenes} --perception-steps {perception_steps}"
           f" --steps {steps} --joint-steps {joint_steps} --batch-size {batch_size} --lr {lr:g} --domain {domain}"
           f" --seed {seed} --threads {threads}" + ("" if weighted else " --no-weighted")
           + (f" --init {init}" if init else ""))
    extra = {"command": cmd, "n_scenes": n_scenes, "per_scene": per_scene,
             "crops_per_scene": crops_per_scene, "word_dropout": word_dropout, "n_qa": len(data),
             "perception_steps": perception_steps, "steps": steps, "joint_steps": joint_steps,
             "batch_size": batch_size, "lr": lr, "domain": domain, "seed": seed, "threads": threads,
             "qtype_weights": weights, "init": str(init) if init else None, "train_seconds": seconds,
             "total_seconds": round(time.time() - t0, 1),
             "final_eval": final["overall"] if final else None, "final_eval_detail": final}
    save_model(model, out, extra)
    print(f"saved {out} ({round(time.time() - t0)}s)")
    return extra
