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

Training (``train_command``, ``visforge engines train-embed``): rendered shapes-world scenes
(through the detector), captions of 1-4 true clauses in the world's *training* phrasings,
symmetric InfoNCE over the batch plus one hard negative caption per image (one clause changed
so it is false). Other captions of the batch that also hold for an image (checked on ground
truth: labels only) are left out of its negatives. The encoders see pixels and text only.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from builder.world.captions import CLAUSE_KINDS, PATTERNS, hard_negative, random_clauses, render_clauses
from builder.world.scene import COLORS, SHAPES, SIZES, get_domain, render_array, sample_scene

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "embed"
ARCH = "dual-objects-clauses-v1"
PAD, UNK = "<pad>", "<unk>"
_CLAUSE_SPLIT = re.compile(r"[.;,:!?]|\band\b")


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def split_clauses(text: str) -> list[list[str]]:
    """Token lists of the caption's clauses (empty clauses dropped; at least one, maybe empty)."""
    out = [tokenize(c) for c in _CLAUSE_SPLIT.split(text)]
    return [c for c in out if c] or [[]]


def build_vocab() -> list[str]:
    """Every word of the training phrasings and the world's vocabulary (never held-out words)."""
    words = [PAD, UNK] + list(COLORS) + list(SHAPES) + [s + "s" for s in SHAPES] + list(SIZES)
    words += [str(d) for d in range(10)] + ["a", "an", "object", "objects", "left", "right", "of", "above", "below"]
    for kind in CLAUSE_KINDS:
        for pattern in PATTERNS["train"][kind]:
            words += tokenize(re.sub(r"\{[a-z_]+\}", " ", pattern))
    return list(dict.fromkeys(words))


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


class DualEncoder(nn.Module):
    """Image and clause encoders into ``dim``-d unit vectors; ``config`` is plain JSON.

    Image side (the ROSA recipe: align a frozen vision model with a small trained one): the
    shapes detector (classical CV on the pixels, frozen) lists the objects; a set encoder embeds
    each object and each ordered pair of objects (their offset carries "left of", "above"),
    pools them (max: what is there; sum: how many) and projects. Text side: a dilated 1-D
    convolution over each clause's words (receptive field of 15 words).
    """

    def __init__(self, vocab: list[str], emb: int = 48, hidden: int = 96, dim: int = 128):
        super().__init__()
        self.config = {"arch": ARCH, "vocab": list(vocab), "emb": emb, "hidden": hidden, "dim": dim,
                       "max_objects": MAX_OBJECTS, "obj_features": OBJ_FEATURES}
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
        ids, lengths, owner = self.clause_ids(texts)
        dev = self.embed.weight.device
        return self.encode_clauses(ids.to(dev), lengths, owner, len(texts))


