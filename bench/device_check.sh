#!/usr/bin/env bash
# The GPU check on an offline GPU machine (Python 3.12 with torch but no FFCV), in one command,
# from the repository root after bench/device_bundle.sh made .device/ and it was carried there:
#   bash bench/device_check.sh [gpu_check.py arguments]
# Installs the FFCV wheel into a temporary folder, uses this checkout's src/ (no install), and
# runs bench/gpu_check.py under a time limit (CHECK_LIMIT seconds, default 420). The log and the
# figures (JSON) go to $OUT when it is set, else to the current folder. With LOADERS_LIMIT=S it then
# also runs bench/loaders.py on the GPU (FFCV vs torchvision DataLoader, 8 workers) for at most S seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/device_env.sh  # FFCV from .device/, src/ on the path; sets $out
timeout -k 10 "${CHECK_LIMIT:-420}" python3 bench/gpu_check.py --out "$out/gpu_check.json" "$@" 2>&1 \
  | tee "$out/gpu_check.log"
status=${PIPESTATUS[0]}
if [ -n "${LOADERS_LIMIT:-}" ]; then
  timeout -k 10 "$LOADERS_LIMIT" python3 bench/loaders.py --device cuda --workers 8 --images 20000 --jpegs 2000 \
    --repeats 3 2>&1 | tee "$out/loaders.log"
fi
exit "$status"
