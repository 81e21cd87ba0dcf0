"""`snakemake --profile slurm` on the shipped smoke study, and a failing job, against the real
one-node cluster (helpers and overrides: tests/test_slurm.py). A file of its own so that `make
test` runs it beside test_slurm.py: both mostly wait on the cluster's status checks."""

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from test_slurm import cluster, config_for, finish, run_on_slurm, slurm_checkout, slurm_logs  # noqa: F401 (fixture)
from test_workflow import REPO, SNAKEMAKE

pytestmark = pytest.mark.slurm


def test_smoke_study_through_slurm_asks_for_gpus_and_trains_data_parallel(cluster, tmp_path):
    """`snakemake --profile slurm smoke` as the README says, with the shipped config: the 1-GPU and
    2-GPU jobs get their GPUs from Slurm, the 2-GPU run trains in two DDP processes, every figure
    kind is drawn, convbias status reports both runs done and every job has its log."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    root = slurm_checkout(tmp_path / "project", config)
    start = time.time()
    code, out = finish(run_on_slurm(root, "smoke"))
    assert code == 0, out[-6000:]
    kinds = {fig["kind"] for name, fig in config["figures"].items() if fig.get("study") == "smoke"}
    assert kinds == {"measure", "histograms", "layer", "grid", "reinit", "critical", "pretrained"}
    figures = [root / "results" / f"{name}.pdf" for name, fig in config["figures"].items() if fig.get("study") == "smoke"]
    assert all(f.stat().st_size > 0 for f in figures) and (root / "results" / "smoke" / "claims.csv").exists()
    assert len(slurm_logs(root, "train")) == 2 and len(slurm_logs(root, "reinit")) == 2
    assert not slurm_logs(root, "figure") and not slurm_logs(root, "measure")  # local rules: not submitted
    for gpus, processes in (("0", 1), ("0,1", 2)):
        name = "smoke_1gpu" if processes == 1 else "smoke_2gpu"
        log = (root / "logs" / "train" / name / "seed0.log").read_text()
        assert f"GPUs of this job: {gpus} (device auto, {processes} asked for)" in log  # as Slurm assigned them
        assert f"{name} seed 0 epoch 2/2" in log
        manifest = json.loads((root / "results" / "runs" / name / "seed0" / "manifest.json").read_text())
        assert manifest["computed"]["processes"] == processes
    for rule in ("convert", "train", "filters", "reinit", "measure", "figure", "pretrained_filters", "claims"):
        assert list((root / "logs" / rule).rglob("*.log")), rule
    status = subprocess.run([str(Path(SNAKEMAKE).with_name("convbias")), "status", "smoke"], cwd=root,
                            capture_output=True, text=True, check=True).stdout
    assert "smoke: 2 runs — 2 done" in status, status
    print(f"slurm smoke study: {time.time() - start:.0f} s")


def test_failing_job_fails_the_run_and_names_its_log(cluster, tmp_path):
    config = config_for(tmp_path / "no-such-folder", epochs=1, seeds=[0])
    config["datasets"]["tiny"]["download"] = False  # so that convert, a cluster job, fails
    root = slurm_checkout(tmp_path / "project", config)
    code, out = finish(run_on_slurm(root, "quickstart", extra=("--retries", "0")))  # no point retrying it
    assert code != 0
    logs = slurm_logs(root, "convert")
    assert logs, out[-4000:]
    assert any(str(log.relative_to(root)) in out or str(log) in out for log in logs), out[-4000:]
    rule_log = root / "logs" / "convert" / "tiny.log"  # the job's own output: its rule's log
    assert "datasets.tiny.path" in rule_log.read_text()  # the one-sentence error
    assert "logs/convert/tiny.log" in out and "datasets.tiny.path" in out  # named and shown (show-failed-logs)
