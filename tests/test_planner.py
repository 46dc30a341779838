"""Planner: code extraction, prompts, retrieval, the transformers backend on tiny models, training."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from builder.planner.prompt import (  # noqa: E402
    ExampleRetriever,
    PlanRequest,
    Shot,
    check_program,
    compact_prompt,
    extract_program,
    full_prompt,
    split_prompt,
)

ROOT = Path(__file__).resolve().parents[1]
PROG = 'def execute(image):\n    return str(image.count("red circle"))\n'


# ---- extraction ---------------------------------------------------------------------------------
@pytest.mark.parametrize("completion", [
    PROG,
    f"```python\n{PROG}```\nThis counts the red circles.",
    f"Sure! Here is the program:\n\n```py\n{PROG}```\nHope it helps.",
    f"```\n{PROG}```",
    f"{PROG}```\n\n# Query: next question",  # base model completing inside an open fence
    f"{PROG}\nThe function above counts circles.",  # bare code then chatter
    f"{PROG}\ndef execute(image):\n    return 1\n",  # only the first definition
    f"    {PROG.replace(chr(10), chr(10) + '    ')}",  # uniformly indented
])
def test_extract_program_variants(completion):
    assert extract_program(completion) == PROG


def test_a_tail_is_trimmed_only_when_the_completion_hit_the_token_limit():
    from builder.planner.backends import Completion

    cut = PROG + '    x = image.find("sq'
    assert extract_program(cut, truncated=True) == PROG
    assert extract_program(Completion(cut, truncated=True)) == PROG
    kept = extract_program(cut)  # a finished completion that does not parse is never silently altered
    assert kept == cut + "\n" and check_program(kept).startswith("syntax error")


def test_extract_program_keeps_helpers_inside_and_rejects_missing():
    src = "def execute(image, choices):\n    def helper(x):\n        return x\n\n    return helper(0)\n"
    assert extract_program(f"```python\n{src}```") == src
    assert extract_program("I cannot help with that.") is None
    assert extract_program("def other(image):\n    return 1\n") is None
    assert extract_program(None) is None
    assert extract_program("def execute(image):\n") is None  # no body at all


def test_check_program_rejects_bad_sources():
    assert check_program(PROG) is None
    assert "syntax" in check_program("def execute(image:\n    return 1\n")
    assert "def execute" in check_program("def run(image):\n    return 1\n")
    assert check_program("") == "empty program"
    # the executor's own validator applies too: imports and private names are refused
    assert check_program("import os\ndef execute(image):\n    return os.getcwd()\n") is not None
    assert check_program("def execute(image):\n    return image._image\n") is not None


# ---- prompts and retrieval --------------------------------------------------------------------------
def test_full_and_compact_prompts():
    shots = [Shot("How many red circles are there?", PROG, "vqa")]
    req = PlanRequest("Count the blue squares.", "vqa")
    text = full_prompt(req, shots)
    assert "def best_text_match" in text and "class ImagePatch" in text  # the rendered tool API
    assert text.index("red circles") < text.index("Count the blue squares.")
    assert text.endswith("```python\n")
    system, user = split_prompt(text)
    assert system.startswith("You write Python programs") and "Count the blue squares." in user
    assert compact_prompt(PlanRequest("Which caption fits?", "itm", choices=["a", "b"])) == \
        'itm image+choices "Which caption fits?"\n'


def test_retrieval_returns_nearest_example():
    shots = [Shot("How many red circles are there?", PROG, "vqa"),
             Shot("find the leftmost blue square", "def execute(image):\n    return []\n", "grounding"),
             Shot("Which caption fits the image?", "def execute(image, choices):\n    return 0\n", "itm")]
    r = ExampleRetriever(shots)
    assert r.nearest("Count the green circles.", k=1)[0] is shots[0]
    assert r.nearest("locate the square on the far left", k=1)[0] is shots[1]
    assert r.nearest("Pick the sentence that describes this picture.", k=1)[0] is shots[2]
    # a family restriction puts same-family shots first
    assert r.nearest("Count the green circles.", k=2, family="itm")[0] is shots[2]


# ---- the transformers backend -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_tok():
    from builder.planner.causal import build_tokenizer, pairs_of, seed_shots

    pairs = pairs_of(seed_shots(40, seed=3))
    return build_tokenizer([p + c for p, c in pairs], vocab_size=400), pairs


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_transformers_planner_samples_k(tiny_tok, arch):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from builder.planner.backends import TransformersPlanner
    from builder.planner.causal import build_model

    tok, _ = tiny_tok
    if arch == "qwen2":
        model = build_model(len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                            num_attention_heads=2, num_key_value_heads=1)
    else:
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    planner = TransformersPlanner(model, tok, prompt_style="compact", max_new_tokens=12, batch_size=4)
    reqs = [PlanRequest("How many red circles are there?", "vqa"), ("grounding", "the red circle"), "Count it"]
    out = planner.propose(reqs, k=3, temperature=1.0, top_p=0.95)
    assert len(out) == 3 and all(len(c) == 3 and all(isinstance(s, str) for s in c) for c in out)
    greedy = planner.propose(reqs[:1], k=2, temperature=0)
    assert greedy[0][0] == greedy[0][1] == planner.propose(reqs[:1], k=1, temperature=0)[0][0]


def test_transformers_planner_applies_chat_template(tiny_tok):
    import copy

    from builder.planner.backends import TransformersPlanner
    from builder.planner.causal import build_model

    tok = copy.deepcopy(tiny_tok[0])
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    planner = TransformersPlanner(build_model(len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                              num_attention_heads=2, num_key_value_heads=1), tok, max_new_tokens=4)
    text = planner.render(planner.prompt(PlanRequest("Count the red circles.", "vqa")))
    assert text.startswith("<system>You write Python programs") and "<user>Tools:" in text
    assert text.endswith("<assistant>") and "Count the red circles." in text
    assert len(planner.propose(["Count the red circles."], k=2)[0]) == 2


def test_finetune_labels_program_tokens_only_and_learns(tiny_tok):
    from builder.planner.backends import TransformersPlanner
    from builder.planner.causal import build_model
    from builder.planner.train import IGNORE, encode_pairs, finetune

    tok, pairs = tiny_tok
    (ids, labels), = encode_pairs(tok, pairs[:1])
    n_prompt = len(tok(pairs[0][0], add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and labels[-1] == tok.eos_token_id
    model = build_model(len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1)
    log = finetune(model, tok, pairs[:2], steps=100, batch_size=2, lr=1e-2, warmup=5, progress=False)
    assert log["loss_last"] < 0.1 * log["loss_first"]
    planner = TransformersPlanner(log["model"], tok, prompt_style="compact", max_new_tokens=48)
    prompt, program = pairs[0]
    assert planner.complete_raw([prompt], 1, 0.0, 1.0)[0][0] == program


def test_lora_finetune_merges(tiny_tok):
    from builder.planner.causal import build_model
    from builder.planner.train import finetune

    tok, pairs = tiny_tok
    model = build_model(len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1)
    log = finetune(model, tok, pairs[:4], steps=3, batch_size=2, lora=True, progress=False)
    assert hasattr(log["model"], "peft_config")
    merged = log["model"].merge_and_unload()
    assert not any("lora" in n for n, _ in merged.named_parameters())


# ---- the default planner ------------------------------------------------------------------------------
def test_seed_set_uses_training_phrasings_only():
    from builder.domains.shapes.world import TEMPLATES
    from builder.planner.causal import seed_shots

    train_ids = {t.id for t in TEMPLATES if t.split == "train"}
    shots = seed_shots(200)
    assert len(shots) == 200 and all(s.meta["template_id"] in train_ids for s in shots)
    assert len({(s.query, s.program) for s in shots}) == 200


def test_training_command_at_reduced_size(tmp_path):
    out = tmp_path / "planner"
    cmd = [sys.executable, "-m", "builder.interfaces.cli", "planner", "train-causal", "--out", str(out), "--pairs", "24",
           "--steps", "3",
           "--hidden-size", "32", "--layers", "1", "--vocab-size", "400", "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "seed_pairs.jsonl"):
        assert (out / name).is_file(), name
    from builder.core.artifacts import read_record

    assert read_record(out)["architecture"] == "transformers-planner"
    from builder.planner.causal import load_causal_planner

    planner = load_causal_planner(out)
    assert planner.prompt_style == "compact"
    # the loaded tokenizer splits text exactly as the one the model was trained with
    from builder.planner.causal import build_tokenizer, pairs_of, seed_shots
    from builder.tools.docs import render_api_doc

    pairs = pairs_of(seed_shots(24))
    fresh = build_tokenizer([p + c for p, c in pairs] + render_api_doc().split("\n\n"), 400)
    for p, c in pairs[:5]:
        assert planner.tokenizer(p + c)["input_ids"] == fresh(p + c)["input_ids"]
    assert len(planner.propose([("vqa", "Count the red circles.")], k=2, max_new_tokens=8)[0]) == 2


def test_committed_causal_planner_writes_programs():
    from builder.planner.causal import load_causal_planner

    planner = load_causal_planner()
    info = planner.info["trained"]
    assert info["n_pairs"] <= 200 and info["params"] < 2_000_000
    out = planner.propose([PlanRequest("How many red circles are there?", "vqa"),
                           PlanRequest("find the blue square", "grounding")], k=1, temperature=0)
    assert all(check_program(c[0]) is None for c in out), out
