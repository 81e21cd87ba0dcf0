#!/usr/bin/env bash
# Fig 7 through Snakemake on an offline GPU machine (bench/e2e.py), fp32 then tf32, from the
# repository root after bench/device_bundle.sh made .device/ (FFCV, its libraries, Snakemake's
# wheels) and it was carried there:
#   bash bench/device_e2e.sh
# Each precision: convert a CIFAR-10-sized generated set, one run of 6 epochs and one of 2 epochs of
# fig 7's VGG19, filters, measure, fig 7 — timed per rule and extrapolated to 10 runs × 100 epochs
# (about 3 min in fp32 on an H200 by issue 27's numbers: 8 epochs of 5.4 s, ~50 s per job besides).
# Time limit E2E_LIMIT seconds in all (default 540); logs and JSON go to $OUT (else here).
# E2E_ARGS adds arguments to bench/e2e.py (e.g. "--epochs 8 --seeds 2", or "--compile reduce-overhead":
# CUDA graphs of the training step).
# Then, if at least 150 s are left, k = 1, 2, 4 runs side by side on the GPU in tf32
# (bench/gpu_share.py: aggregate images/s, for the default of runs_per_gpu).
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/device_env.sh  # FFCV and Snakemake from .device/, src/ on the path; sets $out
limit=${E2E_LIMIT:-540}
start=$SECONDS
status=0
for precision in fp32 tf32; do
  left=$((limit - (SECONDS - start)))
  [ "$left" -gt 60 ] || { echo "no time left for $precision"; status=1; break; }
  # shellcheck disable=SC2086
  timeout -k 10 "$left" python3 bench/e2e.py --device cuda --precision "$precision" --cores 16 --seeds 1 \
    --json "$out/e2e_$precision.json" ${E2E_ARGS:-} 2>&1 | tee "$out/e2e_$precision.log"
  status=$((status || PIPESTATUS[0]))
done
left=$((limit - (SECONDS - start)))
if [ "$left" -gt 150 ]; then
  timeout -k 10 "$left" python3 bench/gpu_share.py --precision tf32 --ks 1 2 4 --seconds 8 --repeats 2 \
    --json "$out/gpu_share_tf32.json" 2>&1 | tee "$out/gpu_share_tf32.log"
  status=$((status || PIPESTATUS[0]))
else
  echo "no time left for bench/gpu_share.py"
fi
exit "$status"
