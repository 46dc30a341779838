"""The ``visforge`` command line: a thin layer over the Python API (each command calls one function).

A command's arguments and options are the fields of one options object (a frozen dataclass
beside the command, each field annotated with its ``typer.Argument``/``typer.Option``);
``@command`` registers the handler, which receives that object and passes it on to the API.

Errors meant for users (``builder.UserError``) print as ``error: ...`` with exit code 2;
anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from builder import (
    FinetuneConfig,
    Job,
    Sandbox,
    UserError,
    Workspace,
    add_program,
    augment_data,
    create_workspace,
    examples_from_card,
    generate_world,
    hits_json,
    index_images,
    load_planner,
    load_task_card,
    open_workspace,
    planner_for,
    propose_for_task,
    run_batch,
    search_captions,
    search_images,
    start_job,
    start_step,
    tune_program,
)
from builder.domains.shapes.training.config import EmbedTrainConfig, VQATrainConfig
from builder.interfaces.cli_common import command
from builder.interfaces.cli_common import echo_json as _echo_json
from builder.interfaces.cli_common import fail as _fail
from builder.interfaces.cli_models import planner_app, serve_app
from builder.interfaces.dataclass_options import config_command
from builder.interfaces.views import write_trace_pages

app = typer.Typer(help="VisForge: plan, test, adapt and export computer-vision programs.", no_args_is_help=True)
world_app = typer.Typer(help="The shapes world: the embedded offline default domain.", no_args_is_help=True)
task_app = typer.Typer(help="Task cards: the task in words and examples.", no_args_is_help=True)
ws_app = typer.Typer(help="Workspaces: one folder per solution.", no_args_is_help=True)
app.add_typer(world_app, name="world")
app.add_typer(task_app, name="task")
engines_app = typer.Typer(help="Engines: train the embedded shapes-world engines.", no_args_is_help=True)
app.add_typer(ws_app, name="workspace")
app.add_typer(engines_app, name="engines")
app.add_typer(planner_app, name="planner")
app.add_typer(serve_app, name="serve")


@world_app.command("generate")
def world_generate(
    out: Path = typer.Option(..., help="Output folder (images/, scenes.jsonl, examples.jsonl)."),
    n: int = typer.Option(200, min=1, help="Number of scenes."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives byte-identical output."),
    domain: str = typer.Option("clean", help="Domain preset (clean, textured, noisy, blur, palette, ...)."),
) -> None:
    """Generate a shapes-world dataset covering VQA, grounding and image-text matching."""
    t0 = time.perf_counter()
    try:
        path = generate_world(out, n=n, seed=seed, domain=domain)
    except (ValueError, OSError) as e:
        _fail(str(e))
    typer.echo(f"wrote {n} scenes to {path} in {time.perf_counter() - t0:.1f} s")


@world_app.command("video")
def world_video(
    out: Path = typer.Option(..., help="Output folder (clips/NNNN.mp4 and clips.jsonl)."),
    n: int = typer.Option(20, min=1, help="Number of clips."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same clips and events."),
    domain: str = typer.Option("clean", help="Domain preset (clean, textured, noisy, shifted, ...)."),
    size: int = typer.Option(128, min=64, max=1024, help="Frame width and height in pixels."),
    frames: int = typer.Option(60, min=20, max=3000, help="Frames per clip."),
    fps: int = typer.Option(25, min=1, max=120, help="Frames per second."),
) -> None:
    """Generate shapes-world video clips (MP4) with per-frame scene graphs and events (JSONL)."""
    from builder.domains.shapes.world.video import generate_video_dataset

    t0 = time.perf_counter()
    try:
        path = generate_video_dataset(out, n=n, seed=seed, domain=domain, size=size, n_frames=frames, fps=fps)
    except (ValueError, OSError) as e:
        _fail(str(e))
    typer.echo(f"wrote {n} clips to {path} in {time.perf_counter() - t0:.1f} s")


@task_app.command("validate")
def task_validate(
    path: Path,
    check_images: bool = typer.Option(True, help="Also check that every example image exists."),
) -> None:
    """Validate a task card; errors name the file, the field and the problem."""
    try:
        card = load_task_card(path, check_images=check_images)
    except UserError as e:
        _fail(str(e))
    typer.echo(f"{path}: ok ({card.name}: {card.output.value}, metric {card.metric.value}, {len(card.examples)} examples)")


@ws_app.command("init")
def workspace_init(
    root: Path,
    task: Path = typer.Option(..., help="Task card YAML; its example images are copied in."),
) -> None:
    """Create a workspace for a task card."""
    try:
        ws = create_workspace(root, task)
    except UserError as e:
        _fail(str(e))
    typer.echo(f"created workspace {ws.root} for task {ws.load_task().name}")


@dataclass(frozen=True)
class AddProgramOptions:
    """``visforge workspace add-program``."""

    root: Annotated[Path, typer.Argument()]
    program: Annotated[Path, typer.Argument(help="A Python file defining execute(image, ...).")]
    note: Annotated[str, typer.Option(help="A note stored with the version.")] = ""
    accept: Annotated[bool, typer.Option(help="Also mark this version as accepted.")] = False


@command(ws_app, "add-program")
def workspace_add_program(options: AddProgramOptions) -> None:
    """Save a program file as a new version (append-only)."""
    try:
        ws = open_workspace(options.root)
        pv = add_program(ws, options.program.read_text(encoding="utf-8"), note=options.note, accept=options.accept)
    except (UserError, OSError) as e:
        _fail(str(e))
    typer.echo(f"saved {pv.tag}{' (accepted)' if options.accept else ''}")


@ws_app.command("show")
def workspace_show(root: Path) -> None:
    """Print what a workspace holds, as JSON."""
    try:
        ws = Workspace.open(root)
    except UserError as e:
        _fail(str(e))
    typer.echo(json.dumps(ws.summary(), indent=2))


@dataclass(frozen=True)
class RunOptions:
    """``visforge run``."""

    program: Annotated[Path, typer.Argument(help="A Python file defining execute(image, ...).")]
    task: Annotated[Path, typer.Option(help="Task card whose examples to run on.")]
    profile: Annotated[str, typer.Option(help="Engine profile: a bundled name (shapes, hf) or a YAML path.")] = "shapes"
    engine: Annotated[str, typer.Option(help="local (threads) or ray (Ray Data actor pool).")] = "local"
    workers: Annotated[int, typer.Option(min=1, help="Parallel workers.")] = 2
    trace_dir: Annotated[Path | None, typer.Option(help="Write one HTML trace per example here.")] = None


@command(app, "run")
def run(options: RunOptions) -> None:
    """Run a program on a task card's examples in the sandbox and print the score as JSON."""
    try:
        card = load_task_card(options.task, check_images=True)
        source = options.program.read_text(encoding="utf-8")
    except (UserError, OSError) as e:
        _fail(str(e))
    examples = examples_from_card(card, options.task.parent)
    sandbox = Sandbox(workers=options.workers) if options.engine == "local" else None

    def work(job: Job):
        return run_batch(source, examples, card.output, card.metric, profile=options.profile, engine=options.engine,
                         workers=options.workers, inspect=options.trace_dir is not None and options.engine == "local",
                         sandbox=sandbox, cancel=job.token)

    try:  # a job: Ctrl-C kills the running programs (the sandbox strategy) and nothing is written
        res = _follow(start_job("run", work, kill=sandbox.close if sandbox else None, label="run"))
    finally:
        if sandbox is not None:
            sandbox.close()
    if options.trace_dir is not None:
        write_trace_pages(options.trace_dir, [(ex.id, ex.images, r.trace) for ex, r in
                                              zip(examples, res.results, strict=True)],
                          card.output, title_prefix=f"{options.program.name} on ")
    out = {k: v for k, v in res.to_dict().items() if k != "results"}
    out["failures"] = [{"id": r.id, "expected": r.expected, "value": r.value, "error": r.error}
                       for r in res.results if not r.correct][:20]
    typer.echo(json.dumps(out, indent=2, default=str))


