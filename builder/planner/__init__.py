"""The foundation layer: planners that write vision programs, and their prompts.

The embedded default is ``builder.planner.semantic`` (a parser on the pretrained MiniLM whose
readings compile to programs, ``builder.planner.meaning``); ``builder.planner.backends`` serves
code LLMs (local transformers models or OpenAI-compatible endpoints).
"""

from builder.planner.plan import load_planner, propose_for_task, request_for_card

__all__ = ["load_planner", "propose_for_task", "request_for_card"]
