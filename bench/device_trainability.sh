#!/usr/bin/env bash
# The trainability table (bench/trainability.py) at the paper's width on an offline GPU machine,
# from the repository root after bench/device_bundle.sh made .device/ (FFCV and Fashion-MNIST) and
# it was carried there:
#   bash bench/device_trainability.sh
# Every family of the paper study, both protocols, seeds 0-2, at width 1 on Fashion-MNIST and the
# synthetic set: the CIFAR-shaped families on 2 real epochs of all 54,000 training images, the
# 224² ones (Fashion-MNIST only) on 12 slices of 3,200 (their first fp32 step includes cuDNN's search: minutes).
# Time limit TRAIN_LIMIT seconds (default 540); the log and the CSVs go to $OUT (else here).
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/device_env.sh  # FFCV from .device/, src/ on the path; sets $out
limit=${TRAIN_LIMIT:-540}
common=(--device cuda --threads 16 --width 1 --fmnist .device/fashion-mnist --work /tmp/trainability)
start=$SECONDS
timeout -k 10 "$limit" python3 bench/trainability.py "${common[@]}" --families vgg19_32 control lenet_28 \
  --images 54000 --slices 2 --out "$out/trainability_32.csv" 2>&1 | tee "$out/trainability.log"
status=${PIPESTATUS[0]}
left=$((limit - (SECONDS - start)))
if [ "$left" -gt 60 ]; then
  timeout -k 10 "$left" python3 bench/trainability.py "${common[@]}" --families alexnet_224 vgg19_224 --data fmnist \
    --out "$out/trainability_224.csv" 2>&1 | tee -a "$out/trainability.log"
  status=$((status || PIPESTATUS[0]))
fi
exit "$status"
