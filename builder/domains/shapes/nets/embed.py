"""The shapes-world dual encoder: images and captions embedded into one space (contrastive).

The ROSA recipe on the shapes world: align a frozen vision model with a small trained one,
with little data and compute. Image side: the shapes detector (classical CV on the pixels,
frozen, no training) lists the objects it sees; a trained set encoder embeds each object
(size, colour, shape one-hots, centre, side, score) and each ordered pair of objects (their
offset carries "left of", "above"), pools them (max: what is there; sum: how many) and
projects. Text side: a caption is split into clauses (at sentence punctuation, commas and
"and"); each clause goes through word embeddings and dilated 1-D convolutions, max- and
mean-pooled; the text embedding is the normalised *sum* of the clause embeddings, so a
caption's similarity to an image is roughly the sum of its clauses' similarities (a
compositional bias that lets long captions of several clauses work). Unknown words map to
``<unk>``; word dropout during training makes unseen phrasings (held-out patterns)
in-distribution.

``DualEncoder`` is an artifact (``builder.core.artifacts``, architecture ``shapes-dual-encoder``):
``save_pretrained(folder)`` writes ``config.json`` (vocab and sizes; ``info``: how it was trained)
and ``model.safetensors`` (float16); ``DualEncoder.from_pretrained(folder)`` reads it back.

Training data, the loss and the trainer are in ``builder.domains.shapes.training.embed``; the
engine over the default weights (``weights/embed``) is ``builder.tools.backends.shapes.ShapesEmbedder``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from builder.core.artifacts import Artifact, load_state, save_state
from builder.domains.shapes.vocab import COLORS, SHAPES, SIZES

DEFAULT_WEIGHTS = Path(__file__).parents[1] / "weights" / "embed"
ARCH = "shapes-dual-encoder"  # the artifact's architecture name (``config.json``)
PAD, UNK = "<pad>", "<unk>"
_CLAUSE_SPLIT = re.compile(r"[.;,:!?]|\band\b")


def tokenize(text: str) -> list[str]:
    """Lower-case words and numbers of a caption or query (the embedder's text tokens)."""
    return re.findall(r"[a-z0-9]+", text.lower())


def split_clauses(text: str) -> list[list[str]]:
    """Token lists of the caption's clauses (empty clauses dropped; at least one, maybe empty)."""
    out = [tokenize(c) for c in _CLAUSE_SPLIT.split(text)]
    return [c for c in out if c] or [[]]




def _coords(x: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device).view(1, 1, h, 1).expand(b, 1, h, w)
    xs = torch.linspace(-1, 1, w, device=x.device).view(1, 1, 1, w).expand(b, 1, h, w)
    return torch.cat([x, xs, ys], 1)


MAX_OBJECTS = 10
OBJ_FEATURES = len(SIZES) + len(COLORS) + len(SHAPES) + 4  # one-hots, centre x/y, side, score


def object_inputs(images: list[np.ndarray], detector) -> torch.Tensor:
    """(N, MAX_OBJECTS, OBJ_FEATURES) inputs of the image encoder: what the (frozen) shapes
    detector sees in each image's pixels, one row per object (zeros pad; the last column of a
    real object's row, its detection score, is > 0)."""
    out = torch.zeros(len(images), MAX_OBJECTS, OBJ_FEATURES)
    sizes, colors, shapes = list(SIZES), list(COLORS), list(SHAPES)
    for n, image in enumerate(images):
        h, w = image.shape[:2]
        for k, o in enumerate(detector.objects(image)[:MAX_OBJECTS]):
            row = out[n, k]
            row[sizes.index(o.size)] = 1
            row[len(sizes) + colors.index(o.color)] = 1
            row[len(sizes) + len(colors) + shapes.index(o.shape)] = 1
            cx, cy = o.center
            side = max(o.box[2] - o.box[0], o.box[3] - o.box[1])
            row[-4:] = torch.tensor([cx / w * 2 - 1, cy / h * 2 - 1, side / max(h, w), max(0.05, o.score)])
    return out


class DualEncoder(nn.Module, Artifact):
    """Image and clause encoders into ``dim``-d unit vectors; ``config`` (plain JSON: the
    constructor arguments) holds the vocab and sizes, ``info`` how it was trained. An artifact:
    ``save_pretrained(folder)`` (float16 weights) / ``DualEncoder.from_pretrained(folder)``.

    Image side (the ROSA recipe: align a frozen vision model with a small trained one): the
    shapes detector (classical CV on the pixels, frozen) lists the objects; a set encoder embeds
    each object and each ordered pair of objects (their offset carries "left of", "above"),
    pools them (max: what is there; sum: how many) and projects. Text side: a dilated 1-D
    convolution over each clause's words (receptive field of 15 words).
    """

    architecture = ARCH

    def __init__(self, vocab: list[str], emb: int = 48, hidden: int = 96, dim: int = 128):
        super().__init__()
        self.info: dict = {}  # the training record saved in config.json (``artifact_info``)
        self.config = {"vocab": list(vocab), "emb": emb, "hidden": hidden, "dim": dim}
        self.word_index = {w: i for i, w in enumerate(vocab)}
        self.obj = nn.Sequential(nn.Linear(OBJ_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.pair = nn.Sequential(nn.Linear(2 * hidden + 2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.image_proj = nn.Sequential(nn.Linear(3 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, dim))
        self.embed = nn.Embedding(len(vocab), emb, padding_idx=0)
        self.convs = nn.ModuleList([nn.Conv1d(emb, hidden, 3, padding=1),
                                    nn.Conv1d(hidden, hidden, 3, padding=2, dilation=2),
                                    nn.Conv1d(hidden, hidden, 3, padding=4, dilation=4)])
        self.text_proj = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    @property
    def dim(self) -> int:
        """The width of the shared image/text embedding space."""
        return self.config["dim"]

    def encode_images(self, objects: torch.Tensor) -> torch.Tensor:
        """(N, MAX_OBJECTS, OBJ_FEATURES) from ``object_inputs`` -> (N, dim) unit vectors."""
        valid = objects[:, :, -1] > 0  # (N, K)
        h = self.obj(objects) * valid[..., None]
        n, k, d = h.shape
        offset = objects[:, :, None, -4:-2] - objects[:, None, :, -4:-2]  # (N, K, K, 2)
        pairs = torch.cat([h[:, :, None].expand(n, k, k, d), h[:, None].expand(n, k, k, d), offset], -1)
        pair_ok = valid[:, :, None] & valid[:, None, :] & ~torch.eye(k, dtype=torch.bool)[None]
        p = self.pair(pairs).masked_fill(~pair_ok[..., None], 0.0)
        pooled = torch.cat([h.amax(1), h.sum(1) / 4, p.flatten(1, 2).amax(1)], 1)
        return F.normalize(self.image_proj(pooled), dim=-1)

    def clause_ids(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(clause token ids padded, clause lengths, owner text index per clause)."""
        unk = self.word_index[UNK]
        rows, owner = [], []
        for t, text in enumerate(texts):
            for clause in split_clauses(text):
                rows.append([self.word_index.get(w, unk) for w in clause] or [unk])
                owner.append(t)
        lengths = torch.tensor([len(r) for r in rows])
        ids = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return ids, lengths, torch.tensor(owner)

    def encode_clauses(self, ids: torch.Tensor, lengths: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
        """One unit vector per text: its clauses encoded by the convolutional text tower and summed by ``owner``."""
        valid = (ids > 0).unsqueeze(1)  # (n, 1, T)
        x = self.embed(ids).transpose(1, 2)
        for k, conv in enumerate(self.convs):
            y = F.relu(conv(x)).masked_fill(~valid, 0.0)
            x = y if k == 0 else x + y
        pooled = torch.cat([x.masked_fill(~valid, -1e4).amax(2), x.sum(2) / valid.sum(2).clamp(min=1)], 1)
        clause = self.text_proj(pooled)
        total = torch.zeros(n, clause.shape[1], dtype=clause.dtype, device=clause.device)
        total.index_add_(0, owner.to(clause.device), clause)
        return F.normalize(total, dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Unit text embeddings for ``texts`` (each split into clauses first)."""
        ids, lengths, owner = self.clause_ids(texts)
        dev = self.embed.weight.device
        return self.encode_clauses(ids.to(dev), lengths, owner, len(texts))

    # ---- the artifact contract (builder.core.artifacts) ----
    def artifact_config(self) -> dict:
        """The constructor settings recorded in the artifact's ``config.json``."""
        return dict(self.config)

    def artifact_info(self) -> dict:
        """How the weights were trained (the artifact's ``info``)."""
        return dict(self.info)

    def _save_files(self, folder: Path) -> None:
        save_state(folder, self, half=True)  # float16 on disk; loads as float32

    @classmethod
    def _from_files(cls, folder: Path, config: dict, info: dict) -> DualEncoder:
        """Build from the recorded config, load the weights; on the CPU in eval mode."""
        model = cls(**config)
        load_state(folder, model)
        model.info = dict(info)
        return model.eval()
