"""`snakemake --profile slurm` against a real one-node Slurm cluster (started by .ci/run).

Every job goes through sbatch. Test-only overrides, on top of the shipped ./slurm profile and
profiles/default: CPUs and memory that fit this node (one CPU per GPU: the node declares two
GPUs, /dev/null and /dev/zero, and the jobs that ask for them compute on its CPU), squeue as the status command
(the test cluster has no accounting for sacct), a short wait before the first status check, and
the logs of successful jobs kept so the test can read them.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_idx_dataset, md5
from convbias.data.downloads import FILES
from test_workflow import REPO, SNAKEMAKE, checkout

pytestmark = pytest.mark.slurm

TEST_OVERRIDES = [
    "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2", "--slurm-no-account",
    "--slurm-keep-successful-logs",
    "--set-threads", "convert=1",
    "--set-resources", "train:mem_mb=1500", "reinit:mem_mb=1500",
    "convert:mem_mb=1500", "filters:mem_mb=1500", "train:cpus_per_gpu=1", "reinit:cpus_per_gpu=1",
    "--default-resources", "mem_mb=1000", "runtime=30",
]


def slurm_problem() -> str | None:
    """Why Slurm cannot be used here, or None when a node is up."""
    if not shutil.which("sbatch"):
        return "sbatch is not installed (bash .ci/slurm.sh start installs and starts a one-node cluster as root)"
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20).stdout.split()
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sinfo failed: {err}"
    if not {"idle", "mix", "alloc"} & set(states):
        return f"no Slurm node is up (sinfo: {states or 'nothing'}); start one with: bash .ci/slurm.sh start"
    return None


@pytest.fixture(scope="module")
def cluster():
    """A running cluster: the one .ci/run started, else one started here (as root) and stopped after."""
    started = False
    if slurm_problem() and os.geteuid() == 0 and shutil.which("apt-get"):
        started = subprocess.run(["bash", str(REPO / ".ci" / "slurm.sh"), "start"]).returncode == 0
    problem = slurm_problem()
    if problem and os.environ.get("CI") == "true":  # CI never passes without submitting a job
        pytest.fail(f"SLURM INTEGRATION TEST CANNOT RUN UNDER CI: {problem}")
    if problem:
        pytest.skip(f"SLURM INTEGRATION TEST NOT RUN: {problem}")
    yield
    if started:
        subprocess.run(["bash", str(REPO / ".ci" / "slurm.sh"), "stop"])


def slurm_checkout(root: Path, config: dict) -> Path:
    checkout(root, config)
    shutil.copytree(REPO / "slurm", root / "slurm")
    return root


def run_on_slurm(root: Path, *targets: str, extra: tuple[str, ...] = (), timeout: int = 600) -> subprocess.Popen:
    """Start `snakemake --profile slurm` as a user types it, plus the test overrides."""
    cmd = ["timeout", "-k", "10", str(timeout), SNAKEMAKE, *targets, *extra, "--profile", "slurm", *TEST_OVERRIDES]
    return subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate()
    return proc.returncode, out


def config_for(data: Path, epochs: int, seeds: list[int], figures: bool = True, name: str = "tiny") -> dict:
    exp = {"dataset": "tiny", "epochs": epochs, "seeds": seeds, "optimizer": {"batch_size": 64}, "device": "cpu",
           "model": {"arch": "vgg11", "width": 0.125, "hidden": 16, "dropout": 0.0}}
    figs = {f"quickstart/{name}_{kind}": {"kind": kind, "study": "quickstart", "experiments": [name],
                                        "caption": kind} for kind in ("measure", "reinit")} if figures else {}
    return {"datasets": {"tiny": {"source": "mnist", "path": str(data), "pad": 2, "hflip": False}},
            "experiments": {name: exp}, "figures": figs}


def slurm_logs(root: Path, rule: str) -> list[Path]:
    return sorted((root / ".snakemake" / "slurm_logs").glob(f"rule_{rule}/**/*.log"))


def test_the_dataset_is_downloaded_on_the_login_node_and_converted_through_sbatch(cluster, tmp_path, file_server):
    """The dataset's path is empty: rule download_mnist fetches it here (a local rule, as on a
    login node; from a mirror on 127.0.0.1), and the conversion reading it is a cluster job.
    (Training, evaluation and figures through Slurm: tests/test_slurm_smoke.py.)"""
    served = make_idx_dataset(tmp_path / "served")
    config = config_for(tmp_path / "no-such-folder", epochs=2, seeds=[0])
    config["mirrors"] = {"mnist": {"url": file_server(served).url,
                                   "md5": {name: md5(served / name) for name in FILES["mnist"]}}}
    root = slurm_checkout(tmp_path / "project", config)
    code, out = finish(run_on_slurm(root, "results/data/tiny/meta.json"))
    assert code == 0, out[-6000:]
    assert json.loads((root / "results" / "data" / "tiny" / "meta.json").read_text())["num_classes"] == 10
    assert len(slurm_logs(root, "convert")) == 1  # through sbatch
    assert not slurm_logs(root, "download_mnist") and (root / "logs" / "download" / "mnist.log").exists()
    assert sorted(p.name for p in (root / "resources" / "mnist").iterdir()) == sorted(FILES["mnist"])
    assert re.search(r"Job \d+ has been submitted with SLURM jobid \d+", out)


def test_cancelled_training_job_is_resubmitted_and_resumes(cluster, tmp_path):
    data = make_idx_dataset(tmp_path / "idx", n_train=3000, n_test=200)
    epochs = 6
    # its own experiment name: tests/test_slurm_smoke.py may have jobs on the cluster meanwhile
    config = config_for(data, epochs=epochs, seeds=[0], figures=False, name="cancelled")
    config["experiments"]["cancelled"]["resume_every"] = 0  # its full state every epoch: resumes after the last
    root = slurm_checkout(tmp_path / "project", config)
    progress = root / "results" / "resume" / "cancelled" / "seed0" / "progress.json"
    run_dir = root / "results" / "runs" / "cancelled" / "seed0"
    proc = run_on_slurm(root, str(run_dir.relative_to(root)))
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if progress.exists() and json.loads(progress.read_text())["resume"] >= 2:
                break  # epoch 2 committed, later epochs to come
            time.sleep(0.2)
        else:
            pytest.fail(f"training never reached epoch 2 on Slurm:\n{finish(proc)[1][-4000:]}")
        jobs = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"], capture_output=True, text=True).stdout
        train_jobs = [line.split()[0] for line in jobs.splitlines() if "rule_train" in line and "cancelled" in line]
        assert len(train_jobs) == 1, jobs
        subprocess.run(["scancel", train_jobs[0]], check=True)
        code, out = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, out[-6000:]
    logs = slurm_logs(root, "train")
    assert len(logs) == 2, [str(p) for p in logs]  # the cancelled job and its resubmission
    log = (root / "logs" / "train" / "cancelled" / "seed0.log").read_text()  # both attempts, appended
    resumed = re.findall(r"resuming from epoch (\d+)", log)
    assert resumed and int(resumed[0]) >= 2, resumed
    history = pd.read_parquet(run_dir / "history.parquet")
    assert list(history["epoch"]) == list(range(epochs + 1))
    assert re.findall(r"cancelled seed 0 epoch (\d+)/6", log)[-1] == "6"  # a line per epoch in the log
    assert sorted(p.name for p in run_dir.glob("epoch*.safetensors")) == [f"epoch{e:03d}.safetensors"
                                                                         for e in range(epochs + 1)]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
