"""A finished run carries a manifest of its files, which every reader checks: the manifest and its
provenance, readers of a damaged run, `convbias verify` and `convbias status`, and a job that
reads each file once."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from convbias.checkpoints import file_sha256
from convbias.harness import stops_with_one_sentence
from convbias.jobs import run_filters, verified_history
from convbias.runs import RunDamaged, RunFolder
from convbias.runs.work import WorkFolder, forget_published
from convbias.train import train_run
from runs_common import SPEC, data, reference  # noqa: F401 (fixtures)


def test_a_finished_run_carries_a_manifest_of_its_files_and_provenance(reference, data):
    meta, _, _ = data
    manifest = json.loads((reference / "manifest.json").read_text())
    names = [f"epoch{e:03d}.safetensors" for e in range(4)] + ["history.parquet"]
    assert sorted(manifest["files"]) == sorted(names)
    for name in names:  # checksums computed here, from the bytes on disk
        import hashlib

        data_bytes = (reference / name).read_bytes()
        assert manifest["files"][name] == {"bytes": len(data_bytes), "sha256": hashlib.sha256(data_bytes).hexdigest()}
    assert manifest["seed"] == 5 and manifest["spec"] == SPEC.to_dict()
    assert manifest["dataset"]["fingerprint"] == meta.fingerprint and manifest["dataset"]["order"] == "random"
    assert manifest["fingerprint"] == SPEC.fingerprint(seed=5, data=meta.__dict__, order="random")
    computed = manifest["computed"]
    assert computed["versions"]["torch"] == torch.__version__.split("+")[0] or computed["versions"]["torch"].startswith(
        torch.__version__.split("+")[0])
    assert set(computed["versions"]) == {"convbias", "torch", "torchvision", "ffcv", "numpy"}
    assert computed["device"].startswith("cpu") and computed["precision"] == "fp32" and computed["processes"] == 1
    assert len(computed["seconds_per_epoch"]) == 3 and all(s > 0 for s in computed["seconds_per_epoch"])
    assert "git_commit" in computed
    assert RunFolder(reference).verify() == manifest
    # the work folder stays until the workflow has seen its job end, saying where it was published
    work = WorkFolder(reference.parent / "resume" / "exp" / "seed5", manifest["fingerprint"])
    assert work.published_run().path.resolve() == reference.resolve()
    assert forget_published(reference.parent) == [work.path]
    # no lock file, no empty folder left in the resume folder
    assert list((reference.parent / "resume").iterdir()) == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest"])
def test_every_reader_of_a_damaged_run_stops_with_one_sentence_naming_it(reference, tmp_path, damage):
    import shutil

    run = shutil.copytree(reference, tmp_path / "run")
    target = run / "epoch002.safetensors"
    if damage == "flip":
        raw = bytearray(target.read_bytes())
        raw[-5] ^= 0xFF  # inside a tensor: the size stays, the checksum does not
        target.write_bytes(bytes(raw))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-10])
    elif damage == "delete":
        target.unlink()
    else:
        (run / "manifest.json").unlink()
    with pytest.raises(RunDamaged) as err:
        run_filters(run, 3, False, "exp", 5)
    message = str(err.value)
    assert str(run) in message and "delete that folder and run snakemake again" in message
    assert {"flip": "checksum", "truncate": "bytes", "delete": "missing", "manifest": "manifest"}[damage] in message
    with pytest.raises(SystemExit) as stopped:  # how a job ends: the sentence, no traceback
        with stops_with_one_sentence():
            run_filters(run, 3, False, "exp", 5)
    assert str(stopped.value) == f"error: {message}"
    if damage != "manifest":
        verified_history(run)  # the history itself is intact: readers of it only go on
    from convbias.cli import main

    assert main(["verify", str(run), str(reference)]) == 1


def test_convbias_verify_reports_every_run(reference, capsys):
    from convbias.cli import main

    assert main(["verify", str(reference)]) == 0
    out = capsys.readouterr().out
    assert f"ok      {reference} (5 files" in out and "1 of 1 runs intact" in out


def test_status_tells_done_damaged_running_interrupted_and_not_started_runs_apart(data, reference, tmp_path, monkeypatch, capsys):
    import shutil

    from convbias.cli import main
    from convbias.config import load_config
    from convbias.status import status

    meta, train, test = data
    config = {"datasets": {"d": {"source": "mnist", "path": "x"}},
              "experiments": {"e": {"dataset": "d", "model": {"arch": "lenet"}, "epochs": 3, "seeds": [0, 1, 2, 3],
                                    "stall_epochs": 2}},
              "figures": {"f": {"kind": "measure", "study": "quickstart", "experiments": ["e"], "caption": "c"}}}
    runs, resume = tmp_path / "results" / "runs", tmp_path / "results" / "resume"
    shutil.copytree(reference, runs / "e" / "seed0")
    train_run(SPEC, 5, meta, train, test, tmp_path / "unused", resume / "e" / "seed1", stop_after=2)
    shutil.copytree(resume / "e" / "seed1", resume / "e" / "seed2")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (resume / "e" / "seed1.lock").write_text(f"{dead.stdout.strip()} {socket.gethostname()}")  # killed holder
    (resume / "e" / "seed2.lock").write_text(f"{os.getpid()} {socket.gethostname()}")  # a live one
    # train losses: seed 1 at ln 10 in epochs 1 and 2 (a stall of stall_epochs 2); seeds 0 and 2 learning
    for seed, losses in ((1, [2.30, 2.31]), (2, [2.0, 1.2])):
        progress = json.loads((resume / "e" / f"seed{seed}" / "progress.json").read_text())
        progress["history"][1:] = [{**row, "train_loss": loss} for row, loss in zip(progress["history"][1:], losses)]
        progress["resume"] = 1  # epoch 2 committed its snapshot only (resume_every): a rerun continues after 1
        (resume / "e" / f"seed{seed}" / "progress.json").write_text(json.dumps(progress))
    done = RunFolder(runs / "e" / "seed0")
    done.history().assign(train_loss=[float("nan"), 2.3, 2.3, 1.0]).to_parquet(done.history_file)  # left chance at last
    manifest = json.loads(done.manifest_file.read_text())  # which records the new history
    manifest["files"]["history.parquet"] = {"bytes": done.history_file.stat().st_size,
                                            "sha256": file_sha256(done.history_file)}
    done.manifest_file.write_text(json.dumps(manifest))
    table = status(load_config(config), "quickstart", runs, resume).set_index("seed")
    assert list(table["state"]) == ["done", "interrupted", "running", "not started"]
    assert list(table["epoch"]) == [3, 2, 2, 0] and (table["epochs"] == 3).all()
    assert list(table["note"]) == ["", "not learning — train loss at ln 10 since epoch 1; resumes from epoch 1", "", ""]
    final = RunFolder(reference).history().iloc[-1]
    assert table.loc[0, "test_acc"] == final["test_acc"] and table.loc[0, "hours_left"] == 0
    progress = json.loads((resume / "e" / "seed2" / "progress.json").read_text())
    per_epoch = (progress["history"][1]["seconds"] + progress["history"][2]["seconds"]) / 2
    assert table.loc[2, "val_acc"] == progress["history"][2]["val_acc"]
    assert table.loc[2, "hours_left"] == pytest.approx(per_epoch / 3600)
    # held on another host: running while its last commit is recent, interrupted once it is old
    (resume / "e" / "seed2.lock").write_text("12345 some-compute-node")
    assert status(load_config(config), "quickstart", runs, resume).set_index("seed").loc[2, "state"] == "running"
    old = time.time() - 7200
    os.utime(resume / "e" / "seed2" / "progress.json", (old, old))
    assert status(load_config(config), "quickstart", runs, resume).set_index("seed").loc[2, "state"] == "interrupted"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    assert main(["status", "quickstart"]) == 0
    out = capsys.readouterr().out
    assert "quickstart: 4 runs — " in out and "1 done" in out and "2 interrupted" in out and "1 not started" in out
    assert "3/3" in out and "2/3" in out
    assert "e seed 1, epoch 2/3: not learning — train loss at ln 10 since epoch 1; resumes from epoch 1" in out.splitlines()
    # a published run whose file lost bytes is damaged, not done (sizes: instant; verify reads checksums)
    with open(done.weights(2), "r+b") as f:
        f.truncate(100)
    row = status(load_config(config), "quickstart", runs, resume).set_index("seed").loc[0]
    assert row["state"] == "damaged" and "epoch002.safetensors has 100 bytes" in row["note"]
    assert main(["status", "quickstart"]) == 0 and "1 damaged" in capsys.readouterr().out


def test_the_filters_job_reads_each_epoch_file_once(reference, monkeypatch):
    """Checked against the manifest as it is read: no separate hashing pass over the run."""
    from pathlib import Path

    import convbias.runs.folder as runs

    reads, real = [], Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or real(self))
    monkeypatch.setattr(runs, "file_sha256", lambda path: pytest.fail(f"{path} hashed apart from its read"))
    table = run_filters(reference, 3, False, "exp", 5)
    assert sorted(reads) == [f"epoch{e:03d}.safetensors" for e in range(4)]
    assert sorted(table["epoch"].unique()) == [0, 1, 2, 3]
