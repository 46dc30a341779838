"""Train the composing parser: ``python -m builder.planner.compose.train --out DIR --seed 0``.

Generated requests (``phrasings``, training split) teach the decoder; those and the training half
of ``scope``'s sentences teach the scope head. MiniLM stays frozen; its word states are computed
once. Everything random is seeded from ``--seed`` before the model is built, so two runs with the
same arguments give the same weights. Weights are saved as fp16 safetensors with ``config.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from builder.core.artifacts import Artifact, load_state, save_state
from builder.core.seeding import numpy_rng, seed_everything
from builder.domains import vocabulary as domain_vocabulary
from builder.planner import tree as T
from builder.planner.compose import grammar as G
from builder.planner.compose.model import FIELDS, OUTPUTS, build_model, decoder_steps, word_states
from builder.planner.compose.scope import foreign, near_misses, out_of_scope
from builder.planner.compose.training_data import training_examples
from builder.planner.semantic import minilm

split_words = domain_vocabulary("shapes").split_words

WEIGHTS_DIR = Path(__file__).parent.parent / "compose_weights"


def root_types(output: str | None) -> tuple[str, ...]:
    """Result types a tree may have to answer ``output`` (all when None)."""
    return tuple(t for t in T.TYPES if output is None or output in T.OUTPUTS_OF[t])


def prepare(examples: list[dict], rng: np.random.Generator, structure: frozenset[str],
            p_no_output: float = 0.2) -> list[dict]:
    """Model items from examples: words, fields, output id, decoder steps; unreadable ones dropped."""
    vocab = minilm()[2]
    items = []
    for e in examples:
        words = split_words(e["request"])
        read = G.read_words(words, vocab, structure)
        output = None if rng.random() < p_no_output else e["output"]
        try:
            steps = decoder_steps(G.gold_actions(e["tree"], read), read, root_types(output))
        except G.Unreadable:
            continue
        items.append({"words": words, "fields": [FIELDS.index(w.field) for w in read],
                      "output": OUTPUTS.index(output), "steps": steps, "scope": 1.0})
    return items


def scope_items(sentences: list[str], rng: np.random.Generator | None = None) -> list[dict]:
    """Items for sentences to refuse: no decoder steps, scope 0 (under a random output kind when ``rng``
    is given, so that the kind asked for does not tell the head whether to refuse)."""
    vocab = minilm()[2]
    out = []
    for s in sentences:
        words = split_words(s) or ["?"]
        output = int(rng.integers(len(OUTPUTS))) if rng is not None else 0
        out.append({"words": words, "fields": [FIELDS.index(w.field) for w in G.read_words(words, vocab)],
                    "output": output, "steps": [], "scope": 0.0})
    return out


def collate(items: list[dict]):
    """Padded tensors for a batch of items."""
    import torch

    states = word_states([it["words"] for it in items])
    B, W = len(items), max(len(it["words"]) for it in items)
    S = max(1, max(len(it["steps"]) for it in items))
    A = len(G.FIXED)
    x = torch.zeros(B, W, 384)
    fields = torch.zeros(B, W, dtype=torch.long)
    mask = torch.zeros(B, W, dtype=torch.bool)
    prev = torch.zeros(B, S, dtype=torch.long)
    prev_pos = torch.full((B, S), -1, dtype=torch.long)
    ctx = torch.zeros(B, S, dtype=torch.long)
    allowed = torch.zeros(B, S, A + W, dtype=torch.bool)
    target = torch.zeros(B, S, A + W, dtype=torch.bool)
    for b, it in enumerate(items):
        n = len(it["words"])
        x[b, :n] = torch.from_numpy(states[b])
        fields[b, :n] = torch.tensor(it["fields"])
        mask[b, :n] = True
        for s, (c, p, pp, fixed, copy, right) in enumerate(it["steps"]):
            ctx[b, s], prev[b, s], prev_pos[b, s] = c, p, pp
            allowed[b, s, fixed] = True
            allowed[b, s, [A + i for i in copy]] = True
            target[b, s, right] = True
    outputs = torch.tensor([it["output"] for it in items])
    scope = torch.tensor([it["scope"] for it in items])
    return (x, fields, mask, outputs, prev, prev_pos, ctx), allowed, target, scope


def loss_of(model, batch):
    """Mean negative log-likelihood of the right actions (any copy of a right value) + scope BCE."""
    import torch
    from torch.nn import functional as F

    inputs, allowed, target, scope = batch
    logits, scope_logit = model(*inputs)
    logits = logits.masked_fill(~allowed, -1e9)
    valid = allowed.any(-1)
    nll = torch.logsumexp(logits, -1) - torch.logsumexp(logits.masked_fill(~target, -1e9), -1)
    tree_loss = (nll * valid).sum() / valid.sum().clamp(min=1)
    return tree_loss + 0.5 * F.binary_cross_entropy_with_logits(scope_logit, scope)


def build_items(n_examples: int, seed: int) -> list[dict]:
    """Training items: generated requests and the training half of the refusal sentences (repeated)."""
    rng = numpy_rng(seed, "compose", "prepare")
    # Structure words are masked out of nouns at parse time only: masking them in training too
    # taught the decoder that any word it may copy is a noun, and unseen template words then became
    # nouns (held-out templates: 0.51 exact against 0.62, docs/planner.md).
    items = prepare(training_examples(n_examples, seed), rng, frozenset())
    refuse = scope_items(out_of_scope("train") + foreign("train"))
    reps = max(1, n_examples // (8 * len(refuse)))
    near = scope_items(near_misses(n_examples // 6, seed, "train"), rng)
    return items + refuse * reps + near


def init_model(seed: int, config: dict | None = None):
    """A fresh model whose starting weights follow from ``seed`` alone (seeded before it is built)."""
    seed_everything(seed)
    return build_model(config)


def train(out: str | Path | None, n_examples: int = 8000, steps: int = 1500, batch_size: int = 48,
          lr: float = 2e-3, seed: int = 0, config: dict | None = None, progress: bool = True):
    """Train a parser and save it to ``out`` (when given); returns (model, info)."""
    from builder.core.training import TrainConfig, train_loop

    t0 = time.perf_counter()
    items = build_items(n_examples, seed)
    word_states([it["words"] for it in items])  # MiniLM once, before the clock of the loop
    encode_s = time.perf_counter() - t0
    model = init_model(seed, config)

    def batches(_epoch, rng):
        for _ in range(steps):
            yield collate([items[i] for i in rng.choice(len(items), min(batch_size, len(items)), replace=False)])

    cfg = TrainConfig(steps=steps, lr=lr, weight_decay=0.01, schedule="cosine", warmup_steps=steps // 20,
                      grad_clip=1.0, seed=seed)
    res = train_loop(model, batches, loss_of, cfg, desc="compose parser" if progress else None)
    model.eval()
    losses = [h["loss"] for h in res.history["train"]]
    info = {"config": model.config, "seed": seed, "examples": n_examples, "items": len(items), "steps": steps,
            "batch_size": batch_size, "lr": lr, "encode_seconds": round(encode_s, 1),
            "train_seconds": round(time.perf_counter() - t0 - encode_s, 1),
            "loss_first": round(float(np.mean(losses[:20])), 4), "loss_last": round(float(np.mean(losses[-50:])), 4),
            "params": sum(p.numel() for p in model.parameters()),
            "command": f"python -m builder.planner.compose.train --out {out} --examples {n_examples} "
                       f"--steps {steps} --batch-size {batch_size} --lr {lr} --seed {seed}"}
    if out is not None:
        save(model, info, out)
    return model, info


class ComposingParserWeights(Artifact):
    """The trained decoder as an artifact (``builder.core.artifacts``): ``config.json`` records the
    architecture and the decoder's sizes, ``info`` how it was trained; the weights are fp16
    safetensors; ``vocabulary.txt`` lists the words of its training requests (what it can read)."""

    architecture = "composing-tree-decoder"

    def __init__(self, model, info: dict, words: list[str] | None = None):
        self.model, self.info = model, dict(info)
        self.words = words if words is not None else vocabulary(info["examples"], info["seed"])

    def artifact_config(self) -> dict:
        """The decoder's sizes (``model.build_model``'s config)."""
        return dict(self.info["config"])

    def artifact_info(self) -> dict:
        """How the weights were trained (examples, steps, seed, the reproducing command ...)."""
        return {k: v for k, v in self.info.items() if k != "config"}

    def _save_files(self, folder: Path) -> None:
        save_state(folder, self.model, half=True)
        (folder / "vocabulary.txt").write_text("\n".join(self.words) + "\n")

    @classmethod
    def _from_files(cls, folder: Path, config: dict, info: dict) -> ComposingParserWeights:
        model = build_model(config)
        load_state(folder, model)  # fp16 on disk, float32 in memory
        words_file = folder / "vocabulary.txt"
        words = words_file.read_text().split() if words_file.is_file() else []
        return cls(model.eval(), {**info, "config": config}, words)


def save(model, info: dict, out: str | Path) -> Path:
    """Write the trained decoder as an artifact folder at ``out``."""
    return ComposingParserWeights(model, info).save_pretrained(out)


def vocabulary(n_examples: int, seed: int) -> list[str]:
    """The lower-case words of the training requests (what the parser has learnt to read)."""
    found = {w.lower() for e in training_examples(n_examples, seed) for w in split_words(e["request"])}
    return sorted(w for w in found if w.isalpha())


def load(path: str | Path):
    """(model, info) of an artifact folder written by ``save``."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no composing-parser weights in {path}; build them with "
                                f"`python -m builder.planner.compose.train --out {path}`")
    weights = ComposingParserWeights.from_pretrained(path)
    return weights.model, weights.info


def main(argv: list[str] | None = None) -> None:
    """Command line: train with the given arguments, save to ``--out`` and print the run info."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(WEIGHTS_DIR))
    ap.add_argument("--examples", type=int, default=8000)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    _, info = train(a.out, a.examples, a.steps, a.batch_size, a.lr, a.seed)
    print(json.dumps({k: v for k, v in info.items() if k != "config"}, indent=1))


if __name__ == "__main__":
    main()
