"""The workflow on configs other than test_workflow.py's tiny study: configs that must stop before
any job, a missing and a downloaded dataset, pretrained weights, the shipped paper study's DAG and
its jobs' resources; lint and the conda environment. A file of its own so that `make test` runs it
beside test_workflow.py's full run (each test makes its own checkout)."""

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import make_idx_dataset, md5
from convbias.config import load_config
from convbias.data.downloads import FILES
from test_workflow import REPO, SNAKEMAKE, checkout, job_counts, snakemake, tiny_config, write_config

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_idx_dataset(tmp_path_factory.mktemp("idx"))


@pytest.mark.parametrize("edit, key", [
    (lambda c: c["experiments"]["tiny_vgg"]["optimizer"].update(lerning_rate=0.1), "lerning_rate"),
    (lambda c: c["experiments"]["tiny_vgg"].update(epochs="ten"), "ten"),
    (lambda c: c["datasets"]["tiny"].update(pixel_range="0-1"), "0-1"),
    (lambda c: c["figures"]["quickstart/tiny_vgg_measure"].update(experiments=["tiny_vgg19"]),
     "figures.quickstart/tiny_vgg_measure.experiments"),
])
def test_bad_config_stops_before_any_job(tmp_path, data, edit, key):
    config = tiny_config(data)
    edit(config)
    root = checkout(tmp_path, config)
    proc = snakemake(root, "--cores", "1", "quickstart", check=False)
    assert proc.returncode != 0
    assert key in proc.stderr + proc.stdout
    assert "WorkflowError" not in proc.stderr + proc.stdout and 'File "' not in proc.stderr + proc.stdout
    assert not (root / "results").exists()


@pytest.mark.parametrize("flag, said", [("epochz=3", "the top level: unknown key 'epochz'"),
                                        ("precision=fp64", "precision: 'fp64' is not one of")])
