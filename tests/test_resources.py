"""The resource model and `convbias plan`: sizes against real models and files, targets, totals."""

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch
import yaml

from convbias.config import load_config
from convbias.models import build_model, conv_layers
from convbias.resources import (JOB_SECONDS, MARGIN, TABLE_SECONDS, convert_needs, data_size, model_size, reinit_needs, run_bytes,
                                train_needs)
from convbias.specs import DatasetSpec, ExperimentSpec, ModelSpec, TrainSpec

ROOT = Path(__file__).parents[1]


def study():
    return load_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))


@pytest.mark.parametrize("arch,head,size", [("vgg19", "torchvision", 32), ("lenet", "lenet", 28), ("vgg11", "compact", 32)])
def test_model_sizes_are_those_of_the_real_model(arch, head, size):
    """Parameters counted on the real model; MACs against hooks on a real forward pass."""
    spec = TrainSpec(model=ModelSpec(arch, head=head, width=0.25), epochs=1)
    sizes = model_size(spec, 1, 10, size)
    model = build_model(spec.model, 1, 10, size)
    assert sizes.params == sum(p.numel() for p in model.parameters())
    convs = [sum(p.numel() for p in c.parameters()) for _, c in conv_layers(model)]
    assert (sizes.conv_params, sizes.largest_conv) == (sum(convs), max(convs))
    macs = []
    hook = lambda m, i, o: macs.append(o.numel() * (m.weight[0].numel() if isinstance(m, torch.nn.Conv2d)  # noqa: E731
                                                    else m.in_features))
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.register_forward_hook(hook)
    model.eval()(torch.zeros(1, 1, size, size))
    assert sizes.macs == sum(macs)
    assert sizes.macs_from_conv[0] == sizes.macs and list(sizes.macs_from_conv) == sorted(sizes.macs_from_conv, reverse=True)
    assert len(sizes.macs_from_conv) == len(convs)


def test_the_authors_vgg19_keeps_80_of_558_mb_per_epoch_under_conv_snapshots():
    spec = TrainSpec(model=ModelSpec("vgg19", head="torchvision"), epochs=100, snapshots="conv")
    sizes = model_size(spec, 3, 10, 32)
    assert round(sizes.conv_bytes / 1e6) == 80 and round(sizes.state_bytes / 1e6) == 558
    assert run_bytes(spec, sizes) == 2 * sizes.state_bytes + 99 * sizes.conv_bytes
    full = TrainSpec(**{**spec.__dict__, "snapshots": "full"})
    assert run_bytes(full, sizes) == 101 * sizes.state_bytes  # ≈ 56 GB per run, 6.2× the conv run


def test_converted_sizes_follow_the_files_ffcv_writes(tmp_path):
    """A synthetic dataset converted for real (one writer worker): each file is at most the
    predicted size, and more than it less the pages the other writer workers could leave begun."""
    from convbias.data.convert import convert
    from convbias.resources import FFCV_PAGE, WRITER_WORKERS

    spec = DatasetSpec.from_config({"source": "synthetic", "pad": 2,
                                    "synthetic": {"n_train": 3000, "n_test": 500, "size": 28, "channels": 3}})
    data = data_size(spec)
    assert (data.height, data.width, data.channels, data.n_train, data.n_test) == (32, 32, 3, 3000, 500)
    convert("s", spec, tmp_path / "train.beton", tmp_path / "test.beton", tmp_path / "meta.json")
    for split, predicted in (("train", data.train_bytes), ("test", data.test_bytes)):
        size = (tmp_path / f"{split}.beton").stat().st_size
        assert predicted - (WRITER_WORKERS - 1) * FFCV_PAGE - 2**16 <= size <= predicted, split
    needs = convert_needs(spec)
    assert needs.disk_mb == math.ceil((data.train_bytes + data.test_bytes) * MARGIN / 2**20)


