"""What the ``visforge`` commands share: ``@command`` (a command's options collected into one
options object), the error exit and JSON output."""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable
from typing import Any, get_type_hints

import typer


def fail(msg: str) -> None:
    """Print ``error: msg`` and exit with code 2 (an error meant for the user)."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def command(group: typer.Typer, name: str) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    """Register ``handler(options)`` as the command ``name`` of ``group``.

    The command's parameters are the fields of the dataclass that ``handler``'s one parameter is
    annotated with (each an ``Annotated[type, typer.Option(...)]``); typer parses them and the
    handler gets them collected into that object. Its docstring is the command's help.
    """

    def register(handler: Callable[[Any], None]) -> Callable[[Any], None]:
        (options_type,) = [t for k, t in get_type_hints(handler).items() if k != "return"]
        hints = get_type_hints(options_type, include_extras=True)
        params = [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=hints[f.name],
                                    default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
                  for f in dataclasses.fields(options_type)]

        def cli_entry(**values: Any) -> None:
            handler(options_type(**values))

        cli_entry.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        cli_entry.__annotations__ = {p.name: p.annotation for p in params}
        cli_entry.__doc__ = handler.__doc__
        group.command(name)(cli_entry)
        return handler

    return register


def echo_json(data: Any) -> None:
    """Print a result (anything with ``to_dict``, or plain data) as indented JSON."""
    data = data.to_dict() if hasattr(data, "to_dict") else data
    typer.echo(json.dumps(data, indent=2, default=str))
