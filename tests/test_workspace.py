"""Workspace: layout, append-only program versions, atomic writes that survive SIGKILL."""

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from PIL import Image

from builder.core.taskcard import parse_task_card
from builder.core.workspace import Workspace, WorkspaceError

CARD = parse_task_card(
    {
        "name": "count-red",
        "description": "Count the red objects.",
        "output": "count",
        "examples": [{"image": "a.png", "query": "How many red objects?", "expected": 2}],
    }
)


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def make_ws(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.png").write_bytes(png_bytes())
    return Workspace.init(tmp_path / "ws", CARD, images_from=tmp_path / "src")


def test_init_copies_images_and_opens(tmp_path):
    ws = make_ws(tmp_path)
    card = Workspace.open(ws.root).load_task()
    img = card.examples[0].image
    assert img.startswith("images/") and ws.resolve_image(img).read_bytes().startswith(b"\x89PNG")
    with pytest.raises(WorkspaceError, match="already a workspace"):
        Workspace.init(ws.root, CARD)
    with pytest.raises(WorkspaceError, match="not a VisForge workspace"):
        Workspace.open(tmp_path / "src")


@pytest.mark.parametrize("kind", ["proc", "dev", "fifo", "text"])
def test_card_images_that_are_not_images_are_refused_and_never_copied(tmp_path, kind):
    (tmp_path / "src").mkdir()
    bad = {"proc": "/proc/self/environ", "dev": "/dev/zero", "fifo": str(tmp_path / "src" / "pipe.png"),
           "text": str(tmp_path / "src" / "passwd.png")}[kind]
    if kind == "fifo":
        os.mkfifo(bad)
    if kind == "text":
        with open(bad, "w") as f:
            f.write("root:x:0:0:secret\n")
    card = CARD.model_copy(deep=True)
    card.examples[0].image = bad
    with pytest.raises(WorkspaceError, match=f"example image {bad}"):
        Workspace.init(tmp_path / "ws", card, images_from=tmp_path / "src")
    assert not list((tmp_path / "ws").rglob("*.png"))


def test_program_versions_append_only(tmp_path):
    ws = make_ws(tmp_path)
    v1 = ws.add_program("def execute(image):\n    return 1\n", origin="planner")
    v2 = ws.add_program("def execute(image):\n    return 2\n", parent=v1.version, note="fix")
    assert [p.version for p in ws.programs()] == [1, 2]
    assert ws.program(2).parent == 1 and ws.program(2).note == "fix"
    ws.accept(v2.version)
    assert Workspace.open(ws.root).accepted.source.endswith("return 2\n")
    with pytest.raises(WorkspaceError, match="no program version 7"):
        ws.accept(7)
    with pytest.raises(WorkspaceError, match="non-empty"):
        ws.add_program("  ")
    run_id = ws.save_run({"program": 2, "score": 1.0})
    assert ws.load_run(run_id)["score"] == 1.0
    s = ws.summary()
    assert s["programs"] == 2 and s["accepted"] == 2 and s["runs"] == 1 and s["task"]["examples"] == 1


def test_dir_stays_inside(tmp_path):
    ws = make_ws(tmp_path)
    assert ws.dir("datasets", "shapes").is_dir()
    with pytest.raises(WorkspaceError, match="inside the workspace"):
        ws.dir("datasets", "../../etc")
    with pytest.raises(WorkspaceError, match="unknown workspace folder"):
        ws.dir("secrets")


WRITER = textwrap.dedent(
    """
    import sys
    from builder.core.workspace import Workspace
    ws = Workspace.open(sys.argv[1])
    card = ws.load_task()
    big = "x" * 200_000  # large records make a kill mid-write likely
    i = 0
    while True:
        i += 1
        v = ws.add_program(f"def execute(image):\\n    return {i}\\n# {big}\\n", note=str(i))
        ws.accept(v.version)
        card.description = f"Count the red objects, revision {i}. " + "y" * 50_000
        ws.save_task(card)
        ws.save_run({"i": i, "payload": big})
        print(i, flush=True)
    """
)


def test_sigkill_mid_write_never_corrupts(tmp_path):
    ws = make_ws(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    seen_progress = 0
    for k in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(ws.root)], stdout=subprocess.PIPE, text=True, env=env
        )
        # Wait until it is writing, then kill at a varying moment.
        assert proc.stdout.readline().strip(), "writer did not start"
        time.sleep(0.01 + 0.013 * k)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Everything on disk is complete and loadable.
        opened = Workspace.open(ws.root)
        card = opened.load_task()
        assert card.description.startswith("Count the red objects")
        progs = opened.programs()
        assert all(p.source.startswith("def execute(image):") for p in progs)
        assert [p.version for p in progs] == list(range(1, len(progs) + 1))
        assert opened.accepted is not None
        for run_id in opened.runs():
            assert len(opened.load_run(run_id)["payload"]) == 200_000
        assert not list(ws.root.rglob(".tmp-*")), "open() clears temp files of killed writers"
        assert len(progs) > seen_progress
        seen_progress = len(progs)
    meta = json.loads((ws.root / "visforge-workspace.json").read_text())
    assert meta["accepted"] <= seen_progress


_WRITER = textwrap.dedent("""
    import json, sys
    from builder.core.atomic import atomic_write_json
    root, tag = sys.argv[1], sys.argv[2]
    for i in range(1000):
        atomic_write_json(f"{root}/runs/{tag}-{i % 25}.json", {"tag": tag, "i": i})
    print("done")
""")


def test_two_writers_and_a_reopening_reader_never_lose_a_file(tmp_path):
    """Opening a workspace cleans only temp files whose writer is gone, never ones being written."""
    ws = make_ws(tmp_path)
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(ws.root), tag], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    opened = 0
    while any(w.poll() is None for w in writers) or opened < 5:
        Workspace.open(ws.root)
        opened += 1
    for w in writers:
        out, err = w.communicate(timeout=60)
        assert w.returncode == 0 and out.strip() == "done", err[-2000:]
    for tag in ("a", "b"):
        for k in range(25):
            data = json.loads((ws.root / "runs" / f"{tag}-{k}.json").read_text())
            assert data["tag"] == tag and data["i"] % 25 == k and data["i"] >= 975
    assert opened > 5


def test_temp_files_of_dead_writers_are_removed(tmp_path):
    from builder.core.atomic import remove_stale_temp_files

    ws = make_ws(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = ws.root / "runs" / f".tmp-x.json.{dead}.abc123"
    alive = ws.root / "runs" / f".tmp-y.json.{os.getpid()}.def456"
    for p in (stale, alive):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("{")
    assert remove_stale_temp_files(ws.root) == 1
    assert not stale.exists() and alive.exists()


@pytest.mark.parametrize("complete", [True, False])
def test_an_export_killed_between_its_renames_is_recovered_on_open(tmp_path, complete):
    """Killed after moving the old export aside and before renaming the new one in: the complete
    new export takes its place (or, if the new one was not finished, the old one comes back)."""
    ws = make_ws(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    exports = ws.root / "exports"
    old, new = exports / f".sol.old-{dead}-aaaa1111", exports / f".sol.tmp-{dead}-bbbb2222"
    for folder, text in ((old, "old"), (new, "new")):
        folder.mkdir(parents=True)
        (folder / "README.md").write_text(text)
    if complete:
        (exports / f"{new.name}.complete").touch()
    Workspace.open(ws.root)
    assert (exports / "sol" / "README.md").read_text() == ("new" if complete else "old")
    assert sorted(p.name for p in exports.iterdir()) == ["sol"]
