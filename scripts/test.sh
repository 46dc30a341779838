#!/usr/bin/env bash
# Run the test suite (creates .venv first if needed). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/ruff check builder widgets augment tests bench
.venv/bin/lint-imports
.venv/bin/mypy
.venv/bin/python scripts/check_sizes.py
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
