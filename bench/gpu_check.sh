#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): at most 6 minutes on one GPU.
# Run from the repository root on a GPU machine after `make setup`; extra arguments go to gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout -k 10 360 .venv/bin/python bench/gpu_check.py "$@"
