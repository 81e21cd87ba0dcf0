"""The benchmark scripts still run (on tiny inputs, on the CPU); their numbers are not checked here."""

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.subprocess
def test_gpu_check_runs_on_cpu(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--small",
                          "--out", str(tmp_path / "check.json")], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TMPDIR": str(scratch)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert not list(scratch.glob("convbias-gpu-check-*"))  # its scratch folder (converted sets, runs: ~100 MB) removed
    assert "sections failed: none" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((tmp_path / "check.json").read_text())
    assert [row["precision"] for row in result["cifar_loop"]] == ["fp32", "tf32", "bf16", "tf32-per-step-copies"]
    assert all(row["images_per_s"] > 0 and row["syncs_per_step"] == {} for row in result["cifar_loop"])  # no CUDA
    assert result["reinit_224"]["chunk"] >= result["reinit_224"]["batch"] >= 1
    assert result["precision"]["fp32"]["conv"] < 1e-5
    assert result["augment_on_device"] == {"max_abs_diff": 0.0, "shifts_flips_equal": True}
    assert result["reinit_224"]["first_seconds"] > 0 and all(r["first_3_steps_s"] > 0 for r in result["step_224"])


def test_cpu_vs_device_step_compares_two_runs_of_one_seed():
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from gpu_check import cpu_vs_device_step

    from convbias.specs import ModelSpec, TrainSpec
    from convbias.data.dataset import DatasetMeta

    meta = DatasetMeta("m", 10, (32, 32, 3), 100, 10, 0.1, 0, True, "standardize", (120.0,) * 3, (60.0,) * 3)
    spec = TrainSpec(model=ModelSpec("vgg11", width=0.125, dropout=0.0), epochs=1)
    dloss, dw, dinit, update, worst_ratio, worst = cpu_vs_device_step(spec, meta, torch.device("cpu"))
    assert (dloss, dw, dinit, worst_ratio) == (0.0, 0.0, 0.0, 0.0)
    assert update > 0 and worst.endswith(("weight", "bias"))  # the step did move the weights


@pytest.mark.subprocess
def test_reinit_bench_runs_and_both_sweeps_agree():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "reinit.py"), "--width", "0.0625", "--images", "40",
                          "--sources", "2", "--batch", "20", "--repeats", "2"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "identical accuracies: True" in out.stdout and "conv-MAC bound" in out.stdout
    assert len(out.stdout.split("cached sweep")[1].splitlines()[0].split(" s")) == 3  # two rounds timed


@pytest.mark.subprocess
def test_reinit_memory_bench_measures_both_sides_interleaved():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "reinit_memory.py"), "--width", "0.0625", "--epochs", "11",
                          "--images", "8", "--repeats", "1"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines() if line.split()[:1] in (["10"], ["11"])}
    assert set(rows) == {"10", "11"} and all(float(cell) > 100 for row in rows.values() for cell in row[1:] if cell != "/")
    assert "lazy (ours): 11 vs 10 sources, ratio min" in out.stdout


@pytest.mark.subprocess
def test_loaders_bench_reports_interleaved_rounds_of_both_pipelines(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "loaders.py"), "--images", "256", "--jpegs", "32",
                          "--batch-size", "64", "--repeats", "2"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TMPDIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert not list(tmp_path.glob("convbias-bench-*"))  # its scratch folder (converted sets, JPEGs) removed
    for name in ("CIFAR-shaped raw", "ImageNet-shaped JPEG"):
        rounds = [line for line in out.stdout.splitlines() if line.startswith(name) and "torchvision" in line]
        assert len(rounds) == 2 and re.search(rf"{name}\s+ratio over 2 interleaved rounds: min", out.stdout)


@pytest.mark.subprocess
def test_commit_stall_bench_measures_both_sides_interleaved(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "commit_stall.py"), "--width", "0.0625", "--repeats", "2"],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    held = dict(re.findall(r"^(in line|background|snapshot)\s+training held\s+([\d.]+) s min", out.stdout, re.M))
    assert set(held) == {"in line", "background", "snapshot"} and all(float(v) > 0 for v in held.values()), out.stdout
    for side in ("background", "snapshot"):
        assert re.search(rf"held in line / held by a {side} commit: min [\d.]+x  median [\d.]+x", out.stdout), out.stdout
    assert not list(tmp_path.glob("convbias-bench-*"))  # its work folders removed


