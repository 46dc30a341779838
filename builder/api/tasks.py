"""Task cards and the workspace's task: describe, import examples, edit, history, staleness.

The rules that keep work safe live in the workspace (``builder.core.workspace``): every save
of the task keeps the previous card in ``history/``, and runs record the card's fingerprint.
These functions add what an interface needs on top: drafts from plain data, uploads decoded
before anything is written, absolute image paths copied into the workspace.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from builder.core.atomic import atomic_write_bytes
from builder.core.errors import UserError
from builder.core.images import ImageError, decode_image, load_image, read_image_bytes, store_image
from builder.core.taskcard import TaskCard, TaskCardError, load_task_card, parse_task_card
from builder.core.video import VideoError, is_video_path, probe_video
from builder.core.workspace import META_FILE, Workspace, WorkspaceError, task_fingerprint
from builder.domains.shapes.world import generate_dataset
from builder.domains.shapes.world.cards import make_task_card
from builder.domains.shapes.world.video_tasks import VIDEO_KINDS, make_video_task_card
from builder.methods import finetune as _finetune

__all__ = ["IMAGE_SUFFIXES", "card_from_data", "create_workspace", "delete_example", "ensure_shapes_workspace",
           "examples_dataset", "format_expected", "generate_world", "images_in_folder", "open_workspace",
           "parse_expected_text", "read_labels", "replace_task", "restore_task", "save_task", "shapes_task_data",
           "shapes_unlabelled", "stage_image", "task_fingerprint", "task_history", "task_problems",
           "update_example", "validate_image_upload", "validation_messages"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _check_input(path: Path, name: str) -> None:
    """An example's image is decoded in full; a video is probed against the video limits."""
    data = read_image_bytes(path)
    if is_video_path(str(path)):
        probe_video(data, name)
    else:
        decode_image(data, name)


def parse_expected_text(text: str) -> Any:
    """An expected output typed by a person: YAML scalars/lists ("3", "yes", "[[1,2,3,4]]").

    Returns None for empty text (the card's validation then names the example).
    """
    text = (text or "").strip()
    if not text:
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # plain text answers with odd characters stay text


def format_expected(value: Any) -> str:
    """The inverse of ``parse_expected_text`` for display in a text field."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def validation_messages(error: TaskCardError | str) -> list[str]:
    """A ``TaskCardError``'s problems, one per line, without the source prefix."""
    text = str(error)
    _, sep, rest = text.partition(": ")
    body = rest if sep and text.startswith("<") else text
    return [p.strip() for p in body.split("; ") if p.strip()]


def card_from_data(data: dict[str, Any]) -> TaskCard:
    """Validate a draft card (plain data); raises ``TaskCardError`` naming every bad field."""
    draft = dict(data)
    if draft.get("metric") in ("", "auto", None):
        draft.pop("metric", None)
    return parse_task_card(draft, "<task card>")


