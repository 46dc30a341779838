"""The workflow steps as plain functions over a ``Workspace`` (no UI): widgets, notebooks and the
Panel app are all thin layers on these, so everything a button does can be called directly.

Everything reads and writes through ``builder.workspace.Workspace``; the only state kept here is
``Runtime`` (engines, the sandbox and the tool cache), which is expensive to build and is
shared by the widgets of one notebook.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import html
import io
import json
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml

from builder.atomic import atomic_write_bytes
from builder.taskcard import OutputKind, TaskCard, TaskCardError, load_task_card, parse_task_card
from builder.workspace import META_FILE, ProgramVersion, Workspace, WorkspaceError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

# Starting points for an engineer when no planner is available: the smallest program of the
# right output kind, using the tool API the planner prompt documents.
TEMPLATES: dict[str, str] = {
    "count": 'def execute(image):\n    # Count the objects the task asks about (edit the name).\n'
             '    return image.count("object")\n',
    "bool": 'def execute(image):\n    # Is there such an object? (edit the name)\n    return image.exists("object")\n',
    "boxes": 'def execute(image):\n    # Boxes of every matching object (edit the name).\n    return image.find("object")\n',
    "text": 'def execute(image, query):\n    # Ask the VQA engine the example\'s own question.\n'
            '    return image.query(query)\n',
    "choice": 'def execute(image, choices):\n    # The caption that fits the image best.\n'
              '    return best_text_match(image, choices)\n',
}


# ---- runtime ---------------------------------------------------------------------------------
class Runtime:
    """Engines, sandbox and tool cache for one workspace, built on first use and shared.

    Building the engines and starting sandbox workers takes seconds, so one notebook (or one
    app session) builds them once. ``close()`` stops the sandbox workers.
    """

    def __init__(self, workspace: Workspace, profile: str | dict = "shapes", workers: int = 1):
        self.workspace = workspace
        self.profile = profile
        self.workers = workers
        self._engines = None
        self._sandbox = None
        self._cache = None
        self._lock = threading.Lock()

    @property
    def engines(self):
        with self._lock:
            if self._engines is None:
                from builder.tools.profile import build_engines

                self._engines = build_engines(self.profile)
            return self._engines

    @property
    def sandbox(self):
        with self._lock:
            if self._sandbox is None:
                from builder.executor import Sandbox

                self._sandbox = Sandbox(workers=self.workers)
            return self._sandbox

    @property
    def cache(self):
        with self._lock:
            if self._cache is None:
                from builder.cache import ToolCache

                self._cache = ToolCache(self.workspace.dir("cache"))
            return self._cache

    def close(self) -> None:
        """Stop the sandbox workers (engines and cache need no cleanup)."""
        with self._lock:
            if self._sandbox is not None:
                self._sandbox.close()
                self._sandbox = None

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- task cards ------------------------------------------------------------------------------
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


def stage_image(data: bytes, name: str = "upload.png", staging: str | Path | None = None) -> Path:
    """Write uploaded image bytes to a staging folder under a content-hash name; returns the path."""
    suffix = Path(name).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{name}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
    folder = Path(staging) if staging is not None else Path(tempfile.gettempdir()) / "visforge-staging"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (hashlib.sha256(data).hexdigest()[:16] + suffix)
    if not path.exists():
        atomic_write_bytes(path, data)
    return path


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
        import csv

        with open(folder / "labels.csv", newline="", encoding="utf-8") as f:
            return {row[0]: parse_expected_text(row[1]) for row in csv.reader(f) if len(row) >= 2}
    return {}


def _import_image(ws: Workspace, path: Path) -> str:
    """Copy an image into the workspace (content-hash name, as ``Workspace.init`` does)."""
    data = path.read_bytes()
    name = hashlib.sha256(data).hexdigest()[:16] + (path.suffix.lower() or ".png")
    dest = ws.dir("images") / name
    if not dest.exists():
        atomic_write_bytes(dest, data)
    return f"images/{name}"


def save_task(workspace_dir: str | Path, card: TaskCard) -> Workspace:
    """Save ``card`` as the task of the workspace at ``workspace_dir`` (created if missing).

    Image paths may be absolute (uploads, folders) or relative to the workspace; absolute ones
    are copied into the workspace so it stays self-contained.
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
        new = [_import_image(ws, Path(p)) if Path(p).is_absolute() else p for p in ex.images]
        missing = [p for p in new if not ws.resolve_image(p).is_file()]
        if missing:
            raise WorkspaceError(f"example image {missing[0]} is not in the workspace")
        ex.image = new[0] if isinstance(ex.image, str) else new
    ws.save_task(card)
    return ws


