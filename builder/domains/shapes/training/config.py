"""Settings of the shapes world's trainers: one frozen dataclass per trainer, torch-free.

The field defaults are the single source of each trainer's settings (those of the committed
weights); ``visforge engines train-vqa`` / ``train-embed`` build their options from the fields
(help text and bounds in each field's metadata), and ``config_flags`` writes the command back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

MIX_DOMAIN = "mix"  # every training scene draws its own daylight domain (scene.random_domain)


def option(default, help: str = "", **limits) -> dataclasses.Field:
    """A config field with its CLI help and bounds (``visforge engines train-*`` reads them)."""
    return field(default=default, metadata={"help": help, **limits})


def config_flags(config) -> str:
    """The CLI flags that reproduce ``config`` (recorded in the saved weights' config.json)."""
    out = []
    for f in dataclasses.fields(config):
        value, flag = getattr(config, f.name), "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif value is not None:
            out.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    return " ".join(out)


@dataclass(frozen=True)
class VQATrainConfig:
    """Settings of ``train_command``: the defaults are those of the committed weights.

    Three stages: ``perception_steps`` of perception alone (batch 32, labels from the scene
    graphs), ``steps`` of question reasoning on frozen slots (``batch_size``), then
    ``joint_steps`` of everything at a tenth of ``lr``.
    """

    init: str | None = option(None, "Start from these weights (resume / fine-tune).")
    n_scenes: int = option(8000, "Training scenes.", min=1)
    per_scene: int = option(1, "Rounds of scene-level questions per scene.", min=1)
    crops_per_scene: int = option(2, "Object crops (3 questions each) per scene.", min=0)
    perception_steps: int = option(2500, "Stage 1: perception alone (batch 32).", min=0)
    steps: int = option(5000, "Stage 2: question reasoning on frozen perception.", min=0)
    joint_steps: int = option(0, "Stage 3: everything together at lr/10 (batch 32).", min=0)
    batch_size: int = option(128, "Batch size of stage 2.", min=1)
    lr: float = option(2e-3, "Learning rate (stage 1 uses 1.5x, stage 3 a tenth).")
    word_dropout: float = option(0.1, "Chance that a question word is replaced by <unk> in training.")
    domain: str = option(MIX_DOMAIN, "Domain preset of the training scenes ('mix': a random daylight "
                          "domain per scene).")
    seed: int = option(0, "Seed of the scenes, the initial weights and the batches.")
    threads: int = option(1, "torch CPU threads (the machines are shared).", min=1)
    eval_scenes: int = option(150, "Held-out scenes for progress logs (0: none).", min=0)
    log_every: int = option(500, "Steps between progress lines.", min=1)
    weighted: bool = option(True, "Sample question types by QTYPE_WEIGHTS.")


@dataclass(frozen=True)
class EmbedTrainConfig:
    """Settings of ``train_command``: the defaults are those of the committed weights."""

    n_scenes: int = option(5000, "Training scenes (rendered once, seen through the detector).", min=1)
    steps: int = option(1200, "Training steps.", min=1)
    batch_size: int = option(128, "Captions per batch (plus one hard negative each).", min=2)
    lr: float = option(3e-3, "Peak learning rate (cosine schedule).")
    word_dropout: float = option(0.1, "Chance that a caption word is replaced by <unk> in training.")
    seed: int = option(0, "Seed of the scenes, the initial weights and the batches.")
    threads: int = option(1, "torch CPU threads (the machines are shared).", min=1)
    log_every: int = option(50, "Steps between progress lines.", min=1)
    max_minutes: float | None = option(18.0, "Stop training early (and save) after this long.")
