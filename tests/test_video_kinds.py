"""The newer video kinds: ground truth from scene graphs, reference programs on generated clips,
reading the answer / frame slots, and refusing what no kind expresses."""

from __future__ import annotations

import numpy as np
import pytest

from builder.domains.shapes.world.video_programs import reference_program
from builder.domains.shapes.world.video_tasks import ground_truth, video_example
from builder.domains.shapes.world.video_truth import (
    box_at_frame,
    collided_objects,
    collision_count,
    first_to_collide,
    score_video,
    time_in_view,
)
from builder.planner.video_read import read_answer, read_frame


def _clip() -> dict:
    """A hand-made clip: red circle and blue square collide at frame 3; the green star enters at
    frame 2; 6 frames at 2 fps."""
    objects = [{"id": 0, "name": "red circle", "shape": "circle", "color": "red", "size": "small"},
               {"id": 1, "name": "blue square", "shape": "square", "color": "blue", "size": "large"},
               {"id": 2, "name": "green star", "shape": "star", "color": "green", "size": "small"}]
    frames = []
    for t in range(6):
        graph = [{"id": 0, "box": [t, 0, t + 4, 4]}, {"id": 1, "box": [10 - t, 0, 16 - t, 6]}]
        if t >= 2:
            graph.append({"id": 2, "box": [20, t, 24, t + 4]})
        frames.append(graph)
    return {"width": 32, "height": 32, "fps": 2, "n_frames": 6, "objects": objects, "frames": frames,
            "events": [{"type": "enter", "frame": 2, "object": 2},
                       {"type": "collision", "frame": 3, "objects": [0, 1]}]}


def test_ground_truth_of_the_new_kinds_from_scene_graphs():
    clip = _clip()
    red, blue, green = ("red", None, None), (None, "square", None), ("green", "star", None)
    assert collision_count(clip) == 1 and collision_count(clip, [red]) == 1 and collision_count(clip, [green]) == 0
    assert collision_count(clip, [red, blue]) == 1 and collision_count(clip, [red, green]) == 0  # between them
    assert collided_objects(clip) == "blue square and red circle"
    assert collided_objects(clip, [red]) == "blue square" and collided_objects(clip, [red], "color") == "blue"
    assert collided_objects(clip, [green]) == "none"
    assert first_to_collide(clip) == "blue square and red circle"
    assert first_to_collide(clip, [blue, green], "color") == "blue" and first_to_collide(clip, [green]) == "none"
    assert time_in_view(clip, [green]) == 4 and time_in_view(clip, [green], "seconds") == 2.0
    assert time_in_view(clip) == 6 and time_in_view(clip, [("purple", None, None)]) == 0
    assert box_at_frame(clip, [red], "last") == [[5, 0, 9, 4]] and box_at_frame(clip, [green], "first") == []
    assert box_at_frame(clip, [blue], "collision") == [[7, 0, 13, 6]] and box_at_frame(clip, [red], 99) == []
    assert len(box_at_frame(clip, [], 4)) == 3
    # the filtered kinds through one entry point, with the slots the planner reads
    assert ground_truth(clip, "time_in_view", objects=["green star"], answer="seconds") == 2.0
    assert ground_truth(clip, "collides", "red circle", "blue square") is True


def test_scores_time_within_two_frames_and_boxes_by_iou():
    assert score_video("time_in_view", 58, 60) and not score_video("time_in_view", 57, 60)
    assert score_video("time_in_view", 2.36, 2.4, "seconds", 25) and not score_video("time_in_view", 2.2, 2.4, "seconds", 25)
    assert not score_video("time_in_view", "60", 60) and not score_video("time_in_view", True, 1)
    assert score_video("box_at_frame", [[10, 10, 20, 20]], [[11, 10, 21, 20]])
    assert not score_video("box_at_frame", [[10, 10, 20, 20]], [[16, 10, 26, 20]])
    assert score_video("box_at_frame", [], []) and not score_video("box_at_frame", [], [[0, 0, 4, 4]])
    assert score_video("collided_objects", "Blue square and red circle", "blue square and red circle")


