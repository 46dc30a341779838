"""The public API: every step of building a vision solution as a plain function over a workspace.

A task's way is describe -> plan -> run -> edit/accept -> improve -> augment -> fine-tune ->
tune -> export; each step takes a ``Workspace`` and reads and writes only through it. The CLI,
the notebook widgets, the notebooks and the Panel app are thin layers on these functions, so
everything a button does can be called directly. ``builder/__init__.py`` re-exports the names
of ``builder.__all__`` (``from builder import ...``).

One module per concern:

- ``runtime``: ``Runtime`` (engines, sandbox, tool cache; the only state kept here)
- ``tasks``: task cards, examples, uploads, history, the shapes-world task
- ``programs``: planner proposals, engineer edits (validated), accepting a version
- ``runs``: running a version on the examples (through the runner registry), saved runs
- ``steps``: Improve, Augment, Fine-tune, Tune, Export
- ``search``: the image index and text/image search
- ``jobs``: long steps as jobs with progress and Cancel (``start_step``, ``cancel_job``, ``job_status``)
"""

from __future__ import annotations

from builder import __all__ as _PUBLIC_NAMES
from builder.api.jobs import (
    JOB_STEPS,
    Job,
    cancel_job,
    job_status,
    list_jobs,
    resume_job,
    running_job,
    start_job,
    start_step,
)
from builder.api.programs import (
    InvalidProgram,
    accept_program,
    add_program,
    diff_text,
    planner_available,
    planner_for,
    propose_programs,
    template_for,
    workspace_planner,
)
from builder.api.runs import accepted_status, best_version, latest_runs, run_examples, run_is_stale, run_label
from builder.api.runtime import Runtime
from builder.api.search import (
    Hit,
    IndexResult,
    SearchHits,
    add_search_results,
    index_images,
    search_captions,
    search_hits_in_task,
    search_images,
)
from builder.api.steps import (
    REPORT_STEPS,
    augment_data,
    export_solution,
    finetune_engine,
    improve_planner,
    step_not_applicable,
    step_report,
    tune_program,
    workspace_datasets,
)
from builder.api.tasks import (
    card_from_data,
    create_workspace,
    delete_example,
    ensure_shapes_workspace,
    examples_dataset,
    format_expected,
    generate_world,
    images_in_folder,
    open_workspace,
    parse_expected_text,
    read_labels,
    replace_task,
    restore_task,
    save_task,
    shapes_task_data,
    shapes_unlabelled,
    stage_image,
    task_fingerprint,
    task_history,
    task_problems,
    update_example,
    validate_image_upload,
    validation_messages,
)
from builder.core.errors import Cancelled, UserError, error_text

# Lower-layer names the interfaces need: they import only ``builder``'s public names (the
# import-linter contract "Interfaces use the public API only").
from builder.core.qa import load_qa_dataset  # noqa: E402, I001
from builder.core.taskcard import Metric, OutputKind, TaskCard, TaskCardError, load_task_card
from builder.core.workspace import META_FILE, UPLOADS_DIR, ProgramVersion, Workspace, WorkspaceError
from builder.domains.shapes.world.cards import KINDS as SHAPES_KINDS
from builder.domains.shapes.world.video_tasks import VIDEO_KINDS as SHAPES_VIDEO_KINDS
from builder.executor import Sandbox, ValidationError
from builder.executor import validate as validate_program
from builder.methods.export import ExportError, ExportResult
from builder.methods.finetune import FinetuneConfig, FinetuneResult
from builder.methods.image_index import hits_json
from builder.planner import load_planner, propose_for_task
from builder.run import BatchResult, ExampleResult, examples_from_card, run_batch
from builder.run.jobs import CancelToken

# The public names: listed once, in builder/__init__.py (``from builder import ...``).
__all__ = list(_PUBLIC_NAMES)

