"""The ``visforge`` command line: a thin layer over the Python API (each command calls one function).

Errors meant for users (``builder.core.errors.UserError``) print as ``error: ...`` with exit
code 2; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import typer

from builder import api as workflow
from builder.core.errors import UserError
from builder.core.taskcard import load_task_card
from builder.core.video import load_media
from builder.core.workspace import Workspace
from builder.executor import Sandbox
from builder.planner import load_planner, propose_for_task
from builder.run import examples_from_card, run_batch
from builder.tools.trace import Trace, trace_to_html

app = typer.Typer(help="VisForge: plan, test, adapt and export computer-vision programs.", no_args_is_help=True)
world_app = typer.Typer(help="The shapes world: the embedded offline default domain.", no_args_is_help=True)
task_app = typer.Typer(help="Task cards: the task in words and examples.", no_args_is_help=True)
ws_app = typer.Typer(help="Workspaces: one folder per solution.", no_args_is_help=True)
app.add_typer(world_app, name="world")
app.add_typer(task_app, name="task")
engines_app = typer.Typer(help="Engines: train the embedded shapes-world engines.", no_args_is_help=True)
app.add_typer(ws_app, name="workspace")
app.add_typer(engines_app, name="engines")


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


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
        path = workflow.generate_world(out, n=n, seed=seed, domain=domain)
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
    from builder.world.video import generate_video_dataset

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
        ws = workflow.create_workspace(root, task)
    except UserError as e:
        _fail(str(e))
    typer.echo(f"created workspace {ws.root} for task {ws.load_task().name}")


@ws_app.command("add-program")
def workspace_add_program(
    root: Path,
    program: Path = typer.Argument(..., help="A Python file defining execute(image, ...)."),
    note: str = typer.Option("", help="A note stored with the version."),
    accept: bool = typer.Option(False, help="Also mark this version as accepted."),
) -> None:
    """Save a program file as a new version (append-only)."""
    try:
        ws = workflow.open_workspace(root)
        pv = workflow.add_program(ws, program.read_text(encoding="utf-8"), note=note, accept=accept)
    except (UserError, OSError) as e:
        _fail(str(e))
    typer.echo(f"saved {pv.tag}{' (accepted)' if accept else ''}")


@ws_app.command("show")
def workspace_show(root: Path) -> None:
    """Print what a workspace holds, as JSON."""
    try:
        ws = Workspace.open(root)
    except UserError as e:
        _fail(str(e))
    typer.echo(json.dumps(ws.summary(), indent=2))


@app.command("run")
def run(
    program: Path = typer.Argument(..., help="A Python file defining execute(image, ...)."),
    task: Path = typer.Option(..., help="Task card whose examples to run on."),
    profile: str = typer.Option("shapes", help="Engine profile: a bundled name (shapes, hf) or a YAML path."),
    engine: str = typer.Option("local", help="local (threads) or ray (Ray Data actor pool)."),
    workers: int = typer.Option(2, min=1, help="Parallel workers."),
    trace_dir: Path | None = typer.Option(None, help="Write one HTML trace per example here."),
) -> None:
    """Run a program on a task card's examples in the sandbox and print the score as JSON."""
    try:
        card = load_task_card(task, check_images=True)
        source = program.read_text(encoding="utf-8")
    except (UserError, OSError) as e:
        _fail(str(e))
    examples = examples_from_card(card, task.parent)
    sandbox = Sandbox(workers=workers) if engine == "local" else None

    def work(job: workflow.Job):
        return run_batch(source, examples, card.output, card.metric, profile=profile, engine=engine,
                         workers=workers, inspect=trace_dir is not None and engine == "local", sandbox=sandbox,
                         cancel=job.token)

    try:  # a job: Ctrl-C kills the running programs (the sandbox strategy) and nothing is written
        res = _follow(workflow.start_job("run", work, kill=sandbox.close if sandbox else None, label="run"))
    finally:
        if sandbox is not None:
            sandbox.close()
    if trace_dir is not None:
        trace_dir.mkdir(parents=True, exist_ok=True)
        for ex, r in zip(examples, res.results, strict=True):
            if r.trace is not None:
                images = [load_media(p) for p in ex.images]
                page = trace_to_html(Trace.from_dict(r.trace), images, title=f"{program.name} on {ex.id}",
                                     output=card.output)
                (trace_dir / f"{ex.id}.html").write_text(page, encoding="utf-8")
    out = {k: v for k, v in res.to_dict().items() if k != "results"}
    out["failures"] = [{"id": r.id, "expected": r.expected, "value": r.value, "error": r.error}
                       for r in res.results if not r.correct][:20]
    typer.echo(json.dumps(out, indent=2, default=str))


