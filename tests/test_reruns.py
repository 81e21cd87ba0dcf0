"""Nothing that took GPU hours is redone by accident: a killed Snakemake (its training job an
orphan), a published run under --unlock, rerun-incomplete and --forcerun, two checkouts sharing
one results folder. Tiny runs of the real workflow; file times and moved studies are in
test_workflow.py (they reuse its finished study)."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import make_idx_dataset
from convbias.runs import RunFolder, lock_file, lock_holder, run_lock
from test_workflow import SNAKEMAKE, checkout, snakemake, tiny_config

pytestmark = pytest.mark.workflow
NOTHING_TO_TRAIN = "published and intact (manifest and checksums verified): nothing left to train"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_idx_dataset(tmp_path_factory.mktemp("idx"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory, data):
    """results/data of a checkout whose convert job ran, once for this file: each test copies it
    (file times kept, so the copy is up to date) and starts at its training job."""
    root = checkout(tmp_path_factory.mktemp("converted"), one_run(data, 1))
    snakemake(root, "--cores", "1", "results/data/tiny/meta.json")
    return root / "results" / "data"


def with_data(root, converted):
    """``root`` with the converted dataset of ``converted`` in its results/."""
    shutil.copytree(converted, root / "results" / "data", copy_function=shutil.copy2)
    return root


def one_run(data, epochs):
    """The tiny study reduced to one LeNet run of ``epochs`` epochs and no figures."""
    config = tiny_config(data)
    config["experiments"] = {"tiny_lenet": {**config["experiments"]["tiny_lenet"], "seeds": [0], "epochs": epochs,
                                            "snapshots": "conv"}}
    config["figures"] = {}
    return config


def start_and_wait_for_epoch(root, target, log):
    """Start Snakemake on ``target`` (output to ``log``) and return it once epoch 1 is committed."""
    work = root / "results" / "resume" / "tiny_lenet" / "seed0"
    proc = subprocess.Popen([SNAKEMAKE, "--cores", "1", target], cwd=root, stdout=log, stderr=log)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads((work / "progress.json").read_text())["epoch"] >= 1:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    return proc


def lock_free(lock) -> bool:
    """Whether no process holds run lock ``lock`` (its file may stay: a published run's work
    folder stays until the workflow ends)."""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


KILL_AFTER_PUBLISHING = """
import os, signal

# test_reruns: the training job SIGKILLs itself once, after publishing its run, before it exits
if os.environ.get("CONVBIAS_TEST_KILL_MARK") and not os.path.exists(os.environ["CONVBIAS_TEST_KILL_MARK"]):
    from convbias.runs import Run

    publish = Run.publish

    def published_then_killed(*args):
        publish(*args)
        open(os.environ["CONVBIAS_TEST_KILL_MARK"], "w").close()
        os.kill(os.getpid(), signal.SIGKILL)

    Run.publish = published_then_killed
"""


def test_a_job_killed_after_publishing_its_run_loses_no_epoch(tmp_path, data, converted):
    """The training job is SIGKILLed after its run is published, before it exits (a Slurm
    preemption at the wrong second): Snakemake deletes the outputs of the failed job.  The same
    command again publishes the run again from its work folder — no epoch trained again — and the
    workflow's end drops the work folder."""
    root = with_data(checkout(tmp_path / "project", one_run(data, 2)), converted)
    target = "results/runs/tiny_lenet/seed0"
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(KILL_AFTER_PUBLISHING)
    mark = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")])),
           "CONVBIAS_TEST_KILL_MARK": str(mark)}
    job_log = root / "logs" / "train" / "tiny_lenet" / "seed0.log"

    def run():
        return subprocess.run([SNAKEMAKE, "--cores", "1", target], cwd=root, env=env, capture_output=True, text=True,
                              timeout=600)

    first = run()
    out = first.stdout + first.stderr
    assert first.returncode != 0 and mark.exists(), out[-3000:]
    assert "Removing output files of failed job train" in out and not (root / target).exists(), out[-3000:]
    trained = job_log.read_text().count("tiny_lenet seed 0 epoch ")
    assert trained == 2, job_log.read_text()[-3000:]
    second = run()
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    log = job_log.read_text()
    assert "resuming from epoch 2" in log and log.count("tiny_lenet seed 0 epoch ") == trained, log[-3000:]
    assert len(RunFolder(root / target).verify()["files"]) == 4
    assert list((root / "results" / "resume").iterdir()) == []


