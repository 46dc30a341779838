"""The previous planner, kept as a benchmark baseline: a ~1M-parameter Qwen2ForCausalLM trained on
shapes-world seed programs.

The embedded default is ``builder.planner.semantic``; this causal LM stays as the baseline the
planner benchmark (``bench/planner_bench.py``) and the planner server compare against (a causal
LM is what a real code LLM backend is, too).

Everything is built here, offline and deterministically: the seed set (at most 200
(query, program) pairs phrased with TRAINING templates only), a byte-level BPE tokenizer trained
with ``tokenizers`` on that seed text, a randomly initialised Qwen2 from a config, and a short
full fine-tune with loss on program tokens only. The committed weights under
``builder/planner/causal_weights/`` come from::

    visforge planner train-causal --out builder/planner/causal_weights

Tokenizer design (it mattered most in an early planner probe): quoted
text is split off from code, and inside quotes into words. Code between quotes then merges into
a few large tokens ("def execute(image):\\n    return str(image.count("), while query words and
program literals ("red", " circle") share tokens, so a small model can learn to copy them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from builder.planner.prompt import PlanRequest, Shot, compact_prompt

WEIGHTS_DIR = Path(__file__).parent / "causal_weights"
SPECIALS = ["<|endoftext|>", "<|pad|>"]
# Quoted spans, then words inside a quoted span (a word followed, before any newline, by the
# closing quote). Code outside quotes holds no quote character, so the second rule never fires there.
QUOTED = r'"[^"\n]*"'
WORD_IN_QUOTES = r'[A-Za-z0-9]+(?=[^"\n]*"$)'
MODEL_CONFIG = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=256, rope_theta=10000.0,
                    tie_word_embeddings=True)


def request_for(example: dict) -> PlanRequest:
    """The planning request of a shapes-world example (query and input shape only, no ground truth)."""
    return PlanRequest(example["query"], family=example["family"], choices=example.get("choices"),
                       multi_image=str(example.get("qtype", "")).startswith("image_"))


def seed_shots(n: int = 200, seed: int = 0, scenes: int = 400) -> list[Shot]:
    """At most ``n`` distinct (query, program) pairs from shapes-world reference programs, phrased
    with training templates only (``heldout_fraction=0``), interleaved over question types so
    every type is represented."""
    from builder.domains.shapes.world import build_world

    _, examples = build_world(scenes, seed=10_000 + seed, heldout_fraction=0.0)
    by_type: dict[str, list[dict]] = {}
    for ex in examples:
        assert ex["split"] == "train"
        by_type.setdefault(f"{ex['family']}.{ex['qtype']}", []).append(ex)
    seen, shots = set(), []
    queues = [iter(v) for _, v in sorted(by_type.items())]
    while len(shots) < n and queues:
        for q in list(queues):
            ex = next(q, None)
            if ex is None:
                queues.remove(q)
                continue
            req = request_for(ex)
            key = (compact_prompt(req), ex["program"])
            if key in seen:
                continue
            seen.add(key)
            shots.append(Shot(ex["query"], ex["program"], ex["family"], ex.get("choices"), req.multi_image,
                              {"qtype": ex["qtype"], "template_id": ex["template_id"]}))
            if len(shots) == n:
                break
    return shots


def build_tokenizer(texts: list[str], vocab_size: int = 1024):
    """A byte-level BPE trained on ``texts`` with the quote-aware pre-tokenizer, as a
    ``PreTrainedTokenizerFast`` (deterministic: same texts, same vocabulary)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QUOTED), behavior="isolated"),
        pre_tokenizers.Split(Regex(WORD_IN_QUOTES), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=SPECIALS[0], pad_token=SPECIALS[1],
                                   bos_token=None, unk_token=None, clean_up_tokenization_spaces=False)


def build_model(vocab_size: int, seed: int = 0, **overrides):
    """A randomly initialised Qwen2ForCausalLM from ``MODEL_CONFIG`` (plus ``overrides``)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab_size, **{**MODEL_CONFIG, **overrides})
    return Qwen2ForCausalLM(cfg)


def pairs_of(shots: list[Shot]) -> list[tuple[str, str]]:
    """(compact prompt, program) training pairs."""
    return [(compact_prompt(PlanRequest(s.query, s.family, s.choices, s.multi_image)), s.program) for s in shots]


def train_causal_planner(out: str | Path, n_pairs: int = 200, steps: int = 400, batch_size: int = 32, lr: float = 3e-3,
                  seed: int = 0, vocab_size: int = 1024, prompt_noise: float = 0.2, progress: bool = True,
                  **model_overrides) -> dict:
    """Build seed set, tokenizer and model, train, and save a ``TransformersPlanner`` to ``out``."""
    import torch

    from builder.planner.backends import TransformersPlanner
    from builder.planner.train import finetune
    from builder.tools.docs import render_api_doc

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    shots = seed_shots(n_pairs, seed)
    pairs = pairs_of(shots)
    # The tokenizer learns from the seed pairs and the tool API doc: text the project owns.
    tok = build_tokenizer([p + c for p, c in pairs] + render_api_doc().split("\n\n"), vocab_size)
    model = build_model(len(tok), seed, **model_overrides)
    log = finetune(model, tok, pairs, steps=steps, batch_size=batch_size, lr=lr, seed=seed, prompt_noise=prompt_noise,
                   progress=progress, desc="default planner")
    planner = TransformersPlanner(log.pop("model"), tok, prompt_style="compact", max_new_tokens=96)
    n_params = sum(p.numel() for p in planner.model.parameters())
    info = {"n_pairs": len(pairs), "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
            "prompt_noise": prompt_noise,
            "vocab_size": len(tok), "params": n_params, "train_seconds": log["seconds"],
            "loss_first": round(log["loss_first"], 4), "loss_last": round(log["loss_last"], 4),
            "total_seconds": round(time.perf_counter() - t0, 2),
            "command": f"visforge planner train-causal --out {out} --pairs {n_pairs} --steps {steps} "
                       f"--batch-size {batch_size} --lr {lr} --seed {seed} --vocab-size {vocab_size} "
                       f"--prompt-noise {prompt_noise}"}
    planner.info = {"trained": info}
    planner.save_pretrained(out)
    (Path(out) / "seed_pairs.jsonl").write_text(
        "".join(json.dumps({"query": s.query, "family": s.family, "program": s.program, **s.meta}) + "\n"
                for s in shots))
    return info


def load_causal_planner(path: str | Path | None = None, **kwargs):
    """The committed causal-LM baseline planner (or one trained by ``train_causal_planner`` at ``path``)."""
    from builder.planner.backends import PlannerError, TransformersPlanner

    path = Path(path) if path is not None else WEIGHTS_DIR
    if not (path / "config.json").is_file():
        raise PlannerError(f"no planner weights in {path}; build them with "
                           f"`visforge planner train-causal --out {path}`")
    return TransformersPlanner.from_pretrained(path, **kwargs)
