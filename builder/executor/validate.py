"""The first wall: a static check of a program's syntax tree against allow-lists.

Programs may define functions, use ordinary control flow, comprehensions and lambdas, and call
the tool API and a small set of builtins. Anything else (imports, classes, global state,
async, ``with``, pattern matching, names or attributes outside the allow-lists, anything
starting with ``_``) is rejected with the line and the reason. The allow-lists are the
security boundary of this layer; the worker process and seccomp are the next walls.
"""

from __future__ import annotations

import ast
import threading
from dataclasses import dataclass

from builder.tools import api

MAX_SOURCE_CHARS = 50_000
MAX_NODES = 20_000

ALLOWED_NODES = (
    ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.Assign, ast.AugAssign,
    ast.AnnAssign, ast.For, ast.While, ast.If, ast.Break, ast.Continue, ast.Pass, ast.Expr,
    ast.Try, ast.ExceptHandler, ast.Raise, ast.Assert, ast.Delete,
    ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Lambda, ast.IfExp, ast.Dict, ast.Set, ast.ListComp,
    ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension, ast.Compare, ast.Call, ast.keyword,
    ast.FormattedValue, ast.JoinedStr, ast.Constant, ast.Attribute, ast.Subscript, ast.Starred,
    ast.Name, ast.List, ast.Tuple, ast.Slice, ast.NamedExpr,
    ast.Load, ast.Store, ast.Del,
    ast.And, ast.Or, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
    ast.BitAnd, ast.BitOr, ast.BitXor, ast.LShift, ast.RShift, ast.Invert, ast.Not, ast.UAdd, ast.USub,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Is, ast.IsNot, ast.In, ast.NotIn,
)

# Builtins a program may call (the worker provides exactly these).
SAFE_BUILTINS = (
    "abs", "all", "any", "bool", "chr", "dict", "divmod", "enumerate", "filter", "float", "hash",
    "int", "isinstance", "iter", "len", "list", "map", "max", "min", "next", "ord", "pow", "print",
    "range", "repr", "reversed", "round", "set", "sorted", "str", "sum", "tuple", "zip",
    "Exception", "ValueError", "KeyError", "IndexError", "TypeError", "ZeroDivisionError",
    "RuntimeError", "StopIteration", "ArithmeticError", "LookupError", "AssertionError",
    "True", "False", "None",
)

# Attribute names a program may use: the patch, video segment and track API plus everyday str/list/dict/set methods.
# An allow-list, because frame and code attributes (gi_frame, f_back, tb_frame, ...) and
# str.format's attribute lookups are escape routes that a deny-list would have to chase.
_PATCH_ATTRS = {n for cls in (api.ImagePatch, api.VideoSegment, api.Track) for n in dir(cls)
                if not n.startswith("_")} | {"left", "top", "right", "bottom", "score"}
ALLOWED_ATTRIBUTES = frozenset(_PATCH_ATTRS | {
    # str
    "lower", "upper", "strip", "lstrip", "rstrip", "split", "rsplit", "join", "startswith", "endswith",
    "replace", "find", "rfind", "index", "count", "isdigit", "isalpha", "isalnum", "isspace", "isupper",
    "islower", "title", "capitalize", "splitlines", "zfill", "partition", "rpartition", "casefold",
    # list / dict / set
    "append", "extend", "insert", "remove", "pop", "sort", "reverse", "copy", "clear", "keys", "values",
    "items", "get", "setdefault", "update", "add", "discard", "union", "intersection", "difference",
    "issubset", "issuperset",
    # numbers, exceptions
    "real", "imag", "is_integer", "args",
})

FORBIDDEN_NAMES = frozenset({
    "eval", "exec", "compile", "open", "getattr", "setattr", "delattr", "hasattr", "globals", "locals",
    "vars", "dir", "input", "breakpoint", "memoryview", "type", "object", "super", "help", "exit", "quit",
    "classmethod", "staticmethod", "property", "bytearray", "bytes", "id", "callable", "format",
    "issubclass", "frozenset", "slice", "aiter", "anext", "copyright", "credits", "license",
})


@dataclass
class ValidationError(ValueError):
    """A program failed the static check: ``kind`` is "syntax" or "validation"."""

    kind: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.message}"


