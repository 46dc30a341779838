"""Video inputs through the workflow: limits and bad files, the planner's programs, export and serving."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

from builder.core.metrics import score, summary_field_scores
from builder.core.taskcard import load_task_card
from builder.core.video import VideoError, VideoTooLarge, load_video, probe_video
from builder.domains.shapes.world.video import encode_mp4, sample_clip, write_clip
from builder.domains.shapes.world.video_tasks import VIDEO_KINDS, make_video_task_card
from builder.planner.plan import propose_for_task
from builder.run.local import examples_from_card, run_local, summarise


@pytest.fixture(scope="module")
def clip_bytes():
    return write_clip(sample_clip(np.random.default_rng(4), collision=True))


def test_limits_and_corrupt_videos(clip_bytes):
    info = probe_video(clip_bytes, "ok.mp4")
    assert (info.width, info.height, info.n_frames, info.fps) == (128, 128, 60, 25.0)
    with pytest.raises(VideoError, match="bad.mp4: not a readable video"):
        probe_video(b"\x00\x00\x00\x18ftypisom" + b"garbage" * 50, "bad.mp4")
    with pytest.raises(VideoError, match="empty file"):
        probe_video(b"", "e.mp4")
    with pytest.raises(VideoTooLarge, match="frame limit"):
        probe_video(clip_bytes, "long.mp4", max_frames=30)
    with pytest.raises(VideoTooLarge, match="second limit"):
        probe_video(clip_bytes, "long.mp4", max_duration=1.0)
    with pytest.raises(VideoTooLarge, match="pixel limit"):
        probe_video(clip_bytes, "wide.mp4", max_side=100)
    with pytest.raises(VideoTooLarge, match="byte limit"):
        probe_video(clip_bytes, "big.mp4", max_bytes=1000)
    # a truncated file: the header may survive, the frames do not
    cut = clip_bytes[: len(clip_bytes) // 3]
    with pytest.raises(VideoError):
        load_video(cut, "cut.mp4").frames(range(60))


def test_reader_is_lazy_and_exact(clip_bytes):
    r = load_video(clip_bytes, "ok.mp4")
    assert r.decoded == 0
    f10 = r.frame(10)
    assert f10.shape == (128, 128, 3) and r.decoded == 1
    assert np.array_equal(r.frame(10), f10) and r.decoded == 1  # cached
    r.frame(3)  # backwards: restarts the decoder
    with pytest.raises(VideoError, match="outside"):
        r.frame(60)


def test_metrics():
    exp = {"objects": ["blue square", "red circle"], "frame": 20, "before": {"red circle": "right", "blue square": "left"},
           "after": {"red circle": "left", "blue square": "right"}}
    assert score("frame", 22, 20) and not score("frame", 23, 20) and not score("frame", "20", 20)
    half = dict(exp, frame=30, after={"red circle": "up", "blue square": "right"})
    assert summary_field_scores(half, exp) == {"objects": True, "frame": False, "before": True, "after": False}
    assert score("summary", exp, exp) and not score("summary", half, exp)


@pytest.mark.parametrize("kind", list(VIDEO_KINDS))
def test_planner_proposes_a_correct_program(tmp_path, kind):
    card_path = make_video_task_card(tmp_path / kind, kind, n=5, seed=3)
    card = load_task_card(card_path, check_images=True)
    programs = propose_for_task(card)
    assert programs, kind
    out = run_local(programs[0], examples_from_card(card, card_path.parent), profile="shapes", progress=False,
                    workers=1)
    res = summarise(out.results, card.output, card.metric, 0.0)
    assert res.errors == 0 and res.accuracy >= 0.8, [(r.value, r.expected) for r in out.results]


def test_card_to_exported_server_on_mp4(tmp_path):
    """A video card -> workspace -> planner -> accept -> export -> the server answers on an MP4,
    refuses a corrupt one (400) and an oversized one (413)."""
    from fastapi.testclient import TestClient

    from builder import api as workflow
    from builder.methods.export import export_solution

    card_path = make_video_task_card(tmp_path / "card", "crossing_count", n=4, seed=8)
    ws = workflow.create_workspace(tmp_path / "ws", card_path)
    program = propose_for_task(ws.load_task())[0]
    ws.accept(ws.add_program(program).version)
    exp = export_solution(ws, build=False, verify=False)
    src = exp.project_dir / "src" / exp.package
    sys.path.insert(0, str(src.parent))
    try:
        server = importlib.import_module(f"{src.name}.server")
        runtime = importlib.import_module(f"{src.name}.runtime")
        limits = server.Limits(max_video_frames=100)
        with runtime.Solution(workers=1) as solution, TestClient(server.create_app(solution, limits)) as client:
            card = ws.load_task()
            for ex in card.examples:
                data = ws.resolve_image(ex.images[0]).read_bytes()
                r = client.post("/predict", files={"image": ("clip.mp4", data, "video/mp4")})
                assert r.status_code == 200, r.text
                assert r.json()["value"] == ex.expected
            r = client.post("/predict", files={"image": ("bad.mp4", b"\x00\x00\x00\x18ftypisom" + b"x" * 300, "video/mp4")})
            assert r.status_code == 400 and "bad.mp4" in r.json()["detail"]
            frames = [np.zeros((64, 64, 3), np.uint8)] * 120
            long = encode_mp4(frames, None, fps=25)
            r = client.post("/predict", files={"image": ("long.mp4", long, "video/mp4")})
            assert r.status_code == 413 and "frame limit" in r.json()["detail"]
    finally:
        sys.path.remove(str(src.parent))
