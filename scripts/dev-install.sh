#!/usr/bin/env bash
# One-line developer install: CPU torch first (a bare `torch` would pull a multi-GB CUDA build), then every
# llmctl package in editable mode, then the test/bench extras used only to check us.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
$PY -m pip install -q --upgrade pip
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q \
  -e "packages/core[torch]" -e packages/data -e packages/parallel -e packages/finetune -e packages/eval -e packages/scaling -e packages/cli
$PY -m pip install -q -r requirements-test.txt