def test_jobs_grow_with_what_they_hold():
    """More GPUs split the batch (less device memory per GPU, more host memory per job), more
    epochs take longer and more disk, ImageNet sweeps hold the test set."""
    s = study()
    exp = s.experiments["vgg19_imagenet_step"]
    data = data_size(s.datasets[exp.dataset])
    one = ExperimentSpec(**{**exp.__dict__, "gpus": 1})
    four, single = train_needs(exp, data), train_needs(one, data)
    assert four.device_mb < single.device_mb and four.mem_mb > single.mem_mb
    # the same arithmetic over 4 GPUs, each starting up
    assert four.hours == pytest.approx(single.hours + 3 * JOB_SECONDS["gpu"] / 3600, rel=1e-9)
    assert four.runtime < single.runtime
    longer = ExperimentSpec(**{**exp.__dict__, "train": TrainSpec(**{**exp.train.__dict__, "epochs": 150})})
    start = 4 * JOB_SECONDS["gpu"] / 3600
    assert train_needs(longer, data).disk_mb > four.disk_mb
    # twice the epochs and their evaluations (but the one at epoch 0)
    assert train_needs(longer, data).hours - start == pytest.approx(2 * (four.hours - start), rel=1e-3)
    sweep = reinit_needs(exp, data)
    assert sweep.mem_mb * 2**20 > data.n_test * data.image_bytes  # the test set is in memory
    cpu = ExperimentSpec(**{**exp.__dict__, "device": "cpu"})
    assert train_needs(cpu, data).device_mb == 0 and train_needs(cpu, data).hours == 0


def test_plan_targets_and_totals(capsys):
    from convbias.cli import main
    from convbias.plan import plan, target_figures

    s = study()
    cifar = target_figures(s, "cifar")
    assert cifar and all(s.datasets[s.experiments[e].dataset].source in ("cifar10", "cifar100")
                         for f in cifar for e in s.figures[f].experiments)
    assert "fig7" in cifar and "fig4" not in cifar  # fig 4 is AlexNet on ImageNet
    table = plan(s, "quickstart", runs=ROOT / "nowhere", benchmarks=ROOT / "nowhere")
    assert set(table["experiment"]) == {e for f in target_figures(s, "quickstart") for e in s.figures[f].experiments}
    assert set(table["rate"]) == {"calibrated"} and (table["device"] == "cpu").all()
    fig7 = plan(s, "fig7", runs=ROOT / "nowhere", benchmarks=ROOT / "nowhere")
    assert list(fig7["experiment"]) == ["vgg19_cifar10_step"] and fig7["runs"].item() == 10 and fig7["sweeps"].item() == 0
    assert plan(s, "results/fig7.pdf", runs=ROOT / "nowhere", benchmarks=ROOT / "nowhere").equals(fig7)  # the figure's file, as given to Snakemake
    assert main(["plan", "cifar", "--runs", str(ROOT / "nowhere"), "--benchmarks", str(ROOT / "nowhere")]) == 0
    out = capsys.readouterr().out
    assert "vgg19_cifar10_step" in out and "GPU-hours" in out and "alexnet" not in out
    assert "cifar on one GPU, one job at a time: ≈" in out
    assert main(["plan", "all", "--runs", str(ROOT / "nowhere"), "--benchmarks", str(ROOT / "nowhere")]) == 0
    assert "all one job at a time, each on its GPUs: ≈" in capsys.readouterr().out  # AlexNet's jobs take 4 GPUs
    assert main(["plan", "nope"]) == 2 and "unknown target 'nope'" in capsys.readouterr().err
    # the study-wide precision, as snakemake --config precision=tf32 sets it: TF32's benchmarked rate
    hours = {}
    for flag in ([], ["--precision", "tf32"]):
        assert main(["plan", "fig7", "--runs", str(ROOT / "nowhere"), "--benchmarks", str(ROOT / "nowhere"), *flag]) == 0
        hours[tuple(flag)] = float(re.search(r"([\d.]+) GPU-hours", capsys.readouterr().out).group(1))
    assert hours[("--precision", "tf32")] < hours[()]


def finished(runs, experiment, seed, spec, history):
    """A finished run as ``convbias plan`` reads it: its manifest's spec and its history."""
    import json

    import pandas as pd

    folder = runs / experiment / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"spec": spec.to_dict()}))
    pd.DataFrame(history).to_parquet(folder / "history.parquet")


