"""The one training loop: AdamW, warmup + decay schedule, checkpoint/resume, best checkpoint.

Short on purpose (nanoGPT style), so a reader sees every step. A trainer supplies

- ``batches(epoch, rng)``: the batches of one epoch (an iterable; ``rng`` is a numpy Generator
  derived from ``(cfg.seed, "epoch", epoch)``, and torch's global RNG is seeded from the same
  path before it is called, so shuffling, augmentation and dropout replay exactly on resume);
- ``loss_fn(model, batch)``: the scalar loss;
- optionally ``evaluate(model, epoch)``: a dict of validation figures after each epoch (and for
  the starting model, ``epoch`` 0), from which ``select`` picks the best checkpoint.

A step-based trainer is one epoch of ``cfg.steps`` batches. With ``run_dir`` every epoch is
saved to ``run_dir/epoch-NNNN/`` (the trainer's ``save`` files, ``trainer_state.pt`` with the
optimizer, ``state.json`` with step and history), written under a temporary name and renamed
when complete; a later call continues after the newest complete epoch.

History (what ``builder.methods.finetune.plot_history`` draws)::

    {"train": [{"epoch", "step", "loss"}, ...],     one entry per optimiser step
     "val":   [{"epoch", "step", **evaluate()}, ...], one per epoch with ``evaluate``
     "start": {"epoch": 0, "step": 0, **evaluate()}}  the starting model, with ``evaluate``
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.core.atomic import atomic_folder, atomic_write_json
from builder.core.seeding import numpy_rng, seed_everything

SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class TrainConfig:
    """Optimiser, schedule and stopping settings of ``train_loop``.

    ``steps``: total optimiser steps (the schedule's length and a hard cap); with ``epochs`` > 1
    it is usually epochs x batches per epoch. ``warmup_steps`` ramps the rate up linearly, then
    ``schedule`` decays it to ``min_lr_ratio`` x ``lr`` at the last step. ``decay_matrices_only``
    leaves biases and norms (parameters under 2 dimensions) without weight decay. ``patience``:
    stop after that many epochs without a new best (0: never). ``keep_start``: the starting
    model competes for best (saved as ``run_dir/start``).
    """

    steps: int
    epochs: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    decay_matrices_only: bool = False
    schedule: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    patience: int = 0
    keep_start: bool = False

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        if self.steps < 1 or self.epochs < 1 or self.lr <= 0:
            raise ValueError(f"steps, epochs and lr must be positive: {self}")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warmup, then ``cfg.schedule``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    if cfg.schedule == "constant":
        return cfg.lr
    decay = 0.5 * (1 + math.cos(math.pi * frac)) if cfg.schedule == "cosine" else 1 - frac
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * decay)


def make_optimizer(params: Iterable, cfg: TrainConfig):
    """AdamW over the trainable ``params`` with ``cfg``'s rate, betas and weight decay."""
    import torch

    params = [p for p in params if p.requires_grad]
    if cfg.decay_matrices_only:
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    else:
        groups = [{"params": params, "weight_decay": cfg.weight_decay}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def best_by_score(key: str = "score", higher: bool = True, include_start: bool = True) -> Callable[[dict], int | None]:
    """A ``select`` for ``train_loop``: the epoch (0: the start, with ``include_start``) with the
    best ``key``; the earliest wins ties."""
    def select(history: dict) -> int | None:
        cands = ([history["start"]] if include_start and "start" in history else []) + history["val"]
        cands = [h for h in cands if h.get(key) is not None]
        if not cands:
            return None
        return max(cands, key=lambda h: ((h[key] if higher else -h[key]), -h["epoch"]))["epoch"]
    return select


@dataclass
class TrainResult:
    """What ``train_loop`` did: history, best/last epoch and checkpoint folders, why it stopped."""

    history: dict
    step: int
    best_epoch: int | None = None
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None
    resumed_from: int | None = None
    stopped: str | None = None  # None (ran to the end), "early_stop" or "cancelled"
    meta: dict = field(default_factory=dict)
    seconds: float = 0.0


def epoch_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """The complete ``epoch-NNNN`` checkpoints in ``run_dir``, oldest first."""
    out = []
    for p in Path(run_dir).glob("epoch-*"):
        if p.is_dir() and p.name[6:].isdigit() and (p / "state.json").is_file():
            out.append((int(p.name[6:]), p))
    return sorted(out)


def _to_device(batch, device):
    if device is None:
        return batch
    if hasattr(batch, "to"):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def train_loop(model, batches: Callable[[int, Any], Iterable], loss_fn: Callable[[Any, Any], Any],
               cfg: TrainConfig, *, evaluate: Callable[[Any, int], dict] | None = None,
               select: Callable[[dict], int | None] | None = None,
               improving: Callable[[dict], int | None] | None = None, run_dir: str | Path | None = None,
               save: Callable[[Any, Path], None] | None = None, load: Callable[[Any, Path], None] | None = None,
               meta: dict | None = None, restore_best: bool = True, accelerator=None,
               on_step: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
               log: Callable[[str], None] | None = None, desc: str | None = None) -> TrainResult:
    """Train ``model`` in place (module docstring); returns a ``TrainResult``.

    ``select(history)`` names the best epoch (default: highest ``"score"`` from ``evaluate``,
    the start included with ``cfg.keep_start``; None: no choice, the last epoch); ``improving``
    names the epoch ``cfg.patience`` counts from (default: ``select``; a separate rule lets a run
    go on while validation improves although ``select`` does not take those epochs yet). ``save`` and
    ``load`` write and read the model's files in a checkpoint folder (needed with ``run_dir``);
    with ``restore_best`` the best checkpoint's weights are loaded back at the end. ``meta``
    (JSON; keys other than epoch, step, history) is stored in every checkpoint and, on resume,
    updated in place from the newest one. ``on_step`` gets ``{"epoch", "step", "loss",
    "lr"}`` after each step; ``should_stop()`` is polled before each step (cancellation).
    ``accelerator`` (``accelerate.Accelerator``) prepares model and optimiser, runs backward and
    gathers the loss; only its main process writes files.
    """
    t0 = time.perf_counter()
    select = select or best_by_score(include_start=cfg.keep_start)
    meta = meta if meta is not None else {}
    main = accelerator is None or accelerator.is_main_process
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None and (save is None or load is None):
        raise ValueError("checkpointing to run_dir needs save and load callables")
    say = log if (log is not None and main) else (lambda _m: None)
    opt = make_optimizer(model.parameters(), cfg)
    state = _resume(model, opt, run_dir, load, meta, say)
    wait = accelerator.wait_for_everyone if accelerator is not None else (lambda: None)
    if accelerator is not None:
        model, opt = accelerator.prepare(model, opt)
    raw = accelerator.unwrap_model(model) if accelerator is not None else model

    def checkpoint(name: str, epoch: int) -> Path:
        assert run_dir is not None  # only called when checkpointing
        return _save_checkpoint(run_dir / name, raw, opt, save, epoch, state, meta)

    if evaluate is not None and "start" not in state.history:  # the starting model, scored as every epoch is
        state.history["start"] = {"epoch": 0, "step": 0, **evaluate(raw, 0)}
        if run_dir is not None and cfg.keep_start and main:
            checkpoint("start", 0)
        wait()

    stopped = None
    for epoch in range(state.start_epoch, cfg.epochs + 1):
        if _patience_spent(state.history, improving or select, cfg):
            stopped = "early_stop"
            say(f"early stop before epoch {epoch}: no better validation for {cfg.patience} epochs")
            break
        if state.step >= cfg.steps:
            break
        losses, cancelled = _train_epoch(model, opt, batches, loss_fn, cfg, epoch, state, accelerator, on_step,
                                         should_stop, desc if main else None)
        if cancelled:
            stopped = "cancelled"
            break  # a partial epoch is not a checkpoint: a resumed run redoes it whole
        line = f"epoch {epoch}: train loss {sum(losses) / max(1, len(losses)):.4f}"
        if evaluate is not None:
            record = evaluate(raw, epoch)
            state.history["val"].append({"epoch": epoch, "step": state.step, **record})
            line += "".join(f"  {k} {v:.4f}" for k, v in record.items() if isinstance(v, float))
            model.train()
        if cfg.epochs > 1:
            say(line)
        if run_dir is not None and main:
            checkpoint(f"epoch-{epoch:04d}", epoch)
            atomic_write_json(run_dir / "history.json", state.history)
        wait()
    model.eval()
    result = TrainResult(state.history, state.step, resumed_from=state.resumed_from, stopped=stopped, meta=meta)
    _choose_best(result, select, run_dir, load if restore_best else None, raw)
    result.seconds = time.perf_counter() - t0
    return result


@dataclass
class _LoopState:
    """Where a run stands: history so far, optimiser steps taken, the epoch to start from."""

    history: dict
    step: int = 0
    start_epoch: int = 1
    resumed_from: int | None = None


def _resume(model, opt, run_dir: Path | None, load, meta: dict, say) -> _LoopState:
    """Load the newest complete epoch checkpoint of ``run_dir`` (model, optimiser, history, meta)."""
    import torch

    done = epoch_checkpoints(run_dir) if run_dir is not None else []
    if not done:
        return _LoopState({"train": [], "val": []})
    assert run_dir is not None  # done is empty without a run folder
    resumed_from, last = done[-1]
    load(model, last)
    opt.load_state_dict(torch.load(last / "trainer_state.pt", map_location="cpu", weights_only=False)["optimizer"])
    saved = json.loads((last / "state.json").read_text())
    history, step = saved.pop("history"), saved.pop("step")
    meta.update({k: v for k, v in saved.items() if k != "epoch"})
    say(f"resuming {run_dir.name} after epoch {resumed_from} (step {step})")
    return _LoopState(history, step, resumed_from + 1, resumed_from)


def _save_checkpoint(folder: Path, raw, opt, save, epoch: int, state: _LoopState, meta: dict) -> Path:
    """Write a checkpoint folder atomically: the trainer's files, and for an epoch the optimiser
    and the loop state (``start``, epoch 0, holds only the model)."""
    import torch

    with atomic_folder(folder) as tmp:
        save(raw, tmp)
        if epoch:
            torch.save({"optimizer": opt.state_dict()}, tmp / "trainer_state.pt")
            (tmp / "state.json").write_text(json.dumps({**meta, "epoch": epoch, "step": state.step,
                                                        "history": state.history}))
        else:
            (tmp / "state.json").write_text(json.dumps({"epoch": 0, "step": 0}))
    return folder


def _patience_spent(history: dict, improving: Callable[[dict], int | None], cfg: TrainConfig) -> bool:
    """True when ``cfg.patience`` epochs passed since the epoch ``improving`` names."""
    best = improving(history) if history["val"] else None
    return cfg.patience > 0 and best is not None and history["val"][-1]["epoch"] - best >= cfg.patience


def _train_epoch(model, opt, batches, loss_fn, cfg: TrainConfig, epoch: int, state: _LoopState, accelerator,
                 on_step, should_stop, desc: str | None) -> tuple[list[float], bool]:
    """One epoch of optimiser steps (at most up to ``cfg.steps``); returns the losses and whether
    ``should_stop`` cancelled it."""
    from tqdm.auto import tqdm

    # Everything random in an epoch derives from (seed, epoch): a resumed run replays it.
    seed_everything(cfg.seed, "epoch", epoch)
    model.train()
    device = accelerator.device if accelerator is not None else None
    name = desc if cfg.epochs == 1 else f"{desc or 'epoch'} {epoch}/{cfg.epochs}"
    bar = tqdm(total=None if cfg.epochs > 1 else cfg.steps, desc=name, disable=not desc, leave=False)
    losses: list[float] = []
    cancelled = False
    for batch in batches(epoch, numpy_rng(cfg.seed, "epoch", epoch)):
        if should_stop is not None and should_stop():
            cancelled = True
            break
        lr = lr_at(state.step, cfg)
        value = _step(model, opt, loss_fn(model, _to_device(batch, device)), lr, cfg, accelerator)
        state.step += 1
        losses.append(value)
        state.history["train"].append({"epoch": epoch, "step": state.step, "loss": round(value, 5)})
        bar.update(1)
        bar.set_postfix(loss=f"{value:.3f}")
        if on_step is not None:
            on_step({"epoch": epoch, "step": state.step, "loss": value, "lr": lr})
        if state.step >= cfg.steps:  # an endless batch stream ends here
            break
    bar.close()
    return losses, cancelled


def _step(model, opt, loss, lr: float, cfg: TrainConfig, accelerator) -> float:
    """Backward, gradient clipping and one optimiser step at rate ``lr``; returns the (gathered) loss."""
    import torch

    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    if accelerator is not None:
        accelerator.backward(loss)
        if cfg.grad_clip:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        value = float(accelerator.gather(loss.detach().reshape(1)).mean())
    else:
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], cfg.grad_clip)
        value = float(loss.detach())
    opt.step()
    return value


def _choose_best(result: TrainResult, select, run_dir: Path | None, load, raw) -> None:
    """Fill in the best epoch and the best and last checkpoints; with ``load``, load the best back."""
    history = result.history
    if history["val"] or "start" in history:
        result.best_epoch = select(history)
    if run_dir is None:
        return
    epochs = epoch_checkpoints(run_dir)
    result.last_checkpoint = epochs[-1][1] if epochs else None
    if result.best_epoch is None and epochs:
        result.best_epoch = epochs[-1][0]
    if result.best_epoch == 0:
        result.best_checkpoint = run_dir / "start"
    elif result.best_epoch is not None:
        result.best_checkpoint = dict(epochs).get(result.best_epoch)
    if load is not None and result.best_checkpoint is not None:
        load(raw, result.best_checkpoint)


def clear_partial_checkpoints(run_dir: str | Path) -> None:
    """Remove what a killed run left half-written in ``run_dir`` (temporary folders and files)."""
    for p in Path(run_dir).glob("*.tmp*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
