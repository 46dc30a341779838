"""Report modules and functions over the size limits of docs/architecture.md.

    python scripts/check_sizes.py            # prints offenders; exit 1 if any
    python scripts/check_sizes.py --report   # prints every module's and the longest functions' sizes

Limits: no module over 600 lines and no function over 80 lines in builder/, widgets/, augment/.
A function's length counts its whole body, decorators and docstring included (ast line spans).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("builder", "widgets", "augment")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def module_sizes(root: Path = ROOT) -> dict[str, int]:
    """Line count of every Python module under the checked packages, by path relative to root."""
    sizes = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            sizes[str(path.relative_to(root))] = len(path.read_text(encoding="utf-8").splitlines())
    return sizes


def function_sizes(root: Path = ROOT) -> dict[str, int]:
    """Line span of every function and method, keyed ``path:qualified.name``."""
    sizes: dict[str, int] = {}
    for rel in module_sizes(root):
        tree = ast.parse((root / rel).read_text(encoding="utf-8"))
        _walk(tree, rel, "", sizes)
    return sizes


def _walk(node: ast.AST, rel: str, prefix: str, sizes: dict[str, int]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}{child.name}"
            if not isinstance(child, ast.ClassDef):
                start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                sizes[f"{rel}:{name}"] = (child.end_lineno or child.lineno) - start + 1
            _walk(child, rel, name + ".", sizes)
        else:
            _walk(child, rel, prefix, sizes)


def offenders(root: Path = ROOT) -> list[str]:
    """One line per module or function over its limit (empty when the tree is within them)."""
    lines = [f"module {p}: {n} lines (max {MAX_MODULE_LINES})"
             for p, n in module_sizes(root).items() if n > MAX_MODULE_LINES]
    lines += [f"function {p}: {n} lines (max {MAX_FUNCTION_LINES})"
              for p, n in function_sizes(root).items() if n > MAX_FUNCTION_LINES]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="print the largest modules and functions")
    args = parser.parse_args(argv)
    if args.report:
        for p, n in sorted(module_sizes().items(), key=lambda kv: -kv[1])[:15]:
            print(f"{n:5d}  {p}")
        print()
        for p, n in sorted(function_sizes().items(), key=lambda kv: -kv[1])[:25]:
            print(f"{n:5d}  {p}")
        return 0
    bad = offenders()
    print("\n".join(bad) if bad else "all modules and functions within the limits")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