def test_snakemake_killed_under_a_running_job_then_rerun_loses_nothing(tmp_path, data, converted):
    """SIGKILL Snakemake (not its job): the training job runs on as an orphan. `--unlock` and the
    same command again, as Snakemake's message says: the new job waits for the orphan's run lock
    (naming its PID), then finds the run published and succeeds without training; the run is
    intact, its log keeps the orphan's lines, and a later dry run has nothing to do.  (The orphan
    outlives Snakemake's restart without a timing assumption: it is paused with SIGSTOP, holding
    its run lock, until the new job says it waits for it.)"""
    epochs = 20
    root = with_data(checkout(tmp_path / "project", one_run(data, epochs)), converted)
    target = "results/runs/tiny_lenet/seed0"
    with open(tmp_path / "first.log", "w") as log:
        first = start_and_wait_for_epoch(root, target, log)
        first.send_signal(signal.SIGKILL)  # Snakemake only: its job is now an orphan
        first.wait()
    orphan = int(lock_holder(lock_file(root / "results" / "resume" / "tiny_lenet" / "seed0"))[0])
    os.kill(orphan, signal.SIGSTOP)  # alive, its run lock held, training no further
    job_log = root / "logs" / "train" / "tiny_lenet" / "seed0.log"
    try:
        snakemake(root, "--unlock")
        with open(tmp_path / "second.log", "w") as log:
            second = subprocess.Popen([SNAKEMAKE, "--cores", "1", target], cwd=root, stdout=log, stderr=log)
            deadline = time.time() + 120
            while time.time() < deadline and second.poll() is None and f"waiting for process {orphan}" not in (
                    job_log.read_text() if job_log.exists() else ""):
                time.sleep(0.05)
    finally:
        os.kill(orphan, signal.SIGCONT)
    assert second.wait(300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = job_log.read_text()  # the job's output
    assert f"waiting for process {orphan}" in log and NOTHING_TO_TRAIN in log, log[-3000:]
    assert "resuming" not in log
    assert f"tiny_lenet seed 0 epoch 1/{epochs}" in log  # the orphan's lines: the log keeps every attempt
    manifest = RunFolder(root / target).verify()
    assert len(manifest["files"]) == epochs + 2 and manifest["computed"]["processes"] == 1
    assert list((root / "results" / "resume").iterdir()) == []
    dry = snakemake(root, "-n", target)
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_a_run_an_orphaned_job_published_survives_unlock_rerun_and_forcerun(tmp_path, data, converted):
    """SIGKILL Snakemake after epoch 1; the orphaned training job finishes and publishes the run.
    `--unlock` and the same command again (Snakemake reruns the job it saw killed, as incomplete),
    then `--forcerun train`: each job finds the run published and intact and trains nothing, and
    not a file of the run is rewritten; deleting the folder is what trains it again."""
    root = with_data(checkout(tmp_path / "project", one_run(data, 4)), converted)
    target = "results/runs/tiny_lenet/seed0"
    run, work = root / target, root / "results" / "resume" / "tiny_lenet" / "seed0"
    with open(tmp_path / "first.log", "w") as log:
        first = start_and_wait_for_epoch(root, target, log)
        first.send_signal(signal.SIGKILL)  # Snakemake only: its job trains on as an orphan
        first.wait()
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "manifest.json").exists() and lock_free(lock_file(work))):
        time.sleep(0.1)  # the orphan publishes, then ends

    def files():  # the run's own files (not Snakemake's .snakemake_timestamp)
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in run.iterdir() if not p.name.startswith(".")}

    stamps = files()
    assert "manifest.json" in stamps
    snakemake(root, "--unlock")
    for extra in ((), ("--forcerun", "train")):
        proc = snakemake(root, "--cores", "1", target, *extra)
        assert "rule train:" in proc.stdout + proc.stderr  # Snakemake did run the job
        log = (root / "logs" / "train" / "tiny_lenet" / "seed0.log").read_text()
        assert NOTHING_TO_TRAIN in log, log[-3000:]
        assert files() == stamps
    assert "Nothing to be done" in snakemake(root, "-n", target).stdout
    shutil.rmtree(run)
    snakemake(root, "--cores", "1", target)
    assert "tiny_lenet seed 0 epoch 4/4" in (root / "logs" / "train" / "tiny_lenet" / "seed0.log").read_text()


def test_a_second_checkout_sharing_the_results_folder_is_refused_while_the_first_runs(tmp_path, data, converted):
    """Two checkouts whose results/ is one folder (a symlink, as to a big disk): Snakemake locks
    each working folder only, so the second would run the same jobs and delete the first's files.
    It stops before any job with one sentence naming the first; once that ends, it has nothing to do.
    (The first is kept running without a timing assumption: its training job waits for the run's
    lock, held here until the second has been refused.)"""
    config = one_run(data, 2)
    first_root, second_root = checkout(tmp_path / "first", config), checkout(tmp_path / "second", config)
    with_data(first_root, converted)  # its results/, which the second checkout's links to
    (second_root / "results").symlink_to(first_root / "results")
    target = "results/runs/tiny_lenet/seed0"
    job_log = first_root / "logs" / "train" / "tiny_lenet" / "seed0.log"
    with open(tmp_path / "first.log", "w") as log:
        with run_lock(first_root / "results" / "resume" / "tiny_lenet" / "seed0"):
            first = subprocess.Popen([SNAKEMAKE, "--cores", "1", target], cwd=first_root, stdout=log, stderr=log)
            deadline = time.time() + 120
            while time.time() < deadline and "waiting for process" not in (job_log.read_text() if job_log.exists() else ""):
                time.sleep(0.05)
            second = snakemake(second_root, "--cores", "1", target, check=False)
        assert first.wait(300) == 0
    out = second.stdout + second.stderr
    assert second.returncode != 0 and "rule train:" not in out, out[-3000:]
    results = (first_root / "results").resolve()
    assert f"another Snakemake (PID {first.pid} on " in out and f"is running on {results}" in out, out[-3000:]
    assert len(RunFolder(first_root / target).verify()["files"]) == 4
    assert "Nothing to be done" in snakemake(second_root, "-n", target).stdout
