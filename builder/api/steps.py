"""The adaptation and delivery steps: Improve the planner, Augment, Fine-tune, Tune, Export.

Each step is one call over a workspace; the method it runs lives in ``builder.methods`` (and
``augment``). Long steps run as jobs (``builder.api.jobs``): a step saves its output only at
the end, so a cancelled one saves nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from augment import seltda
from builder.api.programs import WORKSPACE_PLANNER, WORKSPACE_TREE_PARSER, planner_for
from builder.api.runtime import Runtime
from builder.core.atomic import atomic_write_json
from builder.core.errors import Cancelled, UserError
from builder.core.qa import DATASET_FILE
from builder.core.workspace import Workspace
from builder.methods import export as _export
from builder.methods import finetune as _finetune
from builder.methods import improve as _improve
from builder.methods import improve_trees as _improve_trees
from builder.methods import tune as _tune
from builder.methods.export import ExportResult
from builder.methods.finetune import FinetuneConfig, FinetuneResult
from builder.planner.compose.parse import TreeParser
from builder.planner.compose.planner import ComposingPlanner
from builder.planner.plan import card_has_video
from builder.planner.semantic import clear_planner_cache

__all__ = ["REPORT_STEPS", "augment_data", "export_solution", "finetune_engine", "improve_planner",
           "step_not_applicable", "step_report", "tune_program", "workspace_datasets"]

# The steps whose last result is kept in the workspace, so every interface can show it again.
REPORT_STEPS = ("improve", "augment", "finetune", "export")


def _report_path(ws: Workspace, step: str) -> Path:
    if step not in REPORT_STEPS:
        raise ValueError(f"no saved report for step {step!r}; one of {', '.join(REPORT_STEPS)}")
    if step == "improve":  # written beside the adapted planner
        return ws.root / "checkpoints" / "planner_report.json"
    return ws.dir("reports") / f"{step}.json"


def _save_report(ws: Workspace, step: str, report: dict[str, Any]) -> None:
    atomic_write_json(_report_path(ws, step), {**report, "step": step, "finished": time.time()})


def step_report(ws: Workspace, step: str) -> dict[str, Any] | None:
    """The last finished ``step``'s result as saved in the workspace (one of ``REPORT_STEPS``),
    None when it never finished: what an interface shows again after a reload or a restart."""
    path = _report_path(ws, step)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: the saved {step} report cannot be read ({e})") from None


# Outputs with short answers: the tasks a VQA engine answers (SelTDA writes such QA pairs).
VQA_OUTPUTS = ("text", "bool", "count")
# The steps that adapt an image model, and how their cards name them.
_IMAGE_ONLY_STEPS = {"improve": "Improve (self-training the image planner)", "augment": "Augment (SelTDA)",
                     "finetune": "Fine-tune (the image VQA engine)"}
_OUTPUT_WORDS = {"boxes": "boxes (grounding)", "choice": "choice (image-text matching)",
                 "frame": "video frame", "summary": "video summary"}


def step_not_applicable(ws: Workspace, step: str) -> str | None:
    """Why ``step`` does not apply to the workspace's task, or None when it does.

    Augment (SelTDA) writes question/answer pairs for unlabeled images, so it applies to VQA
    tasks only (answers that are text, yes/no or a count). A video task is planned by the video
    planner and answered by tracking, so Improve (which trains the image planner), Augment and
    Fine-tune (the image VQA engine) do not apply to it; the other steps apply to every task.
    """
    card = ws.load_task()
    if step in _IMAGE_ONLY_STEPS and card_has_video(card):
        return (f"{_IMAGE_ONLY_STEPS[step]} applies to image tasks: this is a video task, planned by the video "
                "planner and answered by tracking objects through the clip. Go on with Run and Export; to "
                "improve the answers, label more clips in the task.")
    output = card.output.value
    if step == "augment" and output not in VQA_OUTPUTS:
        return (f"Augment (SelTDA) applies to VQA tasks, whose answers are text, yes/no or a count: it "
                f"writes question/answer pairs for unlabeled images. This is a {_OUTPUT_WORDS.get(output, output)} "
                "task, so there is nothing to augment; label more examples in the task instead.")
    return None


def improve_planner(ws: Workspace, rounds: int = 1, k: int = 8, steps: int = 100, eval_fraction: float = 0.5,
                    progress: bool | Callable[[str, float], None] = False,
                    should_stop: Callable[[], bool] | None = None, runtime: Runtime | None = None,
                    cancel: Callable[[], bool] | None = None, **options: Any) -> dict:
    """Reinforced self-training of the planner on the workspace's annotated examples (the Improve step).

    Both of the proposing planner's readers are adapted in turn: the 20-kind reader
    (``improve.self_train``) and then the composing parser (``improve_trees.self_train_trees``);
    the report's before/after are the proposing planner's (``ComposingPlanner``) top-1 accuracy,
    the 20-kind reader's own report is under ``kinds_reader``.

    The examples are grouped by query string into training, validation (decides keep-best) and
    evaluation queries (``builder.methods.improve.split_examples``: ``eval_fraction`` of the
    distinct queries evaluate; with fewer than three distinct queries they are cut by image and
    the report's ``split_by`` says "image"). The adapted
    readers are saved to ``checkpoints/planner`` and ``checkpoints/compose_planner``, used by later proposals in this workspace, and
    exported with the solution. Returns the report: accuracy before and after each round on
    the evaluation queries, kept readings, the planner's path. ``options`` go to
    ``builder.methods.improve.AdaptConfig``.

    ``cancel`` (a ``CancelToken``; ``should_stop`` is the older name) stops it between steps:
    then ``Cancelled`` is raised and no planner is saved.
    """
    reason = step_not_applicable(ws, "improve")  # a video task: said before anything runs
    if reason:
        raise UserError(reason)
    card = ws.load_task()
    split = _improve.split_examples(card, ws.root, eval_fraction)
    stop = cancel if cancel is not None else should_stop
    own = runtime is None
    runtime = runtime or Runtime(ws)
    scorer = _improve.example_scorer(card, runtime.engines, runtime.sandbox, runtime.cache)
    report_progress = progress if callable(progress) else (
        (lambda msg, frac: print(f"[{frac:4.0%}] {msg}", flush=True)) if progress else None)
    config = _improve.AdaptConfig(rounds=rounds, k=k, steps=steps, **options)
    proposing = planner_for(ws, card)  # what proposes today: the composing parser, the 20-kind reader for its kinds
    try:
        # 1. the 20-kind reader, 2. the composing parser (with the adapted 20-kind reader beside it)
        kinds, kinds_report = _improve.self_train(proposing.kinds, split.training, split.evaluation, scorer, config,
                                                  progress=report_progress, should_stop=stop,
                                                  val_tasks=split.validation, split_by=split.by)
        if not kinds_report.get("cancelled"):
            start = ComposingPlanner(kinds=kinds, parser=proposing.parser,
                                     closed_vocabulary=proposing.closed_vocabulary, engines=proposing.engines)
            planner, report = _improve_trees.self_train_trees(start, split.training, split.evaluation, scorer, config,
                                                              progress=report_progress, should_stop=stop,
                                                              val_tasks=split.validation, split_by=split.by)
            # before: the planner as it proposed before Improve (neither reader adapted)
            report["before"] = _improve.evaluate(proposing, split.evaluation, scorer)
            report["never_worse"] = report["after"]["accuracy"] >= report["before"]["accuracy"]
        else:
            report = kinds_report
        report["kinds_reader"] = kinds_report
    finally:
        if own:
            runtime.close()
    if report.get("cancelled") or (stop is not None and stop()):
        raise Cancelled(f"Improve cancelled after {len(report['rounds'])} of {rounds} round(s); "
                        "no planner was saved")
    out = ws.root / "checkpoints" / WORKSPACE_PLANNER
    kinds.parser.save_pretrained(out)
    clear_planner_cache(out)
    tree_out = ws.root / "checkpoints" / WORKSPACE_TREE_PARSER
    planner.parser.save_pretrained(tree_out)
    TreeParser.forget(tree_out)
    report.update(planner=str(out), tree_parser=str(tree_out), queries=split.queries,
                  **{f"{name}_examples": sum(len(t.examples) for t in tasks) for name, tasks in
                     (("train", split.training), ("val", split.validation), ("eval", split.evaluation))})
    atomic_write_json(ws.root / "checkpoints" / "planner_report.json", report)
    return report


def augment_data(ws: Workspace, labelled: str = "examples", unlabelled: str | Path = "unlabelled",
                 name: str = "seltda", **options: Any) -> dict:
    """SelTDA: pseudo-label unlabeled images with a teacher trained on ``datasets/<labelled>``,
    filter them, and save real + synthetic as ``datasets/<name>`` for fine-tuning.

    ``options`` go to ``augment.seltda.augment_workspace`` (ratio, n_per_image, top_p, seed, ...).
    A task that is not a VQA task raises ``UserError`` saying so (``step_not_applicable``).
    """
    reason = step_not_applicable(ws, "augment")
    if reason:
        raise UserError(reason)
    out = seltda.augment_workspace(ws, labelled=labelled, unlabelled=unlabelled, name=name, **options)
    folder = Path(unlabelled) if Path(unlabelled).is_absolute() else ws.dir("datasets") / unlabelled
    out = {**out, "labelled": labelled, "unlabelled_dir": str(folder)}
    _save_report(ws, "augment", out)
    return out


def workspace_datasets(ws: Workspace) -> list[str]:
    """The names of the workspace's question/answer datasets (``datasets/<name>``), the ones
    Fine-tune can train on."""
    return sorted(p.name for p in ws.dir("datasets").iterdir() if (p / DATASET_FILE).is_file())


def finetune_engine(ws: Workspace, dataset: str | Sequence[str], backend: str = "shapes",
                    model: str | None = None, run: str = "finetune", config: FinetuneConfig | None = None,
                    **options: Any) -> FinetuneResult:
    """Fine-tune the VQA engine on workspace dataset(s) (folders under ``datasets/``).

    ``backend`` is "shapes" (the embedded engine; ``model`` = other weights) or "hf" (a BLIP
    model id or folder). Checkpoints go to ``checkpoints/<run>``; an interrupted run resumes.
    Returns before/after scores and the best checkpoint.
    """
    adapter = _finetune.make_adapter(backend, model)
    result = _finetune.finetune_workspace(ws, dataset, adapter, run, config, **options)
    _save_report(ws, "finetune", {**result.to_dict(), "dataset": dataset, "run": run, "backend": backend})
    return result


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
    result = _export.export_solution(ws, out_dir, name, profile, version, **options)
    _save_report(ws if isinstance(ws, Workspace) else Workspace.open(ws), "export", result.to_dict())
    return result