def test_slots_are_checked():
    with pytest.raises(ValueError, match="frame"):
        reference_program("box_at_frame", objects=["red circle"], frame="middle")
    with pytest.raises(ValueError, match="answer"):
        reference_program("time_in_view", objects=["red circle"], answer="color")
    with pytest.raises(ValueError, match="no frame"):
        reference_program("collision_count", frame="last")
    with pytest.raises(ValueError, match="direction"):
        reference_program("collided_objects", direction="left")
    src = reference_program("box_at_frame", objects=["red circle"], frame=12)
    assert 'WANT = [("red", "circle", None)]' in src and "FRAME = 12" in src


def _words(text: str) -> list[str]:
    from builder.domains import vocabulary

    return vocabulary("shapes").split_words(text)


@pytest.mark.parametrize("text,frame", [
    ("Give me the red square's box at the end of the clip", "last"),
    ("Where is the blue circle in the opening frame?", "first"),
    ("Box of the green star at frame 12, please", 12),
    ("the 7th frame: where is the star?", 7),
    ("where is the cyan hexagon at frame number twenty", 20),
    ("Locate the yellow circle when the two shapes crash", "collision"),
    ("Where is the red star in the last frame, after the crash?", "last"),
    ("Where is the purple circle?", None),
])
def test_frame_slot(text, frame):
    assert read_frame(_words(text))[0] == frame


def test_answer_slot():
    assert read_answer(_words("For how many seconds is the red circle visible?"), "time_in_view") == "seconds"
    assert read_answer(_words("How long is the red circle visible?"), "time_in_view") == "frames"
    assert read_answer(_words("Which colour collides first?"), "first_to_collide") == "color"
    assert read_answer(_words("Which object collides first?"), "first_to_collide") == "name"
    assert read_answer(_words("How many collisions?"), "collision_count") is None


# ---- reference programs on generated clips (pixels through the track tool) ---------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from builder.domains.shapes.world.video import sample_clip, write_clip

    rng = np.random.default_rng(11)
    out = []
    for i, collision in enumerate((True, True, False)):
        clip = sample_clip(rng, "clean", collision=collision)
        path = tmp_path_factory.mktemp("clips") / f"{i}.mp4"
        write_clip(clip, path)
        out.append((path, clip.to_json()))
    return out


def _slots(gt: dict) -> list[tuple[str, dict]]:
    first, last = gt["objects"][0], gt["objects"][-1]
    one = [(first["color"], None, None)]
    return [("collision_count", {}), ("collision_count", {"objects": one}),
            ("collided_objects", {}), ("collided_objects", {"objects": one, "answer": "color"}),
            ("first_to_collide", {}), ("first_to_collide", {"objects": [(None, last["shape"], None)]}),
            ("time_in_view", {"objects": [(last["color"], last["shape"], None)]}),
            ("time_in_view", {"objects": one, "answer": "seconds"}),
            ("box_at_frame", {"objects": one, "frame": "collision"}),
            ("box_at_frame", {"objects": [(last["color"], None, None)], "frame": "last"}),
            ("box_at_frame", {"objects": one, "frame": 20})]


def test_reference_programs_match_the_ground_truth(clips):
    from builder.executor import Sandbox
    from builder.run.local import ExampleInput, run_program
    from builder.tools.profile import build_engines

    engines = build_engines("shapes")
    wrong = []
    with Sandbox(workers=1) as sandbox:
        for path, gt in clips:
            for kind, slots in _slots(gt):
                ex = video_example(gt, kind, **slots)
                res, _ = run_program(ex["program"], ExampleInput([str(path)], ex["query"]), engines, sandbox, None)
                if res.error is not None or not score_video(kind, res.value, ex["expected"], slots.get("answer"), gt["fps"]):
                    wrong.append((kind, slots, res.value, res.error, ex["expected"]))
    assert not wrong, wrong