@pytest.mark.subprocess
def test_gpu_share_bench_runs_k_workers_together_and_sums_their_rates(tmp_path):
    """bench/gpu_share.py on the CPU at a tiny width: every k of --ks trains its k workers at once,
    each reporting its images/s; the table has a row per k and the ratio to k = 1."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_share.py"), "--device", "cpu", "--precision", "fp32",
                          "--width", "0.0625", "--batch", "16", "--warmup", "2", "--seconds", "0.5", "--ks", "1", "2",
                          "--repeats", "1", "--json", str(tmp_path / "share.json")],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    measured = json.loads((tmp_path / "share.json").read_text())["images_per_s"]
    assert [len(rounds[0]) for rounds in measured.values()] == [1, 2] and all(
        rate > 0 for rounds in measured.values() for rates in rounds for rate in rates)
    rows = re.findall(r"^\s+(\d)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)x$", out.stdout, re.M)
    assert [r[0] for r in rows] == ["1", "2"] and rows[0][4] == "1.00", out.stdout
    assert int(rows[1][2]) == round(sum(measured["2"][0]))  # in all: the sum of the two workers' rates
    assert not list(tmp_path.glob("convbias-gpu-share-*"))


@pytest.mark.subprocess
def test_e2e_bench_times_every_rule_of_fig7_and_extrapolates(tmp_path):
    """bench/e2e.py on the CPU at a tiny size: fig 7's DAG runs (convert, long and short runs, filters,
    measure, figure), every rule is timed, and the extrapolation adds up its parts."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "e2e.py"), "--device", "cpu", "--width", "0.03125",
                          "--images", "256", "--test-images", "64", "--epochs", "2", "--short", "1", "--seeds", "1",
                          "--cores", "2", "--keep", str(tmp_path / "e2e"), "--json", str(tmp_path / "e2e.json")],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (tmp_path / "e2e" / "project" / "results" / "fig7.pdf").read_bytes().startswith(b"%PDF")
    jobs = dict(re.findall(r"^  (\w+)\s+(\d+) jobs", out.stdout, re.M))
    assert jobs == {"convert": "1", "train": "2", "filters": "1", "measure": "1", "figure": "1"}, out.stdout
    result = json.loads((tmp_path / "e2e.json").read_text())
    runs = {(r["experiment"], r["epochs"]) for r in result["runs"]}
    assert runs == {("long", 2), ("short", 1)}
    assert all(r["job_s"] > r["training_s"] > 0 for r in result["runs"])
    fig7 = result["fig7"]
    assert fig7["total_s"] == pytest.approx(sum(fig7["parts_s"].values())) and fig7["parts_s"]["train"] > 0
    assert "convbias plan fig7 --precision fp32" in out.stdout and "fig7: 10 runs" in out.stdout
    assert "fig7 on one GPU, one job at a time: ≈" in out.stdout and result["plan_s"] > 0
    assert re.search(r"plan / extrapolation: [\d.]+x", out.stdout), out.stdout
    assert result["modelled_s"] > 0 and "the model at the measured size" in out.stdout


def test_omp_wait_bench_times_both_policies_interleaved(capsys, tmp_path, monkeypatch):
    """bench/omp_wait.py on a command that notes the policy it got: each round runs its copies under
    the default policy (none set, even when the caller has one, as `make test` does), then PASSIVE."""
    sys.path.insert(0, str(ROOT / "bench"))
    from omp_wait import main

    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    noted = tmp_path / "policies"
    command = [sys.executable, "-c", f"import os; open({str(noted)!r}, 'a').write(os.environ.get('OMP_WAIT_POLICY', '-'))"]
    assert main(["--copies", "2", "--repeats", "2", "--command", shlex.join(command)]) == 0
    out = capsys.readouterr().out
    assert noted.read_text() == "--PASSIVEPASSIVE--PASSIVEPASSIVE"
    rounds = re.findall(r"^round (\d) +(default|PASSIVE): +[\d.]+ s wall +[\d.]+ s CPU$", out, re.M)
    assert rounds == [("1", "default"), ("1", "PASSIVE"), ("2", "default"), ("2", "PASSIVE")], out
    assert re.search(r"wall time default / PASSIVE: min [\d.]+x  median [\d.]+x", out), out


