"""Typer commands whose options are the fields of a config dataclass.

The dataclass is the single source of the defaults: a field's default, type, ``help`` and
bounds (``min``/``max`` in its metadata) become the option, so the CLI never repeats them.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from pathlib import Path

import typer

OUT_HELP = "Folder for model.safetensors + config.json."


def config_command(config_cls: type, run: Callable[[Path, typing.Any], None]) -> Callable[..., None]:
    """A command taking ``--out DIR`` plus one option per field of ``config_cls``; it calls
    ``run(out, config_cls(**options))``. The command's help is ``run``'s docstring."""
    hints = typing.get_type_hints(config_cls)
    params = [inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                                default=typer.Option(..., help=OUT_HELP))]
    for f in dataclasses.fields(config_cls):
        meta = dict(f.metadata)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name],
                                        default=typer.Option(f.default, help=meta.pop("help", ""), **meta)))

    def command(out: Path, **options) -> None:
        run(out, config_cls(**options))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = run.__doc__
    command.__name__ = run.__name__.lstrip("_")
    return command
