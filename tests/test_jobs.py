"""The job engine: states, progress, records, and Cancel for each strategy (nothing half-done saved)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder import (
    CancelToken,
    FinetuneConfig,
    Runtime,
    UserError,
    add_program,
    cancel_job,
    ensure_shapes_workspace,
    export_solution,
    job_status,
    list_jobs,
    start_job,
    start_step,
)
from builder.run.jobs import InChildProcess, Job

LOOP = "def execute(image):\n    n = 0\n    while True:\n        n += 1\n    return n\n"
COUNT = 'def execute(image):\n    return image.count("red object")\n'


def _wait_for(cond, job, timeout=120.0, what="the condition"):
    deadline = time.time() + timeout
    while not cond():
        assert not job.finished, f"{job.label} ended {job.state} before {what}: {job.error or job.message}"
        assert time.time() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def _cancelled(job: Job, ws) -> dict:
    assert job.wait(60), "the job did not stop within 60 s of Cancel"
    assert job.state == "cancelled", (job.state, job.error)
    rec = json.loads((ws.root / "jobs" / f"{job.id}.json").read_text())
    assert rec["state"] == "cancelled" and rec["ended"] is not None
    return rec


@pytest.fixture
def ws(tmp_path):
    return ensure_shapes_workspace(tmp_path / "ws", n=4, seed=2)


# ---- the engine --------------------------------------------------------------------------------
def test_token_runs_kill_hooks_once_and_late_hooks_at_once():
    token, calls = CancelToken(), []
    remove = token.on_cancel(lambda: calls.append("a"))
    token.on_cancel(lambda: calls.append("b"))
    remove()
    token.cancel()
    token.cancel()
    token.on_cancel(lambda: calls.append("late"))
    assert calls == ["b", "late"] and token() and token.cancelled


def test_thread_job_states_progress_and_record(ws):
    def work(job):
        for i in range(3):
            job.report("counting", done=i + 1, total=3, unit="items")
        return {"answer": 42}

    job = start_job("demo", work, ws=ws, params={"n": 3})
    assert job.wait(10) and job.state == "succeeded" and job.result == {"answer": 42}
    rec = job_status(ws, job.id)
    assert rec["state"] == "succeeded" and rec["result"] == {"answer": 42} and rec["params"] == {"n": 3}
    assert rec["progress"]["fraction"] == 1.0

    def slow(job):
        while True:
            job.token.raise_if_cancelled("slow work")
            job.report("waiting", 0.5)
            time.sleep(0.01)

    job = start_job("slow", slow, ws=ws)
    _wait_for(lambda: job.fraction == 0.5, job, what="progress")
    assert job.state == "running" and job_status(ws)["state"] == "running"
    rec = cancel_job(ws)
    assert rec["state"] == "cancelled" and "slow work cancelled" in rec["message"]
    with pytest.raises(UserError, match="no running job"):
        cancel_job(ws)

    job = start_job("broken", lambda job: 1 / 0, ws=ws)
    assert job.wait(10) and job.state == "failed" and "ZeroDivisionError" in job.error
    assert [r["state"] for r in list_jobs(ws)] == ["succeeded", "cancelled", "failed"]


def test_a_job_whose_process_died_reads_as_interrupted(ws):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    rec = {"id": "20000101-000000-run-abcdef", "step": "run", "label": "Run", "state": "running",
           "params": {"version": 1}, "pid": int(gone.stdout), "process_started": 0.0}
    (ws.root / "jobs" / f"{rec['id']}.json").write_text(json.dumps(rec))
    assert job_status(ws, rec["id"])["state"] == "interrupted"
    assert json.loads((ws.root / "jobs" / f"{rec['id']}.json").read_text())["state"] == "interrupted"


def test_child_process_strategy_returns_plain_data_and_errors(tmp_path):
    job = Job("child", InChildProcess("json:loads", ('{"a": [1, 2]}',))).start(background=False)
    assert job.state == "succeeded" and job.result == {"a": [1, 2]}
    job = Job("child", InChildProcess("json:loads", ("not json",))).start(background=False)
    assert job.state == "failed" and "Expecting value" in job.error


# ---- each step: Cancel ends "cancelled" and saves nothing -------------------------------------
def test_cancelled_run_kills_the_sandbox_and_saves_no_run(ws):
    pv = add_program(ws, LOOP)
    with Runtime(ws, workers=2) as rt:
        job = start_step(ws, "run", runtime=rt, version=pv.version)
        _wait_for(lambda: job.message.startswith("v0001"), job, what="the first progress report")
        time.sleep(0.5)
        t0 = time.time()
        cancel_job(ws, job.id)
        _cancelled(job, ws)
        assert time.time() - t0 < 10, "Cancel waited for the programs' 30 s timeout"
        assert ws.runs() == []
        # the runtime starts fresh sandbox workers for the next run
        done = start_step(ws, "run", runtime=rt, version=add_program(ws, COUNT).version)
        assert done.wait(120) and done.state == "succeeded", done.error
        assert len(ws.runs()) == 1 and done.result.n == 4


def test_cancelled_improve_saves_no_planner(ws):
    job = start_step(ws, "improve", rounds=3, k=2, steps=400, replay=0)
    _wait_for(lambda: "round" in job.message, job, what="the first round")
    cancel_job(ws, job.id)
    rec = _cancelled(job, ws)
    assert "no planner was saved" in rec["message"]
    assert not (ws.root / "checkpoints" / "planner").exists()
    assert not (ws.root / "checkpoints" / "planner_report.json").exists()


def _tiny_vqa(ws, root: Path) -> Path:
    import torch

    from builder.domains.shapes.nets import vqa as sv
    from builder.domains.shapes.training import vqa as sv_train
    from builder.methods.finetune import save_qa_dataset

    data = sv_train.build_dataset(30, 0, "clean")
    save_qa_dataset(ws.dir("datasets", "real"), [(q.image, q.question, q.answer, {"qtype": q.meta["qtype"]}) for q in data])
    torch.manual_seed(0)
    model = sv.ShapesVQANet(sv.build_vocab(q.question for q in data), image_size=32, ch=8, n_blocks=1, emb=8, hidden=16)
    return model.save_pretrained(root / "init")


def test_cancelled_finetune_leaves_no_checkpoint(ws, tmp_path):
    init = _tiny_vqa(ws, tmp_path)
    run = ws.root / "checkpoints" / "cancelled"
    job = start_step(ws, "finetune", dataset="real", model=str(init), run="cancelled",
                     config=FinetuneConfig(epochs=30, batch_size=16, patience=0, throttle_s=0.1,
                                            replay_fraction=0.0))
    _wait_for(lambda: (run / "run.json").is_file(), job, what="the run's first file")
    time.sleep(1.0)  # training
    cancel_job(ws, job.id)
    _cancelled(job, ws)
    assert not run.exists()
    assert json.loads((ws.root / "jobs" / f"{job.id}.json").read_text())["params"]["config"]["epochs"] == 30


def test_cancelled_export_keeps_the_previous_export(ws):
    from builder import accept_program

    accept_program(ws, add_program(ws, COUNT).version)
    out = ws.root / "exports" / "sol"
    export_solution(ws, out, build=False, verify=False)
    (out / "MARKER").write_text("the previous export")
    before = sorted(p.name for p in out.iterdir())
    job = start_step(ws, "export", out_dir=str(out), overwrite=True, build=True)
    _wait_for(lambda: any(p.name.startswith(".sol.tmp-") for p in out.parent.iterdir()), job,
              what="the export's temporary folder")
    cancel_job(ws, job.id)
    _cancelled(job, ws)
    assert sorted(p.name for p in out.iterdir()) == before
    assert (out / "MARKER").read_text() == "the previous export"
    assert [p.name for p in out.parent.iterdir()] == ["sol"]  # no hidden half-written folders
