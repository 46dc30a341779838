"""The shared training loop (builder/core/training.py) and the seeding helper (builder/core/seeding.py)."""

import json
import random

import numpy as np
import pytest
import torch

from builder.core.seeding import derive_seed, numpy_rng, python_rng, seed_everything, torch_generator
from builder.core.training import TrainConfig, best_by_score, epoch_checkpoints, lr_at, train_loop

torch.set_num_threads(1)

# ---- schedule --------------------------------------------------------------------------------


def test_schedule_values():
    cos = TrainConfig(steps=12, lr=1.0, warmup_steps=2, schedule="cosine")
    assert [lr_at(k, cos) for k in (0, 1)] == pytest.approx([1 / 3, 2 / 3])  # warmup ramps up
    assert lr_at(2, cos) == pytest.approx(1.0)  # the peak right after warmup
    assert lr_at(7, cos) == pytest.approx(0.5)  # half-way through the decay
    assert lr_at(12, cos) == pytest.approx(0.0)
    lin = TrainConfig(steps=10, lr=2.0, schedule="linear")
    assert [lr_at(k, lin) for k in (0, 5, 10)] == pytest.approx([2.0, 1.0, 0.0])
    assert lr_at(50, lin) == pytest.approx(0.0)  # past the end it stays at the floor
    floor = TrainConfig(steps=10, lr=1.0, schedule="cosine", min_lr_ratio=0.1)
    assert lr_at(10, floor) == pytest.approx(0.1) and lr_at(5, floor) == pytest.approx(0.55)
    const = TrainConfig(steps=10, lr=0.3, schedule="constant", warmup_steps=1)
    assert [lr_at(k, const) for k in (0, 1, 9)] == pytest.approx([0.15, 0.3, 0.3])
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(steps=10, schedule="step")


# ---- a tiny model ----------------------------------------------------------------------------

X = np.random.default_rng(0).normal(size=(48, 4)).astype(np.float32)
Y = (X @ np.array([1.0, -2.0, 0.5, 3.0], np.float32))[:, None]


def tiny_model():
    seed_everything(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))


def batches(epoch, rng):  # shuffled per epoch from the loop's (seed, epoch) generator
    order = rng.permutation(len(X))
    for s in range(0, len(order), 8):
        b = order[s:s + 8]
        yield torch.from_numpy(X[b]), torch.from_numpy(Y[b])


def mse(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def save(model, path):
    torch.save(model.state_dict(), path / "model.pt")


def load(model, path):
    model.load_state_dict(torch.load(path / "model.pt"))


def val_loss(model, epoch):
    with torch.no_grad():
        return {"loss": float(mse(model.eval(), (torch.from_numpy(X), torch.from_numpy(Y))))}


CFG = TrainConfig(steps=18, epochs=3, lr=0.05, warmup_steps=2, seed=3)


def test_loss_falls_and_history_has_the_plot_format(tmp_path):
    model = tiny_model()
    res = train_loop(model, batches, mse, CFG, evaluate=val_loss, select=best_by_score("loss", higher=False),
                     run_dir=tmp_path, save=save, load=load)
    h = res.history
    assert [e["step"] for e in h["train"]] == list(range(1, 19)) and res.step == 18
    assert [e["epoch"] for e in h["val"]] == [1, 2, 3] and h["start"]["epoch"] == 0
    assert h["val"][-1]["loss"] < h["start"]["loss"] / 2
    assert json.loads((tmp_path / "history.json").read_text()) == h
    assert [e for e, _ in epoch_checkpoints(tmp_path)] == [1, 2, 3] and not list(tmp_path.glob("*.tmp*"))
    assert not (tmp_path / "start").exists()  # keep_start is off: the start is never a candidate
    from builder.methods.finetune import plot_history

    assert plot_history(h, tmp_path / "loss.png").is_file()


def test_resume_after_cancel_equals_an_uninterrupted_run(tmp_path):
    ref = tiny_model()
    train_loop(ref, batches, mse, CFG, run_dir=tmp_path / "ref", save=save, load=load)

    cut = tiny_model()
    calls = {"n": 0}

    def stop_in_epoch_two():
        calls["n"] += 1
        return calls["n"] > 8  # epoch 1 is 6 steps: stop after 2 steps of epoch 2

    part = train_loop(cut, batches, mse, CFG, run_dir=tmp_path / "cut", save=save, load=load,
                      should_stop=stop_in_epoch_two)
    assert part.stopped == "cancelled" and part.step == 8
    assert [e for e, _ in epoch_checkpoints(tmp_path / "cut")] == [1]  # a partial epoch is not saved

    again = tiny_model()  # a new process: fresh weights, then the loop loads epoch 1
    res = train_loop(again, batches, mse, CFG, run_dir=tmp_path / "cut", save=save, load=load)
    assert res.resumed_from == 1 and res.stopped is None and res.step == 18
    assert [e["step"] for e in res.history["train"]] == list(range(1, 19))
    for a, b in zip(ref.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # same batches, dropout masks and optimizer state


def scripted(scores):
    def evaluate(model, epoch):
        return {"score": scores[epoch]}
    return evaluate


def test_best_checkpoint_and_early_stop(tmp_path):
    model = tiny_model()
    scores = {0: 0.5, 1: 0.6, 2: 0.9, 3: 0.7, 4: 0.8, 5: 0.95, 6: 0.99}
    cfg = TrainConfig(steps=60, epochs=10, lr=0.05, patience=2)
    res = train_loop(model, batches, mse, cfg, evaluate=scripted(scores), run_dir=tmp_path, save=save, load=load)
    assert res.stopped == "early_stop" and [h["epoch"] for h in res.history["val"]] == [1, 2, 3, 4]
    assert res.best_epoch == 2 and res.best_checkpoint == tmp_path / "epoch-0002"
    assert res.last_checkpoint == tmp_path / "epoch-0004"
    best = torch.load(tmp_path / "epoch-0002" / "model.pt")
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())  # best weights restored


def test_the_starting_model_wins_when_no_epoch_beats_it(tmp_path):
    model = tiny_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(steps=18, epochs=3, lr=0.05, keep_start=True)
    res = train_loop(model, batches, mse, cfg, evaluate=scripted({0: 0.9, 1: 0.5, 2: 0.6, 3: 0.7}),
                     run_dir=tmp_path, save=save, load=load)
    assert res.best_epoch == 0 and res.best_checkpoint == tmp_path / "start"
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())


