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


@ws_app.command("show")
def workspace_show(root: Path) -> None:
    """Print what a workspace holds, as JSON."""
    try:
        ws = Workspace.open(root)
    except WorkspaceError as e:
        _fail(str(e))
    typer.echo(json.dumps(ws.summary(), indent=2))


if __name__ == "__main__":
    app()
