"""The benchmark scripts still run (on tiny inputs, on the CPU); their numbers are not checked here."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_cpu():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--images", "600",
                          "--width", "0.125", "--steps", "3", "--workers", "1"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    for line in ("FFCV-fed training", "data on the device", "ratio", "peak GPU memory"):
        assert line in out.stdout


def test_cpu_vs_device_step_compares_two_runs_of_one_seed():
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from gpu_check import cpu_vs_device_step

    from convbias.config import ModelSpec, TrainSpec
    from convbias.data.ffcv_io import DatasetMeta

    meta = DatasetMeta("m", 10, (32, 32, 3), 100, 10, 0.1, 0, True, "standardize", (120.0,) * 3, (60.0,) * 3)
    spec = TrainSpec(model=ModelSpec("vgg11", width=0.125, dropout=0.0))
    assert cpu_vs_device_step(spec, meta, torch.device("cpu")) == (0.0, 0.0, 0.0)


def test_reinit_bench_runs_and_both_sweeps_agree():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "reinit.py"), "--width", "0.0625", "--images", "40",
                          "--sources", "2", "--batch", "20"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "identical accuracies: True" in out.stdout and "conv-MAC bound" in out.stdout
