"""The exported project folder: templates, assets, examples, lock file and wheels."""

from __future__ import annotations

import hashlib
import json
import shutil
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from builder.core.images import store_image
from builder.core.taskcard import TaskCard, dump_task_card
from builder.core.workspace import Workspace
from builder.methods.export.result import ExportError, ExportResult
from builder.methods.export.wheels import (
    _copy_tree,
    _installed_version,
    _pip_wheel,
    _wheel_requirements,
    build_visforge_wheel,
    lock_requirements,
)
from builder.run import examples_from_card, run_batch

ASSET_PREFIX = "asset:"  # must match runtime.py in the template
# The solution's own server and test dependencies, pinned to the versions installed here.
SERVE_PACKAGES = ("fastapi", "uvicorn", "python-multipart")
TEST_PACKAGES = ("pytest", "httpx")  # the generated tests run the README's HTTP examples


def render_templates(template_dir: Path, dest: Path, context: dict[str, str], package: str) -> list[Path]:
    """Copy the template tree into ``dest``: ``*.tmpl`` files rendered, the rest verbatim.

    ``string.Template`` (``${name}``) keeps the templates readable Python/TOML and needs no
    dependency; a missing key is an error, not an empty hole in the output.
    """
    written = []
    for src in sorted(template_dir.rglob("*")):
        rel = src.relative_to(template_dir)
        if src.is_dir() or "__pycache__" in rel.parts:
            continue
        out = dest / str(rel).replace("__package__", package)
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix == ".tmpl":
            out = out.with_suffix("")
            try:
                text = string.Template(src.read_text(encoding="utf-8")).substitute(context)
            except (KeyError, ValueError) as e:
                raise ExportError(f"template {rel}: {type(e).__name__}: {e}") from None
            out.write_text(text, encoding="utf-8")
        else:
            shutil.copy2(src, out)
        written.append(out)
    return written


def _copy_examples(ws: Workspace, card: TaskCard, dest: Path) -> TaskCard:
    """The card's example images copied under ``dest/images`` and the card repointed there."""
    card = card.model_copy(deep=True)
    (dest / "images").mkdir(parents=True, exist_ok=True)

    def copy(rel: str) -> str:
        path = ws.resolve_image(rel)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ExportError(f"example image {rel}: cannot read {path} ({e.strerror})") from None
        name = store_image(data, dest / "images", path.suffix, atomic=False)
        return f"images/{name}"

    for ex in card.examples:
        ex.image = copy(ex.image) if isinstance(ex.image, str) else [copy(p) for p in ex.image]
    (dest / "task.yaml").write_text(dump_task_card(card), encoding="utf-8")
    return card


def _shared(values: list) -> Any:
    """The value every example shares (None when they differ or there are none)."""
    return values[0] if values and all(v == values[0] for v in values) and values[0] else None


def _verify(ws: Workspace, card: TaskCard, source: str, profile: dict) -> dict[str, dict[str, Any]]:
    """Run the program on the task's examples, here, with the exported engines."""
    result = run_batch(source, examples_from_card(card, ws.root), card.output, card.metric,
                       profile=profile, workers=1, progress=False)
    return {r.id: {"correct": r.correct, "value": r.value, "error": r.error} for r in result.results}


@dataclass
class ProjectSpec:
    """What goes into an exported project: the task, the accepted program, names, the pinned
    engines and their model files, the visforge extras, the outcomes at export, the templates."""

    card: TaskCard
    accepted: Any  # the accepted ProgramVersion
    root: Path
    name: str
    package: str
    version: str
    pinned: dict
    model_files: dict[str, Path]
    extras: set[str]
    at_export: dict[str, dict[str, Any]]
    templates: Path
    build: bool


@dataclass
class _Deps:
    visforge_wheel: Path
    visforge_version: str
    direct: list[str]
    test_deps: list[str]
    pins: list[str]
    missing: list[str]
    install: list[str]


