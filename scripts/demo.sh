#!/usr/bin/env bash
# The end-to-end demo on the embedded shapes world (creates .venv first if needed).
# Output goes to ./demo-out (or the folder given as the first argument).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
# The notebook demo runs on a Jupyter kernel that lives inside the venv; keep IPython's files there too.
export IPYTHONDIR="$PWD/.venv/ipython"
.venv/bin/python -m ipykernel install --sys-prefix >/dev/null
exec .venv/bin/visforge demo "${1:-demo-out}"
