"""The tree keeps its shape: no module over 600 lines, no function over 80 (scripts/check_sizes.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _check_sizes():
    spec = importlib.util.spec_from_file_location("check_sizes", ROOT / "scripts" / "check_sizes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tree_is_within_the_size_limits():
    assert _check_sizes().offenders() == []


def test_the_size_check_finds_a_long_function_and_a_long_module(tmp_path):
    check = _check_sizes()
    (tmp_path / "builder").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(90))
    (tmp_path / "builder" / "long.py").write_text(f"def long():\n{body}\n" + "y = 1\n" * 600)
    found = check.offenders(tmp_path)
    assert any("function builder/long.py:long: 91 lines" in f for f in found), found
    assert any(f.startswith("module builder/long.py") for f in found), found
