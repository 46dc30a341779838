"""Fine-tuning settings, result and error."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from builder.core.errors import UserError


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
    accuracy (0: never stops early). ``epoch_steps`` (0: one pass over the training items) fixes
    the optimiser steps of every epoch instead, cycling through reshuffled items, so runs on sets of
    different sizes take the same steps and have the same checkpoints to choose from.
    ``score_normalised``: also score the starting model with test-time illumination normalisation
    (``builder.core.images.illumination_normalise``), the baseline a customer tries first.
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
    epoch_steps: int = 0
    score_normalised: bool = True


@dataclass
class FinetuneResult:
    """What a run produced: the run folder, the best/last checkpoint and the figures. ``baselines``:
    accuracy on the report set of the start, the start with test-time normalisation and the
    fine-tuned model, and ``best``, the name of the highest (the start wins ties)."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    before: dict
    after: dict
    history: dict
    resumed_from: int | None
    seconds: float
    baselines: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON-able data: the checkpoint and run paths become strings."""
        d = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


class FinetuneError(UserError, RuntimeError):
    """A run cannot start or continue (bad data, a run folder from another config, ...)."""