@app.command("plan")
def plan(
    task: Path | None = typer.Option(None, help="Task card to plan for (default: the workspace's task)."),
    k: int = typer.Option(4, min=1, help="Candidates to sample."),
    temperature: float = typer.Option(1.0, help="Sampling temperature (0 = greedy)."),
    planner: Path | None = typer.Option(None, help="A planner folder (default: the workspace's planner, adapted "
                                        "by Improve, or the embedded planner)."),
    workspace: Path | None = typer.Option(None, help="Save each candidate as a program version here."),
) -> None:
    """Propose candidate programs for a task card (printed, and saved to a workspace if given).

    With --workspace the workspace's planner plans (the one Improve adapted, if any; the video
    planner for a video task), and each candidate is validated and saved as a version."""
    if task is None and workspace is None:
        _fail("give --task (a task card) or --workspace (plan for its task)")
    try:
        ws = workflow.open_workspace(workspace) if workspace else None
        card = load_task_card(task) if task else ws.load_task()
        if planner is not None:
            model = load_planner(planner)
        else:
            model = workflow.planner_for(ws, card) if ws is not None else None
    except (UserError, FileNotFoundError) as e:
        _fail(str(e))
    for i, src in enumerate(propose_for_task(card, planner=model, k=k, temperature=temperature)):
        tag = workflow.add_program(ws, src, origin="planner").tag if ws else f"candidate {i + 1}"
        typer.echo(f"# {tag}\n{src}")


@app.command("export")
def export(
    root: Path = typer.Argument(..., help="Workspace with an accepted program."),
    out: Path | None = typer.Option(None, help="Project folder (default: <ws>/exports/<name>-<version>)."),
    name: str | None = typer.Option(None, help="Package name (default: the task's name)."),
    profile: str | None = typer.Option(None, help="Engine profile (default: shapes)."),
    version: str | None = typer.Option(None, help="Package version."),
    overwrite: bool = typer.Option(False, help="Replace an existing export folder."),
) -> None:
    """Export the accepted program as an installable solution (CLI, HTTP server, acceptance tests).

    Runs as a job (a child process): Ctrl-C cancels it and leaves any previous export intact."""
    ws = _open(root)
    params = {"out_dir": str(out) if out else None, "name": name, "profile": profile, "version": version,
              "overwrite": overwrite}
    result = _follow(_start(ws, "export", **params))
    typer.echo(json.dumps(result, indent=2, default=str))


@app.command("app")
def app_command(
    workspace: Path = typer.Option(Path("visforge-ws"), help="Workspace folder (created on first task)."),
    port: int = typer.Option(5006),
    address: str = typer.Option("127.0.0.1", help="Address to listen on."),
    show: bool = typer.Option(False, help="Open a browser tab."),
) -> None:
    """Start the Panel app (describe a task, generate and run programs, accept) for workshops."""
    # Panel is the optional "notebook" extra and slow to import: only this command needs it.
    from builder.interfaces.app import serve_app

    serve_app(port, str(workspace), show=show, address=address)


planner_app = typer.Typer(help="The embedded default planner.", no_args_is_help=True)
app.add_typer(planner_app, name="planner")


@planner_app.command("train")
def planner_train(
    out: Path = typer.Option(..., help="Folder for the planner head (the shipped one: builder/planner/parser_weights)."),
    examples: int = typer.Option(12000, min=20, help="Training phrasings to generate."),
    steps: int = typer.Option(1200, min=1, help="Optimiser steps."),
    batch_size: int = typer.Option(64, min=2),
    lr: float = typer.Option(1e-3, min=0.0),
    seed: int = typer.Option(0),
    progress: bool = typer.Option(True),
) -> None:
    """Train the default planner (a parser head on the pretrained MiniLM) from generated phrasings."""
    # torch/transformers are the optional "ml" extra: only this command needs them.
    from builder.planner.semantic import train_default_planner

    info = train_default_planner(out, n_examples=examples, steps=steps, batch_size=min(batch_size, examples),
                                 lr=lr, seed=seed, progress=progress)
    typer.echo(json.dumps({k: v for k, v in info.items() if k != "losses"}, indent=1))


