#!/usr/bin/env bash
# GPU saturation check (issue: training on one GPU and many): at most 5 minutes.
# Run from the repository root on a GPU machine after `make setup`; extra arguments go to gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout -k 10 300 .venv/bin/python bench/gpu_check.py "$@"
