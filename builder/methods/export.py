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
backends (OCR, Hugging Face) and their dependencies out unless the program needs them.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import keyword
import os
import re
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.core.errors import UserError
from builder.core.images import store_image
from builder.core.resources import solution_template_dir
from builder.core.taskcard import TaskCard, dump_task_card
from builder.core.workspace import Workspace, WorkspaceError
from builder.executor.validate import parse as parse_source
from builder.run import examples_from_card, run_batch
from builder.tools.profile import BACKENDS, ProfileError, load_profile
from builder.tools.specs import program_engines

# A checkout (or editable install) has the source tree above the builder package.
REPO_ROOT = Path(__file__).resolve().parents[2]
ASSET_PREFIX = "asset:"  # must match runtime.py in the template
# The solution's own server and test dependencies, pinned to the versions installed here.
SERVE_PACKAGES = ("fastapi", "uvicorn", "python-multipart")
TEST_PACKAGES = ("pytest",)
# Program API names -> the engine each one calls, derived from the tool table.
METHOD_ENGINES, FUNCTION_ENGINES = program_engines()
# (engine kind, backend) -> the visforge extra its dependencies live in ("*": any kind).
# The shapes VQA engine is a small torch network; the other shapes engines need only the core.
BACKEND_EXTRAS = {("*", "hf"): "ml", ("vqa", "shapes"): "ml", ("*", "rapidocr"): "ocr"}
# Never a solution's import name: visforge's own packages, and the stdlib.
RESERVED = {"builder", "widgets", "augment", "visforge", "tests", "test"} | set(sys.stdlib_module_names)
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


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


# ---- dependencies ----------------------------------------------------------------------------
def _installed_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        raise ExportError(f"{name} is not installed here; install visforge[serve,dev] to export solutions") from None


def lock_requirements(requirements: list[str]) -> tuple[list[str], list[str]]:
    """Pins (``name==version``) for the closure of ``requirements`` as installed here.

    Returns ``(pins, missing)``: requirements that apply here but are not installed are
    listed in ``missing`` rather than guessed.
    """
    pins: dict[str, str] = {}
    missing: set[str] = set()
    done: set[tuple[str, frozenset]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in done:
            continue
        done.add((name, frozenset(req.extras)))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.add(name)
            continue
        pins[name] = dist.version
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is not None and not any(sub.marker.evaluate({"extra": e}) for e in (req.extras or {""})):
                continue
            todo.append(sub)
    return [f"{n}=={v}" for n, v in sorted(pins.items())], sorted(missing)


def _wheel_requirements(wheel: Path, extras: set[str]) -> list[str]:
    """Requires-Dist of a built wheel that apply with ``extras`` (markers evaluated here)."""
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta_name).decode("utf-8")
    out = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""}) | {""}):
            req.marker = None
            out.append(str(req))
    return out


# ---- building --------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """In a child before exec: SIGKILL it when the exporting process dies (Linux prctl)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _pip_wheel(project: Path, dest: Path, tmp_dir: Path | None = None) -> Path:
    """Build ``project`` into a wheel in ``dest`` (no dependencies, offline when possible).

    pip dies with this process, and with ``tmp_dir`` its temporary folders live there (inside
    the export's own temporary folder, removed with it) rather than in the system temp directory.
    """
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.whl"))
    # An absolute path: a bare folder name would be looked up on the package index.
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dest.resolve()), str(project.resolve())]
    try:
        import setuptools  # noqa: F401

        # The build backend is already here: no isolated build env (no download, seconds faster).
        cmd.insert(4, "--no-build-isolation")
    except ImportError:
        pass
    env = dict(os.environ)
    if tmp_dir is not None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        env.update(TMPDIR=str(tmp_dir), TEMP=str(tmp_dir), TMP=str(tmp_dir))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    if proc.returncode != 0:
        raise ExportError(f"building a wheel from {project} failed:\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}")
    built = sorted(set(dest.glob("*.whl")) - before) or sorted(dest.glob("*.whl"), key=lambda p: p.stat().st_mtime)
    if not built:
        raise ExportError(f"building {project} produced no wheel")
    return built[-1]


