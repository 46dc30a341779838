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
import math
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

from builder.world.scene import COLORS, SHAPES, SIZES, get_domain, render_array, sample_scene
from builder.world.tasks import QTYPES, make_example

DEFAULT_WEIGHTS = Path(__file__).parent / "weights"
ARCH = "film-gru-v1"
# Closed answer vocabulary: no OCR answers (text reading belongs to the OCR engine).
ANSWERS: tuple[str, ...] = tuple(COLORS) + SHAPES + SIZES + ("yes", "no") + tuple(str(d) for d in range(10))
PAD, UNK = "<pad>", "<unk>"
PAD_GRAY = 128  # fill used to pad non-square inputs to a square

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
# Size questions about a named object (the world generator only asks colour and shape).
SIZE_TEMPLATES = (["What size is the {obj}?", "Is the {obj} small or large?"], ["Tell me the size of the {obj}."])


class QA(NamedTuple):
    """One VQA example. Training reads only the first three fields."""

    image: np.ndarray
    question: str
    answer: str
    qtype: str = ""
    split: str = "train"


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


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Pad an RGB uint8 image to a square (keeping the aspect ratio, which tells hexagons from
    circles) and resize it to ``size`` x ``size`` (uint8 HWC)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    side = max(h, w)
    if h != w:
        top, left = (side - h) // 2, (side - w) // 2
        image = cv2.copyMakeBorder(image, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT,
                                   value=(PAD_GRAY,) * 3)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=interp)


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


