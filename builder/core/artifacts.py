"""One folder format for every learned artifact: ``save_pretrained(folder)`` / ``from_pretrained(folder)``.

An artifact folder holds ``config.json``, the record of what it is::

    {"architecture": "semantic-parser",   the registered name of the class that loads it
     "format_version": 1,                 the class's folder format (bumped when it changes)
     "config": {...},                     the constructor config (what builds the empty model)
     "info": {...}}                       optional: how it was trained (command, losses, ...)

and its weights: ``model.safetensors`` for torch modules (``save_state``/``load_state``), or the
parameters inside ``config`` for small non-tensor artifacts (a logistic-regression head, a
question-type prior). A folder written by ``transformers``' own ``save_pretrained`` keeps its
``config.json`` (transformers owns it and loads the folder unchanged); the record then sits under
that file's ``"visforge_artifact"`` key (``write_record(..., transformers=True)``).

A class joins the contract by subclassing ``Artifact`` with ``architecture`` set (that registers
it) and implementing ``artifact_config`` (the record's config), ``_save_files`` (weights) and
``_from_files`` (build from config, load weights). ``load_artifact(folder)`` loads any registered
artifact; ``Cls.from_pretrained(folder)`` also checks that the folder holds a ``Cls``. A folder
with no record, malformed JSON, an unknown architecture or a newer format version raises
``ArtifactError`` naming the folder and the problem. Registration happens when the defining
module is imported, so the core layer never names the classes of the layers above it.

Adopting it for a network (e.g. the shapes VQA net and embedder): subclass ``Artifact`` beside
the ``nn.Module`` (or wrap it), return the constructor kwargs from ``artifact_config``, call
``save_state(folder, module)`` / ``load_state(folder, module)`` in the two file hooks, and give
folders written in an older layout a one-off conversion in ``scripts/convert_artifacts.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from builder.core.atomic import atomic_write_json
from builder.core.errors import UserError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRANSFORMERS_KEY = "visforge_artifact"  # where the record sits in a transformers config.json

def _convert_hint(folder: Path) -> str:
    """What to run on a folder written in an older layout."""
    return f"a folder in an older layout converts with `python scripts/convert_artifacts.py {folder}`"


_REGISTRY: dict[str, type[Artifact]] = {}


class ArtifactError(UserError, ValueError):
    """A folder is not a loadable artifact (the message names the folder and the problem)."""


def registered_architectures() -> dict[str, type[Artifact]]:
    """The registered architecture names and their classes (those whose modules are imported)."""
    return dict(_REGISTRY)


def write_record(folder: str | Path, architecture: str, format_version: int, config: dict,
                 info: dict | None = None, transformers: bool = False) -> Path:
    """Write an artifact's record to ``folder/config.json`` (merged under ``TRANSFORMERS_KEY``
    into the existing transformers config with ``transformers=True``)."""
    folder = Path(folder)
    record: dict[str, Any] = {"architecture": architecture, "format_version": format_version, "config": config}
    if info:
        record["info"] = info
    path = folder / CONFIG_FILE
    if transformers:
        if not path.is_file():
            raise ArtifactError(f"{folder}: no transformers {CONFIG_FILE} to record the artifact in")
        record = {**json.loads(path.read_text(encoding="utf-8")), TRANSFORMERS_KEY: record}
    atomic_write_json(path, record)
    return folder


def read_record(folder: str | Path) -> dict:
    """The record of an artifact folder (checked: architecture, format_version and config present)."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: no such artifact folder")
    if not path.is_file():
        raise ArtifactError(f"{folder}: no {CONFIG_FILE}, so not an artifact folder; {_convert_hint(folder)}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: malformed JSON ({e})") from None
    record = data.get(TRANSFORMERS_KEY, data) if isinstance(data, dict) else data
    if not isinstance(record, dict) or not isinstance(record.get("architecture"), str):
        raise ArtifactError(f"{path}: records no architecture; {_convert_hint(folder)}")
    if not isinstance(record.get("format_version"), int) or not isinstance(record.get("config"), dict):
        raise ArtifactError(f"{path}: the record needs an integer format_version and a config object")
    return record


def load_artifact(folder: str | Path, expected: type[Artifact] | None = None) -> Artifact:
    """Load the artifact in ``folder`` with the class its record names (a subclass of
    ``expected`` when given)."""
    record = read_record(folder)
    name = record["architecture"]
    cls = _REGISTRY.get(name)
    if cls is None:
        known = ", ".join(sorted(_REGISTRY)) or "none registered"
        raise ArtifactError(f"{folder}: unknown architecture {name!r} (known: {known})")
    if expected is not None and not issubclass(cls, expected):
        raise ArtifactError(f"{folder}: holds a {name!r}, not a {expected.architecture!r}")
    if record["format_version"] > cls.format_version:
        raise ArtifactError(f"{folder}: format version {record['format_version']} of {name!r} is newer than "
                            f"this code reads ({cls.format_version}); update VisForge")
    try:
        return cls._from_files(Path(folder), record["config"], record.get("info") or {})
    except (KeyError, TypeError) as e:
        raise ArtifactError(f"{folder}: config does not fit {name!r} ({type(e).__name__}: {e})") from None


class Artifact:
    """Base of every learned artifact (module docstring). Subclasses set ``architecture``."""

    architecture: ClassVar[str] = ""
    format_version: ClassVar[int] = 1
    transformers_folder: ClassVar[bool] = False  # True: transformers writes config.json first

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        name = cls.__dict__.get("architecture")
        if name:
            other = _REGISTRY.get(name)
            if other is not None and other.__qualname__ != cls.__qualname__:
                raise TypeError(f"architecture {name!r} is registered twice ({other.__qualname__}, {cls.__qualname__})")
            _REGISTRY[name] = cls

    def artifact_config(self) -> dict:
        """The constructor config recorded in ``config.json`` (JSON values)."""
        raise NotImplementedError

    def artifact_info(self) -> dict:
        """Optional record of how the artifact was made (stored as ``info``)."""
        return {}

    def _save_files(self, folder: Path) -> None:
        """Write the weights (or whatever else the artifact needs) into ``folder``."""
        raise NotImplementedError

    @classmethod
    def _from_files(cls, folder: Path, config: dict, info: dict) -> Artifact:
        """Build the artifact from its recorded ``config`` and load its files from ``folder``."""
        raise NotImplementedError

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the artifact folder (files, then ``config.json``: a folder without it is incomplete)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_files(folder)
        return write_record(folder, self.architecture, self.format_version, self.artifact_config(),
                            self.artifact_info(), transformers=self.transformers_folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path):
        """Load a folder written by ``save_pretrained`` (it must hold this class or a subclass)."""
        return load_artifact(folder, expected=cls)


def save_state(folder: str | Path, module, half: bool = False, name: str = WEIGHTS_FILE) -> Path:
    """Write a torch module's state dict as safetensors (fp16 with ``half``)."""
    from safetensors.torch import save_file

    state = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().contiguous()
             for k, v in module.state_dict().items()}
    path = Path(folder) / name
    save_file(state, str(path))
    return path


def load_state(folder: str | Path, module, name: str = WEIGHTS_FILE) -> None:
    """Load safetensors weights into ``module`` (cast to each parameter's dtype); a missing file or
    weights that do not fit the module raise ``ArtifactError``."""
    from safetensors.torch import load_file

    path = Path(folder) / name
    if not path.is_file():
        raise ArtifactError(f"{folder}: no {name}")
    own = module.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in load_file(str(path)).items()}
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise ArtifactError(f"{path}: weights do not fit the recorded architecture ({str(e)[:300]})") from None
