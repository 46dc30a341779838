"""The fine-tuning run: data split, replay mixing, evaluation and the best-checkpoint rules
around the shared training loop (``builder.core.training.train_loop``)."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from builder.core import progress as _progress
from builder.core.atomic import atomic_write_json
from builder.core.metrics import normalise_text
from builder.core.qa import QA, as_qa, load_qa_dataset, normalised
from builder.core.seeding import numpy_rng, seed_everything
from builder.core.training import (
    SCHEDULES,
    TrainConfig,
    clear_partial_checkpoints,
    epoch_checkpoints,
    train_loop,
)
from builder.methods.finetune.adapters import VQAAdapter
from builder.methods.finetune.config import FinetuneConfig, FinetuneError, FinetuneResult


def answers_match(pred: str, expected: str) -> bool:
    """Exact match after the metrics module's normalisation (case, spaces, final period)."""
    return normalise_text(pred) == normalise_text(expected)


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


@dataclass
class _Data:
    """The items of a run: training and validation split, the report set, replayed original-task
    items (and those held back to guard it), and how many of each go into a batch."""

    train_idx: list[int]
    val_idx: list[int]
    train: list[QA]
    val: list[QA]
    report: list[QA]
    replay: list[QA]
    replay_val: list[QA]
    n_replay: int
    per_batch: int


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
    validation: Sequence | None = None,
) -> FinetuneResult:
    """Fine-tune ``adapter``'s model on ``items``; a checkpoint per epoch in ``run_dir``.

    ``heldout`` items (never trained on) are scored before and after; without them the
    validation split is. With ``resume`` an existing run folder continues from its newest
    complete epoch (it must have been started with the same config and data). ``replay``:
    original-task items mixed into every batch (``config.replay_fraction``); without them an
    adapter's ``replay_items`` supplies ``config.replay_items`` of them. ``validation``: items
    to choose the checkpoint on (then every item trains; without them ``config.val_fraction`` of
    the items is split off), e.g. the real labelled items when ``items`` also hold pseudo-labels.
    The best checkpoint is chosen by validation accuracy among the epochs and, with
    ``keep_start``, the starting model (then saved as ``run_dir/start``).
    """
    import torch
    from accelerate import Accelerator

    cfg = config or FinetuneConfig()
    _check_config(cfg)
    t0 = time.perf_counter()
    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    run_dir = Path(run_dir)
    items = [as_qa(x) for x in items]
    validation = [as_qa(x) for x in validation] if validation is not None else None
    data = _prepare_data(adapter, items, heldout, replay, cfg, validation)
    fingerprint = _fingerprint(items) + (f"+val:{_fingerprint(validation)}" if validation is not None else "")
    _open_run(run_dir, {"adapter": adapter.name, "config": asdict(cfg), "data": fingerprint,
                        "n_items": len(items), "train": data.train_idx, "val": data.val_idx}, resume, acc)
    seed_everything(cfg.seed)
    _progress.report("scoring the starting model", 0.0, done=0, total=cfg.epochs, unit="epochs")
    model = adapter.build()
    n_batches = cfg.epoch_steps * acc.num_processes or -(-len(data.train) // data.per_batch)
    loop_cfg = TrainConfig(steps=cfg.epochs * max(1, -(-n_batches // acc.num_processes)), epochs=cfg.epochs,
                           lr=cfg.lr, weight_decay=cfg.weight_decay, schedule=cfg.schedule,
                           warmup_steps=cfg.warmup_steps, grad_clip=cfg.grad_clip, seed=cfg.seed,
                           patience=cfg.patience, keep_start=cfg.keep_start)
    meta: dict = {}
    # Early stop when validation accuracy stops improving; the best checkpoint is chosen among
    # the epochs that also keep the original task (an epoch may improve before it is eligible).
    out = train_loop(model, _batches(adapter, data, acc, augment, cfg), adapter.loss, loop_cfg,
                     evaluate=_scorer(adapter, data, cfg, acc, meta), select=lambda h: _best_epoch(h, cfg),
                     improving=lambda h: _best_epoch(h, cfg, eligible_only=False),
                     run_dir=run_dir, save=adapter.save, load=adapter.load, meta=meta, accelerator=acc,
                     on_step=_on_step(cfg, loop_cfg.steps),
                     log=lambda m: tqdm.write(m, file=sys.stderr), desc="epoch" if progress else None)
    _progress.report(f"scoring the fine-tuned model on {len(data.report)} held-out questions", 1.0,
                     done=cfg.epochs, total=cfg.epochs, unit="epochs")
    after = evaluate(adapter, acc.unwrap_model(model), data.report, cfg.eval_batch_size, acc)
    result = FinetuneResult(run_dir, out.best_checkpoint, out.last_checkpoint, meta["before"], after, out.history,
                            out.resumed_from, time.perf_counter() - t0, _baselines(meta, after))
    if acc.is_main_process:
        atomic_write_json(run_dir / "result.json", {**result.to_dict(), "history": None,
                                                     "evaluated_on": "heldout" if heldout else "validation",
                                                     "best_epoch": out.best_epoch})
    return result


def _baselines(meta: dict, after: dict) -> dict:
    """Report-set accuracy of the start, the start with test-time normalisation (when scored) and
    the fine-tuned model, and which is best (earlier wins ties: no training when it does not help)."""
    arms = {"start": meta["before"]["accuracy"], "start_normalised": (meta.get("before_normalised") or {}).get("accuracy"),
            "finetuned": after["accuracy"]}
    scored = {k: v for k, v in arms.items() if v is not None}
    return {**arms, "best": max(scored, key=scored.get) if scored else None}


def _on_step(cfg: FinetuneConfig, steps: int) -> Callable[[dict], None]:
    """After each optimiser step: the progress in epochs with the loss (``builder.core.progress``),
    then the configured throttle."""
    def on_step(rec: dict) -> None:
        _progress.report(f"epoch {rec['epoch']}, step {rec['step']}/{steps}, loss {rec['loss']:.4f}", rec["step"] / max(1, steps),
                         done=rec["epoch"] - 1, total=cfg.epochs, unit="epochs")
        if cfg.throttle_s:
            time.sleep(cfg.throttle_s)
    return on_step


def _check_config(cfg: FinetuneConfig) -> None:
    if (cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0 or not 0 <= cfg.replay_fraction < 1
            or cfg.epoch_steps < 0):
        raise FinetuneError(f"invalid config {cfg}")
    if cfg.schedule not in SCHEDULES:
        raise FinetuneError(f"unknown schedule {cfg.schedule!r}; use constant, cosine or linear")


def _prepare_data(adapter: VQAAdapter, items: list[QA], heldout: Sequence | None, replay: Sequence | None,
                  cfg: FinetuneConfig, validation: list[QA] | None = None) -> _Data:
    """Split the items (unless ``validation`` is given), pick the report set and the replayed
    items, and size the batches."""
    heldout = [as_qa(x) for x in heldout] if heldout is not None else None
    if validation is not None:
        if not validation or not items:
            raise FinetuneError("need training items and at least one validation item")
        train_idx, val_idx = list(range(len(items))), []
        train, val = items, validation
    else:
        train_idx, val_idx = split_items(len(items), cfg.val_fraction, cfg.seed)
        train, val = [items[i] for i in train_idx], [items[i] for i in val_idx]
    if replay is None and cfg.replay_fraction > 0 and hasattr(adapter, "replay_items"):
        replay = adapter.replay_items(cfg.replay_items, cfg.seed)
    replay = [as_qa(x) for x in replay] if replay and cfg.replay_fraction > 0 else []
    # a fifth of the replay items (at most 300) are held back to guard the original task
    n_guard = min(300, len(replay) // 5)
    n_replay = min(cfg.batch_size - 1, round(cfg.batch_size * cfg.replay_fraction)) if replay[n_guard:] else 0
    return _Data(train_idx, val_idx, train, val, heldout if heldout else val, replay[n_guard:], replay[:n_guard],
                 n_replay, cfg.batch_size - n_replay)


def _open_run(run_dir: Path, spec: dict, resume: bool, acc) -> None:
    """Create the run folder (clearing half-written files) and write ``run.json``, or check that an
    existing run was started with the same settings and data."""
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        clear_partial_checkpoints(run_dir)
    acc.wait_for_everyone()
    spec_path = run_dir / "run.json"
    if not spec_path.exists():
        if acc.is_main_process:
            atomic_write_json(spec_path, spec)
        return
    old = json.loads(spec_path.read_text())
    if not resume and epoch_checkpoints(run_dir):
        raise FinetuneError(f"{run_dir}: already holds a run; pass resume=True or use a new folder")
    # More epochs or another throttle may continue a run; anything else would mix two runs.
    loose = ("epochs", "throttle_s", "eval_batch_size", "score_normalised")
    # settings added since a run started count at their defaults
    old_cfg = {**asdict(FinetuneConfig()), **old.get("config", {})}
    same_cfg = {k: v for k, v in old_cfg.items() if k not in loose} == {
        k: v for k, v in spec["config"].items() if k not in loose}
    changed = [k for k in ("adapter", "data", "n_items") if old.get(k) != spec[k]] + ([] if same_cfg else ["config"])
    if changed:
        raise FinetuneError(f"{run_dir}: started with other settings or data ({sorted(changed)}); "
                            "use a new run folder")


def _batches(adapter: VQAAdapter, data: _Data, acc, augment, cfg: FinetuneConfig):
    """The ``batches(epoch, rng)`` of ``train_loop``: each process its share of the shuffled
    training items, topped up with replayed items, optionally augmented."""
    def batches(_epoch: int, rng):
        order = rng.permutation(len(data.train))
        if cfg.epoch_steps:  # a fixed number of batches: cycle through reshuffled items
            want = cfg.epoch_steps * acc.num_processes * data.per_batch
            while len(order) < want:
                order = np.concatenate([order, rng.permutation(len(data.train))])
            order = order[:want]
        chunks = [order[s:s + data.per_batch] for s in range(0, len(order), data.per_batch)]
        for b in chunks[acc.process_index::acc.num_processes]:  # each GPU its share
            chunk = [data.train[int(i)] for i in b]
            if data.n_replay:
                chunk += [data.replay[int(i)] for i in rng.integers(len(data.replay), size=data.n_replay)]
            if augment is not None:
                chunk = [QA(augment(q.image), q.question, q.answer, q.meta) for q in chunk]
            yield adapter.collate(chunk)
    return batches


def _scorer(adapter: VQAAdapter, data: _Data, cfg: FinetuneConfig, acc, meta: dict):
    """The ``evaluate(model, epoch)`` of ``train_loop``: validation loss and accuracy, and accuracy
    on the held-back replay items; for the start (epoch 0) also the "before" figures in ``meta``."""
    def score(m, epoch: int) -> dict:
        if epoch == 0:
            meta["before"] = evaluate(adapter, m, data.report, cfg.eval_batch_size, acc)
            if cfg.score_normalised:
                meta["before_normalised"] = evaluate(adapter, m, normalised(data.report), cfg.eval_batch_size, acc)
        return {"loss": round(_mean_loss(adapter, m, data.val, cfg.eval_batch_size, acc), 5),
                "accuracy": evaluate(adapter, m, data.val, cfg.eval_batch_size, acc)["accuracy"],
                "replay_accuracy": evaluate(adapter, m, data.replay_val, cfg.eval_batch_size, acc)["accuracy"]}
    return score


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