def validate_image_upload(data: bytes, name: str = "upload.png") -> tuple[int, int]:
    """Check uploaded bytes are a real image within the size limits (decoded fully, nothing saved).

    Returns (width, height); raises ``UserError`` naming the file and the problem otherwise.
    """
    suffix = Path(name).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageError(f"{name}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
    arr = decode_image(data, name)
    return int(arr.shape[1]), int(arr.shape[0])


def stage_image(data: bytes, name: str = "upload.png", staging: str | Path | None = None) -> Path:
    """Write uploaded image bytes to a staging folder under a content-hash name; returns the path.

    The bytes are decoded and size-checked first: a file that is not a usable image raises
    ``UserError`` naming it, and nothing is written."""
    suffix = Path(name).suffix.lower()
    validate_image_upload(data, name)  # decoded and size-checked before anything is written
    folder = Path(staging) if staging is not None else Path(tempfile.gettempdir()) / "visforge-staging"
    return folder / store_image(data, folder, suffix)


def images_in_folder(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_labels(folder: str | Path) -> dict[str, Any]:
    """Expected outputs from ``labels.json`` ({file name: expected}) or ``labels.csv`` (name,expected)."""
    folder = Path(folder)
    if (folder / "labels.json").is_file():
        data = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{folder / 'labels.json'}: must map file names to expected outputs")
        return data
    if (folder / "labels.csv").is_file():
        with open(folder / "labels.csv", newline="", encoding="utf-8") as f:
            return {row[0]: parse_expected_text(row[1]) for row in csv.reader(f) if len(row) >= 2}
    return {}


def _import_image(ws: Workspace, path: Path) -> str:
    """Copy an image into the workspace (content-hash name, as ``Workspace.init`` does)."""
    return "images/" + store_image(path.read_bytes(), ws.dir("images"), path.suffix)


def save_task(workspace_dir: str | Path, card: TaskCard, reason: str = "edited") -> Workspace:
    """Save ``card`` as the task of the workspace at ``workspace_dir`` (created if missing).

    Image paths may be absolute (uploads, folders) or relative to the workspace; absolute ones
    are copied into the workspace (each decoded first: a bad file is an error naming it, and
    nothing is saved) so it stays self-contained. A changed card never overwrites silently:
    the workspace keeps the previous one in ``history/`` (``task_history``, ``restore_task``)
    with ``reason``; runs on the old card show as stale (``run_is_stale``).
    """
    root = Path(workspace_dir)
    card = card.model_copy(deep=True)
    if not (root / META_FILE).is_file():
        for ex in card.examples:
            for p in ex.images:
                if not Path(p).is_absolute():
                    raise WorkspaceError(f"example image {p}: a new workspace needs absolute image paths")
        return Workspace.init(root, card, images_from=root)
    ws = Workspace.open(root)
    for ex in card.examples:
        for p in ex.images:
            if Path(p).is_absolute():
                path = Path(p)
                _check_input(path, f"{path.name} (example {ex.id})")
    for ex in card.examples:
        new = [_import_image(ws, Path(p)) if Path(p).is_absolute() else p for p in ex.images]
        missing = [p for p in new if not ws.resolve_image(p).is_file()]
        if missing:
            raise WorkspaceError(f"example image {missing[0]} is not in the workspace")
        ex.image = new[0] if isinstance(ex.image, str) else new
    ws.save_task(card, reason=reason)  # archives the previous card when it changed
    return ws


def shapes_task_data(kind: str = "count", target: str = "red objects", n: int = 8, seed: int = 0,
                     domain: str = "clean", staging: str | Path | None = None) -> dict[str, Any]:
    """A draft task card (plain data, absolute image paths) drawn from the shapes world.

    ``kind`` is an image kind (``SHAPES_KINDS``: count, exists, locate over ``target``) or a video
    kind (``SHAPES_VIDEO_KINDS``: collision_frame, crossing_count, leaves, collision_summary, collides,
    first_to_leave, collision_count, collided_objects, first_to_collide, time_in_view, box_at_frame,
    over MP4 clips; their queries name their own objects, so ``target`` is not used)."""
    folder = Path(staging) if staging is not None else Path(tempfile.mkdtemp(prefix="visforge-shapes-"))
    if kind in VIDEO_KINDS:
        card_path = make_video_task_card(folder, kind=kind, n=n, seed=seed, domain=domain)
    else:
        card_path = make_task_card(folder, kind=kind, target=target, n=n, seed=seed, domain=domain)
    card = load_task_card(card_path, check_images=True)
    data = card.model_dump(mode="json", exclude_none=True)
    for ex in data["examples"]:
        ex["image"] = str((card_path.parent / ex["image"]).resolve())
    return data


def create_workspace(root: str | Path, task: str | Path | TaskCard) -> Workspace:
    """Create a workspace at ``root`` for a task card (a YAML path, or a card whose image paths
    are absolute or relative to the current folder); the example images are copied in."""
    if isinstance(task, TaskCard):
        return Workspace.init(root, task, images_from=Path.cwd())
    path = Path(task)
    card = load_task_card(path, check_images=True)
    return Workspace.init(root, card, images_from=path.parent)


def open_workspace(root: str | Path) -> Workspace:
    """Open an existing workspace (``WorkspaceError`` naming the problem if it is not one)."""
    return Workspace.open(root)


def generate_world(out: str | Path, n: int = 200, seed: int = 0, domain: str = "clean") -> Path:
    """Generate a shapes-world dataset (images/, scenes.jsonl, examples.jsonl) into ``out``.

    The same seed gives byte-identical output. Returns the dataset folder.
    """
    return generate_dataset(out, n=n, seed=seed, domain=domain)


def ensure_shapes_workspace(workspace_dir: str | Path, kind: str = "count", target: str = "red objects",
                            n: int = 8, seed: int = 0) -> Workspace:
    """Open the workspace at ``workspace_dir``, or create it with a shapes-world task (notebooks
    use this so each step's notebook also runs on its own)."""
    root = Path(workspace_dir)
    if (root / META_FILE).is_file():
        return Workspace.open(root)
    return save_task(root, card_from_data(shapes_task_data(kind, target, n, seed)))


def task_history(ws: Workspace) -> list[dict[str, Any]]:
    """Earlier task cards kept by ``save_task``/``replace_task`` (oldest first): number, file,
    when, why, the accepted version at the time, the card's name and example count."""
    return ws.task_history()


def restore_task(ws: Workspace, number: int) -> TaskCard:
    """Make history entry ``number`` the task again (the current card is archived first)."""
    return ws.restore_task(number)


def replace_task(workspace_dir: str | Path, card: TaskCard, reason: str = "replaced") -> Workspace:
    """Make ``card`` the task of an existing workspace explicitly: the old card is kept in
    ``history/`` (``task_history``/``restore_task``), old runs and the accepted version become
    stale (they were scored on the old task). Creates the workspace when missing."""
    return save_task(workspace_dir, card, reason=reason)


def task_problems(ws: Workspace) -> list[str]:
    """What is wrong with the workspace's task (unreadable card, missing or undecodable example
    images), one message per problem naming the file; [] when everything loads."""
    try:
        card = ws.load_task()
    except TaskCardError as e:
        return [str(e)]
    problems = []
    for ex in card.examples:
        for p in ex.images:
            path = ws.resolve_image(p)
            try:
                _check_input(path, f"{p} (example {ex.id})")
            except (ImageError, VideoError) as e:
                problems.append(str(e))
    return problems


def delete_example(ws: Workspace, example_id: str) -> TaskCard:
    """Remove one example from the task (the previous card is kept in ``history/``)."""
    card = ws.load_task()
    ids = [ex.id for ex in card.examples]
    if example_id not in ids:
        raise WorkspaceError(f"no example {example_id!r} in the task")
    data = card.model_dump(mode="json", exclude_none=True)
    data["examples"] = [ex for ex in data["examples"] if ex.get("id") != example_id]
    new = card_from_data(data)
    save_task(ws.root, new, reason=f"deleted example {example_id}")
    return new


def update_example(ws: Workspace, example_id: str, query: str | None = None, expected: Any = None) -> TaskCard:
    """Change one example's query and/or expected output (typed text is parsed like the form's)."""
    card = ws.load_task()
    data = card.model_dump(mode="json", exclude_none=True)
    match = [ex for ex in data["examples"] if ex.get("id") == example_id]
    if not match:
        raise WorkspaceError(f"no example {example_id!r} in the task")
    if query is not None:
        match[0]["query"] = query
    if expected is not None:
        match[0]["expected"] = parse_expected_text(expected) if isinstance(expected, str) else expected
    new = card_from_data(data)
    save_task(ws.root, new, reason=f"edited example {example_id}")
    return new


def examples_dataset(ws: Workspace, name: str = "examples", overwrite: bool = True) -> Path:
    """The task card's examples as a VQA dataset (image, query, answer) under ``datasets/<name>``
    (what Augment's teacher and Fine-tune train on). Only answer-like outputs (text, yes/no,
    counts) make QA pairs."""
    card = ws.load_task()
    if card.output not in ("text", "bool", "count"):
        raise UserError(f"the task's examples make no question/answer dataset: a {card.output} task has no "
                        "short answers (text, yes/no or a count); Augment (SelTDA) and fine-tuning the VQA "
                        "engine on the task's examples apply to VQA tasks")
    items = []
    for ex in card.examples:
        answer = ("yes" if ex.expected else "no") if card.output == "bool" else str(ex.expected)
        items.append((load_image(ws.resolve_image(ex.images[0])), ex.query, answer, {"id": ex.id or ""}))
    if not items:
        raise UserError("the task has no examples")
    return _finetune.save_qa_dataset(ws.dir("datasets", name), items, overwrite=overwrite)


def shapes_unlabelled(ws: Workspace, n: int = 8, seed: int = 100, domain: str = "shifted",
                      name: str = "unlabelled") -> Path:
    """Unlabeled shapes-world images in ``datasets/<name>`` (stand-ins for a customer's photos,
    for Augment); existing images are kept. Returns the folder."""
    from builder.domains.shapes.world import render_scene, sample_scene

    folder = ws.dir("datasets", name)
    for i in range(n):
        path = folder / f"u{seed + i:05d}.png"
        if not path.is_file():
            buf = io.BytesIO()
            render_scene(sample_scene(seed + i, domain)).save(buf, format="PNG")
            atomic_write_bytes(path, buf.getvalue())
    return folder

