"""``export_solution``: check the workspace, analyse and pin the engines, verify, write the
project aside and swap it into place."""

from __future__ import annotations

import ast
import keyword
import os
import re
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from builder.core import progress
from builder.core.atomic import COMPLETE_SUFFIX
from builder.core.resources import solution_template_dir
from builder.core.workspace import Workspace
from builder.executor.validate import parse as parse_source
from builder.methods.export.project import ASSET_PREFIX, ProjectSpec, _verify, write_project
from builder.methods.export.result import ExportError, ExportResult
from builder.tools.profile import BACKENDS, ProfileError, load_profile
from builder.tools.specs import program_engines

# Program API names -> the engine each one calls, derived from the tool table.
METHOD_ENGINES, FUNCTION_ENGINES = program_engines()
# (engine kind, backend) -> the visforge extra its dependencies live in ("*": any kind).
# The shapes VQA engine is a small torch network; the other shapes engines need only the core.
BACKEND_EXTRAS = {("*", "hf"): "ml", ("vqa", "shapes"): "ml", ("*", "rapidocr"): "ocr"}
# Never a solution's import name: visforge's own packages, and the stdlib.
RESERVED = {"builder", "widgets", "augment", "visforge", "tests", "test"} | set(sys.stdlib_module_names)
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")



# ---- analysis --------------------------------------------------------------------------------
def engines_used(source: str) -> set[str]:
    """The engine kinds a program can call, read from its AST (over- rather than under-counts)."""
    try:
        tree = parse_source(source)
    except SyntaxError as e:
        raise ExportError(f"the accepted program does not parse: line {e.lineno}: {e.msg}") from None
    kinds = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in METHOD_ENGINES:
            kinds.add(METHOD_ENGINES[node.attr])
        elif isinstance(node, ast.Name) and node.id in FUNCTION_ENGINES:
            kinds.add(FUNCTION_ENGINES[node.id])
    return kinds


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ExportError(f"name {name!r}: use lower-case letters, digits, '-' or '_', starting with a letter")
    package = name.replace("-", "_")
    if package in RESERVED or keyword.iskeyword(package):
        raise ExportError(f"name {name!r}: its import name {package!r} clashes with a Python or VisForge module")
    return package


def _check_version(version: str) -> str:
    try:
        Version(version)
    except InvalidVersion:
        raise ExportError(f"version {version!r} is not a valid Python package version (e.g. 1.0.3)") from None
    return version


# ---- engine profile --------------------------------------------------------------------------
def _hf_cached_commit(model: str, revision: str) -> str | None:
    """The commit a hub id's revision (branch or tag) points at in the local HF cache, if known."""
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"
    )
    ref = Path(hub) / f"models--{model.replace('/', '--')}" / "refs" / revision
    try:
        commit = ref.read_text().strip()
    except OSError:
        return None
    return commit if _COMMIT_RE.match(commit) else None


def pin_profile(profile: dict[str, dict[str, Any]], kinds: set[str]) -> tuple[dict, dict[str, Path], set[str]]:
    """The profile reduced to ``kinds`` with every model reference pinned.

    Returns ``(pinned profile, {asset path: local file or folder to ship}, visforge extras)``.
    Option values that name an existing local file or folder (fine-tuned checkpoints, local
    model copies) are shipped inside the package; hub ids need a commit revision.
    """
    pinned: dict[str, dict[str, Any]] = {}
    files: dict[str, Path] = {}
    extras: set[str] = set()
    for kind in sorted(kinds):
        if kind not in profile:
            raise ExportError(f"the program calls the {kind} engine, but the engine profile configures none")
        spec = dict(profile[kind])
        backend = spec["backend"]
        if not BACKENDS[(kind, backend)].startswith("builder."):
            raise ExportError(
                f"{kind}: backend {backend!r} lives outside visforge ({BACKENDS[(kind, backend)]}) and cannot be shipped"
            )
        extra = BACKEND_EXTRAS.get((kind, backend)) or BACKEND_EXTRAS.get(("*", backend))
        if extra:
            extras.add(extra)
        for key, value in list(spec.items()):
            if key == "backend" or not isinstance(value, str) or not value:
                continue
            path = Path(value).expanduser()
            if path.exists():
                rel = f"models/{kind}-{key}/{path.name}"
                files[rel] = path
                spec[key] = ASSET_PREFIX + rel
        model = spec.get("model")
        if backend == "hf" and isinstance(model, str) and not model.startswith(ASSET_PREFIX):
            revision = str(spec.get("revision") or "main")
            commit = revision if _COMMIT_RE.match(revision) else _hf_cached_commit(model, revision)
            if commit is None:
                raise ExportError(
                    f"{kind}: model {model!r} is not pinned: add 'revision: <40-hex commit>' to the profile "
                    "(or point 'model' at a local copy, which is then shipped inside the package)"
                )
            spec["revision"] = commit
        pinned[kind] = spec
    return pinned, files, extras