def write_project(ws: Workspace, spec: ProjectSpec) -> ExportResult:
    """Write the project folder ``spec.root`` and, with ``spec.build``, build its wheel."""
    # The VisForge build goes in first: its version is what the project pins.
    build_tmp = spec.root.parent / f"{spec.root.name}.build"  # a hidden sibling: removed with the export's temp folder
    deps = _dependencies(ws, spec, build_tmp)
    exported_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest = _manifest(ws, spec, deps, exported_at)
    render_templates(spec.templates, spec.root, _template_context(spec, manifest, deps, exported_at), spec.package)
    _write_assets(spec, manifest)
    lock = _write_tests_and_lock(ws, spec, deps.pins)
    wheel = _build_wheel(spec, deps.visforge_wheel, build_tmp) if spec.build else None
    return ExportResult(
        name=spec.name,
        package=spec.package,
        version=spec.version,
        program_version=spec.accepted.version,
        project_dir=spec.root,
        wheel=wheel,
        wheels=([wheel] if wheel else []) + [deps.visforge_wheel],
        lock_file=lock,
        install_commands=deps.install,
        manifest=manifest,
    )


def _dependencies(ws: Workspace, spec: ProjectSpec, build_tmp: Path) -> _Deps:
    """Build the VisForge wheel, pin the direct dependencies and lock the whole closure."""
    visforge_wheel = build_visforge_wheel(spec.root / "wheels", cache_dir=ws.dir("cache", "wheels"), tmp_dir=build_tmp)
    visforge_version = visforge_wheel.name.split("-")[1]
    extra_spec = f"[{','.join(sorted(spec.extras))}]" if spec.extras else ""
    direct = [f"visforge{extra_spec}=={visforge_version}"] + [f"{p}=={_installed_version(p)}" for p in SERVE_PACKAGES]
    test_deps = [f"{p}=={_installed_version(p)}" for p in TEST_PACKAGES]
    pins, missing = lock_requirements(
        _wheel_requirements(visforge_wheel, spec.extras) + direct[1:] + test_deps
    )
    # wheelhouse/ (built with spec.build) holds the solution's wheel and the exact VisForge build it
    # pins: pip resolves the pin from there, offline with --no-index once the other dependencies
    # are present. Without a build, pip builds the project folder itself and finds the pin in wheels/.
    install = ([f"pip install --find-links wheelhouse -c requirements.lock {spec.name}"] if spec.build
               else ["pip install --find-links wheels -c requirements.lock ."])
    if "ocr" in spec.extras:
        # rapidocr's own opencv-python requirement would replace the headless OpenCV.
        ocr_version = _installed_version("rapidocr-onnxruntime")
        install.append(f"pip install --no-deps rapidocr-onnxruntime=={ocr_version}")
        pins.append(f"rapidocr-onnxruntime=={ocr_version}")
    return _Deps(visforge_wheel, visforge_version, direct, test_deps, pins, missing, install)


def _manifest(ws: Workspace, spec: ProjectSpec, deps: _Deps, exported_at: str) -> dict:
    """The solution's manifest.json: what was exported, from where, pinned to what, as tested."""
    card, accepted = spec.card, spec.accepted
    manifest = {
        "name": spec.name,
        "package": spec.package,
        "version": spec.version,
        "description": card.description,
        "output": card.output.value,
        "metric": card.metric.value,
        "task": card.name,
        "workspace": ws.root.name,
        "program_version": accepted.version,
        "program_origin": accepted.origin,
        "program_sha256": hashlib.sha256(accepted.source.encode("utf-8")).hexdigest(),
        "visforge": deps.visforge_version,
        "engines": spec.pinned,
        "multi_image": any(not isinstance(ex.image, str) for ex in card.examples),
        "default_query": _shared([ex.query for ex in card.examples]),
        "default_choices": _shared([ex.choices for ex in card.examples]),
        "examples": {"n": len(card.examples), "verified": bool(spec.at_export),
                     "passed": sum(r["correct"] for r in spec.at_export.values())},
        "exported_at": exported_at,
    }
    if deps.missing:
        manifest["unpinned"] = deps.missing
    return manifest


