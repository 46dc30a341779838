"""Training data, losses and the staged trainer of the shapes-world VQA network.

Everything a later fine-tuning step (SelTDA pseudo-labels, domain adaptation) needs is public:

* ``build_dataset(n_scenes, seed, domain, split)`` renders shapes-world scenes and returns
  ``builder.core.qa.QA`` items whose ``meta`` holds ``qtype``, ``split`` and ``objects`` (the
  perception labels). Ground truth is read here only to write labels; the model sees pixels and
  question text alone.
* ``train(model, dataset, steps=...)`` trains on anything ``builder.core.qa.as_qa`` accepts
  (``QA`` items, plain ``(image, question, answer)`` triples, ...).
* ``evaluate``; the network (an artifact: ``save_pretrained``/``from_pretrained``) is in
  ``builder.domains.shapes.nets.vqa``.

``train_command(out, VQATrainConfig(...))`` runs the three stages and saves the weights;
``VQATrainConfig``'s defaults are the ones the committed weights were trained with (see
``weights/vqa/README.md``), and ``visforge engines train-vqa`` builds its options from them::

    visforge engines train-vqa --out builder/domains/shapes/weights/vqa

A reduced run (seconds): ``... train-vqa --out /tmp/w --n-scenes 200 --perception-steps 20 --steps 30``.
Resume or fine-tune from existing weights with ``--init DIR``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from builder.core.qa import QA, as_qa
from builder.domains.shapes.nets.vqa import (
    ANSWERS,
    N_ATTR,
    UNK,
    ShapesVQANet,
    Slots,
    build_vocab,
    resize_square,
    square_placement,
    to_tensor,
)
from builder.domains.shapes.training.config import MIX_DOMAIN, VQATrainConfig, config_flags
from builder.domains.shapes.vocab import COLORS, SHAPES, SIZES, ObjectSpec
from builder.domains.shapes.world.scene import get_domain, random_domain, render_array, sample_scene
from builder.domains.shapes.world.tasks import QTYPES, TEMPLATES, make_example

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
# Size questions about a named object (the world generator only asks colour and shape).
SIZE_TEMPLATES = (["What size is the {obj}?", "Is the {obj} small or large?"], ["Tell me the size of the {obj}."])


def _qa(image: np.ndarray, question: str, answer: str, qtype: str, split: str, objects: tuple) -> QA:
    """A labelled item: ``meta`` holds the question type, the phrasing split and ``objects``, the
    perception labels ((x0, y0, x1, y1, colour, shape, size) per object, in pixels)."""
    return QA(image, question, answer, {"qtype": qtype, "split": split, "objects": objects})


def _object_labels(objs, dx: int = 0, dy: int = 0) -> tuple:
    return tuple((int(o.box[0] - dx), int(o.box[1] - dy), int(o.box[2] - dx), int(o.box[3] - dy),
                  list(COLORS).index(o.color), SHAPES.index(o.shape), SIZES.index(o.size)) for o in objs)


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
    values, truth = (COLORS, obj.color) if kind == "crop_is_color" else (SHAPES, obj.shape)
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
            return ObjectSpec(color=COLORS[rng.integers(len(COLORS))], shape=SHAPES[rng.integers(len(SHAPES))])
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
                    out.append(_qa(pixels, ex["query"], ex["expected"], qtype, split, labels))
        sq = _size_question(scene, rng, split)
        if sq:
            out.append(_qa(pixels, sq[0], sq[1], "size", split, labels))
        tie = _equal_compare(scene, np.random.default_rng([seed, i, 13]), split) if i % 3 == 0 else None
        if tie:
            out.append(_qa(pixels, tie[0], tie[1], "compare", split, labels))
        for j in rng.permutation(len(scene.objects))[:crops_per_scene]:
            obj = scene.objects[j]
            x0, y0, x1, y1 = _crop_box(obj.box, scene.width, scene.height, rng)
            crop = np.ascontiguousarray(pixels[y0:y1, x0:x1])
            crop_labels = _object_labels([obj], x0, y0)
            out += [_qa(crop, q, a, t, split, crop_labels) for q, a, t in _crop_questions(obj, rng, split)]
    return out


# ---- training -------------------------------------------------------------------------------
def _tensorize(model: ShapesVQANet, items: list[QA]) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor,
                                                               tuple]:
    """Resized uint8 images (each distinct array once: items of one scene share it), the item ->
    image index, questions, answer labels and the images' perception targets (``aux_targets``
    from ``meta["objects"]``)."""
    size, slot, pics, idx, objs = model.config["image_size"], {}, [], [], []
    for q in items:
        key = id(q.image)
        if key not in slot:
            slot[key] = len(pics)
            pics.append(resize_square(q.image, size))
            objs.append((q.image.shape[:2], tuple(q.meta.get("objects") or ())))
        idx.append(slot[key])
    unknown = sorted({q.answer for q in items} - set(model.answers))
    if unknown:
        raise ValueError(f"answers outside the model's vocabulary: {unknown[:10]}")
    labels = torch.tensor([model.answers.index(q.answer) for q in items])
    return (torch.from_numpy(np.stack(pics)), torch.tensor(idx), [q.question for q in items], labels,
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


def _sample_weights(items: list[QA], qtype_weights: dict | None) -> torch.Tensor | None:
    if not qtype_weights:
        return None
    qts = [q.meta.get("qtype", "") for q in items]
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
    with object labels in ``meta["objects"]``): objectness heatmap, attributes and centre offsets."""
    from builder.core.seeding import torch_generator
    from builder.core.training import TrainConfig, train_loop

    gen = torch_generator(seed, "perception batches")
    images, _, _, _, (has, centre, attrs) = _tensorize(model, [as_qa(x) for x in dataset])
    keep = has.nonzero().flatten()
    if not len(keep):
        raise ValueError("no item carries object labels (meta['objects']); nothing to train perception on")

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
    """Train ``model`` in place on ``dataset`` (``QA`` items or anything ``as_qa`` accepts, e.g.
    (image, question, answer) triples); returns a small history.

    Cosine learning-rate decay after a linear warmup. ``word_dropout`` replaces question words by
    <unk> at random, so unseen words in new phrasings (which map to <unk>) are not out of
    distribution. ``qtype_weights`` (e.g. ``QTYPE_WEIGHTS``) samples items by their question type
    (``meta["qtype"]``). ``aux_weight``: weight of the auxiliary perception loss on items that carry
    object labels (``meta["objects"]``, training labels from the world; the model never sees them as
    input). ``freeze_perception`` trains the question reasoning alone on slots computed once per
    image (fast: after ``pretrain_perception``). Call again with a lower ``lr`` to fine-tune.
    """
    from builder.core.seeding import torch_generator
    from builder.core.training import TrainConfig, train_loop

    items = [as_qa(x) for x in dataset]
    if not items:
        raise ValueError("empty training set")
    gen = torch_generator(seed, "batches")
    images, index, questions, labels, (has, centre, attrs) = _tensorize(model, items)
    tokens_all, lengths_all = model.encode_questions(questions)
    frozen = _frozen_slots(model, images) if freeze_perception else None
    weights = _sample_weights(items, qtype_weights)

    def batches(_epoch, _rng):
        while True:
            if weights is None:
                b = torch.randint(len(items), (batch_size,), generator=gen)
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
    """Accuracy overall and per ``meta["qtype"]`` (items without a qtype count under "all");
    ``dataset`` holds anything ``as_qa`` accepts."""
    items = [as_qa(x) for x in dataset]
    correct: dict[str, list[int]] = {}
    for s in range(0, len(items), batch_size):
        chunk = items[s: s + batch_size]
        preds = model.predict([q.image for q in chunk], [q.question for q in chunk])
        for q, (ans, _) in zip(chunk, preds, strict=True):
            correct.setdefault(q.meta.get("qtype") or "all", []).append(int(ans == q.answer))
    everything = [c for v in correct.values() for c in v]
    out = {"overall": round(float(np.mean(everything)), 4) if everything else 0.0, "n": len(everything)}
    for name, keep in (("scene_level", lambda t: t in SCENE_QTYPES), ("crop", lambda t: t.startswith("crop_"))):
        vals = [c for t, v in correct.items() if keep(t) for c in v]
        if vals:
            out[name] = round(float(np.mean(vals)), 4)
            out[f"n_{name}"] = len(vals)
    out["by_qtype"] = {k: round(float(np.mean(v)), 4) for k, v in sorted(correct.items())}
    return out


