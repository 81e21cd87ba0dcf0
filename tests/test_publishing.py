"""One process at a time on a run, and a published run is never trained again: the run lock, a
run published meanwhile or found in the output folder, and a fault-injection test that kills
training anywhere (mid-epoch, mid-commit, while or after publishing) and reruns it."""

import os
import random
import shutil
import signal
import socket
import threading
import time

import pandas as pd
import pytest
import torch

from convbias.data.dataset import DatasetMeta
from convbias.runs import Run, RunFolder, lock_file, run_lock
from convbias.runs.work import forget_published
from convbias.specs import TrainSpec
from convbias.train import train_run
from runs_common import SPEC, data, reference, same_run  # noqa: F401 (fixtures)


def test_a_second_process_waits_for_the_run_lock_and_names_its_holder(tmp_path):
    work = tmp_path / "resume" / "exp" / "seed0"
    events, said = [], []
    with run_lock(work):
        assert (tmp_path / "resume" / "exp" / "seed0.lock").read_text() == f"{os.getpid()} {socket.gethostname()}"

        def second():
            with run_lock(work, say=said.append):
                events.append("second has it")

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        assert events == [] and thread.is_alive()  # still waiting
        events.append("first done")
    thread.join(10)
    assert events == ["first done", "second has it"]
    assert said == [f"waiting for process {os.getpid()} on {socket.gethostname()}, which is working on this run "
                    f"({tmp_path / 'resume' / 'exp' / 'seed0.lock'}); this one continues from what that one leaves"]
    assert list((tmp_path / "resume").iterdir()) == []  # no work folder: the lock file and its empty folder go


def test_a_run_published_while_waiting_is_not_trained_again(data, reference, tmp_path, capsys):
    meta, train, test = data
    work = tmp_path / "resume" / "exp" / "seed5"
    results = {}

    def first():
        results["first"] = train_run(SPEC, 5, meta, train, test, tmp_path / "run", work)

    thread = threading.Thread(target=first)
    thread.start()
    lock = lock_file(work)
    deadline = time.time() + 30
    while time.time() < deadline and not (lock.exists() and lock.read_text()):
        time.sleep(0.005)  # its holder writes its PID once it holds it, then trains three epochs
    history = train_run(SPEC, 5, meta, train, test, tmp_path / "run", work)
    thread.join(60)
    err = capsys.readouterr().err
    assert "waiting for process" in err and "published and intact (manifest and checksums verified): nothing left to train" in err
    pd.testing.assert_frame_equal(history, results["first"])
    same_run(reference, tmp_path / "run")


def test_a_published_run_is_kept_if_intact_and_replaced_if_damaged_or_of_another_spec(data, reference, tmp_path, capsys):
    """What a training job finds in its output folder before it trains (Snakemake leaves it there:
    the rule's output is update()d): this run, intact → nothing trained, not a byte rewritten; the
    same run damaged, or a run of another spec (more epochs), → trained and replaced, saying why,
    with none of the old files left."""
    meta, train, test = data
    out, work = tmp_path / "run", tmp_path / "resume" / "exp" / "seed5"
    shutil.copytree(reference, out)
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()}
    history = train_run(SPEC, 5, meta, train, test, out, work)
    err = capsys.readouterr().err
    assert "published and intact (manifest and checksums verified): nothing left to train" in err
    assert "epoch 1/3" not in err and not work.exists()
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()} == stamps
    pd.testing.assert_frame_equal(history, RunFolder(reference).history())
    # what the train job asks first, without torch, the data or the lock: the same answer, and the
    # same sentence; "no" while a work folder might still be training, or for another seed
    fingerprint = SPEC.run_fingerprint(5, meta, "random")
    assert Run.finished(out, work, fingerprint) and "nothing left to train" in capsys.readouterr().err
    assert not Run.finished(out, work, SPEC.run_fingerprint(4, meta, "random"))
    work.mkdir(parents=True)
    assert not Run.finished(out, work, fingerprint) and not capsys.readouterr().err
    work.rmdir()

    flipped = bytearray((out / "epoch002.safetensors").read_bytes())
    flipped[-1] ^= 1  # same size: only the checksum tells
    (out / "epoch002.safetensors").write_bytes(bytes(flipped))
    assert not Run.finished(out, work, fingerprint)
    train_run(SPEC, 5, meta, train, test, out, work)
    err = capsys.readouterr().err
    assert f"{out} will be replaced when this run is published: epoch002.safetensors does not match" in err
    assert "epoch 3/3" in err
    same_run(reference, out)
    RunFolder(out).verify()

    longer = SPEC.to_dict() | {"epochs": 4}
    train_run(TrainSpec.from_dict(longer), 5, meta, train, test, out, work)
    train_run(SPEC, 5, meta, train, test, out, work)
    err = capsys.readouterr().err
    assert "will be replaced when this run is published: it is a run of another configuration" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(list(RunFolder(reference).verify()["files"]) + ["manifest.json"])
    same_run(reference, out)


