"""The workspace: one folder per solution, the single place every tool reads and writes.

Layout::

    <ws>/visforge-workspace.json   format version, name, accepted program version
    <ws>/task.yaml                 the task card
    <ws>/programs/v0001.json       every program version ever made: source + provenance
    <ws>/runs/<id>.json            results of running a program on examples
    <ws>/history/task-0001.yaml    every earlier task card (+ .json: when, why, fingerprint)
    <ws>/jobs/<id>.json            long steps (run, improve, fine-tune, export): state and progress
    <ws>/datasets/ checkpoints/ exports/ cache/

Every write is atomic (see ``builder.core.atomic``): a process killed at any moment leaves the
previous state intact and loadable. Program versions are append-only; nothing is overwritten:
every change of the task card keeps the previous card in ``history/`` (``save_task`` cannot be
called without it), and runs record the card's fingerprint so runs on an earlier card show as
stale (``run_is_stale``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.core.atomic import (
    atomic_create_text,
    atomic_write_json,
    atomic_write_text,
    remove_stale_exports,
    remove_stale_temp_files,
)
from builder.core.errors import UserError
from builder.core.images import decode_image, read_image_bytes, store_image
from builder.core.taskcard import TaskCard, TaskCardError, load_task_card, save_task_card
from builder.core.video import is_video_path, probe_video

META_FILE = "visforge-workspace.json"
FORMAT = 1
SUBDIRS = ("images", "programs", "runs", "datasets", "checkpoints", "exports", "cache", "index", "jobs", "reports")
UPLOADS_DIR = ".uploads"  # the app's staged uploads (before a task may exist: ``init`` allows it)
HISTORY_DIR = "history"  # <ws>/history/task-0001.yaml ...: every task card the workspace ever had


def task_fingerprint(card: TaskCard) -> str:
    """A short hash of the task card's content (runs record it; a different one marks them stale)."""
    data = json.dumps(card.model_dump(mode="json", exclude_none=True), sort_keys=True)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]


def _copy_example_images(task: TaskCard, src: Path, dest: Path) -> TaskCard:
    """Copy every example image into ``dest`` (named by content hash) and repoint the card."""
    copied: dict[str, str] = {}

    def copy(rel: str) -> str:
        if rel not in copied:
            path = Path(rel) if Path(rel).is_absolute() else src / rel
            try:  # only regular files that decode as images (or probe as videos) are copied
                data = read_image_bytes(path)
                probe_video(data, str(path)) if is_video_path(str(path)) else decode_image(data, str(path))
            except UserError as e:
                raise WorkspaceError(f"example image {rel}: {e}") from None
            name = store_image(data, dest, path.suffix)
            copied[rel] = f"images/{name}"
        return copied[rel]

    task = task.model_copy(deep=True)
    for ex in task.examples:
        ex.image = copy(ex.image) if isinstance(ex.image, str) else [copy(p) for p in ex.image]
    return task


class WorkspaceError(UserError, RuntimeError):
    """The folder is not a usable workspace, or a requested item does not exist."""


@dataclass
class ProgramVersion:
    """One saved version of a program, never modified after it is written."""

    version: int
    source: str
    origin: str = "engineer"  # engineer | planner | selftrain | tuned | reference
    note: str = ""
    parent: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0

    @property
    def tag(self) -> str:
        """The version's short name, e.g. ``v0007`` (zero-padded so tags sort in version order)."""
        return f"v{self.version:04d}"


