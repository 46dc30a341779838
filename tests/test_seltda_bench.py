"""The SelTDA benchmark's quick mode runs end to end and reports every arm (reduced sizes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_seltda_bench_quick_reports_every_arm():
    cmd = [sys.executable, str(ROOT / "bench" / "seltda_bench.py"), "--quick", "--domains", "sketch", "--n-real", "40",
           "--n-unlabelled", "12", "--n-test", "4", "--epochs", "1", "--epoch-steps", "2", "--qgen-steps", "20",
           "--views", "2", "--ratios", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout)
    run = res["per_run"][0]
    assert run["domain"] == "sketch" and res["args"]["seeds"] == 1
    assert set(run["arms"]) == {"untrained", "normalised", "real_only", "teacher", "seltda@1", "detection@1"}
    for arm in run["arms"].values():
        assert set(arm) >= {"target", "target_heldout_phrasing", "target_unseen_query", "clean"}
    student = run["arms"]["seltda@1"]
    assert student["steps"] == run["arms"]["real_only"]["steps"] == 2  # the same steps as real-only
    assert student["ratio_actual"] == round(student["synthetic"] / student["real"], 3) <= 1
    summary = res["summary"]["sketch"]
    assert summary["headline_student"] == "seltda@1"
    assert set(summary["vs_best_baseline"]["target"]) >= {"best_baseline", "student_minus_best_baseline_points"}