@dataclass(frozen=True)
class PlanOptions:
    """``visforge plan``."""

    task: Annotated[Path | None, typer.Option(help="Task card to plan for (default: the workspace's task).")] = None
    k: Annotated[int, typer.Option(min=1, help="Candidates to sample.")] = 4
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 1.0
    planner: Annotated[Path | None, typer.Option(help="A planner folder (default: the workspace's planner, adapted "
                                                      "by Improve, or the embedded planner).")] = None
    workspace: Annotated[Path | None, typer.Option(help="Save each candidate as a program version here.")] = None


@command(app, "plan")
def plan(options: PlanOptions) -> None:
    """Propose candidate programs for a task card (printed, and saved to a workspace if given).

    With --workspace the workspace's planner plans (the one Improve adapted, if any; the video
    planner for a video task), and each candidate is validated and saved as a version."""
    if options.task is None and options.workspace is None:
        _fail("give --task (a task card) or --workspace (plan for its task)")
    try:
        ws = open_workspace(options.workspace) if options.workspace else None
        card = load_task_card(options.task) if options.task else ws.load_task()
        if options.planner is not None:
            model = load_planner(options.planner)
        else:
            model = planner_for(ws, card) if ws is not None else None
    except (UserError, FileNotFoundError) as e:
        _fail(str(e))
    for i, src in enumerate(propose_for_task(card, planner=model, k=options.k, temperature=options.temperature)):
        tag = add_program(ws, src, origin="planner").tag if ws else f"candidate {i + 1}"
        typer.echo(f"# {tag}\n{src}")


