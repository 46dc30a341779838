"""The video planner: reads which video task kind a query asks for and proposes its program.

A card whose examples are videos is planned here (``propose_for_task`` routes it). The query's
words pick the kind (a collision's frame, a collision summary, line crossings, leaving the
frame); when the words are not decisive, the card's output kind decides. Each kind's program is
the world's reference program (``builder.world.video_tasks``), written against the tool API; the
object names of a collision query are read by the program itself, from the query it receives.
"""

from __future__ import annotations

import re

from builder.planner.prompt import as_request
from builder.world.video_tasks import VIDEO_KINDS, reference_program

_WORDS = {
    "collision_summary": ("summar", "describe", "report", "what happened", "before and after"),
    "collision_frame": ("collide", "collision", "crash", "hit", "bump", "touch"),
    "crossing_count": ("cross", "line", "pass"),
    "leaves": ("leave", "exit", "out of", "disappear", "go off"),
}
_BY_OUTPUT = {"frame": "collision_frame", "summary": "collision_summary", "count": "crossing_count",
              "bool": "leaves"}


def video_kind(query: str, output: str | None = None) -> str | None:
    """The video task kind a query asks for (None if neither its words nor ``output`` say)."""
    text = " ".join(re.findall(r"[a-z]+", query.lower()))
    scores = {kind: sum(w in text for w in words) for kind, words in _WORDS.items()}
    if scores["collision_summary"] and (scores["collision_frame"] or output == "summary"):
        scores["collision_summary"] += 2  # "summarise the collision" is a summary, not a frame
    ranked = sorted(scores, key=lambda k: -scores[k])
    fitting = [k for k in ranked if scores[k] and (output is None or VIDEO_KINDS[k] == output)]
    if fitting:
        return fitting[0]
    return _BY_OUTPUT.get(output or "")


class VideoPlanner:
    """Proposes the program of the video kind a request asks for (one candidate)."""

    def propose(self, requests, k: int = 1, temperature: float = 1.0, top_p: float = 1.0) -> list[list[str]]:
        """One list of candidates per request: the chosen kind's program, or none."""
        out = []
        for r in requests:
            req = as_request(r)
            kind = video_kind(req.query, req.output)
            out.append([reference_program(kind)] if kind else [])
        return out
