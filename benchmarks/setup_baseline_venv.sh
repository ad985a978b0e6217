#!/usr/bin/env bash
# Builds .venv-bench: d3rlpy 2.8.1, the speed and quality baseline, kept apart from .venv because it
# pins gymnasium 1.0 and pulls in gym. torch 2.13.0 goes in first so that d3rlpy's open torch requirement
# is already met and pip never fetches a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV_BENCH:-.venv-bench}
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "torch==2.13.0"
"$VENV/bin/pip" install --quiet "d3rlpy==2.8.1" "torch==2.13.0" "mujoco>=3.1" "imageio>=2.30" "onnx>=1.16"
"$VENV/bin/python" - <<'PY'
import d3rlpy, gymnasium, torch
print(f"d3rlpy {d3rlpy.__version__}, torch {torch.__version__}, gymnasium {gymnasium.__version__}")
assert torch.__version__.startswith("2.13.0"), torch.__version__
PY
