"""Fine-tuning a causal-LM planner on (prompt, program) pairs, nanoGPT style.

The loss covers program tokens only: prompt positions get label -100, so the model learns to
write programs, not to reproduce queries. Small models are trained in full; large ones through a
LoRA adapter from ``peft`` (``lora=True`` or a ``peft.LoraConfig``). No Trainer: the steps are
the shared loop's (``builder.core.training.train_loop``), easy to read and to edit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from builder.core.seeding import python_rng, torch_generator
from builder.core.training import TrainConfig, train_loop

IGNORE = -100


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_len: int = 512) -> list[tuple[list[int], list[int]]]:
    """Token ids and labels per pair: prompt tokens labelled -100, program tokens + EOS labelled.

    Prompt and program are tokenized separately, exactly as at generation time (the prompt alone,
    then the model continues), so training and sampling see the same token boundaries.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer needs an eos token to mark where a program ends")
    out = []
    for prompt, program in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(program, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (p + c)[:max_len]
        labels = ([IGNORE] * len(p) + c)[:max_len]
        if any(t != IGNORE for t in labels):
            out.append((ids, labels))
    return out


def _batch(rows, pad_id: int):
    n = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return ids, labels, mask


def add_lora(model, lora=True):
    """Wrap ``model`` with a LoRA adapter (``lora``: True for defaults, or a ``peft.LoraConfig``)."""
    from peft import LoraConfig, get_peft_model

    if lora is True:
        lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def finetune(model, tokenizer, pairs: Sequence[tuple[str, str]], steps: int, batch_size: int = 32, lr: float = 3e-3,
             warmup: int = 20, weight_decay: float = 0.01, seed: int = 0, max_len: int = 512, lora=None,
             prompt_noise: float = 0.0, progress: bool = True, desc: str = "train") -> dict:
    """Train ``model`` in place on ``pairs`` for ``steps`` AdamW steps (cosine schedule).

    ``prompt_noise`` replaces that share of prompt tokens by random vocabulary tokens in every
    batch (labels untouched): a model trained on a few hundred phrasings then learns to lean on
    the words it knows and to skip unfamiliar ones, which is what unseen phrasings look like.

    Returns a small log: first/last loss, steps, seconds. With ``lora`` the model is wrapped in a
    peft adapter first and the wrapped model is returned under ``"model"`` (merge or save it).
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    rows = encode_pairs(tokenizer, pairs, max_len)
    if not rows:
        raise ValueError("no training pairs (or every program was cut off by max_len)")
    if lora:
        model = add_lora(model, lora)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # AdamW without decay on biases and norms; linear warmup, cosine decay to 10%
    cfg = TrainConfig(steps=steps, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98), decay_matrices_only=True,
                      schedule="cosine", warmup_steps=warmup, min_lr_ratio=0.1, grad_clip=1.0, seed=seed)
    rng = python_rng(seed, "order")
    gen = torch_generator(seed, "prompt_noise")
    vocab = len(tokenizer)

    def batches(_epoch, _rng):
        order: list[int] = []
        while True:
            if len(order) < batch_size:  # epochs of shuffled rows, so every pair is seen evenly
                more = list(range(len(rows)))
                rng.shuffle(more)
                order += more
            take, order = order[:batch_size], order[batch_size:]
            ids, labels, mask = _batch([rows[i] for i in take], pad_id)
            if prompt_noise > 0:
                noisy = (labels == IGNORE) & (mask == 1) & (torch.rand(ids.shape, generator=gen) < prompt_noise)
                ids = torch.where(noisy, torch.randint(0, vocab, ids.shape, generator=gen), ids)
            yield ids, labels, mask

    t0 = time.perf_counter()
    out = train_loop(model, batches, lambda m, b: m(input_ids=b[0], attention_mask=b[2], labels=b[1]).loss, cfg,
                     desc=desc if progress else None)
    losses = [h["loss"] for h in out.history["train"]]
    tail = losses[-max(1, steps // 10):]
    return {"model": model, "steps": steps, "pairs": len(rows), "loss_first": losses[0],
            "loss_last": sum(tail) / len(tail), "seconds": round(time.perf_counter() - t0, 2)}
