"""Fine-tuning the VQA engine on a workspace dataset, resumable after a kill.

One function, ``finetune``, that any VQA model plugs into through a small adapter
(``VQAAdapter``): how to batch (image, question, answer) triples, the loss, batched prediction,
and how to save/load a checkpoint folder. The steps, checkpoints, resume and best-checkpoint
choice are the shared loop's (``builder.core.training.train_loop``); this module adds the
data split, replay mixing and the recipe's rules for which checkpoint is best.
Adapters ship for the shapes-world default VQA model (``ShapesVQAAdapter``) and for
Hugging Face BLIP (``BlipVQAAdapter``, the ``HFVQA`` backend).

A run lives in one folder (``Workspace.dir("checkpoints", run)``)::

    run.json                  config, data fingerprint and the train/validation split (fixed at start)
    epoch-0001/ ...           one checkpoint per epoch: the adapter's save_pretrained-style folder
                              (safetensors) + trainer_state.pt (optimizer, step) + state.json
    history.json              loss curve: per-step training loss and per-epoch validation figures
    result.json               before/after evaluation, best epoch, wall time

Each epoch folder is written under a temporary name and renamed when complete, so a process
killed at any moment leaves only complete checkpoints; ``finetune`` with ``resume=True``
continues from the newest one. Per-epoch shuffling and seeding derive from (seed, epoch)
(``builder.core.seeding``), so a resumed run reproduces the weights of an uninterrupted one.

The loop uses ``accelerate.Accelerator`` for device placement, backward and gathering, so
``accelerate launch -m builder.interfaces.cli finetune ...`` runs it on several GPUs unchanged (only the main
process writes files).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from builder.core.atomic import atomic_write_json
from builder.core.errors import UserError
from builder.core.images import ImageError, load_image
from builder.core.metrics import normalise_text
from builder.core.seeding import numpy_rng, seed_everything
from builder.core.training import (
    SCHEDULES,
    TrainConfig,
    clear_partial_checkpoints,
    epoch_checkpoints,
    train_loop,
)
from builder.tools.engines import Answer, as_rgb_array

# ----------------------------------------------------------------------------------------------
# Data: (image, question, answer) triples and their on-disk form in a workspace
# ----------------------------------------------------------------------------------------------


@dataclass
class QA:
    """One training or evaluation triple. ``meta`` carries anything else (qtype, source, ...)."""

    image: np.ndarray
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


def as_qa(item) -> QA:
    """Accept a QA, a (image, question, answer[, meta]) tuple or a dict with those keys."""
    if isinstance(item, QA):
        return item
    if isinstance(item, dict):
        meta = {k: v for k, v in item.items() if k not in ("image", "question", "answer")}
        return QA(as_rgb_array(item["image"]), str(item["question"]), str(item["answer"]), meta)
    if isinstance(item, (tuple, list)) and len(item) >= 3:
        if hasattr(item, "_fields"):  # a NamedTuple such as training.vqa.QA: extra fields become meta
            meta = {k: v for k, v in zip(item._fields[3:], item[3:], strict=True)}
        else:
            meta = dict(item[3]) if len(item) == 4 else {}
        return QA(as_rgb_array(item[0]), str(item[1]), str(item[2]), meta)
    raise TypeError(f"expected a QA, an (image, question, answer) tuple or a dict, got {type(item).__name__}")


def save_qa_dataset(root: str | Path, items: Sequence, overwrite: bool = False) -> Path:
    """Write triples to ``root`` (e.g. ``ws.dir("datasets", name)``): PNGs named by content hash
    under ``images/`` and one JSON line per item in ``items.jsonl`` (question, answer, meta)."""
    from PIL import Image

    root = Path(root)
    if (root / "items.jsonl").exists() and not overwrite:
        raise FileExistsError(f"{root}: dataset exists; pass overwrite=True to replace it")
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for item in map(as_qa, items):
        digest = hashlib.sha256(item.image.tobytes() + str(item.image.shape).encode()).hexdigest()[:16]
        rel = f"images/{digest}.png"
        if not (root / rel).exists():
            tmp = root / f"{rel}.tmp{os.getpid()}"
            Image.fromarray(item.image).save(tmp, format="PNG")
            os.replace(tmp, root / rel)
        lines.append(json.dumps({"image": rel, "question": item.question, "answer": item.answer, "meta": item.meta}))
    tmp = root / f"items.jsonl.tmp{os.getpid()}"
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, root / "items.jsonl")  # the dataset appears complete or not at all
    return root


def load_qa_dataset(root: str | Path) -> list[QA]:
    """Read a dataset written by ``save_qa_dataset`` (images through the guarded loader)."""
    root = Path(root)
    path = root / "items.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{root}: no items.jsonl; not a VQA dataset folder")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            img = load_image(root / row["image"])
            out.append(QA(img, row["question"], row["answer"], row.get("meta", {})))
        except (json.JSONDecodeError, KeyError, OSError, ImageError) as e:
            raise ValueError(f"{path}:{n}: unreadable item ({e})") from None
    return out


def answers_match(pred: str, expected: str) -> bool:
    """Exact match after the metrics module's normalisation (case, spaces, final period)."""
    return normalise_text(pred) == normalise_text(expected)