def _template_context(spec: ProjectSpec, manifest: dict, deps: _Deps, exported_at: str) -> dict[str, str]:
    """The values the solution templates are rendered with."""
    card = spec.card
    engines_md = "\n".join(f"- {k}: `{json.dumps(v)}`" for k, v in spec.pinned.items()) or "- (the program calls no engine)"
    return {
        "name": spec.name,
        "package": spec.package,
        "version": spec.version,
        "description": card.description.strip().replace("\n", " "),
        "description_toml": json.dumps(card.description.strip().replace("\n", " ")),
        "dependencies": "\n".join(f'    "{d}",' for d in deps.direct),
        "test_dependencies": ", ".join(f'"{d}"' for d in deps.test_deps),
        "workspace_name": manifest["workspace"],
        "program_tag": spec.accepted.tag,
        "exported_at": exported_at,
        "output": card.output.value,
        "metric": card.metric.value,
        "passed": str(manifest["examples"]["passed"]) if spec.at_export else "(not verified)",
        "n_examples": str(len(card.examples)),
        "install_commands": "\n".join(f".venv/bin/{cmd}" for cmd in deps.install),
        "offline_install": f".venv/bin/pip install --no-index --find-links wheelhouse {spec.name}",
        "install_note": _install_note(spec),
        "engines": engines_md,
    }


def _install_note(spec: ProjectSpec) -> str:
    """The README's words on what the install uses, for an export with or without its wheel built."""
    if spec.build:
        return ("`wheelhouse/` holds this solution's wheel and the exact VisForge build it was tested with (also in\n"
                "`dist/` and `wheels/`); `requirements.lock` pins every other dependency to the versions it was\n"
                "tested with. Offline, on a machine whose Python already has those dependencies (or with their\n"
                "wheels added to `wheelhouse/`), one command installs it:")
    return ("This export was made without building its wheel (no `wheelhouse/`): the command above builds the\n"
            "project folder, and `wheels/` holds the exact VisForge build it was tested with;\n"
            "`requirements.lock` pins every other dependency. For an offline install, build the wheelhouse\n"
            "once where pip can reach an index (`.venv/bin/pip wheel --no-deps -w wheelhouse . && cp wheels/*.whl\n"
            "wheelhouse/`, or export again with the wheel built); then one command installs it:")


def _write_assets(spec: ProjectSpec, manifest: dict) -> None:
    """The package's assets: the program as accepted, the pinned profile, the manifest, model files."""
    assets = spec.root / "src" / spec.package / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    # The program exactly as accepted: the sandbox must run what was tested.
    (assets / "program.py").write_text(spec.accepted.source, encoding="utf-8")
    (assets / "profile.yaml").write_text(
        "# Pinned engine profile exported by VisForge; 'asset:' paths are shipped in this folder.\n"
        + yaml.safe_dump(spec.pinned, sort_keys=True), encoding="utf-8")
    (assets / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    for rel, src in spec.model_files.items():
        target = assets / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            _copy_tree(src, target)
        else:
            shutil.copy2(src, target)


def _write_tests_and_lock(ws: Workspace, spec: ProjectSpec, pins: list[str]) -> Path:
    """The acceptance tests' examples and outcomes, and requirements.lock."""
    examples_dir = spec.root / "tests" / "examples"
    _copy_examples(ws, spec.card, examples_dir)
    (examples_dir / "export_results.json").write_text(json.dumps(spec.at_export, indent=2, default=repr) + "\n",
                                                      encoding="utf-8")
    lock = spec.root / "requirements.lock"
    lock.write_text(
        f"# Every dependency of {spec.name} {spec.version} pinned to the versions it was exported and tested with.\n"
        "# visforge itself is the wheel in wheels/.\n" + "\n".join(pins) + "\n", encoding="utf-8")
    return lock


def _build_wheel(spec: ProjectSpec, visforge_wheel: Path, build_tmp: Path) -> Path:
    """Build the solution's wheel and fill wheelhouse/ with it and the VisForge build."""
    root = spec.root
    wheel = _pip_wheel(root, root / "dist", build_tmp / "pip-tmp")
    (root / "wheelhouse").mkdir(exist_ok=True)
    for w in (wheel, visforge_wheel):
        shutil.copy2(w, root / "wheelhouse" / w.name)
    # In-tree build leftovers; the project folder stays what a customer should see.
    shutil.rmtree(root / "build", ignore_errors=True)
    for egg in (root / "src").glob("*.egg-info"):
        shutil.rmtree(egg, ignore_errors=True)
    return wheel