def _copy_tree(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*"))


def _source_tree() -> Path | None:
    """The visforge source tree this code runs from, or None for a normal (non-editable) install."""
    pyproject = REPO_ROOT / "pyproject.toml"
    if pyproject.is_file() and 'name = "visforge"' in pyproject.read_text(encoding="utf-8"):
        return REPO_ROOT
    return None


# dist-info files that describe one installation, not the package: left out of a repacked wheel.
_INSTALL_ONLY = {"INSTALLER", "REQUESTED", "RECORD", "direct_url.json"}


def repack_installed_wheel(dest: Path) -> Path:
    """The installed visforge distribution packed back into a wheel (for non-editable installs).

    Takes the files the installation's RECORD lists inside site-packages (packages, package
    data and the ``.dist-info`` metadata, scripts excluded: pip makes them from the entry
    points), and writes a fresh RECORD with their hashes.
    """
    dist = metadata.distribution("visforge")
    info = next((f for f in dist.files or [] if f.parts[0].endswith(".dist-info")), None)
    if info is None:
        raise ExportError("the installed visforge has no file list (RECORD): reinstall it with pip")
    wheel = dest / f"visforge-{dist.version}-py3-none-any.whl"
    dest.mkdir(parents=True, exist_ok=True)
    records = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(dist.files, key=str):
            rel = str(f)
            if rel.startswith("..") or "__pycache__" in f.parts or rel.endswith(".pyc"):
                continue
            if f.parts[0] == info.parts[0] and f.name in _INSTALL_ONLY:
                continue
            data = Path(dist.locate_file(f)).read_bytes()
            zf.writestr(rel, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{rel},sha256={digest},{len(data)}")
        record = f"{info.parts[0]}/RECORD"
        zf.writestr(record, "\n".join([*records, f"{record},,"]) + "\n")
    return wheel


def build_visforge_wheel(dest: Path, cache_dir: Path | None = None, tmp_dir: Path | None = None) -> Path:
    """The visforge wheel an exported solution installs.

    From a source tree (a checkout, an editable install) it is built from that tree, versioned
    by the tree's content hash; the build happens in a copy, so the source tree gets no build/
    or egg-info folders, and with ``cache_dir`` an identical tree reuses the wheel built before.
    From a normal install the installed distribution is repacked.
    """
    if _source_tree() is None:
        return repack_installed_wheel(dest)
    pyproject = REPO_ROOT / "pyproject.toml"
    if tmp_dir is not None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="visforge-src-", dir=tmp_dir) as tmp:
        src = Path(tmp) / "visforge"
        src.mkdir()
        for item in ("pyproject.toml", "README.md", "LICENSE", "builder", "widgets", "augment", "templates"):
            path = REPO_ROOT / item
            if path.is_dir():
                _copy_tree(path, src / item)
            elif path.is_file():
                shutil.copy2(path, src / item)
        digest = hashlib.sha256()
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            digest.update(str(f.relative_to(src)).encode() + b"\0" + f.read_bytes())
        text = (src / "pyproject.toml").read_text(encoding="utf-8")
        base = re.search(r'^version = "([^"]+)"', text, re.M)
        if base is None:
            raise ExportError(f"{pyproject}: no version line")
        local = f"{base.group(1).split('+')[0]}+src.{digest.hexdigest()[:12]}"
        wheel_name = f"visforge-{local}-py3-none-any.whl"
        if cache_dir is not None and (cache_dir / wheel_name).is_file():
            dest.mkdir(parents=True, exist_ok=True)
            return Path(shutil.copy2(cache_dir / wheel_name, dest / wheel_name))
        (src / "pyproject.toml").write_text(
            text[: base.start()] + f'version = "{local}"' + text[base.end():], encoding="utf-8"
        )
        wheel = _pip_wheel(src, dest, Path(tmp) / "pip-tmp")
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(wheel, cache_dir / wheel.name)
    return wheel


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
        at_export = _verify(ws, card, accepted.source, local)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        result = _write_project(ws, card, accepted, tmp, name, package, version, pinned, model_files,
                                extras, at_export, templates, build)
        if out.exists():
            trash = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            out.rename(trash)
            tmp.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(out.parent / f"{tmp.name}.build", ignore_errors=True)
    # Paths were made inside the temporary folder: point them at the final one.
    result.project_dir = out
    result.wheel = out / result.wheel.relative_to(tmp) if result.wheel else None
    result.wheels = [out / w.relative_to(tmp) for w in result.wheels]
    result.lock_file = out / result.lock_file.relative_to(tmp) if result.lock_file else None
    return result


def _write_project(ws, card, accepted, root: Path, name, package, version, pinned, model_files, extras,
                   at_export, templates: Path, build: bool) -> ExportResult:
    source = accepted.source
    # The VisForge build goes in first: its version is what the project pins.
    build_tmp = root.parent / f"{root.name}.build"  # a hidden sibling: removed with the export's temp folder
    visforge_wheel = build_visforge_wheel(root / "wheels", cache_dir=ws.dir("cache", "wheels"), tmp_dir=build_tmp)
    visforge_version = visforge_wheel.name.split("-")[1]
    extra_spec = f"[{','.join(sorted(extras))}]" if extras else ""
    direct = [f"visforge{extra_spec}=={visforge_version}"] + [f"{p}=={_installed_version(p)}" for p in SERVE_PACKAGES]
    test_deps = [f"{p}=={_installed_version(p)}" for p in TEST_PACKAGES]
    pins, missing = lock_requirements(
        _wheel_requirements(visforge_wheel, extras) + direct[1:] + test_deps
    )
    # wheelhouse/ holds the solution's wheel and the exact VisForge build it pins: pip resolves
    # the pin from there, offline with --no-index once the other dependencies are present.
    install = [f"pip install --find-links wheelhouse -c requirements.lock {name}"]
    if "ocr" in extras:
        # rapidocr's own opencv-python requirement would replace the headless OpenCV.
        ocr_version = _installed_version("rapidocr-onnxruntime")
        install.append(f"pip install --no-deps rapidocr-onnxruntime=={ocr_version}")
        pins.append(f"rapidocr-onnxruntime=={ocr_version}")

    passed = sum(r["correct"] for r in at_export.values())
    exported_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    multi_image = any(not isinstance(ex.image, str) for ex in card.examples)
    manifest = {
        "name": name,
        "package": package,
        "version": version,
        "description": card.description,
        "output": card.output.value,
        "metric": card.metric.value,
        "task": card.name,
        "workspace": ws.root.name,
        "program_version": accepted.version,
        "program_origin": accepted.origin,
        "program_sha256": hashlib.sha256(source.encode("utf-8")).hexdigest(),
        "visforge": visforge_version,
        "engines": pinned,
        "multi_image": multi_image,
        "default_query": _shared([ex.query for ex in card.examples]),
        "default_choices": _shared([ex.choices for ex in card.examples]),
        "examples": {"n": len(card.examples), "verified": bool(at_export), "passed": passed},
        "exported_at": exported_at,
    }
    if missing:
        manifest["unpinned"] = missing

    engines_md = "\n".join(f"- {k}: `{json.dumps(v)}`" for k, v in pinned.items()) or "- (the program calls no engine)"
    context = {
        "name": name,
        "package": package,
        "version": version,
        "description": card.description.strip().replace("\n", " "),
        "description_toml": json.dumps(card.description.strip().replace("\n", " ")),
        "dependencies": "\n".join(f'    "{d}",' for d in direct),
        "test_dependencies": ", ".join(f'"{d}"' for d in test_deps),
        "workspace_name": manifest["workspace"],
        "program_tag": accepted.tag,
        "exported_at": exported_at,
        "output": card.output.value,
        "metric": card.metric.value,
        "passed": str(passed) if at_export else "(not verified)",
        "n_examples": str(len(card.examples)),
        "install_commands": "\n".join(f".venv/bin/{cmd}" for cmd in install),
        "offline_install": f".venv/bin/pip install --no-index --find-links wheelhouse {name}",
        "engines": engines_md,
    }
    render_templates(templates, root, context, package)

    assets = root / "src" / package / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    # The program exactly as accepted: the sandbox must run what was tested.
    (assets / "program.py").write_text(source, encoding="utf-8")
    (assets / "profile.yaml").write_text(
        "# Pinned engine profile exported by VisForge; 'asset:' paths are shipped in this folder.\n"
        + yaml.safe_dump(pinned, sort_keys=True), encoding="utf-8")
    (assets / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    for rel, src in model_files.items():
        target = assets / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            _copy_tree(src, target)
        else:
            shutil.copy2(src, target)

    examples_dir = root / "tests" / "examples"
    _copy_examples(ws, card, examples_dir)
    (examples_dir / "export_results.json").write_text(json.dumps(at_export, indent=2, default=repr) + "\n",
                                                      encoding="utf-8")
    lock = root / "requirements.lock"
    lock.write_text(
        f"# Every dependency of {name} {version} pinned to the versions it was exported and tested with.\n"
        "# visforge itself is the wheel in wheels/.\n" + "\n".join(pins) + "\n", encoding="utf-8")

    wheel = None
    if build:
        wheel = _pip_wheel(root, root / "dist", build_tmp / "pip-tmp")
        (root / "wheelhouse").mkdir(exist_ok=True)
        for w in (wheel, visforge_wheel):
            shutil.copy2(w, root / "wheelhouse" / w.name)
        # In-tree build leftovers; the project folder stays what a customer should see.
        shutil.rmtree(root / "build", ignore_errors=True)
        for egg in (root / "src").glob("*.egg-info"):
            shutil.rmtree(egg, ignore_errors=True)
    return ExportResult(
        name=name,
        package=package,
        version=version,
        program_version=accepted.version,
        project_dir=root,
        wheel=wheel,
        wheels=([wheel] if wheel else []) + [visforge_wheel],
        lock_file=lock,
        install_commands=install,
        manifest=manifest,
    )


__all__ = ["ExportError", "ExportResult", "WorkspaceError", "build_visforge_wheel", "engines_used",
           "export_solution", "lock_requirements", "pin_profile", "render_templates"]