@planner_app.command("train-causal")
def planner_train_causal(
    out: Path = typer.Option(..., help="Folder for the model (the shipped baseline: builder/planner/weights)."),
    pairs: int = typer.Option(200, min=1), steps: int = typer.Option(400, min=1),
    batch_size: int = typer.Option(32, min=1), lr: float = typer.Option(3e-3),
    seed: int = typer.Option(0), vocab_size: int = typer.Option(1024, min=64),
    prompt_noise: float = typer.Option(0.2, min=0.0, max=1.0),
    hidden_size: int = typer.Option(128, min=16), layers: int = typer.Option(4, min=1),
    progress: bool = typer.Option(True),
) -> None:
    """Train the previous default planner (a small causal LM on seed programs; the benchmark baseline)."""
    from builder.planner.default import MODEL_CONFIG, train_default

    overrides = {}
    if hidden_size != MODEL_CONFIG["hidden_size"]:
        overrides.update(hidden_size=hidden_size, intermediate_size=3 * hidden_size)
    if layers != MODEL_CONFIG["num_hidden_layers"]:
        overrides["num_hidden_layers"] = layers
    info = train_default(out, pairs, steps, batch_size, lr, seed, vocab_size, prompt_noise, progress=progress,
                         **overrides)
    typer.echo(json.dumps(info, indent=1))


serve_app = typer.Typer(help="Servers.", no_args_is_help=True)
app.add_typer(serve_app, name="serve")


@serve_app.command("planner")
def serve_planner(
    model: Path | None = typer.Option(None, help="Causal-LM planner folder (default: builder/planner/weights)."),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    name: str = typer.Option("visforge-planner", help="The model name clients ask for."),
    workers: int = typer.Option(1, help="Generation threads."),
    max_queue: int = typer.Option(8, help="Requests that may wait for a worker before the server answers 503."),
    max_prompt_chars: int | None = typer.Option(None, help="Prompt character cap (default: from the model's context)."),
) -> None:
    """Serve a causal-LM planner behind an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions)."""
    # fastapi/uvicorn are the optional "serve" extra: only this command needs them.
    from builder.planner.server import ServerLimits, serve

    serve(model, host=host, port=port, model_name=name,
          limits=ServerLimits(max_prompt_chars=max_prompt_chars, workers=workers, max_queue=max_queue))


def _open(root: Path) -> Workspace:
    try:
        return workflow.open_workspace(root)
    except UserError as e:
        _fail(str(e))


def _start(ws: Workspace, step: str, progress: bool = False, **params) -> workflow.Job:
    try:
        job = workflow.start_step(ws, step, **params)
    except UserError as e:
        _fail(str(e))
    if progress:
        job.watch(lambda j: typer.echo(f"[{(j.fraction or 0):4.0%}] {j.message}", err=True))
    return job


def _follow(job: workflow.Job):
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


def _echo_json(data) -> None:
    data = data.to_dict() if hasattr(data, "to_dict") else data
    typer.echo(json.dumps(data, indent=2, default=str))


def _torch_threads(threads: int | None) -> None:
    threads = threads or int(os.environ.get("VISFORGE_TORCH_THREADS", "0") or 0)
    if threads:
        import torch  # the "ml" extra; only the training commands need it

        torch.set_num_threads(threads)
        os.environ["VISFORGE_TORCH_THREADS"] = str(threads)  # the job's child process uses it too


@app.command("improve")
def improve(
    root: Path = typer.Argument(..., help="Workspace whose annotated examples train the planner."),
    rounds: int = typer.Option(1, min=1, help="Self-training rounds."),
    k: int = typer.Option(8, min=1, help="Readings tried per query."),
    steps: int = typer.Option(100, min=1, help="Planner fine-tuning steps per round."),
    eval_fraction: float = typer.Option(0.5, min=0.0, max=0.9, help="Share of each query's examples kept for evaluation."),
    progress: bool = typer.Option(True, help="Print progress."),
) -> None:
    """Reinforced self-training of the planner on the workspace's examples (saved to checkpoints/planner)."""
    ws = _open(root)
    # a job on a thread: Ctrl-C stops it between steps and no planner is saved
    report = _follow(_start(ws, "improve", progress=progress, rounds=rounds, k=k, steps=steps,
                            eval_fraction=eval_fraction))
    _echo_json(report)


