"""Reinforced self-training: rewards, pass@k, the RAWP check, a full tiny run, and resume after SIGKILL.

Programs run in the real sandbox. The engines here are a small pixel reader of clean shapes
scenes (``tests/world_oracle.objects_from_pixels``): they see pixels only, are exact on the clean
domain and fast, so these tests do not depend on the learned shapes engines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import world_oracle  # noqa: E402

from builder.methods.selftrain import (  # noqa: E402
    ProgramRunner,
    SelfTrainConfig,
    Task,
    load_tasks,
    pass_at_k,
    rawp_check,
    reward,
    sample_stats,
    self_train,
)
from builder.tools.engines import Answer, Detection  # noqa: E402
from builder.tools.host import Engines  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class _Pixels:
    backend_id, version = "test:pixels", "1"

    @staticmethod
    def objects(image):
        return world_oracle.objects_from_pixels(image)


class PixelDetector(_Pixels):
    def detect(self, image, query, threshold=None):
        keep = world_oracle.name_filter(query)
        return [Detection(tuple(o["box"]), 1.0, query) for o in self.objects(image) if keep(o)]


class PixelVQA(_Pixels):
    def answer(self, image, question):
        objs = self.objects(image)
        q = question.lower()
        key = "color" if "color" in q else "shape"
        return Answer(objs[0][key] if objs else "none", 1.0)


class PixelMatcher(_Pixels):
    def scores(self, image, texts):
        objs = self.objects(image)
        return [float(world_oracle.caption_true(objs, t)) for t in texts]


def pixel_engines() -> Engines:
    return Engines(detector=PixelDetector(), vqa=PixelVQA(), matcher=PixelMatcher())


def tiny_planner(seed: int = 0, steps: int = 40):
    """A tiny default-style planner trained briefly on seed programs (compact prompts)."""
    from builder.planner.backends import TransformersPlanner
    from builder.planner.default import build_model, build_tokenizer, pairs_of, seed_shots
    from builder.planner.train import finetune

    pairs = pairs_of(seed_shots(60, seed=seed))
    tok = build_tokenizer([p + c for p, c in pairs], vocab_size=500)
    model = build_model(len(tok), seed, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1)
    log = finetune(model, tok, pairs, steps=steps, batch_size=16, lr=5e-3, progress=False)
    return TransformersPlanner(log["model"], tok, prompt_style="compact", max_new_tokens=48), pairs


def tiny_config(**kw) -> SelfTrainConfig:
    base = dict(rounds=2, k=3, steps=4, batch_size=8, probes=2, eval_k=2)
    return SelfTrainConfig(**{**base, **kw})


def run_tiny(out: str, data: str, rounds: int = 3) -> dict:
    """Entry point for the resume test's subprocess (and the in-process run)."""
    import torch

    torch.set_num_threads(1)
    planner, pairs = tiny_planner()
    train, heldout = load_tasks(data, "train")[:10], load_tasks(data, "heldout")[:6]
    with ProgramRunner(engines=pixel_engines(), workers=1) as runner:
        return self_train(planner, train, heldout, out, tiny_config(rounds=rounds), seed_pairs=pairs,
                          runner=runner, progress=False)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    from builder.domains.shapes.world import generate_dataset

    return str(generate_dataset(tmp_path_factory.mktemp("world"), n=24, seed=7, heldout_fraction=0.4))


# ---- rewards ---------------------------------------------------------------------------------------
def test_reward_edge_cases():
    assert reward("text", "Red.", None, "red") and reward("text", 3, None, "3")
    assert not reward("text", "red", "runtime error: boom", "red")  # any error scores 0
    assert not reward("text", None, None, "red") and not reward("text", ["red"], None, "red")
    box = [10, 10, 20, 20]
    assert reward("boxes", [{"box": box, "score": 0.9}], None, [box])
    assert reward("boxes", [], None, []) and not reward("boxes", [], None, [box])  # empty boxes
    assert not reward("boxes", [{"box": [30, 30, 40, 40]}], None, [box])  # IoU 0
    assert not reward("boxes", "a box", None, [box]) and not reward("boxes", None, None, [box])
    assert reward("choice", 2, None, 2) and not reward("choice", True, None, 1)  # bools are not indices
    assert not reward("choice", "first", None, 0) and not reward("choice", None, None, 0)
    assert not reward("choice", 1.5, None, 1)


