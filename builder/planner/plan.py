"""Planning for a task card: candidate programs for the engineer to run, edit and accept."""

from __future__ import annotations

from builder.core.taskcard import OutputKind, TaskCard
from builder.planner.prompt import PlanRequest, Proposal, check_program

# The planner's task families by task-card output kind.
FAMILY_OF_OUTPUT = {
    OutputKind.text: "vqa",
    OutputKind.bool: "vqa",
    OutputKind.count: "vqa",
    OutputKind.boxes: "grounding",
    OutputKind.choice: "itm",
    OutputKind.frame: "video",
    OutputKind.summary: "video",
}


def request_for_card(card: TaskCard) -> PlanRequest:
    """The plan request for a card: its shared query (or its description), family and inputs."""
    queries = {ex.query for ex in card.examples if ex.query}
    query = queries.pop() if len(queries) == 1 else card.description
    first = card.examples[0] if card.examples else None
    return PlanRequest(
        query=query,
        family=FAMILY_OF_OUTPUT[card.output],
        choices=first.choices if first is not None else None,
        multi_image=first is not None and not isinstance(first.image, str),
        output=card.output.value,
    )


def card_has_video(card: TaskCard) -> bool:
    """True if the card's examples are videos (the video planner plans for them)."""
    from builder.core.video import is_video_path

    return bool(card.examples) and any(is_video_path(p) for p in card.examples[0].images)


def load_planner(path=None):
    """A planner from an artifact folder (``builder.core.artifacts``): the semantic parser or a
    causal LM saved by ``save_pretrained``; the embedded default planner when ``path`` is None."""
    from builder.core.artifacts import load_artifact, read_record
    from builder.planner.backends import TransformersPlanner
    from builder.planner.semantic import SemanticParser, load_semantic_planner

    if path is None:
        return load_semantic_planner()
    if read_record(path)["architecture"] == SemanticParser.architecture:
        return load_semantic_planner(path)  # loaded once per process and shared
    return load_artifact(path, expected=TransformersPlanner)


def is_planner_folder(path) -> bool:
    """True if ``path`` holds a saved planner (a recorded semantic parser or causal LM)."""
    from builder.core.artifacts import ArtifactError, read_record

    try:
        return read_record(path)["architecture"] in ("semantic-parser", "transformers-planner")
    except ArtifactError:
        return False


def default_planner(card: TaskCard, closed_vocabulary: bool = True):
    """The planner for a card when none is given: the video planner for videos, else the composing
    planner (``closed_vocabulary``: the engine profile's detector sees only its own nouns)."""
    if card_has_video(card):
        from builder.planner.video import VideoPlanner

        return VideoPlanner()
    from builder.planner.compose.planner import ComposingPlanner

    return ComposingPlanner(closed_vocabulary=closed_vocabulary)


def plan_for_task(card: TaskCard, planner=None, k: int = 4, temperature: float = 1.0, top_p: float = 1.0,
                  closed_vocabulary: bool = True) -> Proposal:
    """Up to ``k`` distinct, valid candidate programs for ``card``, or none and the planner's reason.

    Candidates that do not parse, lack the card's signature or that the sandbox would refuse are
    dropped; the planner sees only the query and the task's shape, never an expected output. A
    planner with a ``plan`` method (the composing planner) may refuse a request it cannot express;
    any other planner's empty answer has no reason. Default planners are loaded once per process.
    """
    request = request_for_card(card)
    planner = planner if planner is not None else default_planner(card, closed_vocabulary)
    if hasattr(planner, "plan"):
        proposal = planner.plan(request, k=k, temperature=temperature, top_p=top_p)
    else:
        proposal = Proposal(planner.propose([request], k=k, temperature=temperature, top_p=top_p)[0])
    out: list[str] = []
    for src in proposal.programs:
        if src and check_program(src, request=request) is None and src not in out:
            out.append(src)
    return Proposal(out, proposal.refusal)


def propose_for_task(card: TaskCard, planner=None, k: int = 4, temperature: float = 1.0,
                     top_p: float = 1.0) -> list[str]:
    """Up to ``k`` distinct, valid candidate programs for ``card`` (``plan_for_task`` without the reason)."""
    return plan_for_task(card, planner, k, temperature, top_p).programs