def test_measured_speed_replaces_the_assumed_one(tmp_path):
    from convbias.plan import plan

    s = study()
    exp = s.experiments["quickstart_lenet"]
    finished(tmp_path, "quickstart_lenet", 0, exp.train, {"images_per_second": [float("nan"), 1000.0, 1000.0]})
    table = plan(s, "quickstart", runs=tmp_path, benchmarks=tmp_path).set_index("experiment")
    assert table.loc["quickstart_lenet", "rate"] == "measured" and table.loc["quickstart_lenet", "times"] == "estimated"
    data = data_size(s.datasets[exp.dataset])
    E = exp.train.epochs
    # at 1000 images/s: training passes, evaluations (forward only: a third of a training image each), start-up
    seconds = data.n_trained * E / 1000 + (data.n_val + data.n_test) * (E + 1) / 3000 + JOB_SECONDS["cpu"]
    assert table.loc["quickstart_lenet", "job_min"] * 60 == pytest.approx(seconds)
    # a finished run of another spec (the precision switched since) measures nothing
    finished(tmp_path / "other", "quickstart_lenet", 0, TrainSpec(**{**exp.train.__dict__, "lr": 1.0}),
             {"images_per_second": [float("nan"), 1000.0, 1000.0]})
    assert plan(s, "quickstart", runs=tmp_path / "other", benchmarks=tmp_path).set_index("experiment").loc[
        "quickstart_lenet", "rate"] == "calibrated"


