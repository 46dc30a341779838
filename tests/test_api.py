"""The public API: ``from builder import ...`` names documented functions and types (``builder.api``)."""

import inspect
import subprocess
import sys

import builder
from builder import api


def test_every_public_name_is_defined_and_documented():
    for name in builder.__all__:
        obj = getattr(builder, name)
        assert obj is getattr(api, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"


def test_importing_a_low_layer_does_not_load_the_api():
    code = "import builder.core.taskcard, sys; print('builder.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_task_saves_always_archive_the_previous_card(tmp_path):
    from builder import add_search_results, ensure_shapes_workspace, shapes_unlabelled, task_history

    ws = ensure_shapes_workspace(tmp_path / "ws", n=3)
    first = ws.task_fingerprint()
    run_id = ws.save_run({"program": 0, "accuracy": 1.0})
    assert ws.load_run(run_id)["task"] == first  # the workspace records the card's fingerprint
    other = next(shapes_unlabelled(ws, n=1).iterdir())
    add_search_results(ws, [other], expected=1)  # this used to replace the card without a history entry
    history = task_history(ws)
    assert [h["task"] for h in history] == [first] and "search result" in history[0]["reason"]
    assert ws.run_is_stale(ws.load_run(run_id))
    ws.save_task(ws.load_task())  # an unchanged card: nothing archived
    assert len(task_history(ws)) == 1


def test_add_program_validates_before_saving(tmp_path):
    import pytest

    from builder import InvalidProgram, UserError, add_program, ensure_shapes_workspace

    ws = ensure_shapes_workspace(tmp_path / "ws", n=2)
    for bad in ("import os\ndef execute(image):\n    return os.getcwd()\n", "def execute(image:\n", "x = 1\n"):
        with pytest.raises(InvalidProgram, match="program not saved") as err:
            add_program(ws, bad)
        assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)
    assert ws.programs() == []
    assert add_program(ws, "def execute(image):\n    return 1\n", accept=True).version == 1


def test_propose_programs_plans_video_cards_with_the_video_planner(tmp_path):
    import pytest

    pytest.importorskip("torch")
    from builder import create_workspace, planner_available, propose_programs
    from builder.domains.shapes.world.video_tasks import make_video_task_card

    if planner_available() is not None:
        pytest.skip(planner_available())
    card_path = make_video_task_card(tmp_path / "card", "crossing_count", n=2, seed=8)
    ws = create_workspace(tmp_path / "ws", card_path)
    versions, note = propose_programs(ws, k=2)  # raised KeyError: 'frame' through the workspace planner
    assert versions and all(v.origin == "planner" for v in versions), note
    assert all(v.source.startswith("def execute(video") for v in versions), versions[0].source