@dataclass(frozen=True)
class ExportOptions:
    """``visforge export``."""

    root: Annotated[Path, typer.Argument(help="Workspace with an accepted program.")]
    out: Annotated[Path | None, typer.Option(help="Project folder (default: <ws>/exports/<name>-<version>).")] = None
    name: Annotated[str | None, typer.Option(help="Package name (default: the task's name).")] = None
    profile: Annotated[str | None, typer.Option(help="Engine profile (default: shapes).")] = None
    version: Annotated[str | None, typer.Option(help="Package version.")] = None
    overwrite: Annotated[bool, typer.Option(help="Replace an existing export folder.")] = False


@command(app, "export")
def export(options: ExportOptions) -> None:
    """Export the accepted program as an installable solution (CLI, HTTP server, acceptance tests).

    Runs as a job (a child process): Ctrl-C cancels it and leaves any previous export intact."""
    ws = _open(options.root)
    params = {"out_dir": str(options.out) if options.out else None, "name": options.name,
              "profile": options.profile, "version": options.version, "overwrite": options.overwrite}
    result = _follow(_start(ws, "export", **params))
    typer.echo(json.dumps(result, indent=2, default=str))


@dataclass(frozen=True)
class AppOptions:
    """``visforge app``."""

    workspace: Annotated[Path, typer.Option(help="Workspace folder (created on first task).")] = Path("visforge-ws")
    port: Annotated[int, typer.Option()] = 5006
    address: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1"
    show: Annotated[bool, typer.Option(help="Open a browser tab.")] = False


@command(app, "app")
def app_command(options: AppOptions) -> None:
    """Start the Panel app (describe a task, generate and run programs, accept) for workshops."""
    # Panel is the optional "notebook" extra and slow to import: only this command needs it.
    from builder.interfaces.app import serve_app

    serve_app(options.port, str(options.workspace), show=options.show, address=options.address)


def _open(root: Path) -> Workspace:
    try:
        return open_workspace(root)
    except UserError as e:
        _fail(str(e))


def _start(ws: Workspace, step: str, progress: bool = False, **params) -> Job:
    try:
        job = start_step(ws, step, **params)
    except UserError as e:
        _fail(str(e))
    if progress:
        job.watch(lambda j: typer.echo(f"[{(j.fraction or 0):4.0%}] {j.message}", err=True))
    return job


