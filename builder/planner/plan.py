"""Planning for a task card: candidate programs for the engineer to run, edit and accept."""

from __future__ import annotations

from builder.core.taskcard import OutputKind, TaskCard
from builder.planner.prompt import PlanRequest, check_program

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
    """A planner from a folder: the default semantic planner (``parser.json``) or a causal LM
    (``config.json``); the embedded default planner when ``path`` is None."""
    from pathlib import Path

    from builder.planner.semantic import load_semantic_planner

    if path is None or (Path(path) / "parser.json").is_file():
        return load_semantic_planner(path)
    if (Path(path) / "config.json").is_file():
        from builder.planner.default import load_default_planner

        return load_default_planner(path)
    raise FileNotFoundError(f"{path}: not a planner folder (no parser.json or config.json)")


def propose_for_task(card: TaskCard, planner=None, k: int = 4, temperature: float = 1.0,
                     top_p: float = 1.0) -> list[str]:
    """Up to ``k`` distinct, valid candidate programs for ``card`` (the default planner if none given).

    Candidates that do not parse, lack the card's signature or that the sandbox would refuse are
    dropped; the planner sees only the query and the task's shape, never an expected output. The
    default planner is loaded once per process and shared.
    """
    request = request_for_card(card)
    if planner is None and card_has_video(card):
        from builder.planner.video import VideoPlanner

        planner = VideoPlanner()
    if planner is None:
        from builder.planner.semantic import load_semantic_planner

        planner = load_semantic_planner()
    raw = planner.propose([request], k=k, temperature=temperature, top_p=top_p)[0]
    out: list[str] = []
    for src in raw:
        if src and check_program(src, request=request) is None and src not in out:
            out.append(src)
    return out
