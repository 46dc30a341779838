"""The foundation layer: planners that write vision programs, and their prompts."""

from builder.planner.plan import propose_for_task, request_for_card

__all__ = ["propose_for_task", "request_for_card"]