def test_a_config_error_on_the_command_line_prints_its_sentence_alone(tmp_path, data, flag, said):
    """Not wrapped in Snakemake's "WorkflowError in file …/common.smk, line …:" and a traceback frame."""
    root = checkout(tmp_path, tiny_config(data))
    proc = snakemake(root, "-n", "quickstart", "--config", flag, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and f"error: invalid config (keys are described in config/README.md):\n  {said}" in output
    assert "WorkflowError" not in output and 'File "' not in output and "Traceback" not in output, output


def test_missing_dataset_fails_at_job_time_with_one_sentence(tmp_path, data):
    config = tiny_config(data)
    config["datasets"]["tiny"].update(path=str(tmp_path / "nowhere"), download=False)
    root = checkout(tmp_path / "project", config)
    assert job_counts(snakemake(root, "-n", "quickstart").stdout)["convert"] == 1  # the DAG still shows
    proc = snakemake(root, "--cores", "1", "results/data/tiny/meta.json", check=False)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "nowhere/train-images-idx3-ubyte.gz does not exist" in output
    assert "datasets.tiny.path" in output and "or set datasets.tiny.download: true to fetch them" in output
    assert "Traceback" not in output


def test_snakemake_lint_is_clean_and_snakefmt_changes_nothing():
    lint = subprocess.run([SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0 and "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    snakefmt = subprocess.run([str(Path(SNAKEMAKE).with_name("snakefmt")), "--check", "."], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
    assert snakefmt.returncode == 0, snakefmt.stdout + snakefmt.stderr


def test_conda_environment_pins_exactly_the_versions_of_requirements_txt():
    """workflow/envs/convbias.yaml (conda: on every rule) installs what `make setup` installs."""
    env = yaml.safe_load((REPO / "workflow" / "envs" / "convbias.yaml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    requirements = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert sorted(pip) == sorted(requirements)
    assert {"python=3.11", "pip", "compilers", "pkg-config", "libopencv", "libjpeg-turbo"} <= set(conda)
    rules = {p.name: p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk")}
    for name, text in rules.items():  # every rule with a script runs in it
        assert text.count("script:") == len(re.findall(r"conda:\s+ENV\n", text)), name


def test_download_rule_fetches_locally_rejects_a_corrupted_file_then_convert_reads_the_download(tmp_path, file_server):
    """A dataset whose path lacks the files is read from resources/<source>, which the local rule
    download_<source> fills from the published location (here a mirror on 127.0.0.1, with the
    checksums computed by this test); a corrupted file fails that job with one sentence."""
    served = make_idx_dataset(tmp_path / "served")
    good = {name: md5(served / name) for name in FILES["mnist"]}
    config = tiny_config(tmp_path / "nowhere")
    config["mirrors"] = {"mnist": {"url": file_server(served).url, "md5": good}}
    root = checkout(tmp_path / "project", config)
    assert job_counts(snakemake(root, "-n", "download").stdout) == {"download_mnist": 1, "download": 1}
    labels = served / "train-labels-idx1-ubyte.gz"
    intact = labels.read_bytes()
    labels.write_bytes(intact[:-8])  # truncated on the server
    target = "results/data/tiny/meta.json"
    proc = snakemake(root, "--cores", "1", target, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"train-labels-idx1-ubyte.gz does not match its MD5 checksum {good[labels.name]}" in output
    assert "Traceback" not in output and "logs/download/mnist.log" in output
    assert not (root / "resources" / "mnist" / labels.name).exists()
    assert not (root / "results" / "data").exists()
    labels.write_bytes(intact)
    snakemake(root, "--cores", "1", target)
    for name in FILES["mnist"]:
        assert (root / "resources" / "mnist" / name).read_bytes() == (served / name).read_bytes()
    assert json.loads((root / target).read_text())["num_classes"] == 10
    assert "MD5 checked" in (root / "logs" / "download" / "mnist.log").read_text()
    assert "Nothing to be done" in snakemake(root, "-n", target).stdout  # the same DAG once downloaded


def test_pretrained_histograms_from_a_weights_file_and_a_missing_torchvision_file(tmp_path, data, monkeypatch):
    """Figures of kind pretrained: a user's weights file works; absent torchvision weights fail
    that job with one sentence naming the file and folder, and never download."""
    import torch
    from torchvision import models

    torch.manual_seed(0)
    features = {k: v for k, v in models.vgg11(weights=None).state_dict().items() if k.startswith("features.")}
    torch.save({f"module.{k}": v for k, v in features.items()}, tmp_path / "vgg11_elsewhere.pt")
    config = tiny_config(data)
    config["pretrained"] = {"elsewhere": {"weights": str(tmp_path / "vgg11_elsewhere.pt"), "arch": "vgg11"},
                            "tv": {"weights": "torchvision:alexnet", "arch": "alexnet"}}
    config["figures"] = {name: {"kind": "pretrained", "pretrained": name, "caption": name, "study": "paper"}
                         for name in ("elsewhere", "tv")}
    root = checkout(tmp_path / "project", config)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    assert job_counts(snakemake(root, "-n", "all").stdout) == {"all": 1, "figure": 2, "pretrained_filters": 2,
                                                               "claims_paper": 1}
    snakemake(root, "--cores", "1", "results/elsewhere.pdf")
    table = pd.read_parquet(root / "results" / "filters" / "pretrained" / "elsewhere.parquet")
    assert sorted(table["epoch"].unique()) == [0, 1] and table["layer"].max() == 8
    assert (root / "results" / "elsewhere.pdf").stat().st_size > 0
    proc = snakemake(root, "--cores", "1", "results/tv.pdf", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "pretrained.tv.weights" in output
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in output and "Traceback" not in output
    assert not (tmp_path / "torch_home" / "hub" / "checkpoints").exists()  # nothing was downloaded


def test_paper_study_and_ladder_dry_run(tmp_path):
    """The shipped config: `all` is the whole study, `results/fig7.pdf` exactly its own chain;
    `ladder` its rungs, their figures and the claims map, sweeping epochs 0 and 1 only; each
    target's job count is the README's."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    root = checkout(tmp_path / "project", config)
    counts = job_counts(snakemake(root, "-n", "all").stdout)
    study = load_config(config)
    paper = {n: f for n, f in study.figures.items() if f.study == "paper"}
    figs = sorted((n for n in paper if n.startswith("fig")), key=lambda n: int(n.removeprefix("fig")))
    assert figs == [f"fig{n}" for n in (1, 2, *range(4, 25))]
    assert {n for n in paper if not n.startswith("fig")} == {f"critical/{e}" for e in (
        "vgg19_cifar10_step", "vgg19_cifar10_exp", "vgg19_cifar100_exp", "alexnet_imagenet", "vgg19_imagenet_step")}
    experiments = {e for f in paper.values() for e in f.experiments or ()}
    runs = sum(len(study.experiments[e].seeds) for e in experiments)
    assert counts["figure"] == len(paper) and counts["train"] == runs == counts["filters"]
    measured = {e for f in paper.values() if f.kind in ("measure", "layer", "grid", "critical") for e in f.experiments}
    reinit = {(e, s) for f in paper.values() if f.kind in ("reinit", "critical") for e in f.experiments
              for s in f.seeds or study.experiments[e].seeds}
    assert counts["measure"] == len(measured) and counts["reinit"] == len(reinit)
    assert counts["pretrained_filters"] == 7 and counts["convert"] == 7
    # each published source once, however many datasets read it (CIFAR-10 has four variants)
    assert {r for r in counts if r.startswith("download")} == {"download_cifar10", "download_cifar100", "download_mnist"}
    assert counts["download_cifar10"] == 1
    fig7 = job_counts(snakemake(root, "-n", "results/fig7.pdf").stdout)
    assert fig7 == {"download_cifar10": 1, "convert": 1, "train": 10, "filters": 10, "measure": 1, "figure": 1}
    from convbias.plan import plan, target_figures  # `cifar`: the paper figures that need no ImageNet

    cifar = job_counts(snakemake(root, "-n", "cifar").stdout)
    assert cifar["figure"] == len(target_figures(study, "cifar")) and cifar["train"] == plan(study, "cifar")["runs"].sum()
    assert cifar["convert"] == len({study.experiments[e].dataset for e in plan(study, "cifar")["experiment"]})
    ladder = snakemake(root, "-n", "ladder").stdout
    rungs = [e for e in study.experiments if e.startswith("ladder_") and not e.endswith("_seeds345")]
    assert len(rungs) == 4 and {len(study.experiments[e].seeds) for e in rungs} == {3}
    assert job_counts(ladder) == {"convert": 1, "train": 12, "filters": 12, "reinit": 12, "measure": 4,
                                  "figure": 3 * 4 + 1, "claims_ladder": 1, "ladder": 1}
    assert study.figures["ladder/claims_map"].experiments == tuple(rungs)
    assert {study.experiments[e].swept_epochs() == [0, 1] for e in rungs} == {True}
    # the replication: two of those rungs again, as they were, on seeds 3-5 only
    again = [e for e in study.experiments if e.endswith("_seeds345")]
    assert study.figures["replication/claims_map"].experiments == tuple(again) == (
        "ladder_w8_e16_seeds345", "ladder_w8_e24_seeds345")
    for e in again:
        first, fresh = dict(config["experiments"][e.removesuffix("_seeds345")]), dict(config["experiments"][e])
        assert (first.pop("seeds"), fresh.pop("seeds")) == ([0, 1, 2], [3, 4, 5]) and fresh == first
    assert job_counts(snakemake(root, "-n", "replication").stdout) == {
        "train": 6, "filters": 6, "reinit": 6, "measure": 2, "figure": 3, "claims_replication": 1, "replication": 1,
        "convert": 1}
    # the README's jobs column is what `snakemake -n TARGET` shows in this fresh checkout
    from test_readme import plan_table

    dry = {"all": counts, "results/fig7.pdf": fig7, "cifar": cifar, "ladder": job_counts(ladder)}
    dry.update({target: job_counts(snakemake(root, "-n", target).stdout) for target in ("smoke", "quickstart")})
    dry["quickstart"].pop("download_fashion_mnist", None)  # the README counts the Debian package's files
    stated = {target: int(row["jobs"]) for target, row in plan_table().items()}
    assert stated == {target: sum(jobs.values()) for target, jobs in dry.items()}, dry
    assert {study.datasets[study.experiments[e].dataset].channels for e in rungs} == {3}


def test_gpu_jobs_get_their_gpus_and_loader_threads_cpu_jobs_one_thread(tmp_path):
    """A GPU training job asks for the experiment's GPUs and 8 CPU threads per GPU (FFCV's loader
    would starve a GPU on one); a CPU job (the quickstart) for no GPU and one thread."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["experiments"]["vgg19_imagenet_step"]["epochs"] = 300  # over a day of training: capped
    root = checkout(tmp_path / "project", config)

    def first_block(target, rule):
        out = snakemake(root, "-n", "--cores", "64", target).stdout
        block = out.split(f"rule {rule}:", 1)[1].split("\n\n", 1)[0].split("[", 1)[0]
        threads = re.search(r"threads: (\d+)", block)
        return int(threads.group(1)) if threads else 1, dict(re.findall(r"(\w+)=(\w+)", block.split("resources:")[1]))

    threads, resources = first_block("results/fig4.pdf", "train")  # AlexNet on ImageNet, gpus: 4
    assert (threads, resources["gpu"], resources["cpus_per_gpu"]) == (32, "4", "8")
    # memory, disk and time computed from the config (convbias.resources), as `convbias plan` shows them
    from convbias.resources import data_size, train_needs

    study = load_config(config)
    exp = study.experiments["alexnet_imagenet"]
    needs = train_needs(exp, data_size(study.datasets[exp.dataset]))
    assert (int(resources["mem_mb"]), int(resources["disk_mb"]), int(resources["runtime"])) == (
        needs.mem_mb, needs.disk_mb, min(needs.runtime, 24 * 60))
    threads, resources = first_block("results/fig8.pdf", "train")  # VGG19 on ImageNet, 300 epochs: over a day
    vgg = study.experiments["vgg19_imagenet_step"]
    assert train_needs(vgg, data_size(study.datasets[vgg.dataset])).runtime > 24 * 60
    assert int(resources["runtime"]) == 24 * 60  # the job resumes in its next submission
    threads, resources = first_block("results/fig18.pdf", "reinit")
    assert (threads, resources["gpu"]) == (8, "1")
    threads, resources = first_block("quickstart", "train")  # device: cpu
    assert (threads, resources["gpu"]) == (1, "0")
    # runs_per_gpu 2: the gpu resource counts places — a one-GPU job one, a 4-GPU job all 8 of its
    # GPUs' — and the limit given in GPUs is doubled (a local run; under Slurm jobs hold whole GPUs)
    config["runs_per_gpu"] = 2
    write_config(root, config)
    for target, rule, gpu in (("results/fig7.pdf", "train", "1"), ("results/fig18.pdf", "reinit", "1"),
                              ("results/fig4.pdf", "train", "8")):
        assert first_block(target, rule)[1]["gpu"] == gpu, target
    out = snakemake(root, "-n", "--cores", "16", "results/fig7.pdf", "--resources", "gpu=1")
    assert "runs_per_gpu 2: up to 2 one-GPU jobs at once on --resources gpu=1" in out.stderr + out.stdout