def killed_child(log: str, meta: str, train: str, test: str, out: str, work: str, spec: dict, point: str, count: int,
                 resume_every: float = 0):
    """A training process that SIGKILLs itself at the ``count``-th call of what ``point`` names (its
    output goes to ``log``; ``resume_every``: the run's, see train_run). Runs in a child forked from a server that has imported torch and
    convbias once (not in the test's process: the patches and the kill are the child's own)."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from convbias.runs import life
    from convbias.runs import work as runs

    calls = [0]

    def dies_at(fn):
        def wrapper(*args, **kwargs):
            calls[0] += 1
            if calls[0] == count:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return wrapper

    if point == "step":  # mid-epoch, before the count-th SGD step
        torch.optim.SGD.step = dies_at(torch.optim.SGD.step)
    elif point == "write":  # during a commit: before the count-th file write of the run folder
        runs.atomic_write = dies_at(runs.atomic_write)
        runs.save_weights = dies_at(runs.save_weights)
        runs.write_bytes = dies_at(runs.write_bytes)
    elif point == "publish":  # publishing: before the count-th file is linked into the run folder
        os.link = dies_at(os.link)
    elif point == "published":  # after publishing, before the process exits
        publish = life.Run.publish
        life.Run.publish = lambda *args: (publish(*args), os.kill(os.getpid(), signal.SIGKILL))
    train_run(TrainSpec.from_dict(spec), 5, DatasetMeta.load(meta), train, test, out, work, resume_every=resume_every)


@pytest.mark.subprocess
def test_killed_anywhere_and_rerun_a_run_completes_bit_identical(data, reference, tmp_path):
    """Seeded trials: SIGKILL mid-epoch, during a commit's writes, during publishing or after it
    (and sometimes damage a file of the work folder, or change the spec before the rerun; some runs
    save their full state at epochs 0 and 3 only, resume_every longer than the run); then, as
    Snakemake does after a failed job, delete the run's folder, and rerun as a user would.  Each
    time the run completes, equal to an uninterrupted run of its spec, no rerun is stuck, a kill
    while or after publishing trains nothing again, and the workflow's end drops the work folder."""
    import multiprocessing

    meta, train, test = data
    meta_file = str(train.with_name("meta.json"))
    steps = SPEC.epochs * -(-int(len(DatasetMeta.load(meta_file).train_indices())) // SPEC.batch_size)
    other = TrainSpec(**{**SPEC.__dict__, "lr": 2 * SPEC.lr})
    other_reference = tmp_path / "other"
    train_run(other, 5, meta, train, test, other_reference, tmp_path / "w-other")
    rng = random.Random(20261128)
    plans = []
    points = ["step", "write", "publish", "published"]
    twists = ["none", "damage", "none", "none", "other spec", "none", "damage", "other spec"]
    for trial in range(8):
        point = points[trial % 4]
        count = {"step": rng.randint(1, steps), "write": rng.randint(1, 3 * (SPEC.epochs + 1)),
                 "publish": rng.randint(1, SPEC.epochs + 2), "published": 1}[point]
        plans.append((trial, point, count, twists[trial], rng.random()))
    # 16 children, each a fork of one server that imported torch and convbias once: a fresh
    # interpreter would spend seconds of CPU on those imports, child after child (the server is
    # started without this folder on its path: the children import this module themselves)
    children = multiprocessing.get_context("forkserver")
    children.set_forkserver_preload(["convbias.train", "convbias.runs", "pandas", "pytest"])

    def trial_run(plan):
        trial, point, count, twist, pick = plan
        budget = 1e9 if trial in (0, 6, 7) else 0  # a step, a publish (damaged), after one: not writes (counted for full commits)
        results = tmp_path / f"results{trial}"  # each trial's own: forget_published below sees it alone
        out, work = results / "runs" / "exp" / "seed5", results / "resume" / "exp" / "seed5"

        def child(spec, point="none", count=0):
            log = tmp_path / f"trial{trial}-{point}.log"
            proc = children.Process(target=killed_child, args=(str(log), meta_file, str(train), str(test), str(out),
                                                                str(work), spec.to_dict(), point, count, budget))
            proc.start()
            proc.join(120)
            if proc.exitcode is None:
                proc.kill()
                proc.join()
            return proc.exitcode, log.read_text()

        code, said = child(SPEC, point, count)
        assert code == -signal.SIGKILL, (point, count, said[-2000:])
        shutil.rmtree(out, ignore_errors=True)  # Snakemake: "Removing output files of failed job train"
        files = sorted(p for p in work.iterdir() if p.suffix == ".safetensors") if work.exists() else []
        if twist == "damage" and files:
            victim = files[int(pick * len(files))]
            raw = bytearray(victim.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            victim.write_bytes(bytes(raw))
        spec, expected = (other, other_reference) if twist == "other spec" else (SPEC, reference)
        code, said = child(spec)  # as a user would: the same command again
        assert code == 0, (point, count, twist, said[-3000:])
        same_run(expected, out)
        assert RunFolder(out).verify()["spec"] == spec.to_dict()
        assert forget_published(results) == [work]  # the workflow's end (Snakefile onsuccess)
        assert not work.exists() and not work.parent.exists()  # no work folder, lock file or empty folder left
        said = [line.split(": ", 1)[-1] if "starting" in line else line.split(" saved")[0]
                for line in said.splitlines() if "resuming" in line or "starting this run over" in line]
        said = said[0] if said else "trained from epoch 0"
        if point in ("publish", "published") and twist == "none":  # a finished run is never trained again
            assert said == f"resuming from epoch {SPEC.epochs}", (point, count, said)
        return point, count, twist, budget, said

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # two trials at a time (two cores)
        outcomes = list(pool.map(trial_run, plans))
    print("\n".join(map(str, outcomes)))
    assert {o[0] for o in outcomes} == set(points)
    assert {(o[0], o[2]) for o in outcomes} >= {("publish", "none"), ("published", "none")}
