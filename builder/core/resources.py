"""Files that ship inside the VisForge packages, found through ``importlib.resources``.

Everything VisForge reads at run time (solution templates, engine profiles, weights, seed
programs) is package data, so it is found the same way from a checkout, an editable install
or a normal wheel install.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def package_path(package: str, *parts: str) -> Path:
    """The file-system path of ``parts`` inside an installed package (a plain folder on disk)."""
    root = resources.files(package)
    target = root.joinpath(*parts) if parts else root
    path = Path(str(target))
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found in the installed {package!r} package")
    return path


def solution_template_dir() -> Path:
    """The folder of the exported-solution template (``templates/solution``)."""
    return package_path("templates", "solution")
