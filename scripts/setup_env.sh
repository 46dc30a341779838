#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) from pyproject.toml.
# Idempotent: re-installs only when pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VISFORGE_VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp="$VENV/.visforge-installed"
want=$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setting up $VENV (first run takes a few minutes) ..." >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch==2.13.0 is pinned in the 'ml' extra: its CPU build is what this machine offers;
# any other torch pulls GBs of CUDA wheels.
"$VENV/bin/python" -m pip install -q -e ".[all,dev]"
# rapidocr's own opencv-python requirement would replace the headless OpenCV: install it alone.
"$VENV/bin/python" -m pip install -q --no-deps rapidocr-onnxruntime==1.4.4
echo "$want" > "$stamp"