@app.command("augment")
def augment(
    root: Path = typer.Argument(..., help="Workspace."),
    unlabelled: str = typer.Option("unlabelled", help="Folder of unlabeled images (or a dataset name)."),
    labelled: str = typer.Option("examples", help="QA dataset under datasets/ that trains the teacher."),
    name: str = typer.Option("seltda", help="Name of the dataset written under datasets/."),
    ratio: float = typer.Option(1.0, help="Synthetic : real ratio of the student set."),
    n_per_image: int = typer.Option(2, min=1, help="Pseudo-labels sampled per image."),
    seed: int = typer.Option(0),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """SelTDA: pseudo-label unlabeled images and save real + synthetic QA as a workspace dataset."""
    ws = _open(root)
    try:
        report = workflow.augment_data(ws, labelled=labelled, unlabelled=unlabelled, name=name, ratio=ratio,
                                       n_per_image=n_per_image, seed=seed, progress=progress)
    except (UserError, FileNotFoundError) as e:
        _fail(str(e))
    _echo_json(report)


@app.command("finetune")
def finetune(
    root: Path = typer.Argument(..., help="Workspace."),
    dataset: list[str] = typer.Option(..., help="Dataset folder name(s) under datasets/ (repeat for several)."),
    run: str = typer.Option(..., help="Run name under checkpoints/."),
    backend: str = typer.Option("shapes", help="shapes (the embedded engine) or hf (a BLIP model)."),
    model: str | None = typer.Option(None, help="Weights folder or model id (hf: required)."),
    epochs: int = typer.Option(3, min=1),
    batch_size: int = typer.Option(16, min=1),
    lr: float = typer.Option(3e-4, help="Peak learning rate (cosine decay after a short warmup)."),
    weight_decay: float = typer.Option(0.0),
    grad_clip: float = typer.Option(1.0),
    val_fraction: float = typer.Option(0.2),
    replay_fraction: float = typer.Option(0.5, help="Share of every batch from the original task's data."),
    patience: int = typer.Option(2, help="Stop after this many epochs without a better validation (0: never)."),
    seed: int = typer.Option(0),
    eval_batch_size: int = typer.Option(64, min=1),
    throttle_s: float = typer.Option(0.0, help="Sleep after each step (to demonstrate interruption)."),
    resume: bool = typer.Option(True, help="Continue from the run's newest checkpoint."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    threads: int | None = typer.Option(None, help="torch CPU threads (default: VISFORGE_TORCH_THREADS)."),
) -> None:
    """Fine-tune the VQA engine on workspace dataset(s); resumable; prints before/after figures."""
    _torch_threads(threads)
    ws = _open(root)
    config = workflow.FinetuneConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                     grad_clip=grad_clip, val_fraction=val_fraction, seed=seed,
                                     eval_batch_size=eval_batch_size, throttle_s=throttle_s,
                                     replay_fraction=replay_fraction, patience=patience)
    # a job in a child process: Ctrl-C kills it and what it wrote to checkpoints/<run> goes
    res = _follow(_start(ws, "finetune", progress=progress, dataset=dataset, backend=backend, model=model,
                         run=run, config=config, resume=resume))
    # One line of JSON: scripts read the last line of output.
    typer.echo(json.dumps({"best_checkpoint": str(res["best_checkpoint"]), "before": res["before"],
                           "after": res["after"], "resumed_from": res["resumed_from"]}, default=str))


@app.command("tune")
def tune(
    root: Path = typer.Argument(..., help="Workspace with an accepted program."),
    version: int | None = typer.Option(None, help="Program version to tune (default: the accepted one)."),
    n_trials: int = typer.Option(30, min=1, help="Optuna trials."),
    seed: int = typer.Option(0),
) -> None:
    """Tune the program's numeric constants on the examples; saves the tuned program as a new version."""
    ws = _open(root)
    try:
        res = workflow.tune_program(ws, version=version, n_trials=n_trials, seed=seed)
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


@engines_app.command("train-vqa")
def engines_train_vqa(
    out: Path = typer.Option(..., help="Folder for model.safetensors + config.json."),
    init: Path | None = typer.Option(None, help="Start from these weights (resume / fine-tune)."),
    n_scenes: int = typer.Option(8000, min=1),
    per_scene: int = typer.Option(1, help="Rounds of scene-level questions per scene."),
    crops_per_scene: int = typer.Option(2, help="Object crops (3 questions each) per scene."),
    perception_steps: int = typer.Option(2500, min=0, help="Stage 1: perception alone (batch 32)."),
    steps: int = typer.Option(5000, min=0, help="Stage 2: question reasoning on frozen perception."),
    joint_steps: int = typer.Option(0, min=0, help="Stage 3: everything together at lr/10 (batch 32)."),
    batch_size: int = typer.Option(128, min=1),
    lr: float = typer.Option(2e-3),
    word_dropout: float = typer.Option(0.1),
    domain: str = typer.Option("mix", help="Domain preset of the training scenes ('mix': a random daylight "
                               "domain per scene)."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1, help="torch CPU threads (the machines are shared)."),
    eval_scenes: int = typer.Option(150, help="Held-out scenes for progress logs (0: none)."),
    log_every: int = typer.Option(500),
    weighted: bool = typer.Option(True, help="Sample question types by shapes_vqa.QTYPE_WEIGHTS."),
) -> None:
    """Train (or fine-tune with --init) the embedded shapes-world VQA engine."""
    # torch (the "ml" extra) is only needed here.
    from builder.tools.backends.shapes_vqa import train_command

    train_command(out, init, n_scenes, per_scene, crops_per_scene, perception_steps, steps, joint_steps,
                  batch_size, lr, word_dropout, domain, seed, threads, eval_scenes, log_every, weighted)


@app.command("index")
def index_cmd(
    source: list[Path] = typer.Argument(..., help="Folders (searched recursively) or image files to index."),
    workspace: Path = typer.Option(..., help="The workspace that keeps the index."),
    name: str = typer.Option("default", help="Index name (several indexes can live in one workspace)."),
    profile: str = typer.Option("shapes", help="Engine profile whose embedder embeds the images."),
    runner: str = typer.Option("local", help="local (in this process) or ray (Ray Data actor pool)."),
    workers: int = typer.Option(2, min=1, help="Ray actors."),
    rebuild: bool = typer.Option(False, help="Start the index afresh instead of adding new images."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Index a collection of images for search (incremental: only new images are embedded)."""
    try:
        ws = workflow.open_workspace(workspace)
        res = workflow.index_images(ws, source, name=name, profile=profile, runner=runner, workers=workers,
                                    progress=progress, rebuild=rebuild)
    except (UserError, FileNotFoundError) as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps({**res.__dict__, "corrupt_count": len(res.corrupt)}))
        return
    typer.echo(res.summary())
    for path in res.corrupt[:20]:
        typer.echo(f"  skipped (corrupt or unreadable): {path}")
    if len(res.corrupt) > 20:
        typer.echo(f"  ... and {len(res.corrupt) - 20} more")


@app.command("search")
def search_cmd(
    query: str = typer.Argument("", help="Text to find images for (text->image)."),
    workspace: Path | None = typer.Option(None, help="The workspace with the index (text->image)."),
    k: int = typer.Option(10, min=1, help="How many results."),
    name: str = typer.Option("default", help="Index name."),
    profile: str = typer.Option("shapes", help="Engine profile (embedder, and matcher for --verify)."),
    verify: bool = typer.Option(True, help="Hybrid: re-rank an embedding shortlist with the matcher."),
    shortlist: int = typer.Option(100, min=1, help="Embedding candidates the matcher re-ranks."),
    image: Path | None = typer.Option(None, help="Image->text: rank the texts of --texts for this image."),
    texts: Path | None = typer.Option(None, help="Candidate texts, one per line (with --image)."),
    as_json: bool = typer.Option(False, "--json", help="Print the hits as JSON."),
) -> None:
    """Search: `visforge search "a red circle left of a blue square" --workspace ws/` or
    `visforge search --image img.png --texts captions.txt`."""
    from builder.methods.search import hits_json

    try:
        if image is not None:
            if texts is None:
                _fail("--image needs --texts FILE (candidate texts, one per line)")
            lines = [t.strip() for t in texts.read_text(encoding="utf-8").splitlines() if t.strip()]
            hits = workflow.search_captions(image, lines, k=k, profile=profile, verify=verify, shortlist=shortlist)
        else:
            if workspace is None or not query.strip():
                _fail("text->image search needs a QUERY and --workspace (or use --image)")
            ws = workflow.open_workspace(workspace)
            hits = workflow.search_images(ws, query, k=k, name=name, profile=profile, verify=verify,
                                          shortlist=shortlist)
    except (UserError, FileNotFoundError) as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(hits_json(hits)))
        return
    for h in hits:
        extra = f" (similarity {h.similarity:.3f})" if h.verified is not None else ""
        typer.echo(f"{h.rank:3d}  {h.score:.4f}{extra}  {h.item}")


@engines_app.command("train-embed")
def engines_train_embed(
    out: Path = typer.Option(..., help="Folder for model.safetensors + config.json."),
    n_scenes: int = typer.Option(5000, min=1),
    steps: int = typer.Option(1200, min=1),
    batch_size: int = typer.Option(128, min=2),
    lr: float = typer.Option(3e-3),
    word_dropout: float = typer.Option(0.1),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1, help="torch CPU threads (the machines are shared)."),
    max_minutes: float = typer.Option(18.0, help="Stop training early (and save) after this long."),
    log_every: int = typer.Option(50),
) -> None:
    """Train the shapes-world dual encoder (the `shapes` embedder for image-text search)."""
    from builder.tools.backends.shapes_embed import train_command

    train_command(out, n_scenes, steps, batch_size, lr, word_dropout, seed, threads, log_every,
                  max_minutes=max_minutes)


if __name__ == "__main__":
    app()
