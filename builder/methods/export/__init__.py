"""Export a workspace's accepted program as an installable, tested Python package.

``export_solution`` writes a project folder (from ``templates/solution``) and builds it::

    <out>/pyproject.toml            exact pins of direct dependencies (visforge, fastapi, ...)
    <out>/requirements.lock         exact pins of the whole dependency closure, as tested here
    <out>/README.md                 install and use
    <out>/wheels/visforge-*.whl     the VisForge build the program was tested with
    <out>/dist/<name>-*.whl         the solution itself
    <out>/src/<package>/            runtime.py (Solution), cli.py, server.py, assets/
    <out>/src/<package>/assets/     program.py, profile.yaml (pinned), manifest.json, models/
    <out>/tests/                    acceptance tests + the task card's examples

Why ship a VisForge wheel rather than vendor its modules: the exported program must run
through the very sandbox and tool host it was tested with, and the sandbox starts its worker
by module name, so rewriting imports into a vendored copy would change what runs. The wheel is
built from the source tree under a local version (``0.1.0+src.<content hash>``) that no index
can serve, so the pin names this exact build.

Only the engines the program calls are exported (found from its AST), which keeps optional
backends (OCR, Hugging Face) and their dependencies out unless the program needs th
Modules: ``solution`` (``export_solution``: checks, engine analysis and pinning, the atomic
folder swap), ``project`` (the project folder's files), ``wheels`` (dependency pins and wheel
builds), ``result``.
"""

from builder.core.workspace import WorkspaceError
from builder.methods.export.project import render_templates
from builder.methods.export.result import ExportError, ExportResult
from builder.methods.export.solution import (
    FUNCTION_ENGINES,
    METHOD_ENGINES,
    engines_used,
    export_solution,
    pin_profile,
)
from builder.methods.export.wheels import build_visforge_wheel, lock_requirements

__all__ = ["FUNCTION_ENGINES", "METHOD_ENGINES", "ExportError", "ExportResult", "WorkspaceError",
           "build_visforge_wheel", "engines_used", "export_solution", "lock_requirements", "pin_profile",
           "render_templates"]