def shapes_task_data(kind: str = "count", target: str = "red objects", n: int = 8, seed: int = 0,
                     domain: str = "clean", staging: str | Path | None = None) -> dict[str, Any]:
    """A draft task card (plain data, absolute image paths) drawn from the shapes world."""
    from builder.world.cards import make_task_card

    folder = Path(staging) if staging is not None else Path(tempfile.mkdtemp(prefix="visforge-shapes-"))
    card_path = make_task_card(folder, kind=kind, target=target, n=n, seed=seed, domain=domain)
    card = load_task_card(card_path, check_images=True)
    data = card.model_dump(mode="json", exclude_none=True)
    for ex in data["examples"]:
        ex["image"] = str((card_path.parent / ex["image"]).resolve())
    return data


def ensure_shapes_workspace(workspace_dir: str | Path, kind: str = "count", target: str = "red objects",
                            n: int = 8, seed: int = 0) -> Workspace:
    """Open the workspace at ``workspace_dir``, or create it with a shapes-world task (notebooks
    use this so each step's notebook also runs on its own)."""
    root = Path(workspace_dir)
    if (root / META_FILE).is_file():
        return Workspace.open(root)
    return save_task(root, card_from_data(shapes_task_data(kind, target, n, seed)))


def thumbnail_uri(path: str | Path, side: int = 96) -> str:
    """A small PNG data URI of an image file (saved notebooks stay small)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((side, side))
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# ---- programs --------------------------------------------------------------------------------
def planner_available() -> str | None:
    """None when the default planner can be used, else the reason it cannot."""
    try:
        from builder.planner import propose_for_task  # noqa: F401
        from builder.planner.default import WEIGHTS_DIR
    except ImportError as e:
        return f"planner not available: {e}"
    if not (WEIGHTS_DIR / "model.safetensors").is_file():
        return f"planner weights missing in {WEIGHTS_DIR}"
    return None


def template_for(card: TaskCard) -> str:
    """The engineer's starting program for the card's output kind."""
    return TEMPLATES[OutputKind(card.output).value]


def propose_programs(ws: Workspace, k: int = 4, temperature: float = 1.0) -> tuple[list[ProgramVersion], str]:
    """Ask the planner for candidates and save each new one as a version; returns (versions, note).

    The greedy candidate comes first, then up to ``k`` distinct samples at ``temperature``.

    Without a usable planner the card's template is saved instead (origin "template"), and the
    note says why, so the engineer edits it by hand.
    """
    card = ws.load_task()
    reason = planner_available()
    if reason is None:
        from builder.planner import propose_for_task

        # The greedy program (the planner's single best guess) first, then k samples for variety.
        sources = propose_for_task(card, k=1, temperature=0.0)
        if k > 1:
            sources += [s for s in propose_for_task(card, k=k, temperature=temperature) if s not in sources]
        existing = {p.source for p in ws.programs()}
        versions = [ws.add_program(s, origin="planner", note=f"planner candidate (k={k}, T={temperature})")
                    for s in sources if s not in existing]
        if sources:
            again = len(sources) - len(versions)
            note = f"planner proposed {len(sources)} distinct program(s)" + (
                f"; {again} already saved" if again else "")
            return versions, note
        reason = "the planner returned no valid program"
    pv = ws.add_program(template_for(card), origin="template", note="starting template; edit it")
    return [pv], f"{reason}; saved the {card.output} template to edit"


def run_label(run_id: str) -> str:
    """The label part of a run id (``<date>-<time>-<label>-<hex>``)."""
    parts = run_id.split("-")
    return "-".join(parts[2:-1]) if len(parts) >= 4 else ""


def latest_runs(ws: Workspace) -> dict[int, dict[str, Any]]:
    """The newest saved run of each program version (loaded lazily by label)."""
    newest: dict[str, str] = {}
    for run_id in ws.runs():  # oldest first: later ones overwrite
        label = run_label(run_id)
        if label.startswith("v") and label[1:].isdigit():
            newest[label] = run_id
    out = {}
    for label, run_id in newest.items():
        try:
            out[int(label[1:])] = ws.load_run(run_id)
        except (WorkspaceError, json.JSONDecodeError):
            continue
    return out


def run_examples(ws: Workspace, version: int, runtime: Runtime,
                 progress: Callable[[int, int], None] | None = None, save: bool = True):
    """Run a program version on every example with traces; save the run; return ``BatchResult``."""
    import time

    from builder.batch import examples_from_card, run_program, summarise

    card = ws.load_task()
    if not card.examples:
        raise ValueError("the task has no examples yet: add some in the Task step")
    pv = ws.program(version)
    examples = examples_from_card(card, ws.root)
    engines, sandbox, cache = runtime.engines, runtime.sandbox, runtime.cache
    t0 = time.perf_counter()
    results: list = [None] * len(examples)
    done = 0
    if progress:
        progress(0, len(examples))
    with ThreadPoolExecutor(max_workers=max(1, runtime.workers)) as pool:
        futures = {pool.submit(run_program, pv.source, ex, engines, sandbox, cache, inspect=True): i
                   for i, ex in enumerate(examples)}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()[0]
            done += 1
            if progress:
                progress(done, len(examples))
    res = summarise(results, card.output, card.metric, time.perf_counter() - t0)
    if save:
        ws.save_run({"program": pv.version, **res.to_dict()}, label=pv.tag)
    return res


def results_table_html(results: list[dict[str, Any]] | list, limit: int = 200) -> str:
    """Per-example pass/fail as an HTML table (accepts ``ExampleResult``s or their dicts)."""
    rows = []
    for r in list(results)[:limit]:
        d = r if isinstance(r, dict) else r.__dict__
        ok = d.get("correct")
        mark = ("<span class='vf-pass' style='color:#0a7d28;font-weight:bold'>pass</span>" if ok else
                "<span class='vf-fail' style='color:#b00020;font-weight:bold'>fail</span>")
        out = d.get("error") or json.dumps(d.get("value"))
        rows.append(
            f"<tr><td>{html.escape(str(d.get('id')))}</td><td><code>{html.escape(_clip(json.dumps(d.get('expected'))))}"
            f"</code></td><td><code>{html.escape(_clip(out))}</code></td><td>{mark}</td></tr>"
        )
    return ("<table class='vf-results' style='border-collapse:collapse;font-size:12px' border='1' cellpadding='3'>"
            "<tr><th>example</th><th>expected</th><th>output</th><th>result</th></tr>" + "".join(rows) + "</table>")


def _clip(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def trace_html(ws: Workspace, result: dict[str, Any] | Any, title: str | None = None) -> str:
    """The step-by-step trace of one example result (images with boxes drawn), as HTML."""
    from builder.batch import examples_from_card
    from builder.images import load_image
    from builder.trace import Trace, trace_to_html

    d = result if isinstance(result, dict) else result.__dict__
    if not d.get("trace"):
        return "<i>no trace recorded for this example</i>"
    card = ws.load_task()
    by_id = {ex.id: ex for ex in examples_from_card(card, ws.root)}
    ex = by_id.get(d.get("id"))
    images = [load_image(p) for p in ex.images] if ex is not None else []
    return trace_to_html(Trace.from_dict(d["trace"]), images, title=title or f"Trace of {d.get('id')}")


def highlight(source: str) -> str:
    """Python source as syntax-highlighted HTML (inline styles: no stylesheet needed)."""
    from pygments import highlight as _hl
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    return _hl(source, PythonLexer(), HtmlFormatter(noclasses=True, style="friendly", nobackground=False))


def diff_text(a: str, b: str, a_label: str = "a", b_label: str = "b") -> str:
    """A unified diff of two program sources."""
    return "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), a_label, b_label))


def diff_html(a: str, b: str, a_label: str = "a", b_label: str = "b") -> str:
    """The unified diff coloured as HTML (additions green, removals red)."""
    text = diff_text(a, b, a_label, b_label)
    if not text:
        return "<i>no differences</i>"
    lines = []
    for line in text.splitlines():
        color = ("#0a7d28" if line.startswith("+") and not line.startswith("+++") else
                 "#b00020" if line.startswith("-") and not line.startswith("---") else
                 "#555" if line.startswith("@@") else "#222")
        lines.append(f"<span style='color:{color}'>{html.escape(line)}</span>")
    return "<pre class='vf-diff' style='font-size:12px;background:#fafafa;padding:6px'>" + "\n".join(lines) + "</pre>"


def best_version(ws: Workspace) -> tuple[int, float] | None:
    """The program version with the best latest run (ties: the shorter program); None if no runs."""
    runs = latest_runs(ws)
    if not runs:
        return None
    scored = [(run["accuracy"], -len(ws.program(v).source), v) for v, run in runs.items()]
    acc, _, v = max(scored)
    return v, acc