class Workspace:
    """A solution folder. Create with ``Workspace.init``, open with ``Workspace.open``."""

    def __init__(self, root: Path, meta: dict[str, Any]):
        self.root = root
        self._meta = meta

    # ---- create / open ----------------------------------------------------------------------
    @classmethod
    def init(
        cls, root: str | Path, task: TaskCard, images_from: str | Path | None = None, exist_ok: bool = False
    ) -> Workspace:
        """Create a workspace for ``task`` at ``root`` (an empty or missing folder).

        ``images_from`` is the folder the card's relative image paths refer to (usually the
        card's own folder); the images are copied into ``<ws>/images/`` under content-hash
        names so the workspace is self-contained, and the saved card points at the copies.
        """
        root = Path(root)
        if (root / META_FILE).exists():
            if exist_ok:
                return cls.open(root)
            raise WorkspaceError(f"{root}: already a workspace")
        if root.exists() and any(p.name != UPLOADS_DIR for p in root.iterdir()):
            raise WorkspaceError(f"{root}: folder is not empty; choose a new folder for the workspace")
        root.mkdir(parents=True, exist_ok=True)
        for sub in SUBDIRS:
            (root / sub).mkdir(exist_ok=True)
        if images_from is not None:
            task = _copy_example_images(task, Path(images_from), root / "images")
        save_task_card(task, root / "task.yaml")
        meta = {"format": FORMAT, "name": task.name, "created": time.time(), "accepted": None}
        # The meta file is written last: a folder without it is not (yet) a workspace.
        atomic_write_json(root / META_FILE, meta)
        return cls(root, meta)

    @classmethod
    def open(cls, root: str | Path) -> Workspace:
        """Open an existing workspace; clears temp files left by writers killed mid-write."""
        root = Path(root)
        meta_path = root / META_FILE
        if not meta_path.is_file():
            raise WorkspaceError(f"{root}: not a VisForge workspace (no {META_FILE})")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WorkspaceError(f"{meta_path}: unreadable workspace metadata ({e})") from None
        if meta.get("format") != FORMAT:
            raise WorkspaceError(f"{meta_path}: unsupported workspace format {meta.get('format')!r}")
        for sub in SUBDIRS:
            (root / sub).mkdir(exist_ok=True)
        remove_stale_temp_files(root)
        remove_stale_exports(root / "exports")
        return cls(root, meta)

    def _save_meta(self) -> None:
        atomic_write_json(self.root / META_FILE, self._meta)

    # ---- task card --------------------------------------------------------------------------
    @property
    def task_path(self) -> Path:
        """Where the task card lives: ``task.yaml`` in the workspace root."""
        return self.root / "task.yaml"

    def load_task(self) -> TaskCard:
        """The workspace's task card (validated)."""
        return load_task_card(self.task_path)

    def save_task(self, card: TaskCard, reason: str = "edited") -> bool:
        """Make ``card`` the task (atomically); returns False when it equals the current card.

        A changed card never overwrites silently: the current one is first kept as the next
        ``history/`` entry with ``reason`` (``task_history``, ``restore_task``)."""
        try:
            if self.task_path.is_file() and task_fingerprint(self.load_task()) == task_fingerprint(card):
                return False
        except TaskCardError:
            pass  # an unreadable current card is archived as it is, then replaced
        self._archive_task(reason)
        save_task_card(card, self.task_path)
        return True

    def task_fingerprint(self) -> str:
        """The fingerprint of the current task card (``task_fingerprint``)."""
        return task_fingerprint(self.load_task())

    def task_history(self) -> list[dict[str, Any]]:
        """Earlier task cards (oldest first): number, file, when, why, the accepted version at the
        time, the card's name, example count and fingerprint."""
        out = []
        for p in sorted((self.root / HISTORY_DIR).glob("task-*.json")):
            try:
                out.append(json.loads(p.read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError):
                continue
        return out

    def restore_task(self, number: int) -> TaskCard:
        """Make history entry ``number`` the task again (the current card is archived first)."""
        path = self.root / HISTORY_DIR / f"task-{int(number):04d}.yaml"
        if not path.is_file():
            raise WorkspaceError(f"{self.root}: no task history entry {number}")
        card = load_task_card(path)
        self.save_task(card, reason=f"replaced by history entry {number}")
        return card

    def _archive_task(self, reason: str) -> dict[str, Any] | None:
        """Keep the current task card as the next history entry (nothing is ever lost)."""
        if not self.task_path.is_file():
            return None
        folder = self.root / HISTORY_DIR
        folder.mkdir(exist_ok=True)
        nums = [int(p.stem.split("-")[1]) for p in folder.glob("task-*.json") if p.stem.split("-")[1].isdigit()]
        n = max(nums, default=0) + 1
        atomic_write_text(folder / f"task-{n:04d}.yaml", self.task_path.read_text(encoding="utf-8"))
        try:
            card = self.load_task()
            name, examples, fp = card.name, len(card.examples), task_fingerprint(card)
        except TaskCardError:
            name, examples, fp = "(unreadable card)", 0, ""
        try:
            acc = self.accepted.version if self.accepted is not None else None
        except WorkspaceError:
            acc = None
        record = {"number": n, "file": f"{HISTORY_DIR}/task-{n:04d}.yaml", "saved": time.time(), "reason": reason,
                  "name": name, "examples": examples, "task": fp, "accepted": acc}
        atomic_write_json(folder / f"task-{n:04d}.json", record)
        return record

    def resolve_image(self, rel: str) -> Path:
        """An example's image path resolved against the task card's folder."""
        p = Path(rel)
        return p if p.is_absolute() else (self.root / p)

    # ---- programs ---------------------------------------------------------------------------
    def add_program(
        self,
        source: str,
        origin: str = "engineer",
        note: str = "",
        parent: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> ProgramVersion:
        """Save a new program version (append-only) and return it."""
        if not isinstance(source, str) or not source.strip():
            raise WorkspaceError("a program version needs non-empty source text")
        if parent is not None:
            self.program(parent)  # must exist
        n = self._next_version()
        while True:
            pv = ProgramVersion(n, source, origin, note, parent, dict(params or {}), time.time())
            record = {k: getattr(pv, k) for k in ("version", "source", "origin", "note", "parent", "params", "created")}
            # Claim the number by creating the file; a concurrent writer just takes the next one.
            if atomic_create_text(self._program_path(n), json.dumps(record, indent=2) + "\n"):
                return pv
            n += 1

    def _program_path(self, n: int) -> Path:
        return self.root / "programs" / f"v{n:04d}.json"

    def _version_numbers(self) -> list[int]:
        nums = []
        for p in (self.root / "programs").glob("v*.json"):
            try:
                nums.append(int(p.stem[1:]))
            except ValueError:
                continue
        return sorted(nums)

    def _next_version(self) -> int:
        nums = self._version_numbers()
        return (nums[-1] + 1) if nums else 1

    def program(self, version: int) -> ProgramVersion:
        """Load one program version."""
        path = self._program_path(int(version))
        if not path.is_file():
            raise WorkspaceError(f"{self.root}: no program version {version}")
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            return ProgramVersion(**rec)
        except (json.JSONDecodeError, TypeError) as e:
            raise WorkspaceError(f"{path}: unreadable program version ({e})") from None

    def programs(self) -> list[ProgramVersion]:
        """All program versions, oldest first."""
        return [self.program(n) for n in self._version_numbers()]

    def accept(self, version: int) -> None:
        """Mark a version as the accepted program (the one exports use)."""
        self.program(version)
        self._meta["accepted"] = int(version)
        self._save_meta()

    @property
    def accepted(self) -> ProgramVersion | None:
        """The accepted program version, if any."""
        v = self._meta.get("accepted")
        return self.program(v) if v is not None else None

    # ---- runs -------------------------------------------------------------------------------
    def save_run(self, result: dict[str, Any], label: str = "run") -> str:
        """Save a run's results (plain JSON data); returns its id.

        The run records the current task card's fingerprint (``"task"``) unless ``result``
        names one, so ``run_is_stale`` can tell runs on an earlier card."""
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{label}-{secrets.token_hex(3)}"
        if "task" not in result:
            try:
                result = {"task": self.task_fingerprint(), **result}
            except TaskCardError:
                pass
        atomic_write_json(self.root / "runs" / f"{run_id}.json", {"id": run_id, **result})
        return run_id

    def run_is_stale(self, run: dict[str, Any], fingerprint: str | None = None) -> bool:
        """True when ``run`` was scored on another task card than the current one."""
        if fingerprint is None:
            fingerprint = self.task_fingerprint()
        recorded = run.get("task")
        if recorded is not None:
            return recorded != fingerprint
        # Runs saved before fingerprints: stale if the card changed after the run was saved.
        run_file = self.root / "runs" / f"{run.get('id')}.json"
        try:
            return run_file.stat().st_mtime < self.task_path.stat().st_mtime
        except OSError:
            return False

    def runs(self) -> list[str]:
        """Run ids, oldest first."""
        return sorted(p.stem for p in (self.root / "runs").glob("*.json"))

    def load_run(self, run_id: str) -> dict[str, Any]:
        """One saved run."""
        path = self.root / "runs" / f"{run_id}.json"
        if not path.is_file():
            raise WorkspaceError(f"{self.root}: no run {run_id}")
        return json.loads(path.read_text(encoding="utf-8"))

    # ---- folders ----------------------------------------------------------------------------
    def dir(self, kind: str, name: str = "") -> Path:
        """A folder inside the workspace (``datasets``, ``checkpoints``, ``exports``, ``cache``, ``reports`` ...)."""
        if kind not in SUBDIRS:
            raise WorkspaceError(f"unknown workspace folder {kind!r}; one of {', '.join(SUBDIRS)}")
        if name and (Path(name).is_absolute() or ".." in Path(name).parts):
            raise WorkspaceError(f"folder name {name!r} must stay inside the workspace")
        path = self.root / kind / name if name else self.root / kind
        path.mkdir(parents=True, exist_ok=True)
        return path

    def summary(self) -> dict[str, Any]:
        """What is in the workspace, as plain data (for ``visforge workspace show``)."""
        try:
            card = self.load_task()
            task = {"name": card.name, "output": card.output.value, "metric": card.metric.value if card.metric else None,
                    "examples": len(card.examples)}
        except TaskCardError as e:
            task = {"error": str(e)}
        progs = self.programs()
        return {
            "root": str(self.root),
            "task": task,
            "programs": len(progs),
            "latest": progs[-1].tag if progs else None,
            "accepted": self._meta.get("accepted"),
            "runs": len(self.runs()),
            "datasets": sorted(p.name for p in (self.root / "datasets").iterdir() if p.is_dir()),
            "checkpoints": sorted(p.name for p in (self.root / "checkpoints").iterdir()),
            "exports": sorted(p.name for p in (self.root / "exports").iterdir() if not p.name.startswith(".")),
        }
