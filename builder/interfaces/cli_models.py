"""The maintainers' model commands: ``visforge planner train|train-causal`` and ``visforge serve
planner``. They need the optional "ml"/"serve" extras and import the planner's training and
serving code lazily (the exceptions to "interfaces use the public API only" in pyproject.toml)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from builder.interfaces.cli_common import command

planner_app = typer.Typer(help="The embedded default planner.", no_args_is_help=True)


@dataclass(frozen=True)
class PlannerTrainOptions:
    """``visforge planner train``."""

    out: Annotated[Path, typer.Option(help="Folder for the planner head (the shipped one: builder/planner/parser_weights).")]
    examples: Annotated[int, typer.Option(min=20, help="Training phrasings to generate.")] = 12000
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps.")] = 1200
    batch_size: Annotated[int, typer.Option(min=2)] = 64
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-3
    seed: Annotated[int, typer.Option()] = 0
    progress: Annotated[bool, typer.Option()] = True


@command(planner_app, "train")
def planner_train(options: PlannerTrainOptions) -> None:
    """Train the default planner (a parser head on the pretrained MiniLM) from generated phrasings."""
    # torch/transformers are the optional "ml" extra: only this command needs them.
    from builder.planner.semantic import train_default_planner

    info = train_default_planner(options.out, n_examples=options.examples, steps=options.steps,
                                 batch_size=min(options.batch_size, options.examples), lr=options.lr,
                                 seed=options.seed, progress=options.progress)
    typer.echo(json.dumps({k: v for k, v in info.items() if k != "losses"}, indent=1))


@dataclass(frozen=True)
class PlannerTrainCausalOptions:
    """``visforge planner train-causal``."""

    out: Annotated[Path, typer.Option(help="Folder for the model (the shipped baseline: builder/planner/causal_weights).")]
    pairs: Annotated[int, typer.Option(min=1)] = 200
    steps: Annotated[int, typer.Option(min=1)] = 400
    batch_size: Annotated[int, typer.Option(min=1)] = 32
    lr: Annotated[float, typer.Option()] = 3e-3
    seed: Annotated[int, typer.Option()] = 0
    vocab_size: Annotated[int, typer.Option(min=64)] = 1024
    prompt_noise: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.2
    hidden_size: Annotated[int, typer.Option(min=16)] = 128
    layers: Annotated[int, typer.Option(min=1)] = 4
    progress: Annotated[bool, typer.Option()] = True


@command(planner_app, "train-causal")
def planner_train_causal(options: PlannerTrainCausalOptions) -> None:
    """Train the previous default planner (a small causal LM on seed programs; the benchmark baseline)."""
    from builder.planner.causal import MODEL_CONFIG, train_causal_planner

    o = options
    overrides = {}
    if o.hidden_size != MODEL_CONFIG["hidden_size"]:
        overrides.update(hidden_size=o.hidden_size, intermediate_size=3 * o.hidden_size)
    if o.layers != MODEL_CONFIG["num_hidden_layers"]:
        overrides["num_hidden_layers"] = o.layers
    info = train_causal_planner(o.out, o.pairs, o.steps, o.batch_size, o.lr, o.seed, o.vocab_size, o.prompt_noise,
                         progress=o.progress, **overrides)
    typer.echo(json.dumps(info, indent=1))


serve_app = typer.Typer(help="Servers.", no_args_is_help=True)


@dataclass(frozen=True)
class ServePlannerOptions:
    """``visforge serve planner``."""

    model: Annotated[Path | None, typer.Option(help="Causal-LM planner folder (default: builder/planner/causal_weights).")] = None
    host: Annotated[str, typer.Option()] = "127.0.0.1"
    port: Annotated[int, typer.Option()] = 8000
    name: Annotated[str, typer.Option(help="The model name clients ask for.")] = "visforge-planner"
    workers: Annotated[int, typer.Option(help="Generation threads.")] = 1
    max_queue: Annotated[int, typer.Option(help="Requests that may wait for a worker before the server answers 503.")] = 8
    max_prompt_chars: Annotated[int | None, typer.Option(help="Prompt character cap (default: from the model's context).")] = None


@command(serve_app, "planner")
def serve_planner(options: ServePlannerOptions) -> None:
    """Serve a causal-LM planner behind an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions)."""
    # fastapi/uvicorn are the optional "serve" extra: only this command needs them.
    from builder.planner.server import ServerLimits, serve

    o = options
    serve(o.model, host=o.host, port=o.port, model_name=o.name,
          limits=ServerLimits(max_prompt_chars=o.max_prompt_chars, workers=o.workers, max_queue=o.max_queue))