# CPython 3.11 before 3.11.8 races in AST object construction when threads parse at once
# (python/cpython#106905: "SystemError: AST constructor recursion depth mismatch"), so every
# parse in the project goes through one lock.
_PARSE_LOCK = threading.Lock()


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse`` made safe to call from several threads on every Python 3.11 release."""
    with _PARSE_LOCK:
        return ast.parse(source, filename=filename, mode="exec")


def _fail(node: ast.AST, message: str) -> ValidationError:
    return ValidationError("validation", message, getattr(node, "lineno", None))


def validate(source: str, entry: str = "execute") -> ast.Module:
    """Check ``source``; return its syntax tree or raise ``ValidationError`` naming line and reason.

    The checks run in this order and the first failure is raised: the source text itself, its
    parse, the node count, every node against the allow-lists, then the top level and the entry.
    """
    tree = _parse_source(source)
    nodes = list(ast.walk(tree))  # iterative: no recursion on hostile nesting
    if len(nodes) > MAX_NODES:
        raise ValidationError("validation", f"program has {len(nodes)} syntax nodes; the limit is {MAX_NODES}")
    for node in nodes:
        _check_node(node)
    _check_top_level(tree, entry)
    return tree


def _parse_source(source: str) -> ast.Module:
    """The syntax tree of ``source`` after checking it is text of bounded size without NUL."""
    if not isinstance(source, str):
        raise ValidationError("validation", f"program source must be text, got {type(source).__name__}")
    if len(source) > MAX_SOURCE_CHARS:
        raise ValidationError("validation", f"program is {len(source)} characters; the limit is {MAX_SOURCE_CHARS}")
    if "\x00" in source:
        raise ValidationError("syntax", "program contains a NUL character")
    try:
        return parse(source, filename="<program>")
    except SyntaxError as e:
        raise ValidationError("syntax", f"syntax error: {e.msg}", e.lineno) from None
    except (RecursionError, MemoryError, ValueError) as e:
        raise ValidationError("syntax", f"program is too deeply nested to parse ({type(e).__name__})") from None


def _check_node(node: ast.AST) -> None:
    """One node against the node allow-list, then the names it binds or reads."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        raise _fail(node, "import is not allowed; the tool API is already available")
    if not isinstance(node, ALLOWED_NODES):
        raise _fail(node, f"{type(node).__name__} statements/expressions are not allowed")
    if isinstance(node, ast.Name):
        _check_name(node)
    elif isinstance(node, ast.Attribute):
        _check_attribute(node)
    elif isinstance(node, (ast.FunctionDef, ast.arg)):
        _check_definition(node)
    elif isinstance(node, ast.keyword) and node.arg is not None and node.arg.startswith("_"):
        raise _fail(node, f"keyword arguments starting with '_' are not allowed ({node.arg})")


def _check_name(node: ast.Name) -> None:
    if node.id.startswith("_"):
        raise _fail(node, f"names starting with '_' are not allowed ({node.id})")
    if node.id in FORBIDDEN_NAMES:
        raise _fail(node, f"{node.id}() is not allowed")


def _check_attribute(node: ast.Attribute) -> None:
    if node.attr.startswith("_"):
        raise _fail(node, f"attributes starting with '_' are not allowed (.{node.attr})")
    if node.attr not in ALLOWED_ATTRIBUTES:
        raise _fail(node, f"attribute .{node.attr} is not allowed")
    if not isinstance(node.ctx, ast.Load):
        # Workers are reused: setting or deleting an attribute could change a shared
        # class (ImagePatch.find = ...) and so the results of later, unrelated runs.
        raise _fail(node, f"assigning to or deleting attributes is not allowed (.{node.attr})")


def _check_definition(node: ast.FunctionDef | ast.arg) -> None:
    name = node.name if isinstance(node, ast.FunctionDef) else node.arg
    if name.startswith("_") or name in FORBIDDEN_NAMES:
        raise _fail(node, f"the name {name!r} is not allowed")
    if isinstance(node, ast.FunctionDef) and node.decorator_list:
        raise _fail(node, "decorators are not allowed")


def _check_top_level(tree: ast.Module, entry: str) -> None:
    """Only function definitions (and docstrings) at the top level, and an entry function."""
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            continue
        raise _fail(stmt, "only function definitions are allowed at the top level of a program")
    entries = [s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == entry]
    if not entries:
        raise ValidationError("validation", f"the program must define a function named {entry!r}")
    check_entry_signature(entries[-1])


def check_entry_signature(fn: ast.FunctionDef) -> None:
    """The entry takes the image first; ``query`` and ``choices`` are the only other parameters."""
    a = fn.args
    if a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs:
        raise _fail(fn, f"{fn.name}() must take plain parameters: the image, then optionally query and choices")
    names = [p.arg for p in a.args]
    if not names:
        raise _fail(fn, f"{fn.name}() must take the image as its first parameter")
    n_defaults = len(a.defaults)
    for i, name in enumerate(names[1:], start=1):
        has_default = i >= len(names) - n_defaults
        if name not in ("query", "choices") and not has_default:
            raise _fail(fn, f"{fn.name}() parameter {name!r} cannot be filled: use image, query, choices")
