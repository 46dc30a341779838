"""The safe program executor: static validation, sandboxed worker processes, limits."""

from builder.executor.sandbox import Limits, ProgramError, RunResult, Sandbox, bwrap_command
from builder.executor.validate import ValidationError, validate

__all__ = ["Limits", "ProgramError", "RunResult", "Sandbox", "ValidationError", "bwrap_command", "validate"]
