"""The public API: ``from builder import ...`` names documented functions and types (``builder.api``)."""

import inspect
import subprocess
import sys

import builder
from builder import api


def test_every_public_name_is_defined_and_documented():
    for name in builder.__all__:
        obj = getattr(builder, name)
        assert obj is getattr(api, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"


def test_importing_a_low_layer_does_not_load_the_api():
    code = "import builder.core.taskcard, sys; print('builder.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