def test_the_plan_takes_each_jobs_wall_time_from_the_studys_benchmark_files(tmp_path, monkeypatch, capsys):
    """Training, sweep and filters jobs of the runs of the current spec, conversions, measure
    tables and figures: the median of Snakemake's benchmark files replaces the estimate; a
    training job that did not train its whole run (resumed: less than its epochs' seconds) does not
    count; fig 7's wall time adds conversion, its runs one after another, and what follows the last."""
    from convbias.cli import main
    from convbias.plan import plan, wall_time

    s = study()
    runs, bench = tmp_path / "results" / "runs", tmp_path / "benchmarks"
    exp = s.experiments["vgg19_cifar10_step"]

    def tsv(path, seconds):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:00\t1.0\n")

    estimated = plan(s, "fig7", runs=runs, benchmarks=bench).iloc[0]
    parts = wall_time(s, plan(s, "fig7", runs=runs, benchmarks=bench), "fig7", bench)
    assert data_size(s.datasets["cifar10"]).n_trained == 45_000  # the training split: 50,000 less 10 % held out
    assert estimated["times"] == "estimated" and parts["train"] == pytest.approx(10 * estimated["job_min"] * 60)
    assert parts["after"] == pytest.approx(estimated["filters_min"] * 60 + 2 * TABLE_SECONDS)
    for seed, wall in ((0, 100.0), (1, 120.0), (2, 30.0)):  # seed 2's job resumed: 30 s < its epochs' 40 s
        finished(runs, "vgg19_cifar10_step", seed, exp.train, {"seconds": [0.0, 20.0, 20.0], "images_per_second": [0.0, 1e4, 1e4]})
        tsv(bench / "train" / "vgg19_cifar10_step" / f"seed{seed}.tsv", wall)
        tsv(bench / "filters" / "vgg19_cifar10_step" / f"seed{seed}.tsv", 7.0)
    tsv(bench / "filters" / "vgg19_cifar10_step" / "seed9.tsv", 1000.0)  # no run of the current spec: not counted
    tsv(bench / "convert" / "cifar10.tsv", 12.0)
    tsv(bench / "measure" / "vgg19_cifar10_step.tsv", 3.0)
    tsv(bench / "figure" / "fig7.tsv", 4.0)
    table = plan(s, "fig7", runs=runs, benchmarks=bench)
    row = table.iloc[0]
    assert row["times"] == "measured" and row["job_min"] * 60 == pytest.approx(110.0) and row["filters_min"] * 60 == 7.0
    assert row["hours"] == pytest.approx(10 * 110.0 / 3600)
    assert wall_time(s, table, "fig7", bench) == pytest.approx({"convert": 12.0, "train": 1100.0, "sweeps": 0.0,
                                                                 "after": 7.0 + 3.0 + 4.0})
    monkeypatch.chdir(tmp_path)  # results/ and benchmarks/ where a user runs it
    assert main(["plan", "fig7", "--config", str(ROOT / "config" / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert ("fig7 on one GPU, one job at a time: ≈ 19 min — converting 12 s, training 18 min, re-initialization "
            "sweeps 0 s, after the last run (filters, measure, figures) 14 s") in out


def test_gpu_hours_use_the_benchmarked_rate_of_the_image_size_and_precision():
    """A GPU experiment's hours are its arithmetic over the GPU check's rate for its image size
    (32×32 CIFAR: the launch-bound small rate; 224² ImageNet: the large one) and precision."""
    from dataclasses import replace

    from convbias.resources import GPU_FLOPS, flops_rate, train_seconds

    s = study()
    for name, size in (("vgg19_cifar10_step", "small"), ("alexnet_imagenet", "large")):
        exp = s.experiments[name]
        data = data_size(s.datasets[exp.dataset])
        for precision in ("fp32", "tf32", "bf16"):
            e = replace(exp, train=replace(exp.train, precision=precision))
            assert flops_rate(e, data) == (GPU_FLOPS[size][precision] * e.gpus, "benchmarked")
            flops = 6 * model_size(e.train, data.channels, data.classes, data.height).macs * data.n_trained * e.train.epochs
            assert train_seconds(e, data) == pytest.approx(flops / (GPU_FLOPS[size][precision] * e.gpus))
    assert GPU_FLOPS["large"]["fp32"] > GPU_FLOPS["small"]["fp32"]  # a 32×32 step leaves the GPU waiting on the host


def test_schedule_runs_each_job_when_a_core_is_free_and_what_it_waits_for_has_ended():
    from convbias.plan import schedule

    # three 10 s trainings on two cores: two together, the third after; each sweep (4 s) after its training
    jobs = [("t0", 10.0, ()), ("t1", 10.0, ()), ("t2", 10.0, ()),
            ("r0", 4.0, ("t0",)), ("r1", 4.0, ("t1",)), ("r2", 4.0, ("t2",))]
    assert schedule(jobs, 2) == 24.0  # t2 and r0 at 10, r1 at 14 (r0 done), r2 at 20: ends at 24
    assert schedule(jobs, 3) == 14.0 and schedule(jobs, 1) == 42.0
    assert schedule([("a", 1.0, ()), ("b", 2.0, ("a",)), ("c", 3.0, ("b",))], 4) == 6.0  # a chain: no overlap
    with pytest.raises(ValueError, match="not listed"):
        schedule([("a", 1.0, ("missing",))], 2)


def test_a_cpu_targets_wall_time_schedules_its_runs_sweeps_filters_and_figures_on_the_cores(capsys):
    """`convbias plan ladder`: every run trains, then its sweep and filters table; each experiment's
    measure table waits for its filters; figures and the scorecard for everything. A CPU training
    job's seconds are its arithmetic at the calibrated rate, its SGD steps' pass over the
    parameters, its evaluations at the forward rate and its start-up."""
    from convbias.cli import main
    from convbias.plan import cpu_jobs, plan, schedule, target_figures
    from convbias.resources import (ASSUMED_CPU_FLOPS, CPU_FORWARD_FLOPS, CPU_SECONDS_PER_PARAMETER_STEP,
                                    train_job_seconds)

    s = study()
    nowhere = ROOT / "nowhere"
    table = plan(s, "ladder", runs=nowhere, benchmarks=nowhere)
    exp = s.experiments["ladder_w8_e16"]
    data = data_size(s.datasets[exp.dataset])
    assert (data.n_trained, data.n_val, data.n_test, data.channels) == (10_800, 1_200, 5_000, 3)
    model = model_size(exp.train, 3, 10, 32)
    steps = math.ceil(10_800 / 128) * 16
    expected = (6 * model.macs * 10_800 * 16 / ASSUMED_CPU_FLOPS + steps * model.params * CPU_SECONDS_PER_PARAMETER_STEP
                + 2 * model.macs * (1_200 + 5_000) * 17 / CPU_FORWARD_FLOPS + JOB_SECONDS["cpu"])
    assert train_job_seconds(exp, data) == pytest.approx(expected)
    row = table.set_index("experiment").loc["ladder_w8_e16"]
    # the sweep: the test set once, then from each conv layer on for rand and epochs 0 and 1
    sweep = 5_000 * (model.macs + 3 * sum(model.macs_from_conv)) * 2 / CPU_FORWARD_FLOPS + JOB_SECONDS["cpu"]
    assert row["sweep_min"] * 60 == pytest.approx(sweep) and row["job_min"] * 60 == pytest.approx(expected)
    jobs = cpu_jobs(s, table, nowhere, target_figures(s, "ladder"))
    names = [name for name, _, _ in jobs]
    assert names[0] == "convert fashion_mnist_rgb32" and sum(n.startswith("train ") for n in names) == 12
    assert names.index("train ladder_w8_e8 seed 2") < names.index("reinit ladder_w4_e16 seed 0")  # training first
    assert dict((n, d) for n, _, d in jobs)["measure ladder_w8_e16"] == tuple(
        f"filters ladder_w8_e16 seed {seed}" for seed in (0, 1, 2))
    alone = schedule(cpu_jobs(s, table[table["experiment"] == "ladder_w8_e16"], nowhere, convert=False), 2)
    # three runs on two cores: two at once, then the third beside the first two's sweeps and filters
    assert alone == pytest.approx(2 * row["job_min"] * 60 + row["sweep_min"] * 60)
    assert main(["plan", "ladder", "--runs", str(nowhere), "--benchmarks", str(nowhere), "--cores", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"ladder on 2 CPU cores \(snakemake --cores 2\): ≈ [\d.]+ (h|min); each experiment's jobs "
                     r"alone: ladder_w4_e16 \d+ min, ladder_w8_e16 \d+ min", out)
    assert f"ladder_w8_e16 {round(alone / 60)} min" in out


def test_a_training_jobs_host_memory_counts_every_model_state_it_holds():
    """The host memory of a training job grows by six model states per model, counted from what
    training holds: the model's weights and SGD's momentum; the commits in flight while the next
    epochs train (convbias.runs.commits.BackgroundCommits: at most IN_FLIGHT, at most one of them a resume
    state — every tensor and the momentum — the others an epoch's snapshot, at most every tensor);
    and the file being written (a state's bytes)."""
    from dataclasses import replace

    from convbias.checkpoints import weights_bytes
    from convbias.runs.commits import BackgroundCommits, commit_copies
    from convbias.resources import MB

    def nbytes(tensors: dict) -> int:
        return sum(t.numel() * t.element_size() for t in tensors.values())

    spec = TrainSpec(model=ModelSpec("lenet", head="lenet"), epochs=1)
    model = build_model(spec.model, 1, 10, 28)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(torch.randn(4, 1, 28, 28)).sum().backward()
    optimizer.step()  # SGD has its momentum buffers from here on
    state = model_size(spec, 1, 10, 28).state_bytes
    assert nbytes(model.state_dict()) == state  # the model's tensors: its parameters, 4 bytes each
    momentum = {name: optimizer.state[p]["momentum_buffer"] for name, p in model.named_parameters()}
    resume_weights, resume_momentum = commit_copies(model, optimizer, {}, "full", resume=True)
    snapshot, _ = commit_copies(model, optimizer, {}, "full", resume=False)
    held = (nbytes(model.state_dict()) + nbytes(momentum)  # training
            + nbytes(resume_weights) + nbytes(resume_momentum)  # the resume state in flight
            + (BackgroundCommits.IN_FLIGHT - 1) * nbytes(snapshot)  # the snapshots in flight beside it
            + len(weights_bytes(resume_weights)))  # the largest file being written
    states = held / state
    assert states == pytest.approx(6, rel=0.01)
    # two widths of the ladder's VGG19 (30 and 73 M parameters), all else alike: their jobs' host memory
    # (MARGIN more than the arithmetic, in whole MB) differs by that many states of the difference
    s = study()
    exp = s.experiments["ladder_w8_e16"]
    data = data_size(s.datasets[exp.dataset])
    narrow, wide = (replace(exp, train=replace(exp.train, model=replace(exp.train.model, width=width)))
                    for width in (0.125, 0.5))
    grown = model_size(wide.train, 3, 10, 32).state_bytes - model_size(narrow.train, 3, 10, 32).state_bytes
    assert grown > 100 * MB
    more = train_needs(wide, data).mem_mb - train_needs(narrow, data).mem_mb
    assert more == pytest.approx(round(states) * grown * MARGIN / MB, abs=1)


def test_a_data_parallel_jobs_gpu_hours_are_its_wall_hours_on_each_of_its_gpus(tmp_path, capsys):
    """`convbias plan`'s hours of a GPU experiment: every job's wall time once per GPU it holds. Two
    experiments alike but for gpus (4 and 1), whose jobs took the same wall time by their benchmark
    files: the 4-GPU one costs 4 times the GPU-hours; estimated, each costs its jobs' wall hours × gpus."""
    from convbias.cli import main
    from convbias.plan import plan
    from convbias.resources import train_job_seconds

    config = {"datasets": {"d": {"source": "synthetic",
                                 "synthetic": {"n_train": 2000, "n_test": 500, "size": 32, "channels": 3}}},
              "experiments": {name: {"dataset": "d", "model": {"arch": "vgg11", "width": 0.125}, "epochs": 2,
                                     "seeds": [0, 1, 2], "device": "cuda", "gpus": gpus}
                              for name, gpus in (("one", 1), ("four", 4))},
              "figures": {"f": {"kind": "measure", "study": "gpus", "experiments": ["one", "four"], "caption": "c"}}}
    s = load_config(config)
    runs, bench = tmp_path / "results" / "runs", tmp_path / "benchmarks"
    data = data_size(s.datasets["d"])
    estimated = plan(s, "f", runs=runs, benchmarks=bench).set_index("experiment")
    for name, gpus in (("one", 1), ("four", 4)):
        job = train_job_seconds(s.experiments[name], data)
        assert estimated.loc[name, "job_min"] * 60 == pytest.approx(job)
        assert estimated.loc[name, "hours"] == pytest.approx(3 * job * gpus / 3600)
        assert estimated.loc[name, "hours"] == pytest.approx(3 * train_needs(s.experiments[name], data).hours)
    for name in ("one", "four"):  # every job 600 s: 3 runs × 600 s on 1 GPU, and on 4
        for seed in (0, 1, 2):
            finished(runs, name, seed, s.experiments[name].train, {"seconds": [0.0, 100.0, 100.0],
                                                                  "images_per_second": [0.0, 1e4, 1e4]})
            path = bench / "train" / name / f"seed{seed}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("s\th:m:s\tmax_rss\n600.0\t0:10:00\t1.0\n")
    measured = plan(s, "f", runs=runs, benchmarks=bench).set_index("experiment")
    assert list(measured["times"]) == ["measured", "measured"] and list(measured["job_min"]) == [10.0, 10.0]
    assert measured.loc["one", "hours"] == pytest.approx(3 * 600 / 3600)
    assert measured.loc["four", "hours"] == pytest.approx(4 * 3 * 600 / 3600)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    assert main(["plan", "f", "--config", str(config_file), "--runs", str(runs), "--benchmarks", str(bench)]) == 0
    assert "; 2.5 GPU-hours" in capsys.readouterr().out  # 0.5 of the one-GPU experiment, 2 of the four-GPU one


def test_model_sizes_are_remembered_on_disk_so_a_snakemake_start_needs_no_torch(tmp_path):
    """Every Snakemake start checks the config and sizes every job (resources.model_size): measured
    once (torch imported), then read from $XDG_CACHE_HOME/convbias in a new process without torch."""
    import subprocess
    import sys

    code = ("import sys, json; from convbias.resources import model_size; from convbias.specs import ModelSpec, TrainSpec; "
            "m = model_size(TrainSpec(model=ModelSpec('vgg11', width=0.125), epochs=1), 3, 10, 32); "
            "print(json.dumps([m.params, list(m.macs_from_conv), 'torch' in sys.modules]))")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    runs = [json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                      check=True).stdout) for _ in range(2)]
    assert runs[0][:2] == runs[1][:2] and (runs[0][2], runs[1][2]) == (True, False)
    assert len(list((tmp_path / "convbias").glob("model-sizes-*.json"))) == 1