def save_model(model: DualEncoder, out_dir, extra: dict | None = None) -> Path:
    """``model.safetensors`` (float16) and ``config.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    config = {**model.config, **({"training": extra} if extra else {})}
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    return out


def load_model(weights_dir=DEFAULT_WEIGHTS, device: str = "cpu") -> DualEncoder:
    d = Path(weights_dir)
    for name in ("config.json", "model.safetensors"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d}: no {name}; train weights with `visforge engines train-embed --out DIR`")
    cfg = json.loads((d / "config.json").read_text())
    if cfg.get("arch") != ARCH:
        raise ValueError(f"{d}: architecture {cfg.get('arch')!r} is not {ARCH!r}")
    model = DualEncoder(cfg["vocab"], cfg["emb"], cfg["hidden"], cfg["dim"])
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(d / "model.safetensors")).items()}
    model.load_state_dict(state)
    return model.to(device).eval()


# ---- training -------------------------------------------------------------------------------
def render_scenes(n: int, seed: int, domain="clean"):
    """(scenes, (n, MAX_OBJECTS, OBJ_FEATURES) encoder inputs from the rendered pixels)."""
    from builder.tools.backends.shapes import ShapesDetector

    dom, detector = get_domain(domain), ShapesDetector()
    scenes = [sample_scene(np.random.default_rng([seed, i, 11]), dom) for i in range(n)]
    inputs = torch.cat([object_inputs([render_array(sc) for sc in scenes[s: s + 256]], detector)
                        for s in range(0, n, 256)])
    return scenes, inputs


_SIZE_I = {None: 0, **{v: i + 1 for i, v in enumerate(SIZES)}}
_COLOR_I = {None: 0, **{v: i + 1 for i, v in enumerate(COLORS)}}
_SHAPE_I = {None: 0, **{v: i + 1 for i, v in enumerate(SHAPES)}}


def _count_table(scenes: list) -> np.ndarray:
    """[scene, size|any, colour|any, shape|any] -> number of matching objects (ground truth)."""
    t = np.zeros((len(scenes), 3, 8, 6), np.int16)
    for j, scene in enumerate(scenes):
        for o in scene.objects:
            s, c, h = _SIZE_I[o.size], _COLOR_I[o.color], _SHAPE_I[o.shape]
            for ss in (0, s):
                for cc in (0, c):
                    for hh in (0, h):
                        t[j, ss, cc, hh] += 1
    return t


def _spec_i(spec) -> tuple[int, int, int]:
    return _SIZE_I[spec.size], _COLOR_I[spec.color], _SHAPE_I[spec.shape]


def _possible(caps: list[list], scenes: list) -> torch.Tensor:
    """[i, j] True when caption i may hold for scene j (not definitely false; ground truth).

    Exists and count clauses are table look-ups; relations are checked exactly only for scenes
    that have both objects.
    """
    from builder.world.tasks import spatial_margin

    table = _count_table(scenes)
    out = np.ones((len(caps), len(scenes)), bool)
    for i, clauses in enumerate(caps):
        ok = out[i]
        for c in clauses:
            n = table[:, *_spec_i(c.a)]
            if c.kind == "count":
                ok &= n == c.k
            else:
                ok &= n > 0
            if c.kind == "relation":
                ok &= table[:, *_spec_i(c.b)] > 0
        for j in np.flatnonzero(ok):
            if any(c.kind == "relation" and c.holds(scenes[j].objects, spatial_margin(scenes[j])) is False
                   for c in clauses):
                ok[j] = False
        ok[i] = True
    return torch.from_numpy(out)


def train(model: DualEncoder, scenes, pics: np.ndarray, steps: int, batch_size: int = 128, lr: float = 2e-3,
          word_dropout: float = 0.1, seed: int = 0, log_every: int = 100, log=print,
          max_seconds: float | None = None) -> dict:
    """Train in place; returns a small history. ``max_seconds`` stops early (a guard on busy machines)."""
    from builder.core.training import TrainConfig, train_loop

    t0, running, hist = time.time(), [0.0], {"loss": [], "steps_done": 0}
    unk = model.word_index[UNK]

    def batches(_epoch, rng):
        while True:
            idx = rng.choice(len(scenes), batch_size, replace=False)
            batch = [scenes[i] for i in idx]
            caps, texts, negs, neg_owner = [], [], [], []
            for b, scene in enumerate(batch):
                clauses = random_clauses(scene, rng, int(rng.integers(1, 5)))
                caps.append(clauses)
                texts.append(render_clauses(clauses, rng, "train"))
                hard = hard_negative(clauses, scene, rng)
                if hard is not None:
                    negs.append(render_clauses(hard, rng, "train"))
                    neg_owner.append(b)
            yield idx, caps, batch, texts, negs, neg_owner

    def loss_fn(m, data):
        idx, caps, batch, texts, negs, neg_owner = data
        ids, lengths, owner = m.clause_ids(texts + negs)
        if word_dropout > 0:
            ids = ids.masked_fill((torch.rand(ids.shape) < word_dropout) & (ids > 0), unk)
        txt = m.encode_clauses(ids, lengths, owner, len(texts) + len(negs))
        img = m.encode_images(pics[torch.from_numpy(idx)])
        scale = m.logit_scale.exp().clamp(max=100)
        possible = _possible(caps, batch)  # [caption, image]
        pos_mask = possible & ~torch.eye(batch_size, dtype=torch.bool)
        t2i = (scale * txt[:batch_size] @ img.T).masked_fill(pos_mask, -1e4)
        i2t = (scale * img @ txt.T)
        mask = torch.zeros_like(i2t, dtype=torch.bool)
        mask[:, :batch_size] = pos_mask.T
        if negs:
            own = torch.tensor(neg_owner)
            mask[:, batch_size:] = torch.arange(batch_size)[:, None] != own[None, :]
        i2t = i2t.masked_fill(mask, -1e4)
        target = torch.arange(batch_size)
        return 0.5 * (F.cross_entropy(t2i, target) + F.cross_entropy(i2t, target))

    def report(r: dict) -> None:
        step = hist["steps_done"] = r["step"]
        running[0] += r["loss"]
        if step % log_every == 0 or step == steps:
            n = log_every if step % log_every == 0 else step % log_every
            hist["loss"].append((step, round(running[0] / n, 4)))
            scale = float(model.logit_scale.detach().exp().clamp(max=100))
            log(f"step {step}/{steps} loss {running[0] / n:.3f} scale {scale:.1f} {time.time() - t0:.0f}s")
            running[0] = 0.0

    def over_budget() -> bool:  # checked before each step; the first step always runs
        if max_seconds is None or not hist["steps_done"] or time.time() - t0 <= max_seconds:
            return False
        log(f"stopping at step {hist['steps_done']}: the {max_seconds:.0f}s budget is spent")
        return True

    cfg = TrainConfig(steps=steps, lr=lr, weight_decay=1e-4, schedule="cosine",
                      warmup_steps=max(1, min(100, steps // 15)), grad_clip=1.0, seed=seed)
    train_loop(model, batches, loss_fn, cfg, on_step=report, should_stop=over_budget)
    hist["seconds"] = round(time.time() - t0, 1)
    return hist


@torch.no_grad()
def retrieval_check(model: DualEncoder, n: int = 200, seed: int = 10_000, split: str = "heldout") -> dict:
    """Quick text->image recall on ``n`` fresh scenes with distinctive captions in ``split``."""
    from builder.world.captions import distinctive_caption

    scenes, pics = render_scenes(n, seed)
    rng = np.random.default_rng(seed)
    pairs = [(i, c) for i in range(n) if (c := distinctive_caption(scenes, i, rng)) is not None]
    texts = [render_clauses(c, rng, split) for _, c in pairs]
    img = model.encode_images(pics)
    txt = model.encode_texts(texts)
    sims = txt @ img.T
    target = torch.tensor([i for i, _ in pairs])
    rank = (sims > sims[torch.arange(len(pairs)), target][:, None]).sum(1)
    return {f"t2i_R@{k}": round(float((rank < k).float().mean()), 4) for k in (1, 5, 10)} | {"n": len(pairs)}


def train_command(out: str | Path, n_scenes: int = 5000, steps: int = 1200, batch_size: int = 128,
                  lr: float = 3e-3, word_dropout: float = 0.1, seed: int = 0, threads: int = 1,
                  log_every: int = 50, max_minutes: float | None = 18.0) -> dict:
    """Train the shapes dual encoder and save it to ``out`` (``visforge engines train-embed``)."""
    torch.set_num_threads(threads)
    t0 = time.time()
    scenes, pics = render_scenes(n_scenes, seed)
    print(f"rendered {n_scenes} scenes and ran the detector in {time.time() - t0:.0f}s")
    torch.manual_seed(seed)
    model = DualEncoder(build_vocab())
    print(f"{sum(p.numel() for p in model.parameters())} parameters")
    hist = train(model, scenes, pics, steps, batch_size, lr, word_dropout, seed, log_every,
                 max_seconds=None if max_minutes is None else 60 * max_minutes - (time.time() - t0))
    check = retrieval_check(model, n=200)
    print(f"held-out phrasing check over 200 scenes: {check}")
    extra = {"command": "visforge engines train-embed", "n_scenes": n_scenes, "steps": steps,
             "batch_size": batch_size, "lr": lr, "word_dropout": word_dropout, "seed": seed, "threads": threads,
             "steps_done": hist["steps_done"], "max_minutes": max_minutes,
             "train_seconds": hist["seconds"], "total_seconds": round(time.time() - t0, 1),
             "final_loss": hist["loss"][-1][1], "heldout_check": check}
    save_model(model, out, extra)
    print(f"saved {out} ({hist['seconds']}s training, {time.time() - t0:.0f}s in all)")
    return extra
