"""Engine profiles: which backend (and model) serves each engine, as YAML.

A profile maps engine kinds to a backend name and its options::

    detector: {backend: hf, model: google/owlv2-base-patch16-ensemble, threshold: 0.2}
    vqa: {backend: shapes}
    ocr: {backend: rapidocr}

Backends are registered by ``(kind, name)`` with an import path, so importing a profile
never imports torch or transformers until an engine is built. Bundled profiles live in
``builder/tools/profiles/`` (``shapes`` is the offline default, ``hf`` the recommended real
models for users with a model hub).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

from builder.core.errors import UserError
from builder.tools.host import Engines
from builder.tools.specs import ENGINE_KINDS

KINDS = ENGINE_KINDS
PROFILES_DIR = Path(__file__).parent / "profiles"

# (kind, backend) -> "module:Class"; the class is called with the profile's options as keywords.
BACKENDS: dict[tuple[str, str], str] = {
    ("detector", "shapes"): "builder.tools.backends.shapes:ShapesDetector",
    ("vqa", "shapes"): "builder.tools.backends.shapes:ShapesVQA",
    ("captioner", "shapes"): "builder.tools.backends.shapes:ShapesCaptioner",
    ("matcher", "shapes"): "builder.tools.backends.shapes:ShapesMatcher",
    ("detector", "hf"): "builder.tools.backends.hf:HFDetector",
    ("vqa", "hf"): "builder.tools.backends.hf:HFVQA",
    ("captioner", "hf"): "builder.tools.backends.hf:HFCaptioner",
    ("matcher", "hf"): "builder.tools.backends.hf:HFMatcher",
    ("ocr", "rapidocr"): "builder.tools.backends.ocr:RapidOCREngine",
    ("embedder", "shapes"): "builder.tools.backends.shapes:ShapesEmbedder",
    ("embedder", "hf"): "builder.tools.backends.hf:HFEmbedder",
}


class ProfileError(UserError, ValueError):
    """A profile names an unknown engine kind or backend, or has malformed options."""


def register_backend(kind: str, name: str, target: str) -> None:
    """Make ``{backend: name}`` available for ``kind``; ``target`` is "module:Class"."""
    if kind not in KINDS:
        raise ProfileError(f"unknown engine kind {kind!r}; one of {', '.join(KINDS)}")
    BACKENDS[(kind, name)] = target


def load_profile(profile: str | Path | dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A profile as a dict: from a bundled name ("shapes", "hf"), a YAML path or a dict."""
    source = str(profile)
    if isinstance(profile, dict):
        data, source = profile, "<profile>"
    else:
        path = Path(profile)
        if not path.suffix and (PROFILES_DIR / f"{profile}.yaml").is_file():
            path = PROFILES_DIR / f"{profile}.yaml"
        if not path.is_file():
            bundled = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
            raise ProfileError(f"{profile}: no such profile file or bundled profile ({bundled})")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ProfileError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: a profile is a mapping of engine kinds to backends")
    out = {}
    for kind, spec in data.items():
        if kind not in KINDS:
            raise ProfileError(f"{source}: unknown engine kind {kind!r}; one of {', '.join(KINDS)}")
        if spec is None:
            continue
        if not isinstance(spec, dict) or not isinstance(spec.get("backend"), str):
            raise ProfileError(f"{source}: {kind}: needs a mapping with a 'backend' name")
        if (kind, spec["backend"]) not in BACKENDS:
            known = ", ".join(sorted(b for k, b in BACKENDS if k == kind))
            raise ProfileError(f"{source}: {kind}: unknown backend {spec['backend']!r} (known: {known})")
        out[kind] = dict(spec)
    return out


def detector_is_open(profile: str | Path | dict[str, Any] = "shapes") -> bool:
    """Whether the profile's detector finds any noun it is asked for (OWLv2) rather than only its own
    closed list (the shapes detector). A backend says so with an ``open_vocabulary`` class attribute;
    one that does not is taken as closed, so a planner never promises nouns it cannot see."""
    spec = load_profile(profile).get("detector")
    if not spec:
        return False
    target = BACKENDS.get(("detector", spec.get("backend", "")))
    if target is None:
        return False
    module, name = target.split(":")
    return bool(getattr(getattr(importlib.import_module(module), name), "open_vocabulary", False))


def build_engines(profile: str | Path | dict[str, Any]) -> Engines:
    """Build the engines a profile names (each loads its model lazily on first use)."""
    engines = Engines()
    for kind, spec in load_profile(profile).items():
        options = {k: v for k, v in spec.items() if k != "backend"}
        module_name, cls_name = BACKENDS[(kind, spec["backend"])].split(":")
        try:
            cls = getattr(importlib.import_module(module_name), cls_name)
        except ImportError as e:
            raise ProfileError(
                f"{kind}: backend {spec['backend']!r} needs a package that is not installed ({e}); "
                "install visforge[all]"
            ) from None
        try:
            engine = cls(**options)
        except TypeError as e:
            raise ProfileError(f"{kind}: backend {spec['backend']!r} rejected its options: {e}") from None
        setattr(engines, kind, engine)
    return engines