class FiLMBlock(nn.Module):
    """Residual block whose normalised features are scaled and shifted by the question."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch + 2, ch, 1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.norm = nn.BatchNorm2d(ch, affine=False)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(_coords(x)))
        y = self.norm(self.conv2(h))
        y = F.relu((1 + gamma[:, :, None, None]) * y + beta[:, :, None, None])
        return h + y


class ShapesVQANet(nn.Module):
    """CNN + FiLM + GRU. ``config`` (plain JSON) holds sizes, vocab and answers."""

    def __init__(self, vocab: list[str], answers: tuple[str, ...] = ANSWERS, image_size: int = 64, ch: int = 48,
                 n_blocks: int = 3, emb: int = 64, hidden: int = 128):
        super().__init__()
        self.config = {"arch": ARCH, "vocab": list(vocab), "answers": list(answers), "image_size": image_size,
                       "ch": ch, "n_blocks": n_blocks, "emb": emb, "hidden": hidden}
        self.word_index = {w: i for i, w in enumerate(vocab)}
        self.embed = nn.Embedding(len(vocab), emb, padding_idx=0)
        self.gru = nn.GRU(emb, hidden, batch_first=True)
        self.stem = nn.Sequential(
            nn.Conv2d(5, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, ch, 3, stride=2, padding=1), nn.BatchNorm2d(ch), nn.ReLU())
        self.blocks = nn.ModuleList(FiLMBlock(ch) for _ in range(n_blocks))
        self.film = nn.Linear(hidden, 2 * ch * n_blocks)
        self.head_conv = nn.Conv2d(ch + 2, 256, 1)
        self.head = nn.Sequential(nn.Linear(256 + hidden, 256), nn.ReLU(), nn.Linear(256, len(answers)))

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

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(tokens), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        _, q = self.gru(packed)
        q = q[-1]
        film = self.film(q).view(q.shape[0], len(self.blocks), 2, -1)
        x = self.stem(_coords(images))
        for k, block in enumerate(self.blocks):
            x = block(x, film[:, k, 0], film[:, k, 1])
        x = F.relu(self.head_conv(_coords(x))).amax(dim=(2, 3))
        return self.head(torch.cat([x, q], 1))

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
                         cfg["emb"], cfg["hidden"])
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
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    dom = get_domain(domain)
    heldout_fraction = 0.0 if split == "train" else 1.0
    out: list[QA] = []
    for i in range(n_scenes):
        rng = np.random.default_rng([seed, i, 7])
        scene = sample_scene(rng, dom, image_size)
        pixels = render_array(scene)
        for _ in range(per_scene):
            for qtype in SCENE_QTYPES:
                ex = make_example(scene, rng, "vqa", qtype, heldout_fraction)
                if ex is not None and ex["expected"] in ANSWERS:
                    out.append(QA(pixels, ex["query"], ex["expected"], qtype, split))
        sq = _size_question(scene, rng, split)
        if sq:
            out.append(QA(pixels, sq[0], sq[1], "size", split))
        for j in rng.permutation(len(scene.objects))[:crops_per_scene]:
            obj = scene.objects[j]
            x0, y0, x1, y1 = _crop_box(obj.box, scene.width, scene.height, rng)
            crop = np.ascontiguousarray(pixels[y0:y1, x0:x1])
            out += [QA(crop, q, a, t, split) for q, a, t in _crop_questions(obj, rng, split)]
    return out


# ---- training -------------------------------------------------------------------------------
def _tensorize(model: ShapesVQANet, dataset) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
    """Resized uint8 images (each distinct array once: QA rows of one scene share it), the row ->
    image index, questions and answer labels."""
    size, slot, pics, idx = model.config["image_size"], {}, [], []
    for ex in dataset:
        key = id(ex[0])
        if key not in slot:
            slot[key] = len(pics)
            pics.append(resize_square(ex[0], size))
        idx.append(slot[key])
    unknown = sorted({ex[2] for ex in dataset} - set(model.answers))
    if unknown:
        raise ValueError(f"answers outside the model's vocabulary: {unknown[:10]}")
    labels = torch.tensor([model.answers.index(ex[2]) for ex in dataset])
    return torch.from_numpy(np.stack(pics)), torch.tensor(idx), [ex[1] for ex in dataset], labels


def train(model: ShapesVQANet, dataset, steps: int = 3000, batch_size: int = 64, lr: float = 2e-3,
          weight_decay: float = 1e-4, warmup: int = 100, word_dropout: float = 0.1, seed: int = 0,
          log_every: int = 100, eval_set=None, log=print) -> dict:
    """Train ``model`` in place on (image, question, answer) items; returns a small history.

    Cosine learning-rate decay after a linear warmup. ``word_dropout`` replaces question words by
    <unk> at random, so unseen words in new phrasings (which map to <unk>) are not out of
    distribution. Call again with a lower ``lr`` to fine-tune.
    """
    if not len(dataset):
        raise ValueError("empty training set")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images, index, questions, labels = _tensorize(model, dataset)
    tokens_all, lengths_all = model.encode_questions(questions)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history: dict = {"loss": [], "eval": []}
    model.train()
    t0, running = time.time(), 0.0
    for step in range(1, steps + 1):
        frac = min(1.0, step / max(1, warmup))
        progress = max(0.0, (step - warmup) / max(1, steps - warmup))
        for g in opt.param_groups:
            g["lr"] = lr * frac * 0.5 * (1 + math.cos(math.pi * progress))
        b = torch.randint(len(dataset), (batch_size,), generator=gen)
        tokens, lengths = tokens_all[b], lengths_all[b]
        tokens = tokens[:, : int(lengths.max())]
        if word_dropout > 0:
            drop = (torch.rand(tokens.shape, generator=gen) < word_dropout) & (tokens > 0)
            tokens = tokens.masked_fill(drop, model.word_index[UNK])
        loss = F.cross_entropy(model(to_tensor(images[index[b]]), tokens, lengths), labels[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += loss.item()
        if step % log_every == 0 or step == steps:
            n = log_every if step % log_every == 0 else step % log_every
            history["loss"].append((step, running / n))
            msg = f"step {step}/{steps} loss {running / n:.3f} {time.time() - t0:.0f}s"
            if eval_set is not None:
                acc = evaluate(model, eval_set)["overall"]
                history["eval"].append((step, acc))
                msg += f" eval {acc:.3f}"
                model.train()
            log(msg)
            running = 0.0
    model.eval()
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
    out["by_qtype"] = {k: round(float(np.mean(v)), 4) for k, v in sorted(correct.items())}
    return out


def train_command(out: str | Path, init: str | Path | None = None, n_scenes: int = 5000, per_scene: int = 1,
                  crops_per_scene: int = 2, steps: int = 3000, batch_size: int = 64, lr: float = 2e-3,
                  word_dropout: float = 0.1, domain: str = "clean", seed: int = 0, threads: int = 1,
                  eval_scenes: int = 100, log_every: int = 500) -> dict:
    """Train (or fine-tune from ``init``) the shapes VQA model and save it to ``out``.

    ``visforge engines train-vqa`` calls this. Returns the training record saved in config.json.
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
                 seed=seed, log_every=log_every, eval_set=evalset)
    extra = {"command": "visforge engines train-vqa", "n_scenes": n_scenes, "per_scene": per_scene,
             "crops_per_scene": crops_per_scene, "word_dropout": word_dropout, "n_qa": len(data), "steps": steps,
             "batch_size": batch_size, "lr": lr, "domain": domain, "seed": seed, "threads": threads,
             "init": str(init) if init else None, "train_seconds": hist["seconds"],
             "final_eval": hist["eval"][-1][1] if hist["eval"] else None}
    save_model(model, out, extra)
    print(f"saved {out} ({hist['seconds']}s training)")
    return extra