def test_pass_at_k_and_stats():
    assert pass_at_k(8, 0, 8) == 0.0 and pass_at_k(8, 1, 8) == 1.0 and pass_at_k(8, 2, 1) == 0.25
    tasks = [Task("a", "vqa", "text", "q", [], "x"), Task("b", "itm", "choice", "q", [], 0)]
    stats = sample_stats(tasks, [[True, False], [False, False]], 2)
    assert stats["coverage"] == {"itm": 0.0, "vqa": 1.0, "all": 0.5}
    assert stats["pass@1"]["vqa"] == 0.5 and stats["pass@2"]["vqa"] == 1.0


# ---- the RAWP check ----------------------------------------------------------------------------------
def test_rawp_check_flags_lucky_programs(world):
    tasks = [t for t in load_tasks(world) if t.qtype == "exists"]
    assert len(tasks) >= 3
    t = tasks[0]
    lucky = f'def execute(image):\n    return "{t.expected}"\n'  # right here by construction
    with ProgramRunner(engines=pixel_engines(), workers=1) as runner:
        verdicts = rawp_check([(t, t.program), (t, lucky)], load_tasks(world), runner, probes=6)
        assert verdicts[0] == "ok"  # the reference behaves like itself
        # a constant answer disagrees with the reference on some probe scene (both answers occur)
        assert verdicts[1] == "rawp"
        value, error = runner.run([(t.program, tuple(t.images), t.query, None, False)])[0]
        assert error is None and reward(t.output, value, None, t.expected)


# ---- a full tiny run and resume ----------------------------------------------------------------------
def test_self_train_reports_and_checkpoints(world, tmp_path):
    planner, pairs = tiny_planner()
    train, heldout = load_tasks(world, "train")[:10], load_tasks(world, "heldout")[:6]
    fix = {"query": train[0].query, "family": train[0].family, "program": train[0].program,
           "choices": train[0].choices, "multi_image": train[0].multi_image}
    with ProgramRunner(engines=pixel_engines(), workers=1) as runner:
        result = self_train(planner, train, heldout, tmp_path / "st", tiny_config(), seed_pairs=pairs,
                            corrections={2: [fix]}, runner=runner, progress=False)
    rounds = result["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    for r in rounds[1:]:
        assert set(r["eval"]["accuracy"]) >= {"all"} and "pass@3" in r["grow"] and "coverage" in r["grow"]
        assert r["grow"]["coverage"]["all"] >= r["grow"]["pass@1"]["all"]
        assert r["kept"]["rawp_rate"] is None or 0 <= r["kept"]["rawp_rate"] <= 1
    assert rounds[1]["kept"]["corrections"] == 0 and rounds[2]["kept"]["corrections"] == 1
    json.dumps(result)  # JSON-able
    for r in range(3):
        assert (tmp_path / "st" / f"round_{r}" / "model.safetensors").is_file()
    kept = [json.loads(x) for x in (tmp_path / "st" / "round_1" / "kept.jsonl").read_text().splitlines()]
    assert all(k["verdict"] in ("ok", "rawp", "unchecked") for k in kept)
    assert len({(k["prompt"], k["program"]) for k in kept}) == len(kept)  # deduplicated


def test_resume_after_sigkill(world, tmp_path):
    out = tmp_path / "run"
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_selftrain as t; "
            f"t.run_tiny({str(out)!r}, {world!r})")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    state = out / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["completed"] >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)  # mid-round 2
    proc.wait()
    done = json.loads(state.read_text())["completed"]
    assert 1 <= done < 3
    before = json.loads((out / f"round_{done}" / "report.json").read_text())
    result = run_tiny(str(out), world)
    assert result["resumed_from"] == done
    assert [r["round"] for r in result["rounds"]] == [0, 1, 2, 3]
    assert result["rounds"][done] == before  # completed rounds are kept, not redone
    assert not list(out.glob("*.tmp*"))


def test_self_train_workspace_runs_a_round(tmp_path):
    """The workspace-level entry the Improve widget calls: one tiny round, checkpoints in the workspace."""
    from builder.core.taskcard import load_task_card
    from builder.core.workspace import Workspace
    from builder.domains.shapes.world.cards import make_task_card
    from builder.methods.selftrain import self_train_workspace

    card_path = make_task_card(tmp_path / "task", kind="count", target="red objects", n=4)
    ws = Workspace.init(tmp_path / "ws", load_task_card(card_path), images_from=card_path.parent)
    report = self_train_workspace(ws, rounds=1, k=2, steps=2, progress=False)
    assert [r["round"] for r in report["rounds"]] == [0, 1]  # the frozen evaluation, then one round
    assert report["rounds"][1]["train"]["steps"] == 2
    assert (ws.root / "checkpoints" / "selftrain" / "planner" / "config.json").is_file()
    assert "vqa" in report["rounds"][0]["eval"]["accuracy"]
