"""Dependencies and wheels: exact pins of what is installed here, the VisForge build, pip wheel runs."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from builder.methods.export.result import ExportError

# A checkout (or editable install) has the source tree above the builder package.
REPO_ROOT = Path(__file__).resolve().parents[3]


# ---- dependencies ----------------------------------------------------------------------------
def _installed_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        raise ExportError(f"{name} is not installed here; install visforge[serve] to export solutions") from None


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
