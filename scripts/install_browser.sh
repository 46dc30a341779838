#!/usr/bin/env bash
# Install what the browser test (tests/test_app_browser.py) needs, if missing:
#   * Debian's chromium (Playwright's own browser download cannot reach its host here), and
#   * the Python `playwright` package in the project's venv (it drives that chromium).
# Idempotent and quiet when everything is already there. Exits non-zero only when chromium
# cannot be installed (not root, no apt-get): the test then skips with that reason.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${VISFORGE_PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: chromium is missing and apt-get is not usable here (need root + Debian)" >&2
    exit 2
  fi
  echo "install_browser: installing Debian chromium (apt-get) ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

if ! "$PY" -c "import playwright" >/dev/null 2>&1; then
  echo "install_browser: installing the playwright Python package ..." >&2
  # Only the Python driver: `playwright install` (its own browser build) is never run.
  "$PY" -m pip install -q "playwright>=1.50"
fi
echo "install_browser: chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'), playwright ok" >&2
