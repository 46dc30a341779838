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


def render_api_doc() -> str:
    """The tool API as Python stubs with docstrings, in source order, for a planner prompt."""
    out = ["class ImagePatch:", _doc(api.ImagePatch, "    "), ""]
    out.append("    left: int")
    out.append("    top: int")
    out.append("    right: int")
    out.append("    bottom: int")
    out.append("    score: float")
    for name, member in vars(api.ImagePatch).items():
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            ret = inspect.signature(member.fget).return_annotation
            out.append(f"    {name}: {ret}  # {inspect.getdoc(member)}")
        elif inspect.isfunction(member):
            out += ["", f"    def {name}{_signature(member)}:", _doc(member, "        ")]
    out.append("")
    for name, fn in api.PROGRAM_API.items():
        if inspect.isfunction(fn):
            out += ["", f"def {name}{_signature(fn)}:", _doc(fn, "    ")]
    return "\n".join(out).strip() + "\n"
