"""Fine-tuning: workspace datasets, per-epoch checkpoints, resume after a real SIGKILL, BLIP path."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from builder.core.taskcard import parse_task_card
from builder.core.workspace import Workspace
from builder.domains.shapes.nets import vqa as vqa_net
from builder.domains.shapes.training import vqa as vqa_train
from builder.methods.finetune import (
    FinetuneConfig,
    FinetuneError,
    ShapesVQAAdapter,
    finetune,
    finetune_workspace,
    load_qa_dataset,
    plot_history,
    save_qa_dataset,
)

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def tiny_shapes_model(out: Path, data) -> Path:
    """A small randomly initialised ShapesVQANet saved as a checkpoint folder."""
    torch.manual_seed(0)
    model = vqa_net.ShapesVQANet(vqa_net.build_vocab(q.question for q in data), image_size=32, ch=8, n_blocks=1, emb=8,
                                 hidden=16)
    return model.save_pretrained(out)


@pytest.fixture(scope="module")
def shapes_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    data = vqa_train.build_dataset(30, 0, "clean")
    items = [(q.image, q.question, q.answer, {"qtype": q.meta["qtype"]}) for q in data]
    init = tiny_shapes_model(root / "init", data)
    Image.fromarray(data[0].image).save(root / "a.png")
    card = parse_task_card({"name": "vqa", "description": "Answer questions.", "output": "text",
                            "examples": [{"image": "a.png", "query": data[0].question, "expected": data[0].answer}]})
    ws = Workspace.init(root / "ws", card, images_from=root)
    save_qa_dataset(ws.dir("datasets", "real"), items)
    return ws, init, items


def test_dataset_round_trip(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    img[2:4, 2:4] = 200
    save_qa_dataset(tmp_path / "d", [(img, "Is there a square?", "yes", {"qtype": "exists"}), (img, "q2", "no")])
    back = load_qa_dataset(tmp_path / "d")
    assert [(q.question, q.answer) for q in back] == [("Is there a square?", "yes"), ("q2", "no")]
    assert np.array_equal(back[0].image, img) and back[0].meta == {"qtype": "exists"}
    assert len(list((tmp_path / "d" / "images").iterdir())) == 1  # content-addressed
    with pytest.raises(FileExistsError):
        save_qa_dataset(tmp_path / "d", [(img, "q", "a")])


def test_checkpoints_history_plot_and_mismatch(shapes_ws, tmp_path):
    ws, init, items = shapes_ws
    cfg = FinetuneConfig(epochs=2, batch_size=16, lr=3e-3)
    res = finetune_workspace(ws, "real", ShapesVQAAdapter(init), "plain", cfg, progress=False)
    run = ws.dir("checkpoints", "plain")
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("epoch")) == ["epoch-0001", "epoch-0002"]
    for name in ("model.safetensors", "config.json", "trainer_state.pt", "state.json"):
        assert (run / "epoch-0002" / name).is_file()
    hist = json.loads((run / "history.json").read_text())
    assert len(hist["val"]) == 2 and len(hist["train"]) == res.history["train"][-1]["step"]
    assert res.before["n"] == res.after["n"] > 0 and json.loads((run / "result.json").read_text())["best_epoch"] in (1, 2)
    # the baseline a customer tries first, scored beside: the start with test-time normalisation
    base = res.baselines
    assert base["start"] == res.before["accuracy"] and base["finetuned"] == res.after["accuracy"]
    assert 0 <= base["start_normalised"] <= 1 and base["best"] in ("start", "start_normalised", "finetuned")
    assert base[base["best"]] == max(v for k, v in base.items() if k != "best")
    engine = ShapesVQAAdapter(init).engine(res.best_checkpoint)  # served by the shapes VQA backend
    ans = engine.answer(items[0][0], items[0][1])
    assert ans.text in vqa_net.ShapesVQANet.from_pretrained(init).answers and 0 <= ans.confidence <= 1
    png = plot_history(run / "history.json", tmp_path / "loss.png")
    assert Image.open(png).size == (640, 360)
    with pytest.raises(FinetuneError, match="other settings or data"):
        finetune_workspace(ws, "real", ShapesVQAAdapter(init), "plain", FinetuneConfig(epochs=2, lr=1e-2),
                           progress=False)


def test_recipe_keeps_the_starting_model_when_training_hurts(shapes_ws):
    # A destructive learning rate: no epoch beats the starting model on validation, so the best
    # checkpoint is the starting model (saved as run/start) and the after-score equals the before.
    ws, init, items = shapes_ws
    good = vqa_net.ShapesVQANet.from_pretrained(init)
    cfg = FinetuneConfig(epochs=3, batch_size=16, lr=5.0, warmup_steps=0, schedule="constant", patience=1,
                         replay_items=60)
    res = finetune_workspace(ws, "real", ShapesVQAAdapter(init), "hurt", cfg, progress=False)
    assert res.history["start"]["epoch"] == 0 and res.history["start"]["replay_accuracy"] is not None
    if res.best_checkpoint.name == "start":
        assert res.after["accuracy"] == res.before["accuracy"]
        a, b = load_file(str(res.best_checkpoint / "model.safetensors")), good.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    else:  # an epoch really was better on validation
        assert max(h["accuracy"] for h in res.history["val"]) > res.history["start"]["accuracy"]
    assert len(res.history["val"]) <= 3  # early stop may cut it short


def test_recipe_mixes_replay_items_and_decays_lr(shapes_ws, tmp_path):
    ws, init, items = shapes_ws
    replay = [(q[0], q[1], q[2]) for q in items[:40]]
    cfg = FinetuneConfig(epochs=2, batch_size=8, lr=1e-3, replay_fraction=0.5, patience=0)
    res = finetune(ShapesVQAAdapter(init), items[40:80], tmp_path / "mix", cfg, progress=False, replay=replay)
    steps = res.history["train"][-1]["step"]
    assert steps == 2 * -(-32 // 4)  # 32 training items, 4 of them per batch (the rest replay)
    assert all(h.get("replay_accuracy") is not None for h in res.history["val"])


def test_fixed_epoch_steps_and_explicit_validation(shapes_ws, tmp_path):
    # Two training sets of different sizes: the same steps and epochs (the same checkpoints to
    # choose from), every item trains, and the checkpoint is chosen on the given validation items.
    ws, init, items = shapes_ws
    cfg = FinetuneConfig(epochs=2, batch_size=8, lr=1e-3, replay_fraction=0.0, patience=0, epoch_steps=3)
    val = items[:10]
    runs = [finetune(ShapesVQAAdapter(init), items[10:10 + n], tmp_path / f"n{n}", cfg, progress=False,
                     validation=val) for n in (12, 60)]
    for res in runs:
        assert [h["step"] for h in res.history["val"]] == [3, 6]
        assert res.before["n"] == len(val)  # the report set is the validation set
    spec = json.loads((tmp_path / "n60" / "run.json").read_text())
    assert spec["train"] == list(range(60)) and spec["val"] == []
    with pytest.raises(FinetuneError, match="validation"):
        finetune(ShapesVQAAdapter(init), items[10:20], tmp_path / "empty", cfg, progress=False, validation=[])


def test_resume_after_sigkill_matches_uninterrupted_run(shapes_ws):
    ws, init, items = shapes_ws
    cfg = FinetuneConfig(epochs=3, batch_size=16, lr=3e-3, patience=0)
    ref = finetune_workspace(ws, "real", ShapesVQAAdapter(init), "reference", cfg, progress=False)

    run = ws.dir("checkpoints", "killed")
    cmd = [sys.executable, "-m", "builder.interfaces.cli", "finetune", str(ws.root), "--dataset", "real",
           "--run", "killed", "--model", str(init), "--epochs", "3", "--batch-size", "16", "--lr", "0.003",
           "--patience", "0", "--throttle-s", "0.15", "--no-progress"]
    env = {**os.environ, "VISFORGE_TORCH_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while not (run / "epoch-0001").is_dir():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.time() < deadline, "no checkpoint within 90 s"
            time.sleep(0.05)
        time.sleep(0.5)  # well inside epoch 2
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "epoch-0003").exists()

    out = subprocess.run(cmd[:-3] + ["--no-progress"], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["resumed_from"] in (1, 2)
    assert not list(run.glob("*.tmp*"))
    a = load_file(str(ref.last_checkpoint / "model.safetensors"))
    b = load_file(str(run / "epoch-0003" / "model.safetensors"))
    for k in a:  # resuming replays the same batches and seeds: the same weights
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
    hist = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in hist["val"]] == [1, 2, 3]
    assert [h["step"] for h in hist["train"]] == list(range(1, len(hist["train"]) + 1))


def test_blip_vqa_finetune_on_tiny_model(tmp_path):
    pytest.importorskip("transformers")
    from builder.methods.finetune import BlipVQAAdapter
    from builder.tools.backends.hf import HFVQA
    from tests.tiny_models import build_blip

    path = build_blip(tmp_path / "blip", "vqa")
    rng = np.random.default_rng(0)
    items = []
    for i in range(24):
        img = np.full((32, 32, 3), 40, np.uint8)
        red = i % 2 == 0
        img[8:24, 8:24] = (220, 40, 40) if red else (40, 80, 220)
        img = np.clip(img + rng.integers(0, 10, img.shape), 0, 255).astype(np.uint8)
        items.append((img, "what color is it?", "red" if red else "blue"))
    res = finetune(BlipVQAAdapter(path, max_answer_tokens=6), items, tmp_path / "run",
                   FinetuneConfig(epochs=3, batch_size=8, lr=2e-3, val_fraction=0.25), progress=False)
    losses = res.history["train"]
    first = np.mean([h["loss"] for h in losses if h["epoch"] == 1])
    last = np.mean([h["loss"] for h in losses if h["epoch"] == 3])
    assert last < first
    assert (res.best_checkpoint / "model.safetensors").is_file()
    ans = HFVQA(model=str(res.best_checkpoint), max_new_tokens=6).answer(items[0][0], "what color is it?")
    assert isinstance(ans.text, str) and 0 <= ans.confidence <= 1
    assert res.after["n"] == res.before["n"] == 6
