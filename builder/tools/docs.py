"""Render the program-facing tool API into a prompt-ready document (stubs with docstrings)."""

from __future__ import annotations

import inspect
import textwrap

from builder.tools import api


def _doc(obj, indent: str) -> str:
    text = inspect.getdoc(obj) or ""
    return textwrap.indent(f'"""{text}"""', indent)


def _signature(fn) -> str:
    # Annotations are strings under `from __future__ import annotations`: show them bare.
    return str(inspect.signature(fn)).replace("'", "")


def _class_doc(cls, fields: list[str]) -> list[str]:
    out = [f"class {cls.__name__}:", _doc(cls, "    "), ""]
    out += [f"    {f}" for f in fields]
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            ret = inspect.signature(member.fget).return_annotation if member.fget else None
            out.append(f"    {name}: {ret}  # {inspect.getdoc(member)}")
        elif inspect.isfunction(member):
            out += ["", f"    def {name}{_signature(member)}:", _doc(member, "        ")]
    return out + [""]


def render_api_doc() -> str:
    """The tool API as Python stubs with docstrings, in source order, for a planner prompt."""
    out = _class_doc(api.ImagePatch, ["left: int", "top: int", "right: int", "bottom: int", "score: float"])
    out += _class_doc(api.VideoSegment, ["start: int", "stop: int", "fps: float", "width: int", "height: int"])
    out += _class_doc(api.Track, ["id: int", "label: str", "color: str", "shape: str", "size: str",
                                  "frames: list[int]", "boxes: list[list[int]]"])
    for name, fn in api.PROGRAM_API.items():
        if inspect.isfunction(fn):
            out += ["", f"def {name}{_signature(fn)}:", _doc(fn, "    ")]
    return "\n".join(out).strip() + "\n"
