"""Training of the shapes-world dual encoder (``builder.domains.shapes.nets.embed``).

``train_command(out, EmbedTrainConfig(...))`` (``visforge engines train-embed``) trains on: rendered shapes-world scenes
(through the detector), captions of 1-4 true clauses in the world's *training* phrasings,
symmetric InfoNCE over the batch plus one hard negative caption per image (one clause changed
so it is false). Other captions of the batch that also hold for an image (checked on ground
truth: labels only) are left out of its negatives. The encoders see pixels and text only.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from builder.domains.shapes.detector import ObjectDetector
from builder.domains.shapes.nets.embed import PAD, UNK, DualEncoder, object_inputs, tokenize
from builder.domains.shapes.training.config import EmbedTrainConfig, config_flags
from builder.domains.shapes.vocab import COLORS, SHAPES, SIZES
from builder.domains.shapes.world.captions import (
    CLAUSE_KINDS,
    PATTERNS,
    distinctive_caption,
    hard_negative,
    random_clauses,
    render_clauses,
)
from builder.domains.shapes.world.scene import get_domain, render_array, sample_scene
from builder.domains.shapes.world.tasks import spatial_margin


def build_vocab() -> list[str]:
    """Every word of the training phrasings and the world's vocabulary (never held-out words)."""
    words = [PAD, UNK] + list(COLORS) + list(SHAPES) + [s + "s" for s in SHAPES] + list(SIZES)
    words += [str(d) for d in range(10)] + ["a", "an", "object", "objects", "left", "right", "of", "above", "below"]
    for kind in CLAUSE_KINDS:
        for pattern in PATTERNS["train"][kind]:
            words += tokenize(re.sub(r"\{[a-z_]+\}", " ", pattern))
    return list(dict.fromkeys(words))



# ---- training -------------------------------------------------------------------------------
def render_scenes(n: int, seed: int, domain="clean"):
    """(scenes, (n, MAX_OBJECTS, OBJ_FEATURES) encoder inputs from the rendered pixels)."""
    dom, detector = get_domain(domain), ObjectDetector()
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


def train_command(out: str | Path, config: EmbedTrainConfig | None = None, **overrides) -> dict:
    """Train the shapes dual encoder and save it to ``out`` (``visforge engines train-embed``);
    ``overrides`` replace fields of ``config`` (or of the defaults). Returns the training record
    (the artifact's ``info`` in ``config.json``)."""
    c = dataclasses.replace(config or EmbedTrainConfig(), **overrides)
    torch.set_num_threads(c.threads)
    t0 = time.time()
    scenes, pics = render_scenes(c.n_scenes, c.seed)
    print(f"rendered {c.n_scenes} scenes and ran the detector in {time.time() - t0:.0f}s")
    torch.manual_seed(c.seed)
    model = DualEncoder(build_vocab())
    print(f"{sum(p.numel() for p in model.parameters())} parameters")
    budget = None if c.max_minutes is None else 60 * c.max_minutes - (time.time() - t0)
    hist = train(model, scenes, pics, c.steps, c.batch_size, c.lr, c.word_dropout, c.seed, c.log_every,
                 max_seconds=budget)
    check = retrieval_check(model, n=200)
    print(f"held-out phrasing check over 200 scenes: {check}")
    extra = {"command": f"visforge engines train-embed --out {out} {config_flags(c)}", **dataclasses.asdict(c),
             "steps_done": hist["steps_done"], "train_seconds": hist["seconds"],
             "total_seconds": round(time.time() - t0, 1), "final_loss": hist["loss"][-1][1], "heldout_check": check}
    model.info = extra
    model.save_pretrained(out)
    print(f"saved {out} ({hist['seconds']}s training, {time.time() - t0:.0f}s in all)")
    return extra
