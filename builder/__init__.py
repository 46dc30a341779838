"""VisForge: plan, test, adapt and export computer-vision programs.

The public API lives in the package ``builder.api`` (one module per concern: runtime, tasks,
programs, runs, steps, search, jobs) and is re-exported here::

    from builder import ensure_shapes_workspace, propose_programs, run_examples, Runtime

    ws = ensure_shapes_workspace("ws/")              # a task card with shapes-world examples
    versions, note = propose_programs(ws, k=4)       # planner candidates, saved as versions
    with Runtime(ws) as rt:
        res = run_examples(ws, versions[0].version, rt)
    print(res.accuracy)

The names load on first use, so importing one layer (``builder.core``, ``builder.executor``,
the sandbox worker) does not import the whole product. ``help(builder.api)`` lists them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The API's public names (builder.api imports each one and reuses this list).
__all__ = [
    "BatchResult", "ExampleResult", "ExportError", "ExportResult", "FinetuneConfig", "FinetuneResult",
    "Metric", "OutputKind", "ProgramVersion", "Runtime", "TaskCard", "TaskCardError", "UserError",
    "Workspace", "WorkspaceError", "error_text",
    "load_task_card", "card_from_data", "parse_expected_text", "format_expected", "validation_messages",
    "stage_image", "images_in_folder", "read_labels", "create_workspace", "open_workspace", "save_task",
    "shapes_task_data", "ensure_shapes_workspace", "generate_world",
    "planner_available", "template_for", "propose_programs", "add_program", "accept_program",
    "run_examples", "run_label", "latest_runs", "best_version", "diff_text",
    "improve_planner", "augment_data", "finetune_engine", "tune_program", "export_solution", "step_report",
    "REPORT_STEPS", "workspace_datasets", "step_not_applicable",
    "Cancelled", "task_fingerprint", "validate_image_upload", "task_history", "restore_task", "replace_task",
    "run_is_stale", "accepted_status", "task_problems", "delete_example", "update_example",
    "examples_dataset", "shapes_unlabelled",
    "Hit", "IndexResult", "SearchHits", "index_images", "search_images", "search_captions", "add_search_results",
    "search_hits_in_task",
    "workspace_planner", "planner_for", "InvalidProgram",
    "CancelToken", "Job", "JOB_STEPS", "start_step", "cancel_job", "job_status", "list_jobs", "running_job", "start_job",
    "resume_job",
    # lower-layer names the interfaces need (re-exported by builder/api/__init__.py)
    "META_FILE", "UPLOADS_DIR", "SHAPES_KINDS", "SHAPES_VIDEO_KINDS", "ValidationError", "validate_program", "load_qa_dataset", "hits_json",
    "load_planner", "propose_for_task", "examples_from_card", "run_batch", "Sandbox",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ loads the names
    from builder.api import *  # noqa: F403


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("builder.api"), name)
    raise AttributeError(f"module 'builder' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
