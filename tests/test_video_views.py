"""Video examples in the views: the trace as a strip of frames with the tracks' boxes, thumbnails of
video examples in the task card views of the widgets and the app."""

from __future__ import annotations

import re

import pytest

from builder import api as workflow
from builder.core.video import load_media
from builder.domains.shapes.world.video_tasks import make_video_task_card, reference_program
from builder.executor import Sandbox
from builder.interfaces.views import safe_thumbnail, trace_html
from builder.run.local import examples_from_card, run_program
from builder.tools.profile import build_engines
from builder.tools.trace import STRIP_FRAMES, Trace, strip_frames, strip_image, trace_to_html, video_strip


@pytest.fixture(scope="module")
def summary_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_views")
    card_path = make_video_task_card(root / "card", "collision_summary", n=3, seed=5)
    return workflow.create_workspace(root / "ws", card_path)


def _strips(page: str) -> list[int]:
    return [int(n) for n in re.findall(r"class='vf-strip' data-frames='(\d+)'", page)]


def test_strip_frames_always_show_the_event():
    assert strip_frames(60) == [0, 12, 24, 35, 47, 59]
    assert 31 in strip_frames(60, mark=31) and len(strip_frames(60, mark=31)) == STRIP_FRAMES
    assert strip_frames(60, n=4, start=10, stop=20, mark=50) == [10, 13, 16, 19]
    assert strip_frames(3) == [0, 1, 2] and strip_frames(60, start=30, stop=30) == []


def test_video_trace_is_a_strip_with_boxes_and_the_event_frame(summary_ws, tmp_path):
    ws = summary_ws
    card = ws.load_task()
    ex = examples_from_card(card, ws.root)[0]
    with Sandbox(workers=1) as sandbox:
        res, trace = run_program(reference_program("collision_summary"), ex, build_engines("shapes"), sandbox,
                                 inspect=True)
    assert res.error is None and isinstance(res.value, dict), res
    frame = res.value["frame"]
    page = trace_to_html(trace, [load_media(ex.images[0])], output=card.output)
    # input strip, the track step's strip and the result strip, each of STRIP_FRAMES frames
    assert _strips(page) == [STRIP_FRAMES] * 3
    assert page.count("class='vf-frame'") + page.count("class='vf-frame vf-event'") == 3 * STRIP_FRAMES
    # the event frame is marked in the track step and in the result, with its index
    assert page.count("class='vf-frame vf-event'") == 2 and f"frame {frame} · event" in page
    # the result strip's legend names the summary's objects only
    result_part = page[page.index("<b>Result:</b>"):]
    assert all(name in result_part for name in res.value["objects"])
    assert result_part.count("&#9632;") == 2

    # through the workspace view (what the widgets and the app show), from a saved result
    saved = {"id": ex.id, "trace": trace.to_dict()}
    assert _strips(trace_html(ws, saved)) == [STRIP_FRAMES] * 3
    # boxes are drawn: the marked frame differs from the raw decoded frame where a track is
    video = load_media(ex.images[0])
    tracks = trace.steps[0].result
    pics = dict(video_strip(video, tracks, mark=frame, side=128))
    raw = video.frame(frame)
    import numpy as np

    assert not np.array_equal(np.asarray(pics[frame]), raw)
    png = tmp_path / "strip.png"
    strip_image(list(pics.items())).save(png)
    from PIL import Image

    with Image.open(png) as im:
        assert im.width == STRIP_FRAMES * 128 + (STRIP_FRAMES - 1) * 4


def test_a_frame_output_marks_its_frame(summary_ws):
    ex = examples_from_card(summary_ws.load_task(), summary_ws.root)[0]
    trace = Trace(source="def execute(video):\n    return 17\n", value=17)
    page = trace_to_html(trace, [load_media(ex.images[0])], output="frame")
    assert "frame 17 · event" in page and _strips(page) == [STRIP_FRAMES, STRIP_FRAMES]
    assert "· event" not in trace_to_html(trace, [load_media(ex.images[0])], output="count")


def test_video_examples_show_thumbnails_in_widgets_and_app(summary_ws, tmp_path):
    from widgets import TaskWidget

    ws = summary_ws
    n = len(ws.load_task().examples)
    task = TaskWidget(ws.root)
    assert task.table.value.count("class='vf-thumb vf-video'") == n, task.table.value[:500]
    assert ".mp4</" not in task.table.value  # a picture, not a path
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"junk" * 40)
    assert "vf-badimg" in safe_thumbnail(bad)  # a broken video is named in a red box, never fatal

    pytest.importorskip("panel")
    from builder.interfaces.app import VisForgeApp

    app = VisForgeApp(ws.root)
    try:
        app.state.task_changed()
        view = app.task.task_view.object
        assert view.count("class='vf-thumb vf-video'") == n and "summary" in view
    finally:
        app.close()
