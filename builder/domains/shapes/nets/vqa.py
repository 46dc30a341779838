"""The learned shapes-world VQA network: perception, object slots, question-conditioned reading.

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

``ShapesVQANet`` is an artifact (``builder.core.artifacts``, architecture ``shapes-vqa-slots-v3``):
``save_pretrained(folder)`` writes ``config.json`` (the constructor config: vocab, answers,
sizes; ``info``: how it was trained) and ``model.safetensors``; ``ShapesVQANet.from_pretrained``
reads it back.
Data generation, losses and the trainers are in ``builder.domains.shapes.training.vqa``; the
engine over the default weights (``weights/vqa``) is ``builder.tools.backends.shapes.ShapesVQA``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from builder.core.artifacts import Artifact, load_state, save_state
from builder.domains.shapes.vocab import COLORS, SHAPES, SIZES

DEFAULT_WEIGHTS = Path(__file__).parents[1] / "weights" / "vqa"
ARCH = "shapes-vqa-slots-v3"  # the artifact's architecture name (``config.json``)
# Closed answer vocabulary: no OCR answers (text reading belongs to the OCR engine).
ANSWERS: tuple[str, ...] = COLORS + SHAPES + SIZES + ("yes", "no") + tuple(str(d) for d in range(10))
PAD, UNK = "<pad>", "<unk>"
PAD_GRAY = 128  # fill used to pad non-square inputs to a square
N_ATTR = len(COLORS) + len(SHAPES) + len(SIZES)
AUX_CHANNELS = 1 + N_ATTR + 2  # objectness, attribute logits, sub-cell centre offset (x, y)


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
        """Per-cell perception maps at stride 4: objectness, attribute logits and the centre offset."""
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


class ShapesVQANet(nn.Module, Artifact):
    """Perception, slots, then question-conditioned reasoning over the slots. ``config`` (plain
    JSON: the constructor arguments) holds sizes, vocab and answers; ``info`` how it was trained.
    An artifact: ``save_pretrained(folder)`` / ``ShapesVQANet.from_pretrained(folder)``.

    * Pixels: 128 px input, dense perception heads at stride 4 (``Perception``), trained with an
      auxiliary loss whose labels come from the world's scene graphs (training labels only).
    * Slots: the ``n_slots`` strongest objectness peaks with their attribute distributions and
      positions (``extract_slots``): objects, not grid cells, so counting is a sum over objects.
    * Question: a bidirectional GRU; each soft filter and the relation gate attend to their own
      words, and read over the slots (``SlotReader``); an MLP maps the question code and the
      reads to the closed answer set.
    """

    architecture = ARCH

    def __init__(self, vocab: list[str], answers: tuple[str, ...] = ANSWERS, image_size: int = 128, ch: int = 32,
                 n_blocks: int = 4, emb: int = 64, hidden: int = 128, n_slots: int = 12):
        super().__init__()
        self.info: dict = {}  # the training record saved in config.json (``artifact_info``)
        self.config = {"vocab": list(vocab), "answers": list(answers), "image_size": image_size,
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
        """The answer vocabulary, in the order of the answer logits."""
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
        """The strongest objectness peaks of ``aux`` as object slots (the configured number of them)."""
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
        """Answer logits for images and questions (and the perception maps too, with ``with_aux``)."""
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

    # ---- the artifact contract (builder.core.artifacts) ----
    def artifact_config(self) -> dict:
        """The constructor settings recorded in the artifact's ``config.json``."""
        return dict(self.config)

    def artifact_info(self) -> dict:
        """How the weights were trained (the artifact's ``info``)."""
        return dict(self.info)

    def _save_files(self, folder: Path) -> None:
        save_state(folder, self)  # float32, as trained

    @classmethod
    def _from_files(cls, folder: Path, config: dict, info: dict) -> ShapesVQANet:
        """Build from the recorded config, load the weights; on the CPU in eval mode."""
        model = cls(**{**config, "answers": tuple(config["answers"])})
        load_state(folder, model)
        model.info = dict(info)
        return model.eval()