def test_steps_cap_an_endless_stream_and_on_step_sees_every_step():
    seen = []

    def endless(epoch, rng):
        while True:
            yield from batches(epoch, rng)

    model = tiny_model()
    res = train_loop(model, endless, mse, TrainConfig(steps=25, lr=0.01, warmup_steps=5), on_step=seen.append)
    assert res.step == 25 and [r["step"] for r in seen] == list(range(1, 26))
    assert seen[0]["lr"] == pytest.approx(0.01 / 6) and seen[-1]["lr"] < 0.001
    assert not model.training


def test_checkpointing_needs_save_and_load(tmp_path):
    with pytest.raises(ValueError, match="save and load"):
        train_loop(tiny_model(), batches, mse, CFG, run_dir=tmp_path)


# ---- seeding ---------------------------------------------------------------------------------


def test_derived_seeds_are_reproducible_and_independent():
    assert derive_seed(7, "epoch", 3) == derive_seed(7, "epoch", 3)
    grid = {derive_seed(s, "round", r) for s in range(20) for r in range(50)}
    assert len(grid) == 1000  # `seed * k + r` style mixing would collide here for small k
    assert derive_seed(1, "round", 0) != derive_seed(0, "round", 1)
    assert derive_seed(0, "a") != derive_seed(0, "b") and derive_seed(0, 1) != derive_seed(0, "1")
    assert all(0 <= derive_seed(s) < 2**63 for s in (0, 1, -1, 2**70))
    with pytest.raises(TypeError):
        derive_seed(0, 1.5)
    a, b = numpy_rng(5, "x").random(1000), numpy_rng(5, "y").random(1000)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.1 and np.array_equal(a, numpy_rng(5, "x").random(1000))


def test_int_paths_keep_the_existing_numpy_streams():
    assert np.array_equal(numpy_rng(3, 7919).permutation(50), np.random.default_rng([3, 7919]).permutation(50))
    assert np.array_equal(numpy_rng(3, 2, 11).random(5), np.random.default_rng([3, 2, 11]).random(5))


def test_generators_and_seed_everything():
    assert torch.equal(torch.rand(5, generator=torch_generator(1, "noise")),
                       torch.rand(5, generator=torch_generator(1, "noise")))
    assert python_rng(2, "order").random() == python_rng(2, "order").random()
    seed_everything(4)
    a = (random.random(), np.random.random(), torch.rand(1))
    torch.manual_seed(4)
    same_torch = torch.rand(1)
    seed_everything(4)
    assert (random.random(), np.random.random()) == a[:2] and torch.equal(torch.rand(1), a[2])
    assert torch.equal(a[2], same_torch)  # no path: the seed as given, like torch.manual_seed
    assert seed_everything(4, "epoch", 1) == derive_seed(4, "epoch", 1)