def test_layer_table_means_each_layers_statistics_over_runs_and_measures_how_far_it_moved(tmp_path, capsys):
    """tools/layer_table.py (the README's ladder numbers): per layer the runs' mean final n_l, the
    fraction of runs with p < 0.01, the mean drop per source, and ‖W_T − W_0‖/‖W_0‖ averaged over
    runs, computed here by hand; then C5's ρ over the mean bias and drop, and each run's ρ."""
    import pandas as pd
    import torch
    from scipy.stats import spearmanr

    from convbias.checkpoints import save_weights

    sys.path.insert(0, str(ROOT / "tools"))
    from layer_table import main

    rng = torch.Generator().manual_seed(0)
    names, runs = ["features.0", "features.2", "features.4"], []
    for seed in (0, 1):
        run = tmp_path / f"seed{seed}"
        run.mkdir()
        start = {f"{n}.weight": torch.randn(4, 2, 3, 3, generator=rng) for n in names}
        end = {k: v * (1 + 0.1 * (i + 1) * (seed + 1)) for i, (k, v) in enumerate(start.items())}  # layer i moves 0.1(i+1)(s+1)
        save_weights(run / "epoch000.safetensors", start, conv_layers=names)
        save_weights(run / "epoch002.safetensors", end, conv_layers=names)
        pd.DataFrame({"epoch": [0, 1, 2]}).to_parquet(run / "history.parquet")
        runs.append(str(run))
    measure = pd.DataFrame([{"seed": s, "epoch": e, "layer": layer, "n_l": 0.5 + 0.1 * layer * e / 2 + 0.05 * s,
                             "filters": 20, "negatives": round(20 * (0.5 + 0.1 * layer * e / 2 + 0.05 * s)),
                             "p_value": 0.001 if (layer, s) in {(3, 0), (3, 1), (2, 1)} else 0.5}
                            for s in (0, 1) for e in (0, 2) for layer in (1, 2, 3)])
    drops = {(s, layer): 0.1 * layer + 0.02 * s for s in (0, 1) for layer in (1, 2, 3)}
    reinit = pd.DataFrame([{"seed": s, "source": src, "layer": layer, "drop": d + (src == "rand"), "final_accuracy": 0.8}
                           for (s, layer), d in drops.items() for src in ("rand", "0")])
    measure.to_parquet(tmp_path / "m.parquet")
    files = []
    for s in (0, 1):
        reinit[reinit["seed"] == s].to_parquet(tmp_path / f"r{s}.parquet")
        files.append(str(tmp_path / f"r{s}.parquet"))
    assert main(["--measure", str(tmp_path / "m.parquet"), "--reinit", *files, "--runs", *runs]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {int(line.split()[0]): [float(v) for v in line.split()[1:]] for line in lines[2:5]}
    assert lines[0].split() == ["n_l", "biased", "bias", "q", "drop_0", "drop_rand", "distance"]

    def q(k, n=20):  # P(an unbiased layer of n filters is less far from n/2), ties half: by enumeration
        pmf = {j: math.comb(n, j) / 2 ** n for j in range(n + 1)}
        return sum(p for j, p in pmf.items() if abs(j - n / 2) < abs(k - n / 2)) + sum(
            p for j, p in pmf.items() if abs(j - n / 2) == abs(k - n / 2)) / 2

    for layer in (1, 2, 3):
        n_l = [0.5 + 0.1 * layer + 0.05 * s for s in (0, 1)]
        expected = [np.mean(n_l), {1: 0.0, 2: 0.5, 3: 1.0}[layer], np.mean([abs(v - 0.5) for v in n_l]),
                    np.mean([q(round(20 * v)) for v in n_l]),
                    0.1 * layer + 0.01, 0.1 * layer + 1.01, np.mean([0.1 * layer * (s + 1) for s in (0, 1)])]
        assert rows[layer] == pytest.approx(expected, abs=1e-3), layer
    rho = spearmanr([np.mean([0.1 * layer + 0.05 * s for s in (0, 1)]) for layer in (1, 2, 3)],
                    [0.1 * layer + 0.01 for layer in (1, 2, 3)])[0]
    assert lines[-2].startswith(f"|n_l - 1/2| instead of q: rho {rho:.3f}")
    assert lines[-1].startswith(f"C5 (q, reset to epoch 0): rho {rho:.3f}") and "0: 1.00, 0.800, 1: 1.00, 0.800" in lines[-1]
    assert "95% interval over runs [1.00, 1.00]" in lines[-1]


def test_pool_evidence_scores_the_runs_of_two_folders_as_one_experiment(tmp_path, capsys):
    """tools/pool_evidence.py (the ladder's pooled verdicts): seeds 0-2 of one folder and 3-5 of
    another become one experiment of six runs; shared seeds are refused."""
    import pandas as pd

    from convbias.cli import main as convbias
    from convbias.evidence import read_evidence, write_evidence
    from test_claims import TRAINED, evidence, sweep

    sys.path.insert(0, str(ROOT / "tools"))
    from pool_evidence import main

    first = evidence(reinit=sweep({layer: 0.01 * (k - 32) for layer, k in TRAINED.items()}))
    shifted = {t: getattr(first, t).assign(seed=getattr(first, t)["seed"] + 3) for t in ("measure", "history", "reinit")}
    fresh = type(first)(**{**first.__dict__, **shifted, "experiment": "e_seeds345"})
    write_evidence([first], tmp_path / "a")
    write_evidence([fresh], tmp_path / "b")
    assert main([str(tmp_path / "pooled"), "--experiment", f"e={tmp_path / 'a'}:e,{tmp_path / 'b'}:e_seeds345"]) == 0
    (pooled,) = read_evidence(tmp_path / "pooled")
    assert pooled.experiment == "e" and sorted(set(pooled.history["seed"])) == [0, 1, 2, 3, 4, 5]
    assert set(pooled.measure["experiment"]) == {"e"} and len(pooled.reinit) == 2 * len(first.reinit)
    assert convbias(["claims", str(tmp_path / "pooled"), "--output", str(tmp_path / "c.csv")]) == 0
    c5 = pd.read_csv(tmp_path / "c.csv").set_index("claim").loc["C5"]
    assert c5["per_run"] == "0: 1; 1: 1; 2: 1; 3: 1; 4: 1; 5: 1" and c5["result"] == "holds"
    capsys.readouterr()
    assert main([str(tmp_path / "twice"), "--experiment", f"e={tmp_path / 'a'}:e,{tmp_path / 'a'}:e"]) == 2
    assert "share seeds [0, 1, 2]" in capsys.readouterr().err and not (tmp_path / "twice").exists()