def train_command(out: str | Path, config: VQATrainConfig | None = None, **overrides) -> dict:
    """Train (or fine-tune from ``config.init``) the shapes VQA model and save it to ``out``.

    ``visforge engines train-vqa`` calls this; ``overrides`` replace fields of ``config`` (or of
    the defaults). Returns the training record saved as the artifact's ``info`` in config.json
    (with the final evaluation per question type).
    """
    c = dataclasses.replace(config or VQATrainConfig(), **overrides)
    torch.set_num_threads(c.threads)
    t0 = time.time()
    data = build_dataset(c.n_scenes, c.seed, c.domain, "train", c.per_scene, c.crops_per_scene)
    # evaluation scenes use another seed, so they are never training scenes
    evalset = build_dataset(c.eval_scenes, c.seed + 10_000, c.domain, "train") if c.eval_scenes else None
    print(f"{len(data)} training QA from {c.n_scenes} scenes in {time.time() - t0:.0f}s")
    torch.manual_seed(c.seed)  # the initial weights too, so a run is repeatable bit for bit
    model = ShapesVQANet.from_pretrained(c.init) if c.init else ShapesVQANet(build_vocab(q.question for q in data))
    print(f"{sum(p.numel() for p in model.parameters())} parameters")
    weights = QTYPE_WEIGHTS if c.weighted else None
    seconds = {}
    if c.perception_steps:
        seconds["perception"] = pretrain_perception(model, data, c.perception_steps, lr=3 * c.lr / 2, seed=c.seed,
                                                    log_every=c.log_every)["seconds"]
    if c.steps:
        seconds["reasoning"] = train(model, data, steps=c.steps, batch_size=c.batch_size, lr=c.lr,
                                     word_dropout=c.word_dropout, seed=c.seed, log_every=c.log_every,
                                     eval_set=evalset, qtype_weights=weights, freeze_perception=True)["seconds"]
    if c.joint_steps:
        seconds["joint"] = train(model, data, steps=c.joint_steps, batch_size=32, lr=c.lr / 10,
                                 word_dropout=c.word_dropout, seed=c.seed + 1, log_every=c.log_every,
                                 eval_set=evalset, qtype_weights=weights)["seconds"]
    final = evaluate(model, evalset) if evalset else None
    extra = {"command": f"visforge engines train-vqa --out {out} {config_flags(c)}", **dataclasses.asdict(c),
             "n_qa": len(data), "qtype_weights": weights, "train_seconds": seconds,
             "total_seconds": round(time.time() - t0, 1),
             "final_eval": final["overall"] if final else None, "final_eval_detail": final}
    model.info = extra
    model.save_pretrained(out)
    print(f"saved {out} ({round(time.time() - t0)}s)")
    return extra