def _follow(job: Job):
    """Wait for ``job`` in the foreground and return its result. Ctrl-C (SIGINT) or SIGTERM
    cancels it: the job ends "cancelled" with nothing saved and the command exits with 130."""
    def on_signal(signum, _frame) -> None:
        typer.secho(f"{signal.Signals(signum).name}: cancelling {job.label} ...", fg=typer.colors.YELLOW, err=True)
        job.cancel()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not job.wait(0.2):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if job.state == "cancelled":
        typer.secho(f"cancelled: {job.message}", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(code=130)
    if job.state != "succeeded":
        _fail(job.error or f"{job.label} ended {job.state}")
    return job.result


def _torch_threads(threads: int | None) -> None:
    threads = threads or int(os.environ.get("VISFORGE_TORCH_THREADS", "0") or 0)
    if threads:
        import torch  # the "ml" extra; only the training commands need it

        torch.set_num_threads(threads)
        os.environ["VISFORGE_TORCH_THREADS"] = str(threads)  # the job's child process uses it too


@dataclass(frozen=True)
class ImproveOptions:
    """``visforge improve``."""

    root: Annotated[Path, typer.Argument(help="Workspace whose annotated examples train the planner.")]
    rounds: Annotated[int, typer.Option(min=1, help="Self-training rounds.")] = 1
    k: Annotated[int, typer.Option(min=1, help="Readings tried per query.")] = 8
    steps: Annotated[int, typer.Option(min=1, help="Planner fine-tuning steps per round.")] = 100
    eval_fraction: Annotated[float, typer.Option(min=0.1, max=0.9, help="Share of the distinct queries kept for evaluation.")] = 0.5
    progress: Annotated[bool, typer.Option(help="Print progress.")] = True


@command(app, "improve")
def improve(options: ImproveOptions) -> None:
    """Reinforced self-training of the planner on the workspace's examples (saved to checkpoints/planner)."""
    ws = _open(options.root)
    # a job on a thread: Ctrl-C stops it between steps and no planner is saved
    report = _follow(_start(ws, "improve", progress=options.progress, rounds=options.rounds, k=options.k,
                            steps=options.steps, eval_fraction=options.eval_fraction))
    _echo_json(report)


@dataclass(frozen=True)
class AugmentOptions:
    """``visforge augment``."""

    root: Annotated[Path, typer.Argument(help="Workspace.")]
    unlabelled: Annotated[str, typer.Option(help="Folder of unlabeled images (or a dataset name).")] = "unlabelled"
    labelled: Annotated[str, typer.Option(help="QA dataset under datasets/ that trains the teacher.")] = "examples"
    name: Annotated[str, typer.Option(help="Name of the dataset written under datasets/.")] = "seltda"
    ratio: Annotated[float, typer.Option(help="Synthetic : real ratio of the student set.")] = 1.0
    n_per_image: Annotated[int, typer.Option(min=1, help="Pseudo-labels sampled per image.")] = 2
    seed: Annotated[int, typer.Option()] = 0
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True


@command(app, "augment")
def augment(options: AugmentOptions) -> None:
    """SelTDA: pseudo-label unlabeled images and save real + synthetic QA as a workspace dataset."""
    ws = _open(options.root)
    o = options
    try:
        report = augment_data(ws, labelled=o.labelled, unlabelled=o.unlabelled, name=o.name, ratio=o.ratio,
                              n_per_image=o.n_per_image, seed=o.seed, progress=o.progress)
    except (UserError, FileNotFoundError) as e:
        _fail(str(e))
    _echo_json(report)


@dataclass(frozen=True)
class FinetuneOptions:
    """``visforge finetune``: the run's options; the training ones become a ``FinetuneConfig``."""

    root: Annotated[Path, typer.Argument(help="Workspace.")]
    dataset: Annotated[list[str], typer.Option(help="Dataset folder name(s) under datasets/ (repeat for several).")]
    run: Annotated[str, typer.Option(help="Run name under checkpoints/.")]
    backend: Annotated[str, typer.Option(help="shapes (the embedded engine) or hf (a BLIP model).")] = "shapes"
    model: Annotated[str | None, typer.Option(help="Weights folder or model id (hf: required).")] = None
    epochs: Annotated[int, typer.Option(min=1)] = 3
    batch_size: Annotated[int, typer.Option(min=1)] = 16
    lr: Annotated[float, typer.Option(help="Peak learning rate (cosine decay after a short warmup).")] = 3e-4
    weight_decay: Annotated[float, typer.Option()] = 0.0
    grad_clip: Annotated[float, typer.Option()] = 1.0
    val_fraction: Annotated[float, typer.Option()] = 0.2
    replay_fraction: Annotated[float, typer.Option(help="Share of every batch from the original task's data.")] = 0.5
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better validation (0: never).")] = 2
    seed: Annotated[int, typer.Option()] = 0
    eval_batch_size: Annotated[int, typer.Option(min=1)] = 64
    throttle_s: Annotated[float, typer.Option(help="Sleep after each step (to demonstrate interruption).")] = 0.0
    resume: Annotated[bool, typer.Option(help="Continue from the run's newest checkpoint.")] = True
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: VISFORGE_TORCH_THREADS).")] = None

    def config(self) -> FinetuneConfig:
        """The training options as the API's ``FinetuneConfig``."""
        return FinetuneConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                              weight_decay=self.weight_decay, grad_clip=self.grad_clip,
                              val_fraction=self.val_fraction, seed=self.seed, eval_batch_size=self.eval_batch_size,
                              throttle_s=self.throttle_s, replay_fraction=self.replay_fraction,
                              patience=self.patience)


