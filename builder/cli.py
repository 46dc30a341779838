"""The ``visforge`` command line: a thin layer over the Python API (each command calls one function)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from builder.taskcard import TaskCardError, load_task_card
from builder.workspace import Workspace, WorkspaceError

app = typer.Typer(help="VisForge: plan, test, adapt and export computer-vision programs.", no_args_is_help=True)
world_app = typer.Typer(help="The shapes world: the embedded offline default domain.", no_args_is_help=True)
task_app = typer.Typer(help="Task cards: the task in words and examples.", no_args_is_help=True)
ws_app = typer.Typer(help="Workspaces: one folder per solution.", no_args_is_help=True)
app.add_typer(world_app, name="world")
app.add_typer(task_app, name="task")
app.add_typer(ws_app, name="workspace")


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
    from builder.world import generate_dataset

    t0 = time.perf_counter()
    try:
        path = generate_dataset(out, n=n, seed=seed, domain=domain)
    except (ValueError, OSError) as e:
        _fail(str(e))
    typer.echo(f"wrote {n} scenes to {path} in {time.perf_counter() - t0:.1f} s")


@task_app.command("validate")
def task_validate(
    path: Path,
    check_images: bool = typer.Option(True, help="Also check that every example image exists."),
) -> None:
    """Validate a task card; errors name the file, the field and the problem."""
    try:
        card = load_task_card(path, check_images=check_images)
    except TaskCardError as e:
        _fail(str(e))
    typer.echo(f"{path}: ok ({card.name}: {card.output.value}, metric {card.metric.value}, {len(card.examples)} examples)")


@ws_app.command("init")
def workspace_init(
    root: Path,
    task: Path = typer.Option(..., help="Task card YAML; its example images are copied in."),
) -> None:
    """Create a workspace for a task card."""
    try:
        card = load_task_card(task, check_images=True)
        ws = Workspace.init(root, card, images_from=task.parent)
    except (TaskCardError, WorkspaceError) as e:
        _fail(str(e))
    typer.echo(f"created workspace {ws.root} for task {card.name}")


@ws_app.command("add-program")
def workspace_add_program(
    root: Path,
    program: Path = typer.Argument(..., help="A Python file defining execute(image, ...)."),
    note: str = typer.Option("", help="A note stored with the version."),
    accept: bool = typer.Option(False, help="Also mark this version as accepted."),
) -> None:
    """Save a program file as a new version (append-only)."""
    try:
        ws = Workspace.open(root)
        pv = ws.add_program(program.read_text(encoding="utf-8"), origin="engineer", note=note)
        if accept:
            ws.accept(pv.version)
    except (WorkspaceError, OSError) as e:
        _fail(str(e))
    typer.echo(f"saved {pv.tag}{' (accepted)' if accept else ''}")


@ws_app.command("show")
def workspace_show(root: Path) -> None:
    """Print what a workspace holds, as JSON."""
    try:
        ws = Workspace.open(root)
    except WorkspaceError as e:
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
    from builder.batch import examples_from_card, run_batch
    from builder.images import load_image
    from builder.trace import Trace, trace_to_html

    try:
        card = load_task_card(task, check_images=True)
        source = program.read_text(encoding="utf-8")
    except (TaskCardError, OSError) as e:
        _fail(str(e))
    examples = examples_from_card(card, task.parent)
    res = run_batch(source, examples, card.output, card.metric, profile=profile, engine=engine,
                    workers=workers, inspect=trace_dir is not None and engine == "local")
    if trace_dir is not None:
        trace_dir.mkdir(parents=True, exist_ok=True)
        for ex, r in zip(examples, res.results, strict=True):
            if r.trace is not None:
                images = [load_image(p) for p in ex.images]
                page = trace_to_html(Trace.from_dict(r.trace), images, title=f"{program.name} on {ex.id}")
                (trace_dir / f"{ex.id}.html").write_text(page, encoding="utf-8")
    out = {k: v for k, v in res.to_dict().items() if k != "results"}
    out["failures"] = [{"id": r.id, "expected": r.expected, "value": r.value, "error": r.error}
                       for r in res.results if not r.correct][:20]
    typer.echo(json.dumps(out, indent=2, default=str))


@app.command("plan")
def plan(
    task: Path = typer.Option(..., help="Task card to plan for."),
    k: int = typer.Option(4, min=1, help="Candidates to sample."),
    temperature: float = typer.Option(1.0, help="Sampling temperature (0 = greedy)."),
    planner: Path | None = typer.Option(None, help="A planner folder (default: the embedded planner)."),
    workspace: Path | None = typer.Option(None, help="Save each candidate as a program version here."),
) -> None:
    """Propose candidate programs for a task card (printed, and saved to a workspace if given)."""
    from builder.planner import propose_for_task
    from builder.planner.default import load_default_planner

    try:
        card = load_task_card(task)
        ws = Workspace.open(workspace) if workspace else None
    except (TaskCardError, WorkspaceError) as e:
        _fail(str(e))
    model = load_default_planner(planner) if planner else None
    for i, src in enumerate(propose_for_task(card, planner=model, k=k, temperature=temperature)):
        tag = ws.add_program(src, origin="planner").tag if ws else f"candidate {i + 1}"
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
    """Export the accepted program as an installable solution (CLI, HTTP server, acceptance tests)."""
    from builder.export import ExportError, export_solution

    try:
        result = export_solution(root, out, name, profile, version, overwrite=overwrite)
    except (ExportError, WorkspaceError) as e:
        _fail(str(e))
    typer.echo(json.dumps(result.to_dict(), indent=2, default=str))


@app.command("app")
def app_command(
    workspace: Path = typer.Option(Path("visforge-ws"), help="Workspace folder (created on first task)."),
    port: int = typer.Option(5006),
    show: bool = typer.Option(False, help="Open a browser tab."),
) -> None:
    """Start the Panel app (describe a task, generate and run programs, accept) for workshops."""
    from builder.app import serve_app

    serve_app(port, str(workspace), show=show)


serve_app = typer.Typer(help="Servers.", no_args_is_help=True)
app.add_typer(serve_app, name="serve")


@serve_app.command("planner")
def serve_planner(
    model: Path | None = typer.Option(None, help="Planner folder (default: the embedded planner)."),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
) -> None:
    """Serve a planner behind an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions)."""
    from builder.planner.server import serve

    serve(model, host=host, port=port)


if __name__ == "__main__":
    app()