# ----------------------------------------------------------------------------------------------
# Adapters: what the loop needs to know about a model
# ----------------------------------------------------------------------------------------------


class VQAAdapter(Protocol):
    """How ``finetune`` drives one kind of VQA model."""

    name: str

    def build(self):
        """The torch module to train (freshly loaded from the adapter's source weights)."""

    def collate(self, items: list[QA]) -> dict:
        """A training batch (tensors) for ``loss``."""

    def loss(self, model, batch: dict):
        """The scalar training loss for a batch."""

    def predict(self, model, items: list[QA]) -> list[Answer]:
        """Answers for a list of items (model in eval mode, no gradients)."""

    def save(self, model, path: Path) -> None:
        """Write a checkpoint folder ``engine(path)`` can serve from."""

    def load(self, model, path: Path) -> None:
        """Load a checkpoint folder's weights into ``model``."""

    def engine(self, path: Path):
        """A VQA engine (``VQAEngine``) serving a checkpoint folder."""


class BlipVQAAdapter:
    """Hugging Face BLIP VQA (``BlipForQuestionAnswering``): the ``HFVQA`` backend's model.

    The answer decoder is trained with teacher forcing on ``[DEC] answer [SEP]`` (the sequence
    ``generate`` produces), padding ignored in the loss. Checkpoints are ``save_pretrained``
    folders (model + processor), loadable by ``HFVQA(model=path)``.
    """

    name = "hf-blip-vqa"

    def __init__(self, model: str | Path, max_answer_tokens: int = 10):
        self.source = str(model)
        self.max_answer_tokens = max_answer_tokens
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(self.source)

    def build(self):
        from transformers import BlipForQuestionAnswering

        return BlipForQuestionAnswering.from_pretrained(self.source)

    def collate(self, items: list[QA]) -> dict:
        from PIL import Image

        batch = self.processor(images=[Image.fromarray(q.image) for q in items], text=[q.question for q in items],
                               padding=True, return_tensors="pt")
        tok = self.processor.tokenizer
        ans = tok([q.answer for q in items], padding=True, truncation=True,
                  max_length=self.max_answer_tokens + 2, return_tensors="pt")
        ids = ans.input_ids.clone()
        ids[:, 0] = tok.bos_token_id  # BLIP decodes from [DEC], not [CLS]
        labels = ids.masked_fill(ans.attention_mask == 0, -100)
        return {"pixel_values": batch.pixel_values, "input_ids": batch.input_ids,
                "attention_mask": batch.attention_mask, "decoder_input_ids": ids,
                "decoder_attention_mask": ans.attention_mask, "labels": labels}

    def loss(self, model, batch: dict):
        return model(**batch).loss

    def predict(self, model, items: list[QA]) -> list[Answer]:
        import torch
        from PIL import Image

        batch = self.processor(images=[Image.fromarray(q.image) for q in items], text=[q.question for q in items],
                               padding=True, return_tensors="pt")
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=self.max_answer_tokens, do_sample=False, num_beams=1,
                                 output_logits=True, return_dict_in_generate=True)
        steps = len(out.logits)
        logp = torch.stack([torch.log_softmax(lg.float(), -1) for lg in out.logits], 1)  # (B, steps, V)
        gen = out.sequences[:, -steps:]
        tok_lp = logp.gather(-1, gen.unsqueeze(-1)).squeeze(-1)
        sep = model.config.text_config.sep_token_id
        answers = []
        for i in range(len(items)):
            # mean log-probability up to and including the end token, as HFVQA computes it
            ends = (gen[i] == sep).nonzero()
            n = int(ends[0]) + 1 if len(ends) else steps
            conf = math.exp(float(tok_lp[i, :n].mean()))
            text = " ".join(self.processor.decode(out.sequences[i], skip_special_tokens=True).split())
            answers.append(Answer(text, min(1.0, max(0.0, conf))))
        return answers

    def save(self, model, path: Path) -> None:
        model.save_pretrained(path)  # safetensors
        self.processor.save_pretrained(path)

    def load(self, model, path: Path) -> None:
        from safetensors.torch import load_file

        state = load_file(str(Path(path) / "model.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        # tied weights are stored once; anything else missing means a wrong checkpoint
        real_missing = [k for k in missing if k not in _tied_keys(model)]
        if real_missing or unexpected:
            raise ValueError(f"{path}: checkpoint does not fit the model (missing {real_missing[:3]}, "
                             f"unexpected {unexpected[:3]})")

    def engine(self, path: Path):
        from builder.tools.backends.hf import HFVQA

        return HFVQA(model=str(path), max_new_tokens=self.max_answer_tokens)


def _tied_keys(model) -> set[str]:
    tied = getattr(model, "_tied_weights_keys", None) or {}
    keys = set(tied.keys() if isinstance(tied, dict) else tied)
    return keys


class ShapesVQAAdapter:
    """The shapes-world default VQA model (``builder.domains.shapes.nets.vqa.ShapesVQANet``).

    Built on the public API of it and ``builder.domains.shapes.training.vqa`` (``load_model``/``save_model``, ``resize_square``,
    ``to_tensor``, ``encode_questions``, ``predict``), so a checkpoint folder is exactly what
    the shapes VQA backend loads. ``word_dropout`` replaces question words by <unk> during
    training, as ``builder.domains.shapes.training.vqa.train`` does, so new phrasings stay in distribution. Items that
    carry object labels (``meta["objects"]``: the replayed original task) also train the
    perception heads with weight ``aux_weight``, so answers on new data cannot pull perception
    away from what it sees in the original domain.
    """

    name = "shapes-vqa"

    def __init__(self, weights: str | Path | None = None, word_dropout: float = 0.1, aux_weight: float = 0.5):
        from builder.domains.shapes.nets import vqa as vqa_net
        from builder.domains.shapes.training import vqa as vqa_train

        self._m, self._t = vqa_net, vqa_train  # the network, its training code
        self.source = Path(weights) if weights else vqa_net.DEFAULT_WEIGHTS
        self.word_dropout = word_dropout
        self.aux_weight = aux_weight
        self._vocab_model = None  # the model whose vocab/answers collate uses

    def build(self):
        self._vocab_model = self._m.load_model(self.source)
        return self._vocab_model

    def _ref(self):
        if self._vocab_model is None:
            self._vocab_model = self._m.load_model(self.source)
        return self._vocab_model

    def collate(self, items: list[QA]) -> dict:
        import torch

        ref = self._ref()
        size = ref.config["image_size"]
        x = self._m.to_tensor(np.stack([self._m.resize_square(q.image, size) for q in items]))
        tokens, lengths = ref.encode_questions([q.question for q in items])
        unknown = sorted({q.answer for q in items} - set(ref.answers))
        if unknown:
            raise FinetuneError(f"answers outside the shapes VQA vocabulary: {unknown[:5]}")
        labels = torch.tensor([ref.answers.index(q.answer) for q in items])
        has, centre, attrs = self._t.aux_targets([(q.image.shape[:2], tuple(q.meta.get("objects") or ()))
                                                  for q in items], size)
        return {"images": x, "tokens": tokens, "lengths": lengths, "labels": labels, "aux_has": has,
                "aux_centre": centre, "aux_attrs": attrs}

    def loss(self, model, batch: dict):
        import torch
        from torch.nn import functional as F

        tokens = batch["tokens"]
        if model.training and self.word_dropout > 0:
            drop = (torch.rand(tokens.shape, device=tokens.device) < self.word_dropout) & (tokens > 0)
            tokens = tokens.masked_fill(drop, self._ref().word_index[self._m.UNK])
        logits, aux = model(batch["images"], tokens, batch["lengths"], with_aux=True)
        loss = F.cross_entropy(logits, batch["labels"])
        if self.aux_weight > 0 and bool(batch["aux_has"].any()):
            loss = loss + self.aux_weight * self._t.aux_loss(aux, batch["aux_has"], batch["aux_centre"],
                                                             batch["aux_attrs"])
        return loss

    def predict(self, model, items: list[QA]) -> list[Answer]:
        out = model.predict([q.image for q in items], [q.question for q in items])
        return [Answer(a, c) for a, c in out]

    def save(self, model, path: Path) -> None:
        self._m.save_model(model, path)

    def load(self, model, path: Path) -> None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(Path(path) / "model.safetensors")))

    def engine(self, path: Path):
        from builder.tools.backends.shapes import ShapesVQA

        return ShapesVQA(weights=str(path))

    def replay_items(self, n: int, seed: int = 0) -> list[QA]:
        """About ``n`` items of the task the model was trained on (daylight shapes-world scenes,
        scene-level and crop questions, training phrasings), to mix into fine-tuning batches so
        the original task is not forgotten. Scenes come from seeds the default weights never saw."""
        data = self._t.build_dataset(max(1, n // 12), 900_000 + seed, self._t.MIX_DOMAIN, "train")
        return [as_qa(q) for q in data[:n]]


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


@dataclass
class FinetuneConfig:
    """Training settings. ``augment`` (an image -> image callable, seeded by torch's RNG) is not
    part of the saved config; ``throttle_s`` sleeps after each step (for demos of interruption).

    The defaults are a recipe that does not make the model worse: a small learning rate with
    ``schedule`` decay (cosine to 0 over the run, after ``warmup_steps``); ``replay_fraction`` of
    every batch drawn from the original task's data (``finetune(replay=...)``, or the adapter's
    ``replay_items``); the starting model scored on the validation split before training and
    kept as the best checkpoint unless an epoch beats it (``keep_start``); an epoch whose
    accuracy on held-back original-task items falls more than ``replay_guard`` below the
    start's is not eligible; training stops after ``patience`` epochs without better validation
    accuracy (0: never stops early).
    """

    epochs: int = 3
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    val_fraction: float = 0.2
    seed: int = 0
    eval_batch_size: int = 64
    throttle_s: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 10
    replay_fraction: float = 0.5
    replay_items: int = 1200
    keep_start: bool = True
    replay_guard: float = 0.02
    patience: int = 2


@dataclass
class FinetuneResult:
    """What a run produced: the run folder, the best/last checkpoint and the figures."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    before: dict
    after: dict
    history: dict
    resumed_from: int | None
    seconds: float

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


class FinetuneError(UserError, RuntimeError):
    """A run cannot start or continue (bad data, a run folder from another config, ...)."""


def _fingerprint(items: list[QA]) -> str:
    h = hashlib.sha256()
    for q in items:
        h.update(hashlib.sha256(q.image.tobytes()).digest())
        h.update(f"{q.question}\x00{q.answer}\x00".encode())
    return h.hexdigest()[:16]


def split_items(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded train/validation split of ``range(n)`` (validation gets at least one item)."""
    if n < 2:
        raise FinetuneError(f"need at least 2 items to split into train and validation, got {n}")
    perm = numpy_rng(seed, 7919).permutation(n)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return sorted(int(i) for i in perm[n_val:]), sorted(int(i) for i in perm[:n_val])


def evaluate(adapter: VQAAdapter, model, items: Sequence, batch_size: int = 64, accelerator=None,
             progress: bool = False) -> dict:
    """Exact-match accuracy (and per-``meta["qtype"]`` accuracy) of ``model`` on ``items``.

    With an ``accelerator``, each process scores its shard and the counts are gathered.
    """
    import torch

    items = [as_qa(x) for x in items]
    if not items:
        return {"accuracy": None, "n": 0, "by_qtype": {}}
    idx = list(range(len(items)))
    if accelerator is not None and accelerator.num_processes > 1:
        idx = idx[accelerator.process_index::accelerator.num_processes]
    model.eval()
    correct, qtypes = [], []
    for s in tqdm(range(0, len(idx), batch_size), desc="evaluate", disable=not progress, leave=False):
        chunk = [items[i] for i in idx[s:s + batch_size]]
        for q, a in zip(chunk, adapter.predict(model, chunk), strict=True):
            correct.append(answers_match(a.text, q.answer))
            qtypes.append(str(q.meta.get("qtype", "all")))
    if accelerator is not None and accelerator.num_processes > 1:
        # gather (correct, qtype id) pairs from every shard
        names = sorted({str(q.meta.get("qtype", "all")) for q in items})
        t = torch.tensor([[int(c), names.index(t)] for c, t in zip(correct, qtypes, strict=True)],
                         device=accelerator.device)
        allt = accelerator.gather_for_metrics(t).cpu().tolist()
        correct, qtypes = [bool(c) for c, _ in allt], [names[k] for _, k in allt]
    by: dict[str, list[bool]] = {}
    for c, t in zip(correct, qtypes, strict=True):
        by.setdefault(t, []).append(c)
    return {"accuracy": sum(correct) / len(correct), "n": len(correct),
            "by_qtype": {t: round(sum(v) / len(v), 4) for t, v in sorted(by.items())}}


def finetune(
    adapter: VQAAdapter,
    items: Sequence,
    run_dir: str | Path,
    config: FinetuneConfig | None = None,
    heldout: Sequence | None = None,
    resume: bool = True,
    progress: bool = True,
    augment: Callable[[np.ndarray], np.ndarray] | None = None,
    accelerator=None,
    replay: Sequence | None = None,
) -> FinetuneResult:
    """Fine-tune ``adapter``'s model on ``items``; a checkpoint per epoch in ``run_dir``.

    ``heldout`` items (never trained on) are scored before and after; without them the
    validation split is. With ``resume`` an existing run folder continues from its newest
    complete epoch (it must have been started with the same config and data). ``replay``:
    original-task items mixed into every batch (``config.replay_fraction``); without them an
    adapter's ``replay_items`` supplies ``config.replay_items`` of them. The best checkpoint is
    chosen by validation accuracy among the epochs and, with ``keep_start``, the starting model
    (then saved as ``run_dir/start``).
    """
    import torch
    from accelerate import Accelerator

    cfg = config or FinetuneConfig()
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0 or not 0 <= cfg.replay_fraction < 1:
        raise FinetuneError(f"invalid config {cfg}")
    if cfg.schedule not in SCHEDULES:
        raise FinetuneError(f"unknown schedule {cfg.schedule!r}; use constant, cosine or linear")
    t0 = time.perf_counter()
    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    main = acc.is_main_process
    run_dir = Path(run_dir)
    items = [as_qa(x) for x in items]
    heldout = [as_qa(x) for x in heldout] if heldout is not None else None
    train_idx, val_idx = split_items(len(items), cfg.val_fraction, cfg.seed)
    train, val = [items[i] for i in train_idx], [items[i] for i in val_idx]
    report = heldout if heldout else val
    if replay is None and cfg.replay_fraction > 0 and hasattr(adapter, "replay_items"):
        replay = adapter.replay_items(cfg.replay_items, cfg.seed)
    replay = [as_qa(x) for x in replay] if replay and cfg.replay_fraction > 0 else []
    # a fifth of the replay items (at most 300) are held back to guard the original task
    n_guard = min(300, len(replay) // 5)
    replay_val, replay = replay[:n_guard], replay[n_guard:]
    n_replay = min(cfg.batch_size - 1, round(cfg.batch_size * cfg.replay_fraction)) if replay else 0
    per_batch = cfg.batch_size - n_replay

    spec = {"adapter": adapter.name, "config": asdict(cfg), "data": _fingerprint(items), "n_items": len(items),
            "train": train_idx, "val": val_idx}
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        clear_partial_checkpoints(run_dir)
    acc.wait_for_everyone()
    spec_path = run_dir / "run.json"
    done = epoch_checkpoints(run_dir)
    if spec_path.exists():
        old = json.loads(spec_path.read_text())
        if not resume and done:
            raise FinetuneError(f"{run_dir}: already holds a run; pass resume=True or use a new folder")
        # More epochs or another throttle may continue a run; anything else would mix two runs.
        loose = ("epochs", "throttle_s", "eval_batch_size")
        same_cfg = {k: v for k, v in old.get("config", {}).items() if k not in loose} == {
            k: v for k, v in spec["config"].items() if k not in loose}
        changed = [k for k in ("adapter", "data", "n_items") if old.get(k) != spec[k]] + ([] if same_cfg else ["config"])
        if changed:
            raise FinetuneError(f"{run_dir}: started with other settings or data ({sorted(changed)}); "
                                "use a new run folder")
    elif main:
        atomic_write_json(spec_path, spec)

    seed_everything(cfg.seed)
    model = adapter.build()
    n_batches = -(-len(train) // per_batch)
    loop_cfg = TrainConfig(steps=cfg.epochs * max(1, -(-n_batches // acc.num_processes)), epochs=cfg.epochs,
                           lr=cfg.lr, weight_decay=cfg.weight_decay, schedule=cfg.schedule,
                           warmup_steps=cfg.warmup_steps, grad_clip=cfg.grad_clip, seed=cfg.seed,
                           patience=cfg.patience, keep_start=cfg.keep_start)

    def batches(epoch: int, rng):
        order = rng.permutation(len(train))
        chunks = [order[s:s + per_batch] for s in range(0, len(order), per_batch)]
        for b in chunks[acc.process_index::acc.num_processes]:  # each GPU its share
            chunk = [train[int(i)] for i in b]
            if n_replay:
                chunk += [replay[int(i)] for i in rng.integers(len(replay), size=n_replay)]
            if augment is not None:
                chunk = [QA(augment(q.image), q.question, q.answer, q.meta) for q in chunk]
            yield adapter.collate(chunk)

    meta: dict = {}

    def score(m, epoch: int) -> dict:
        if epoch == 0:  # the starting model on the report set: the "before" figures
            meta["before"] = evaluate(adapter, m, report, cfg.eval_batch_size, acc)
        return {"loss": round(_mean_loss(adapter, m, val, cfg.eval_batch_size, acc), 5),
                "accuracy": evaluate(adapter, m, val, cfg.eval_batch_size, acc)["accuracy"],
                "replay_accuracy": evaluate(adapter, m, replay_val, cfg.eval_batch_size, acc)["accuracy"]}

    # Early stop when validation accuracy stops improving; the best checkpoint is chosen among
    # the epochs that also keep the original task (an epoch may improve before it is eligible).
    out = train_loop(model, batches, adapter.loss, loop_cfg, evaluate=score, select=lambda h: _best_epoch(h, cfg),
                     improving=lambda h: _best_epoch(h, cfg, eligible_only=False),
                     run_dir=run_dir, save=adapter.save, load=adapter.load, meta=meta, accelerator=acc,
                     on_step=(lambda _r: time.sleep(cfg.throttle_s)) if cfg.throttle_s else None,
                     log=lambda m: tqdm.write(m, file=sys.stderr), desc="epoch" if progress else None)
    model = acc.unwrap_model(model)
    after = evaluate(adapter, model, report, cfg.eval_batch_size, acc)
    result = FinetuneResult(run_dir, out.best_checkpoint, out.last_checkpoint, meta["before"], after, out.history,
                            out.resumed_from, time.perf_counter() - t0)
    if main:
        atomic_write_json(run_dir / "result.json", {**result.to_dict(), "history": None,
                                                     "evaluated_on": "heldout" if heldout else "validation",
                                                     "best_epoch": out.best_epoch})
    return result


def _eligible(history: dict, cfg: FinetuneConfig) -> list[dict]:
    """Candidates for the best checkpoint: the start (with ``keep_start``) and every epoch that
    kept the original task within ``replay_guard`` of the start."""
    start = history.get("start")
    out = [start] if cfg.keep_start and start else []
    floor = None
    if start and start.get("replay_accuracy") is not None:
        floor = start["replay_accuracy"] - cfg.replay_guard
    for h in history["val"]:
        if floor is None or h.get("replay_accuracy") is None or h["replay_accuracy"] >= floor:
            out.append(h)
    return out


def _best_epoch(history: dict, cfg: FinetuneConfig, eligible_only: bool = True) -> int:
    """Highest validation accuracy, then lowest validation loss, then the earliest (the start
    wins ties); the last epoch when nothing is eligible. ``eligible_only=False`` ranks every
    epoch (and the start), ignoring the original-task guard."""
    start = [history["start"]] if "start" in history else []
    cands = _eligible(history, cfg) if eligible_only else start + history["val"]
    if not cands:
        return history["val"][-1]["epoch"]
    return max(cands, key=lambda h: (h["accuracy"], -h["loss"], -h["epoch"]))["epoch"]


def _mean_loss(adapter, model, items, batch_size, acc) -> float:
    import torch

    if not items:
        return float("nan")
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(items), batch_size):
            chunk = items[s:s + batch_size]
            batch = {k: v.to(acc.device) if hasattr(v, "to") else v for k, v in adapter.collate(chunk).items()}
            total += float(adapter.loss(model, batch)) * len(chunk)
            n += len(chunk)
    return total / n


def finetune_workspace(ws, dataset: str | Sequence[str], adapter: VQAAdapter, run: str,
                       config: FinetuneConfig | None = None, heldout: Sequence | None = None, **kw) -> FinetuneResult:
    """``finetune`` on the workspace dataset(s) ``dataset`` (folders under ``datasets/``),
    checkpoints in ``checkpoints/<run>``."""
    names = [dataset] if isinstance(dataset, str) else list(dataset)
    items = [q for name in names for q in load_qa_dataset(ws.dir("datasets", name))]
    return finetune(adapter, items, ws.dir("checkpoints", run), config, heldout=heldout, **kw)


# ----------------------------------------------------------------------------------------------
# Loss curve plot (PIL; matplotlib is not a dependency)
# ----------------------------------------------------------------------------------------------


def plot_history(history: dict | str | Path, out_png: str | Path, size=(640, 360)) -> Path:
    """Draw training loss per step (blue, smoothed) and validation loss per epoch (red dots)."""
    from PIL import Image, ImageDraw

    if not isinstance(history, dict):
        history = json.loads(Path(history).read_text())
    train = [(h["step"], h["loss"]) for h in history.get("train", [])]
    val = [(h["step"], h["loss"]) for h in history.get("val", []) if h.get("loss") == h.get("loss")]
    if not train:
        raise ValueError("history has no training steps to plot")
    w, h = size
    pad = 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    xs = [s for s, _ in train + val]
    ys = [v for _, v in train + val]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = min(ys), max(max(ys), min(ys) + 1e-6)

    def pt(s, v):
        return pad + (s - x0) / (x1 - x0) * (w - 2 * pad), h - pad - (v - y0) / (y1 - y0) * (h - 2 * pad)

    d.rectangle((pad, pad, w - pad, h - pad), outline="gray")
    k = max(1, len(train) // 50)  # moving average so the curve reads at a glance
    smooth = [(train[i][0], float(np.mean([v for _, v in train[max(0, i - k):i + 1]]))) for i in range(len(train))]
    d.line([pt(s, v) for s, v in smooth], fill=(40, 80, 220), width=2)
    for s, v in val:
        x, y = pt(s, v)
        d.ellipse((x - 4, y - 4, x + 4, y + 4), fill=(220, 40, 40))
    d.text((pad, 10), f"loss: train (blue), validation (red); y {y0:.3f}..{y1:.3f}", fill="black")
    d.text((pad, h - pad + 8), f"step {x0}..{x1}", fill="black")
    out = Path(out_png)
    img.save(out)
    return out


def plot_before_after(before: dict, after: dict, out_png: str | Path, title: str = "before / after",
                      size=(640, 360)) -> Path:
    """Bar chart of accuracy before (gray) and after (blue), overall and per question type, from
    two ``evaluate`` results (``accuracy``, ``n``, ``by_qtype``)."""
    from PIL import Image, ImageDraw

    groups = [("all", before.get("accuracy") or 0.0, after.get("accuracy") or 0.0)]
    for k in sorted(set(before.get("by_qtype", {})) | set(after.get("by_qtype", {}))):
        groups.append((k, before.get("by_qtype", {}).get(k, 0.0), after.get("by_qtype", {}).get(k, 0.0)))
    w, h = size
    pad, top = 40, 36
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    d.text((pad, 8), f"{title}  (n = {after.get('n', before.get('n'))}; gray before, blue after)", fill="black")
    base_y, plot_h = h - pad, h - pad - top
    d.line((pad, base_y, w - 10, base_y), fill="gray")
    for frac in (0.5, 1.0):
        y = base_y - frac * plot_h
        d.line((pad, y, w - 10, y), fill=(225, 225, 225))
        d.text((4, y - 6), f"{frac:.1f}", fill="gray")
    slot = (w - pad - 10) / max(1, len(groups))
    for i, (name, b, a) in enumerate(groups):
        x = pad + i * slot + slot * 0.1
        bw = slot * 0.38
        for j, (v, col) in enumerate(((b, (170, 170, 170)), (a, (40, 80, 220)))):
            x0 = x + j * bw
            d.rectangle((x0, base_y - v * plot_h, x0 + bw - 2, base_y), fill=col)
        d.text((x, base_y + 4), name[:11], fill="black")
    out = Path(out_png)
    img.save(out)
    return out


# ----------------------------------------------------------------------------------------------
# Adapters by name (the CLI's --backend)
# ----------------------------------------------------------------------------------------------


def make_adapter(backend: str, model: str | None):
    """An adapter by backend name: "shapes" (default weights unless ``model``) or "hf" (BLIP path/id)."""
    if backend == "shapes":
        return ShapesVQAAdapter(model)
    if backend == "hf":
        if not model:
            raise FinetuneError("the hf backend needs --model (a BLIP VQA id or folder)")
        return BlipVQAAdapter(model)
    raise FinetuneError(f"unknown backend {backend!r}; use 'shapes' or 'hf'")