@command(app, "finetune")
def finetune(options: FinetuneOptions) -> None:
    """Fine-tune the VQA engine on workspace dataset(s); resumable; prints before/after figures."""
    _torch_threads(options.threads)
    ws = _open(options.root)
    # a job in a child process: Ctrl-C kills it and what it wrote to checkpoints/<run> goes
    res = _follow(_start(ws, "finetune", progress=options.progress, dataset=options.dataset,
                         backend=options.backend, model=options.model, run=options.run, config=options.config(),
                         resume=options.resume))
    # One line of JSON: scripts read the last line of output.
    typer.echo(json.dumps({"best_checkpoint": str(res["best_checkpoint"]), "before": res["before"],
                           "after": res["after"], "resumed_from": res["resumed_from"]}, default=str))


@dataclass(frozen=True)
class TuneOptions:
    """``visforge tune``."""

    root: Annotated[Path, typer.Argument(help="Workspace with an accepted program.")]
    version: Annotated[int | None, typer.Option(help="Program version to tune (default: the accepted one).")] = None
    n_trials: Annotated[int, typer.Option(min=1, help="Optuna trials.")] = 30
    seed: Annotated[int, typer.Option()] = 0


@command(app, "tune")
def tune(options: TuneOptions) -> None:
    """Tune the program's numeric constants on the examples; saves the tuned program as a new version."""
    ws = _open(options.root)
    try:
        res = tune_program(ws, version=options.version, n_trials=options.n_trials, seed=options.seed)
    except UserError as e:
        _fail(str(e))
    _echo_json(res)


@app.command("demo")
def demo(
    out: Path = typer.Argument(Path("demo-out"), help="Output folder (must be new or empty)."),
    scripted: bool = typer.Option(False, help="Plain Python steps instead of executing the notebook."),
) -> None:
    """The end-to-end demo on the shapes world: task -> plan -> run -> accept -> export -> report."""
    from builder.interfaces import demo as demo_module  # runs the whole product: imported on use

    if out.exists() and any(out.iterdir()):
        _fail(f"{out} is not empty: choose a new folder or remove it")
    (demo_module.main if scripted else demo_module.main_notebook)(out)


def _train_vqa(out: Path, config) -> None:
    """Train (or fine-tune with --init) the embedded shapes-world VQA engine."""
    from builder.domains.shapes.training.vqa import (
        train_command,  # torch (the "ml" extra) is only needed here
    )

    try:
        train_command(out, config)
    except UserError as e:  # e.g. --init names a folder that is not a shapes VQA artifact
        _fail(str(e))


def _train_embed(out: Path, config) -> None:
    """Train the shapes-world dual encoder (the `shapes` embedder for image-text search)."""
    from builder.domains.shapes.training.embed import train_command

    train_command(out, config)


engines_app.command("train-vqa")(config_command(VQATrainConfig, _train_vqa))
engines_app.command("train-embed")(config_command(EmbedTrainConfig, _train_embed))


