"""The learned shapes-world VQA model: a small CNN with FiLM conditioning on a GRU question encoder.

Why this architecture: on 2 CPU cores a from-scratch transformer VQA model does not learn in
minutes, while a ~0.3M-parameter FiLM network does (measured in learnability
probes). Coordinate channels give the convolutions absolute position, which spatial
questions ("left of", "above") need.

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

A reduced run (seconds): ``... train --out /tmp/w --steps 30 --n-scenes 200``. Resume or
fine-tune from existing weights with ``--init DIR``.
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

from builder.world.scene import COLORS, SHAPES, SIZES, get_domain, random_domain, render_array, sample_scene
from builder.world.tasks import QTYPES, make_example

DEFAULT_WEIGHTS = Path(__file__).parent / "weights"
ARCH = "film-hop-v2"
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


def _split_aux(aux: torch.Tensor):
    """Objectness (b,1,g,g), colour/shape/size distributions, sub-cell offsets in [-0.5, 0.5]."""
    nc, ns = len(COLORS), len(SHAPES)
    obj = torch.sigmoid(aux[:, :1]) ** 2  # squared: the many empty cells add up to ~nothing
    pc = aux[:, 1:1 + nc].softmax(1)
    ps = aux[:, 1 + nc:1 + nc + ns].softmax(1)
    pz = aux[:, 1 + nc + ns:1 + N_ATTR].softmax(1)
    return obj, pc, ps, pz, torch.tanh(aux[:, 1 + N_ATTR:]) * 0.5


def percepts(aux: torch.Tensor) -> torch.Tensor:
    """Per-cell probabilities from the perception head: objectness, then colour, shape and size
    distributions, each weighted by objectness (empty cells are all zero)."""
    obj, pc, ps, pz, _ = _split_aux(aux)
    return torch.cat([obj, obj * pc, obj * ps, obj * pz], 1)


class SlotReader(nn.Module):
    """Question-conditioned soft selection over the perception map (a differentiable reading of
    "the red stars", "the object left of the blue circle").

    Three selections from the question code: A and B (soft attribute filters: which colours,
    shapes and sizes count), and C (a filter restricted to one side of B, the side chosen from the
    question). For each: how many cells match (a soft count), the strongest match, the colour,
    shape and size distributions and the position of what matched; plus where A lies relative
    to B, A's count as a soft one-hot, how many objects share A's colour, and per-colour and
    per-shape totals. Everything is computed from pixels through the perception head.
    """

    def __init__(self, hidden: int, margin: float = 0.08, sharpness: float = 25.0):
        super().__init__()
        self.select = nn.Linear(hidden, 3 * N_ATTR)
        nn.init.zeros_(self.select.weight)
        nn.init.constant_(self.select.bias, 3.0)  # start as "any object"
        self.relation = nn.Linear(hidden, 5)  # left of, right of, above, below, none
        self.margin, self.sharpness = margin, sharpness
        per = 2 + N_ATTR + 2
        self.out_dim = 3 * per + 4 + 10 + 1 + len(COLORS) + len(SHAPES)

    def forward(self, q: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        obj, pc, ps, pz, off = _split_aux(aux)
        b, _, g, _ = obj.shape
        centre = (torch.arange(g, device=aux.device, dtype=aux.dtype) + 0.5) * (2 / g) - 1
        px = centre.view(1, 1, 1, g) + off[:, :1] * (2 / g)
        py = centre.view(1, 1, g, 1) + off[:, 1:] * (2 / g)
        pos = torch.cat([px.expand(b, 1, g, g), py.expand(b, 1, g, g)], 1)  # (b, 2, g, g)
        w = torch.sigmoid(self.select(q)).view(b, 3, N_ATTR)
        nc, ns = len(COLORS), len(SHAPES)

        def match(k: int) -> torch.Tensor:
            wk = w[:, k]
            mc = (wk[:, :nc, None, None] * pc).sum(1, keepdim=True)
            ms = (wk[:, nc:nc + ns, None, None] * ps).sum(1, keepdim=True)
            mz = (wk[:, nc + ns:, None, None] * pz).sum(1, keepdim=True)
            return obj * mc * ms * mz  # (b, 1, g, g)

        def read(m: torch.Tensor):
            cnt = m.sum((2, 3))
            norm = m / (cnt[:, :, None, None] + 1e-3)
            dist = [(norm * p).sum((2, 3)) for p in (pc, ps, pz, pos)]
            return cnt, torch.cat([cnt / 4, m.amax((2, 3))] + dist, 1), norm

        def sides(ref: torch.Tensor) -> torch.Tensor:
            d = pos - ref[:, :, None, None]
            k, mg = self.sharpness, self.margin
            return torch.cat([torch.sigmoid(k * (-d[:, :1] - mg)), torch.sigmoid(k * (d[:, :1] - mg)),
                              torch.sigmoid(k * (-d[:, 1:] - mg)), torch.sigmoid(k * (d[:, 1:] - mg))], 1)

        cnt_a, feat_a, norm_a = read(match(0))
        _, feat_b, _ = read(match(1))
        pos_b = feat_b[:, -2:]
        side = sides(pos_b)  # (b, 4, g, g)
        wr = self.relation(q).softmax(-1)
        gate = (wr[:, :4, None, None] * side).sum(1, keepdim=True) + wr[:, 4:, None, None]
        _, feat_c, _ = read(match(2) * gate)
        a_vs_b = (norm_a * side).sum((2, 3))  # how much of A lies left of / right of / above / below B
        ks = torch.arange(10, device=aux.device, dtype=aux.dtype)
        onehot = torch.exp(-((cnt_a - ks) ** 2) / 0.3)
        colours = (obj * pc).sum((2, 3))
        shapes = (obj * ps).sum((2, 3))
        same = (feat_a[:, 2:2 + nc] * colours).sum(1, keepdim=True)
        return torch.cat([feat_a, feat_b, feat_c, a_vs_b, onehot, same / 4, colours / 4, shapes / 4], 1)


class FiLMBlock(nn.Module):
    """Residual block whose normalised features are scaled and shifted by the question.
    ``extra`` more input channels (relative coordinates in the second hop) join the 1x1 conv."""

    def __init__(self, ch: int, extra: int = 0):
        super().__init__()
        self.conv1 = nn.Conv2d(ch + 2 + extra, ch, 1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.norm = nn.BatchNorm2d(ch, affine=False)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                rel: torch.Tensor | None = None) -> torch.Tensor:
        inp = _coords(x) if rel is None else torch.cat([_coords(x), rel], 1)
        h = F.relu(self.conv1(inp))
        y = self.norm(self.conv2(h))
        y = F.relu((1 + gamma[:, :, None, None]) * y + beta[:, :, None, None])
        return h + y


class ShapesVQANet(nn.Module):
    """Two-hop FiLM network over the whole scene. ``config`` (plain JSON) holds sizes, vocab, answers.

    * Pixels: 128 px input (a small object is ~15 px, not 7), a 4x4 patch stem then a stride-2
      conv to a 16x16 grid, coordinate channels into every block (where things are matters).
    * Hop 1: ``n_blocks`` FiLM blocks conditioned on the GRU question code, then a softmax
      attention over the grid that reads one vector and one position (e.g. "the red star").
    * Hop 2: ``n_hop_blocks`` FiLM blocks conditioned on question + what hop 1 read, with
      coordinates relative to hop 1's position ("left of the red star", "same colour as ...").
    * Pooling: mean (counts: a sum over the grid) and max (existence, extremes) of a 1x1 conv,
      joined with the question and hop-1 code by an MLP over the closed answer set.
    """

    def __init__(self, vocab: list[str], answers: tuple[str, ...] = ANSWERS, image_size: int = 128, ch: int = 48,
                 n_blocks: int = 3, emb: int = 64, hidden: int = 128, n_hop_blocks: int = 2, head_ch: int = 128):
        super().__init__()
        self.config = {"arch": ARCH, "vocab": list(vocab), "answers": list(answers), "image_size": image_size,
                       "ch": ch, "n_blocks": n_blocks, "emb": emb, "hidden": hidden, "n_hop_blocks": n_hop_blocks,
                       "head_ch": head_ch}
        self.word_index = {w: i for i, w in enumerate(vocab)}
        self.embed = nn.Embedding(len(vocab), emb, padding_idx=0)
        self.gru = nn.GRU(emb, hidden, batch_first=True)
        patch = max(1, image_size // 64)  # 128 px -> 2x2 patches -> 64 -> 32 -> 16x16 grid
        self.stem = nn.Sequential(
            nn.Conv2d(5, 24, patch, stride=patch), nn.BatchNorm2d(24), nn.ReLU(),
            nn.Conv2d(24, 48, 3, stride=2, padding=1), nn.BatchNorm2d(48), nn.ReLU(),
            nn.Conv2d(48, ch, 3, stride=2, padding=1), nn.BatchNorm2d(ch), nn.ReLU())
        # per-cell perception head: objectness, colour, shape and size of an object centred in the
        # cell. Trained with an auxiliary loss; its probabilities join the features, so the
        # reasoning blocks start from "which cells hold a red star" rather than from raw pixels.
        self.aux = nn.Conv2d(ch, AUX_CHANNELS, 1)
        self.fuse = nn.Conv2d(ch + 1 + N_ATTR, ch, 1)
        self.blocks = nn.ModuleList(FiLMBlock(ch) for _ in range(n_blocks))
        self.film = nn.Linear(hidden, 2 * ch * n_blocks)
        self.attend = nn.Conv2d(ch + 2, 1, 1)
        ctx = hidden + ch + 2
        self.hop_blocks = nn.ModuleList(FiLMBlock(ch, extra=2) for _ in range(n_hop_blocks))
        self.hop_film = nn.Linear(ctx, 2 * ch * n_hop_blocks)
        self.head_conv = nn.Conv2d(ch + 4, head_ch, 1)
        self.slots = SlotReader(hidden)
        self.head = nn.Sequential(nn.Linear(2 * head_ch + ctx + self.slots.out_dim, 256), nn.ReLU(),
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

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                with_aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(tokens), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        _, q = self.gru(packed)
        q = q[-1]
        film = self.film(q).view(q.shape[0], len(self.blocks), 2, -1)
        x = self.stem(_coords(images))
        aux = self.aux(x)
        x = F.relu(self.fuse(torch.cat([x, percepts(aux)], 1)))
        for k, block in enumerate(self.blocks):
            x = block(x, film[:, k, 0], film[:, k, 1])
        # hop 1: attend to one place, read its features and position
        xc = _coords(x)
        b, _, h, w = xc.shape
        att = self.attend(xc).view(b, 1, h * w).softmax(-1)
        read = (xc.view(b, -1, h * w) * att).sum(-1)  # (b, ch + 2): features, then x, y
        pos = read[:, -2:]
        ctx = torch.cat([q, read], 1)
        rel = xc[:, -2:] - pos[:, :, None, None]  # coordinates relative to what hop 1 read
        film2 = self.hop_film(ctx).view(b, len(self.hop_blocks), 2, -1)
        for k, block in enumerate(self.hop_blocks):
            x = block(x, film2[:, k, 0], film2[:, k, 1], rel)
        f = F.relu(self.head_conv(torch.cat([_coords(x), rel], 1)))
        pooled = torch.cat([f.mean((2, 3)) * 4, f.amax((2, 3))], 1)
        logits = self.head(torch.cat([pooled, ctx, self.slots(q, aux)], 1))
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
                         cfg["emb"], cfg["hidden"], cfg["n_hop_blocks"], cfg["head_ch"])
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
        for j in rng.permutation(len(scene.objects))[:crops_per_scene]:
            obj = scene.objects[j]
            x0, y0, x1, y1 = _crop_box(obj.box, scene.width, scene.height, rng)
            crop = np.ascontiguousarray(pixels[y0:y1, x0:x1])
            crop_labels = _object_labels([obj], x0, y0)
            out += [QA(crop, q, a, t, split, crop_labels) for q, a, t in _crop_questions(obj, rng, split)]
    return out


# ---- training -------------------------------------------------------------------------------
def _tensorize(model: ShapesVQANet, dataset) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
    """Resized uint8 images (each distinct array once: QA rows of one scene share it), the row ->
    image index, questions and answer labels."""
    size, slot, pics, idx, objs = model.config["image_size"], {}, [], [], []
    for ex in dataset:
        key = id(ex[0])
        if key not in slot:
            slot[key] = len(pics)
            pics.append(resize_square(ex[0], size))
            objs.append((ex[0].shape[:2], ex[5] if isinstance(ex, tuple) and len(ex) > 5 else ()))
        idx.append(slot[key])
    model._aux_targets = _aux_targets(objs, size)  # read (and dropped) by train()
    unknown = sorted({ex[2] for ex in dataset} - set(model.answers))
    if unknown:
        raise ValueError(f"answers outside the model's vocabulary: {unknown[:10]}")
    labels = torch.tensor([model.answers.index(ex[2]) for ex in dataset])
    return torch.from_numpy(np.stack(pics)), torch.tensor(idx), [ex[1] for ex in dataset], labels


def grid_stride(image_size: int) -> int:
    """Input pixels per cell of the network's feature grid (patch stem, then two stride-2 convs)."""
    return max(1, image_size // 64) * 4


def _aux_targets(objs, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: whether it carries object labels, which grid cells hold an object centre and
    each centre cell's colour/shape/size classes (-100 elsewhere)."""
    stride = grid_stride(size)
    g = -(-size // stride)
    has = torch.tensor([bool(o) for _, o in objs])
    centre = torch.zeros(len(objs), 3, g, g)  # objectness, then the centre's offset in its cell
    attrs = torch.full((len(objs), 3, g, g), -100, dtype=torch.long)
    for i, ((h, w), labels) in enumerate(objs):
        left, top, scale = square_placement(h, w, size)
        for x0, y0, x1, y1, c, sh, sz in labels:
            # attributes on every cell whose centre lies on the object's box, objectness and the
            # centre offset on the cell holding the box centre
            cx0, cy0 = ((x0 + left) * scale / stride - 0.5, (y0 + top) * scale / stride - 0.5)
            cx1, cy1 = ((x1 + left) * scale / stride - 0.5, (y1 + top) * scale / stride - 0.5)
            gx0, gy0 = max(0, int(np.ceil(cx0))), max(0, int(np.ceil(cy0)))
            gx1, gy1 = min(g - 1, int(np.floor(cx1))), min(g - 1, int(np.floor(cy1)))
            attrs[i, :, gy0:gy1 + 1, gx0:gx1 + 1] = torch.tensor([c, sh, sz])[:, None, None]
            fx, fy = ((x0 + x1) / 2 + left) * scale / stride, ((y0 + y1) / 2 + top) * scale / stride
            gx, gy = min(g - 1, max(0, int(fx))), min(g - 1, max(0, int(fy)))
            centre[i, :, gy, gx] = torch.tensor([1.0, fx - gx - 0.5, fy - gy - 0.5])
            attrs[i, :, gy, gx] = torch.tensor([c, sh, sz])
    return has, centre, attrs


def aux_loss(aux: torch.Tensor, has: torch.Tensor, centre: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """Objectness (BCE on every cell) + colour/shape/size (CE on centre cells), images with labels."""
    if not bool(has.any()):
        return aux.sum() * 0.0
    aux, centre, attrs = aux[has], centre[has], attrs[has]
    nc, ns = len(COLORS), len(SHAPES)
    loss = F.binary_cross_entropy_with_logits(aux[:, 0], centre[:, 0], pos_weight=torch.tensor(2.0))
    for k, (lo, hi) in enumerate(((1, 1 + nc), (1 + nc, 1 + nc + ns), (1 + nc + ns, 1 + N_ATTR))):
        loss = loss + F.cross_entropy(aux[:, lo:hi], attrs[:, k], ignore_index=-100)
    at = centre[:, 0] > 0
    if bool(at.any()):
        off = torch.tanh(aux[:, 1 + N_ATTR:]) * 0.5
        loss = loss + 4 * F.smooth_l1_loss(off.permute(0, 2, 3, 1)[at], centre[:, 1:].permute(0, 2, 3, 1)[at],
                                           beta=0.1)
    return loss


def _sample_weights(dataset, qtype_weights: dict | None) -> torch.Tensor | None:
    if not qtype_weights:
        return None
    qts = [ex[3] if isinstance(ex, tuple) and len(ex) > 3 else "" for ex in dataset]
    w = torch.tensor([float(qtype_weights.get(q, 1.0)) for q in qts])
    return None if bool((w == w[0]).all()) else w


def train(model: ShapesVQANet, dataset, steps: int = 3000, batch_size: int = 64, lr: float = 2e-3,
          weight_decay: float = 1e-4, warmup: int = 100, word_dropout: float = 0.1, seed: int = 0,
          log_every: int = 100, eval_set=None, log=print, qtype_weights: dict | None = None,
          aux_weight: float = 0.5) -> dict:
    """Train ``model`` in place on (image, question, answer) items; returns a small history.

    Cosine learning-rate decay after a linear warmup. ``word_dropout`` replaces question words by
    <unk> at random, so unseen words in new phrasings (which map to <unk>) are not out of
    distribution. ``qtype_weights`` (e.g. ``QTYPE_WEIGHTS``) samples items by their question type
    (``item[3]``). ``aux_weight``: weight of the auxiliary perception loss on items that carry
    object labels (``item[5]``, training labels from the world; the model never sees them as
    input). Call again with a lower ``lr`` to fine-tune.
    """
    from builder.core.seeding import torch_generator
    from builder.core.training import TrainConfig, train_loop

    if not len(dataset):
        raise ValueError("empty training set")
    gen = torch_generator(seed, "batches")
    images, index, questions, labels = _tensorize(model, dataset)
    has, centre, attrs = model.__dict__.pop("_aux_targets")
    tokens_all, lengths_all = model.encode_questions(questions)
    weights = _sample_weights(dataset, qtype_weights)
    history: dict = {"loss": [], "eval": []}
    t0, running = time.time(), [0.0]

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
        logits, aux = m(to_tensor(images[index[b]]), tokens, lengths, with_aux=True)
        loss = F.cross_entropy(logits, labels[b])
        img_b = index[b]
        if aux_weight > 0 and bool(has[img_b].any()):
            loss = loss + aux_weight * aux_loss(aux, has[img_b], centre[img_b], attrs[img_b])
        return loss

    def report(r: dict) -> None:  # mean loss every log_every steps (and the last), eval_set figures
        step = r["step"]
        running[0] += r["loss"]
        if step % log_every == 0 or step == steps:
            n = log_every if step % log_every == 0 else step % log_every
            history["loss"].append((step, running[0] / n))
            msg = f"step {step}/{steps} loss {running[0] / n:.3f} {time.time() - t0:.0f}s"
            if eval_set is not None:
                res = evaluate(model, eval_set)
                acc = res["overall"]
                history["eval"].append((step, acc))
                msg += f" eval {acc:.3f} scene-level {res.get('scene_level', 0):.3f} crop {res.get('crop', 0):.3f}"
                model.train()
            log(msg)
            running[0] = 0.0

    cfg = TrainConfig(steps=steps, lr=lr, weight_decay=weight_decay, schedule="cosine", warmup_steps=warmup,
                      grad_clip=1.0, seed=seed)
    train_loop(model, batches, loss_fn, cfg, on_step=report)
    history["seconds"] = round(time.time() - t0, 1)
    return history


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
                  crops_per_scene: int = 2, steps: int = 2000, batch_size: int = 64, lr: float = 2e-3,
                  word_dropout: float = 0.1, domain: str = MIX_DOMAIN, seed: int = 0, threads: int = 1,
                  eval_scenes: int = 150, log_every: int = 500, weighted: bool = True) -> dict:
    """Train (or fine-tune from ``init``) the shapes VQA model and save it to ``out``.

    ``visforge engines train-vqa`` calls this. Training scenes draw a random daylight domain each
    ("mix"); ``weighted`` samples question types by ``QTYPE_WEIGHTS``. Returns the training
    record saved in config.json (with the final evaluation per question type).
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
    hist = train(model, data, steps=steps, batch_size=batch_size, lr=lr, word_dropout=word_dropout,
                 seed=seed, log_every=log_every, eval_set=evalset, qtype_weights=QTYPE_WEIGHTS if weighted else None)
    final = evaluate(model, evalset) if evalset else None
    cmd = (f"visforge engines train-vqa --out {out} --n-scenes {n_scenes} --steps {steps} --batch-size {batch_size}"
           f" --lr {lr:g} --domain {domain} --seed {seed} --threads {threads}"
           + ("" if weighted else " --no-weighted") + (f" --init {init}" if init else ""))
    extra = {"command": cmd, "n_scenes": n_scenes, "per_scene": per_scene,
             "crops_per_scene": crops_per_scene, "word_dropout": word_dropout, "n_qa": len(data), "steps": steps,
             "batch_size": batch_size, "lr": lr, "domain": domain, "seed": seed, "threads": threads,
             "qtype_weights": QTYPE_WEIGHTS if weighted else None,
             "init": str(init) if init else None, "train_seconds": hist["seconds"],
             "total_seconds": round(time.time() - t0, 1),
             "final_eval": final["overall"] if final else None, "final_eval_detail": final}
    save_model(model, out, extra)
    print(f"saved {out} ({hist['seconds']}s training)")
    return extra