# ---- the export ------------------------------------------------------------------------------
def export_solution(
    workspace: Workspace | str | Path,
    out_dir: str | Path | None = None,
    name: str | None = None,
    profile: str | Path | dict | None = None,
    version: str | None = None,
    *,
    overwrite: bool = False,
    verify: bool = True,
    build: bool = True,
    template_dir: str | Path | None = None,
) -> ExportResult:
    """Export the workspace's accepted program as a package project, and build its wheel.

    ``name`` defaults to the task's name, ``version`` to ``1.0.<program version>``, ``profile``
    to the bundled offline default ``"shapes"``, ``out_dir`` to ``<ws>/exports/<name>-<version>``.
    With ``verify`` the program first runs on the task's examples here; the outcomes go into
    the manifest and decide which generated acceptance tests are expected to pass. The folder
    appears complete or not at all (built aside in a hidden ``.<name>.tmp-*`` folder, then
    renamed into place); an export killed half-way leaves only hidden folders, which
    ``Workspace.open`` removes and ``Workspace.show`` never lists. Build tools run as children
    that die with this process and keep their temporary files inside that hidden folder.
    """
    stage, n_stages = _stage_reporter(verify, build)
    stage(0)
    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    accepted = ws.accepted
    if accepted is None:
        raise ExportError(f"{ws.root}: no accepted program version; accept one first (Workspace.accept(version))")
    card = ws.load_task()
    name = name or card.name
    package = _check_name(name)
    version = _check_version(version or f"1.0.{accepted.version}")
    out = Path(out_dir) if out_dir is not None else ws.dir("exports") / f"{name}-{version}"
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out}: already exists; pass overwrite=True or choose another folder")
    templates = Path(template_dir) if template_dir is not None else solution_template_dir()
    if not templates.is_dir():
        raise ExportError(f"{templates}: solution templates not found")
    try:
        full_profile = load_profile(profile if profile is not None else "shapes")
    except ProfileError as e:
        raise ExportError(f"engine profile: {e}") from None
    kinds = engines_used(accepted.source)
    pinned, model_files, extras = pin_profile(full_profile, kinds)

    at_export: dict[str, dict[str, Any]] = {}
    if verify:
        # The engines as configured here (local paths, not yet the shipped asset: references).
        local = {k: {**full_profile[k], **({"revision": v["revision"]} if "revision" in v else {})}
                 for k, v in pinned.items()}
        stage(1)
        at_export = _verify(ws, card, accepted.source, local)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        stage(n_stages - 2)
        result = write_project(ws, ProjectSpec(card, accepted, tmp, name, package, version, pinned, model_files,
                                               extras, at_export, templates, build))
        stage(n_stages - 1)
        complete = tmp.with_name(tmp.name + COMPLETE_SUFFIX)  # a killed swap is finished on the next open
        complete.touch()
        if out.exists():
            trash = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            out.rename(trash)
            tmp.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out)
        complete.unlink(missing_ok=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        tmp.with_name(tmp.name + COMPLETE_SUFFIX).unlink(missing_ok=True)
        shutil.rmtree(out.parent / f"{tmp.name}.build", ignore_errors=True)
    return _moved(result, tmp, out)


def _moved(result: ExportResult, tmp: Path, out: Path) -> ExportResult:
    """Paths were made inside the temporary folder: point them at the final one."""
    result.project_dir = out
    result.wheel = out / result.wheel.relative_to(tmp) if result.wheel else None
    result.wheels = [out / w.relative_to(tmp) for w in result.wheels]
    result.lock_file = out / result.lock_file.relative_to(tmp) if result.lock_file else None
    return result


def _stage_reporter(verify: bool, build: bool):
    """The export's progress in stages (``builder.core.progress``): ``stage(i)`` and how many."""
    stages = ["checking the program and pinning its engines"] + (["verifying on the examples"] if verify else []) + [
        "writing the project" + (" and building the wheel" if build else ""), "moving the export into place"]

    def stage(i: int) -> None:
        progress.report(stages[i], done=i, total=len(stages), unit="stages")

    return stage, len(stages)
