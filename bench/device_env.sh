# Sourced by the device scripts on an offline GPU machine (Python 3.12 with torch but no FFCV):
# installs the FFCV wheel that bench/device_bundle.sh put in .device/ (and Snakemake's wheels from
# .device/snakemake/, when they were carried) into a temporary folder and puts it, this checkout's
# src/ and the bundled native libraries on the paths.
site=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .device/*.whl \
  $(ls .device/snakemake/*.whl 2>/dev/null) || exit 1
export PATH="$site/bin:$PATH"
export PYTHONPATH="$site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$PWD/.device/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1
out=${OUT:-.}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import ffcv, torch, numba, numpy; print('ffcv', ffcv.__version__, 'torch', torch.__version__, 'numba', numba.__version__, 'numpy', numpy.__version__)" || exit 1
