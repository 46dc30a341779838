"""What an export produced, and its error."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder.core.errors import UserError


class ExportError(UserError, RuntimeError):
    """The workspace cannot be exported; the message says what to change."""


@dataclass
class ExportResult:
    """What an export produced."""

    name: str
    package: str
    version: str
    program_version: int
    project_dir: Path
    wheel: Path | None  # the solution's wheel (None when built with build=False)
    wheels: list[Path] = field(default_factory=list)  # every wheel to install, the solution's first
    lock_file: Path | None = None
    install_commands: list[str] = field(default_factory=list)  # run inside project_dir
    manifest: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (for ``visforge export``)."""
        return json.loads(json.dumps(asdict(self), default=str))