@dataclass(frozen=True)
class IndexOptions:
    """``visforge index``."""

    source: Annotated[list[Path], typer.Argument(help="Folders (searched recursively) or image files to index.")]
    workspace: Annotated[Path, typer.Option(help="The workspace that keeps the index.")]
    name: Annotated[str, typer.Option(help="Index name (several indexes can live in one workspace).")] = "default"
    profile: Annotated[str, typer.Option(help="Engine profile whose embedder embeds the images.")] = "shapes"
    runner: Annotated[str, typer.Option(help="local (in this process) or ray (Ray Data actor pool).")] = "local"
    workers: Annotated[int, typer.Option(min=1, help="Ray actors.")] = 2
    rebuild: Annotated[bool, typer.Option(help="Start the index afresh instead of adding new images.")] = False
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False


@command(app, "index")
def index_cmd(options: IndexOptions) -> None:
    """Index a collection of images for search (incremental: only new images are embedded)."""
    o = options
    try:
        ws = open_workspace(o.workspace)
        res = index_images(ws, o.source, name=o.name, profile=o.profile, runner=o.runner, workers=o.workers,
                           progress=o.progress, rebuild=o.rebuild)
    except (UserError, FileNotFoundError) as e:
        _fail(str(e))
    if o.as_json:
        typer.echo(json.dumps({**res.__dict__, "corrupt_count": len(res.corrupt)}))
        return
    typer.echo(res.summary())
    for path in res.corrupt[:20]:
        typer.echo(f"  skipped (corrupt or unreadable): {path}")
    if len(res.corrupt) > 20:
        typer.echo(f"  ... and {len(res.corrupt) - 20} more")


@dataclass(frozen=True)
class SearchOptions:
    """``visforge search``."""

    query: Annotated[str, typer.Argument(help="Text to find images for (text->image).")] = ""
    workspace: Annotated[Path | None, typer.Option(help="The workspace with the index (text->image).")] = None
    k: Annotated[int, typer.Option(min=1, help="How many results.")] = 10
    name: Annotated[str, typer.Option(help="Index name.")] = "default"
    profile: Annotated[str, typer.Option(help="Engine profile (embedder, and matcher for --verify).")] = "shapes"
    verify: Annotated[bool, typer.Option(help="Hybrid: read the query into a meaning tree and evaluate it over "
                                               "every image's stored objects (image->text: re-rank with the "
                                               "matcher).")] = True
    shortlist: Annotated[int, typer.Option(min=1, help="Image->text: candidate texts the matcher re-ranks.")] = 100
    image: Annotated[Path | None, typer.Option(help="Image->text: rank the texts of --texts for this image.")] = None
    texts: Annotated[Path | None, typer.Option(help="Candidate texts, one per line (with --image).")] = None
    as_json: Annotated[bool, typer.Option("--json", help="Print the hits as JSON.")] = False


@command(app, "search")
def search_cmd(options: SearchOptions) -> None:
    """Search: `visforge search "a red circle left of a blue square" --workspace ws/` or
    `visforge search --image img.png --texts captions.txt`."""
    o = options
    try:
        if o.image is not None:
            if o.texts is None:
                _fail("--image needs --texts FILE (candidate texts, one per line)")
            lines = [t.strip() for t in o.texts.read_text(encoding="utf-8").splitlines() if t.strip()]
            hits = search_captions(o.image, lines, k=o.k, profile=o.profile, verify=o.verify, shortlist=o.shortlist)
        else:
            if o.workspace is None or not o.query.strip():
                _fail("text->image search needs a QUERY and --workspace (or use --image)")
            hits = search_images(open_workspace(o.workspace), o.query, k=o.k, name=o.name, profile=o.profile,
                                 verify=o.verify, shortlist=o.shortlist)
    except (UserError, FileNotFoundError) as e:
        _fail(str(e))
    refusal, reading = getattr(hits, "refusal", None), getattr(hits, "reading", None)
    if o.as_json:
        typer.echo(json.dumps(hits_json(hits)))
    else:
        if reading is not None and not refusal:
            typer.echo(f"read as: {reading.text} ({hits.matched} indexed image(s) match)")
        for h in hits:
            extra = f" (similarity {h.similarity:.3f})" if h.verified is not None else ""
            typer.echo(f"{h.rank:3d}  {h.score:.4f}{extra}  {h.item}")
    if refusal:  # like grep: no results is exit code 1, with the reason
        typer.secho(f"no results: {refusal}", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(code=1)


if __name__ == "__main__":
    app()
