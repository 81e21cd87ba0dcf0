"""A run is never lost, never mixed, never stuck: the run lock, verified resume, manifests of
finished runs, and a fault-injection test that kills training anywhere and reruns it."""

import errno
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from convbias.checkpoints import file_sha256, load_weights, read_metadata
from convbias.data.dataset import DatasetMeta
from convbias.harness import run_made_from, stops_with_one_sentence, write_unless_kept
from convbias.jobs import run_filters, verified_history
from convbias.runs.work import WorkFolder, forget_published
from convbias.runs import RunDamaged, RunFolder, lock_file, run_lock
from convbias.specs import ModelSpec, TrainSpec
from convbias.train import train_run

SPEC = TrainSpec(model=ModelSpec("lenet", width=0.5, hidden=16, dropout=0.5), epochs=3, batch_size=64, lr=0.01,
                 snapshots="conv")
TIMING = ["seconds", "images_per_second"]


@pytest.fixture(scope="module")
def data(tiny_converted):
    return tiny_converted


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run of SPEC, seed 5: what every interrupted run must end up as."""
    meta, train, test = data
    root = tmp_path_factory.mktemp("reference")
    train_run(SPEC, 5, meta, train, test, root / "run", root / "resume" / "exp" / "seed5")
    return root / "run"


def same_run(a, b, epochs=SPEC.epochs):
    for e in range(epochs + 1):
        x, y = load_weights(a / f"epoch{e:03d}.safetensors"), load_weights(b / f"epoch{e:03d}.safetensors")
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), e
    pd.testing.assert_frame_equal(RunFolder(a).history().drop(columns=TIMING), RunFolder(b).history().drop(columns=TIMING))


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


def test_a_damaged_work_folder_starts_over_saying_so_and_ends_identical(data, reference, tmp_path, capsys):
    meta, train, test = data
    work = tmp_path / "resume" / "exp" / "seed5"
    train_run(SPEC, 5, meta, train, test, tmp_path / "run", work, stop_after=2)
    progress = json.loads((work / "progress.json").read_text())
    assert progress["epoch"] == 2
    # every file of the run so far has the checksum the commit recorded (the last, once a cut is made)
    assert all(file_sha256(work / n) == digests[-1] for n, digests in progress["files"].items())
    assert sorted(progress["files"]) == ["epoch000.safetensors", "epoch001.safetensors", "epoch002.safetensors",
                                         "optimizer002.safetensors"]
    assert [row["epoch"] for row in progress["history"]] == [0, 1, 2]  # the history commits with its epoch
    raw = bytearray((work / "optimizer002.safetensors").read_bytes())
    raw[-3] ^= 0x01
    (work / "optimizer002.safetensors").write_bytes(bytes(raw))
    capsys.readouterr()
    train_run(SPEC, 5, meta, train, test, tmp_path / "run", work)
    err = capsys.readouterr().err
    assert "optimizer002.safetensors is damaged" in err and "starting this run over from epoch 0" in err
    assert "resuming" not in err
    same_run(reference, tmp_path / "run")
    forget_published(tmp_path)
    assert list((tmp_path / "resume").iterdir()) == []
    # a progress file cut short, and a folder of another spec: each starts over saying why
    other = TrainSpec.from_dict(SPEC.to_dict() | {"lr": 2 * SPEC.lr})
    for spec, cut, why in ((SPEC, True, "its progress file is unreadable"),
                           (other, False, "its epochs are of another configuration")):
        train_run(SPEC, 5, meta, train, test, tmp_path / "unpublished", work, stop_after=1)
        if cut:
            (work / "progress.json").write_bytes((work / "progress.json").read_bytes()[:50])
        capsys.readouterr()
        train_run(spec, 5, meta, train, test, tmp_path / "unpublished", work, stop_after=1)
        err = capsys.readouterr().err
        assert f"{work}: {why}" in err and "starting this run over from epoch 0" in err, err


def test_a_killed_cut_leaves_a_folder_that_resumes(data, reference, tmp_path):
    """Under conv snapshots a commit cuts the earlier epochs after its progress file: killed
    between the two, the folder holds full files where the record allows either version."""
    meta, train, test = data
    work = WorkFolder(tmp_path / "w", "f")
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    meta_ = {"conv_layers": ["0"]}
    for epoch in range(3):
        model(torch.ones(1, 1, 4, 4)).sum().backward()
        optimizer.step()
        work.commit(epoch, model, optimizer, [], meta_, "conv")
    before = (work.path / "epoch001.safetensors").read_bytes()
    original = work.files["epoch002.safetensors"]
    # the state a commit of epoch 3 killed right after its progress file leaves behind
    import convbias.runs.work as runs

    calls = []
    real = runs.write_bytes
    runs.write_bytes = lambda path, data: calls.append(path) or (_ for _ in ()).throw(KeyboardInterrupt())
    try:
        with pytest.raises(KeyboardInterrupt):
            work.commit(3, model, optimizer, [], meta_, "conv")
    finally:
        runs.write_bytes = real
    assert (work.path / "epoch001.safetensors").read_bytes() == before  # nothing cut yet
    assert len(calls) == 1 and calls[0].name == "epoch002.safetensors"
    again = WorkFolder(tmp_path / "w", "f")
    assert again.last_epoch(clear=False) == 3  # the full epoch-2 file is one of the two allowed versions
    assert again.files["epoch002.safetensors"] == original[:1]


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

    flipped = bytearray((out / "epoch002.safetensors").read_bytes())
    flipped[-1] ^= 1  # same size: only the checksum tells
    (out / "epoch002.safetensors").write_bytes(bytes(flipped))
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


def test_epochs_are_committed_while_the_next_one_trains_and_the_files_are_those_of_inline_commits(data, tmp_path,
                                                                                                    monkeypatch):
    """Each epoch's commit is written by a thread while the next epoch trains (here every commit
    but the last waits until an SGD step has run meanwhile — it would wait forever if commits
    blocked training); the run is bit-identical to one whose commits are made in line, so what
    is written is the state as it was at the end of its epoch, not the state training moved on to."""
    import convbias.runs.commits as commits_module

    meta, train, test = data
    inline = tmp_path / "inline"
    with monkeypatch.context() as m:  # the commit made in the training thread, at once
        m.setattr(commits_module.BackgroundCommits, "submit", lambda self, work, *args, **kwargs: work.commit(*args, **kwargs))
        train_run(SPEC, 5, meta, train, test, inline, tmp_path / "w-inline")

    steps, overlapped = [0], {}
    step, commit_state = torch.optim.SGD.step, WorkFolder.commit_state

    def counted_step(self, *args, **kwargs):
        steps[0] += 1
        return step(self, *args, **kwargs)

    def held_commit(self, epoch, *args, **kwargs):
        if epoch < SPEC.epochs:  # after the last epoch nothing trains: publishing waits for this commit
            start, deadline = steps[0], time.monotonic() + 60
            while steps[0] == start and time.monotonic() < deadline:
                time.sleep(0.005)
            overlapped[epoch] = steps[0] > start
        return commit_state(self, epoch, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", counted_step)
    monkeypatch.setattr(WorkFolder, "commit_state", held_commit)
    background = tmp_path / "background"
    train_run(SPEC, 5, meta, train, test, background, tmp_path / "w-background")
    assert overlapped == {epoch: True for epoch in range(SPEC.epochs)}
    same_run(inline, background)


def test_resume_points_come_every_resume_every_seconds_and_the_epochs_between_save_their_snapshot_only(
        data, tmp_path, monkeypatch):
    """On a clock that moves 100 s per look, with resume_every 150 s: epochs 0, 2, 4 and the last
    are resume points (every tensor; the momentum, but after the last epoch); 1 and 3 write their
    conv tensors only and no momentum.  The run equals one that saves its full state every epoch."""
    import convbias.runs.life as life

    meta, train, test = data
    spec = TrainSpec(**{**SPEC.__dict__, "epochs": 5})
    every = tmp_path / "every"
    train_run(spec, 5, meta, train, test, every, tmp_path / "w-every")  # resume_every 0: each epoch
    ticks, commits = iter(range(0, 10**6, 100)), []
    monkeypatch.setattr(life, "monotonic", lambda: next(ticks))
    commit_state = WorkFolder.commit_state

    def spied(self, epoch, weights, momentum, history, meta_, snapshots, resume):
        commits.append((epoch, resume, len(weights), bool(momentum)))
        return commit_state(self, epoch, weights, momentum, history, meta_, snapshots, resume)

    monkeypatch.setattr(WorkFolder, "commit_state", spied)
    budget = tmp_path / "budget"
    train_run(spec, 5, meta, train, test, budget, tmp_path / "w-budget", resume_every=150)
    full = len(load_weights(every / "epoch000.safetensors"))
    conv = 2 * len(RunFolder(every).conv_layers())
    assert commits == [(0, True, full, False), (1, False, conv, False), (2, True, full, True),
                       (3, False, conv, False), (4, True, full, True), (5, True, full, False)]
    same_run(every, budget, epochs=5)
    # under snapshots: full the epochs between resume points keep every tensor, still without momentum
    commits.clear()
    ticks = iter(range(0, 10**6, 100))
    train_run(TrainSpec(**{**spec.__dict__, "snapshots": "full"}), 5, meta, train, test, tmp_path / "full",
              tmp_path / "w-full", resume_every=150)
    assert commits == [(0, True, full, False), (1, False, full, False), (2, True, full, True),
                       (3, False, full, False), (4, True, full, True), (5, True, full, False)]


class Stop(Exception):
    pass


@pytest.mark.parametrize("rewritten", [False, True])
def test_a_run_stopped_after_snapshot_only_epochs_trains_them_again_from_its_resume_point(data, reference, tmp_path,
                                                                                          monkeypatch, capsys, rewritten):
    """resume_every longer than the run: only epoch 0 and the last are resume points.  Stopped
    once epoch 2 is committed, the folder holds epochs 1 and 2 as conv snapshots, no momentum, and
    records epoch 0 as where to resume; run again, it says so, trains 1 and 2 again and ends
    bit-identical to the uninterrupted run — also when epoch 2's file is not the one committed
    (``rewritten``: an attempt that trained it again, other bytes on a GPU, killed before its
    commit): the intact resume point is used, nothing is called damaged."""
    meta, train, test = data
    out, work = tmp_path / "run", tmp_path / "resume" / "exp" / "seed5"
    commit_state = WorkFolder.commit_state

    def stops_after_epoch_2(self, epoch, *args):
        commit_state(self, epoch, *args)
        if epoch == 2:
            raise Stop()

    with monkeypatch.context() as m:
        m.setattr(WorkFolder, "commit_state", stops_after_epoch_2)
        with pytest.raises(Stop):
            train_run(SPEC, 5, meta, train, test, out, work, resume_every=1e9)
    progress = json.loads((work / "progress.json").read_text())
    assert (progress["epoch"], progress["resume"]) == (2, 0) and [r["epoch"] for r in progress["history"]] == [0, 1, 2]
    assert sorted(p.name for p in work.glob("*.safetensors")) == [f"epoch{e:03d}.safetensors" for e in range(3)]
    assert [read_metadata(work / f"epoch{e:03d}.safetensors")["contents"] for e in range(3)] == ["full", "conv", "conv"]
    if rewritten:
        raw = bytearray((work / "epoch002.safetensors").read_bytes())
        raw[-1] ^= 1
        (work / "epoch002.safetensors").write_bytes(bytes(raw))
    capsys.readouterr()
    train_run(SPEC, 5, meta, train, test, out, work, resume_every=1e9)
    err = capsys.readouterr().err
    assert (f"resuming from epoch 0 saved in {work} (epochs 1–2 were committed without their full state: they "
            f"train again)") in err
    assert "epoch 1/3" in err and "epoch 3/3" in err and "damaged" not in err
    same_run(reference, out)


def test_background_commits_keep_two_in_flight_one_resume_state_at_most_and_stop_at_the_first_failure():
    """Submits return at once while fewer than two commits are in flight; a third, or a second
    resume state, waits for the oldest.  A failed commit makes the ones queued behind it not
    run, and the first error is the one raised."""
    import convbias.runs.commits as commits_module

    class Work:  # commit_state waits until the test lets epoch ``e`` through
        def __init__(self):
            self.gates, self.made = {e: threading.Event() for e in range(6)}, []

        def commit_state(self, epoch, weights, momentum, history, meta, snapshots, resume):
            assert self.gates[epoch].wait(30)
            if epoch == 3:
                raise OSError(errno.ENOSPC, "full")
            self.made.append((epoch, resume, sorted(weights), sorted(momentum)))

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 1, 4, 4)).sum().backward()
    optimizer.step()
    work, meta = Work(), {"conv_layers": ["0"]}

    def submit(epoch, resume, opens=None):  # ``opens``: the epoch whose commit the test lets through 0.2 s later
        if opens is not None:
            threading.Timer(0.2, work.gates[opens].set).start()
        commits.submit(work, epoch, model, optimizer, [], meta, "conv", resume=resume)
        return [made[0] for made in work.made]

    with pytest.raises(OSError, match="full"):
        with commits_module.BackgroundCommits() as commits:
            assert submit(0, True) == [] and submit(1, False) == []  # two in flight, neither made
            assert submit(2, False, opens=0) == [0]  # a third waits for the oldest
            assert submit(3, True, opens=1) == [0, 1]  # a resume state beside a snapshot: waits for two in flight only
            assert submit(4, False, opens=2) == [0, 1, 2]
            work.gates[3].set()  # epoch 3 fails: epoch 4, queued behind it, is not made
            work.gates[4].set()
            commits.wait()
    conv, everything = ["0.bias", "0.weight"], ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert work.made == [(0, True, everything, everything), (1, False, conv, []), (2, False, conv, [])]
    work = Work()
    with commits_module.BackgroundCommits() as commits:  # a second resume state waits for the one in flight
        work.gates[1].set()
        assert submit(0, True) == [] and submit(1, True, opens=0) == [0]


def test_background_commits_are_made_one_at_a_time_in_epoch_order():
    """A commit never starts before the one before it returned (two at once would race on the
    progress file).  Deterministic: the first commit holds until the second starts, or 2 s
    pass — a second writer thread would start it at once."""
    import convbias.runs.commits as commits_module

    class Work:
        def __init__(self):
            self.started, self.events = {e: threading.Event() for e in range(3)}, []

        def commit_state(self, epoch, *args):
            self.events.append(("start", epoch))
            self.started[epoch].set()
            if epoch == 0:
                self.started[1].wait(2)  # returns at once if epoch 1's commit has started meanwhile
            self.events.append(("end", epoch))

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    work = Work()
    with commits_module.BackgroundCommits() as commits:
        for epoch, resume in ((0, True), (1, False), (2, False)):
            commits.submit(work, epoch, model, optimizer, [], {"conv_layers": ["0"]}, "conv", resume=resume)
    assert work.events == [(what, e) for e in range(3) for what in ("start", "end")]


def test_a_full_disk_stops_training_with_one_sentence_and_the_run_resumes_once_there_is_space(data, reference, tmp_path):
    """The disk fills during the commit of epoch 2 (every later write fails, as on a full disk):
    the job stops with one sentence naming the folder, the space the run needs and the fix — no
    traceback — and, space freed, the same job resumes from epoch 1 and ends identical."""
    from convbias.runs import work as runs
    from convbias.resources import model_size, run_bytes
    from convbias.runs import DiskFull, amount

    meta, train, test = data
    out, work = tmp_path / "run", tmp_path / "resume" / "exp" / "seed5"
    full = [False]

    def fills(fn):
        def write(path, *args, **kwargs):
            if Path(path).name == "epoch002.safetensors":  # the disk is full from epoch 2's commit on
                full[0] = True
            if full[0]:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return fn(path, *args, **kwargs)
        return write

    patched = {name: getattr(runs, name) for name in ("save_weights", "atomic_write", "write_bytes")}
    for name, fn in patched.items():
        setattr(runs, name, fills(fn))
    try:
        with pytest.raises(SystemExit) as stop, stops_with_one_sentence():
            train_run(SPEC, 5, meta, train, test, out, work)
    finally:
        for name, fn in patched.items():
            setattr(runs, name, fn)
    message = str(stop.value.code)
    model = model_size(SPEC, 1, 10, 28)
    needed = run_bytes(SPEC, model) + model.state_bytes
    assert message.startswith(f"error: no space left on the disk of {work}: this run needs about {amount(needed)}")
    assert "resumes from the last epoch whose full state was saved" in message and "\n" not in message
    assert isinstance(DiskFull(None, 1, [work]), OSError)
    assert json.loads((work / "progress.json").read_text())["epoch"] == 1
    train_run(SPEC, 5, meta, train, test, out, work)
    same_run(reference, out)


def test_a_full_disk_error_naming_no_file_names_the_fuller_disk_and_sizes_a_small_run_in_kb(tmp_path, monkeypatch):
    """A write that fails naming no file (the kernel's copy while publishing to another disk): the
    sentence names the folder whose disk is full, not the other; small sizes are not "0 MB"."""
    from convbias.runs import DiskFull, amount

    work, out = tmp_path / "resume" / "exp" / "seed0", tmp_path / "runs" / "exp" / "seed0"
    work.mkdir(parents=True)
    out.mkdir(parents=True)  # publishing made it, then its first copy filled the disk
    (work / "epoch000.safetensors").write_bytes(b"x" * 3000)
    statvfs = os.statvfs
    monkeypatch.setattr(os, "statvfs", lambda p: type("S", (), {"f_bavail": 0 if "runs" in str(p) else 10**6,
                                                                "f_frsize": 4096})() if str(tmp_path) in str(p)
                        else statvfs(p))
    message = str(DiskFull(None, 420_000, [work, out]))
    assert message.startswith(f"no space left on the disk of {out}: this run needs about 420 kB there "
                              f"in all and has 3 kB of it written"), message
    assert (amount(2.5e9), amount(3.2e8), amount(999)) == ("2.5 GB", "320 MB", "1 kB")


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


def test_a_table_is_kept_when_only_file_times_changed_and_recomputed_when_its_inputs_or_code_did(reference, tmp_path,
                                                                                                   monkeypatch):
    """What filters and reinit jobs write: a table made from the same run (its manifest), parameters
    and code is kept — not rewritten, its file time now — and any change computes it again."""
    import convbias.harness

    out, calls = tmp_path / "tables" / "seed5.parquet", []

    def compute():
        calls.append(1)
        return pd.DataFrame({"epoch": [0, 1], "value": [0.5, float(len(calls))]})

    made = {"run": run_made_from(reference), "seed": 5}
    assert made["run"] == file_sha256(reference / "manifest.json") and run_made_from(tmp_path / "none") is None
    assert write_unless_kept(out, made, compute) is not None and len(calls) == 1
    written = out.read_bytes()
    os.utime(out, (1, 1))  # a copy with new times, or a touch, in the past here
    inode = out.stat().st_ino
    assert write_unless_kept(out, dict(reversed(list(made.items()))), compute) is None  # the same inputs
    assert len(calls) == 1 and out.read_bytes() == written and out.stat().st_ino == inode
    assert out.stat().st_mtime > time.time() - 60  # up to date for Snakemake from now on
    for changed in ({**made, "seed": 6}, {**made, "run": "another manifest"}, {**made, "epochs": 3}):
        count = len(calls)
        write_unless_kept(out, changed, compute)
        assert len(calls) == count + 1 and pd.read_parquet(out)["value"].iloc[-1] == len(calls)
        write_unless_kept(out, made, compute)  # back to the first inputs: computed again too
    count = len(calls)
    monkeypatch.setattr(convbias.harness, "code_digest", lambda: "other code")
    write_unless_kept(out, made, compute)
    assert len(calls) == count + 1
    write_unless_kept(out, {**made, "run": None}, compute)  # a run without a manifest: never kept
    write_unless_kept(out, {**made, "run": None}, compute)
    assert len(calls) == count + 3
    for other in (lambda: compute().to_parquet(out, index=False), lambda: out.write_bytes(b"not parquet")):
        other()  # a table of unknown inputs, an unreadable file: computed
        count = len(calls)
        write_unless_kept(out, made, compute)
        assert len(calls) == count + 1
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary file left


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


@pytest.mark.subprocess
def stopped_once_logged(command: list[str], log: Path, text: str) -> int:
    """Start ``command``, send it SIGTERM once ``log`` shows ``text`` (as Slurm stops a job); its exit status."""
    proc = subprocess.Popen(command)
    deadline = time.time() + 60
    while time.time() < deadline and text not in (log.read_text() if log.exists() else ""):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


def test_a_jobs_log_keeps_earlier_attempts_and_says_when_sigterm_stopped_it(tmp_path):
    """Snakemake deletes a rule's log before each rerun: a training job's log is a link to a hidden
    file beside it (one file system), so every attempt's lines stay — also after a later attempt
    that found nothing to train. An attempt stopped by SIGTERM (Slurm's time limit) says so in the
    log and still ends by that signal."""
    from convbias.harness import attempts_file

    log = tmp_path / "logs" / "seed0.log"
    child = ("import sys, time\nfrom convbias.harness import log_to\n"
             f"log_to([{str(log)!r}], keep_attempts=True)\nprint('attempt', sys.argv[1], flush=True)\n"
             "if sys.argv[1] == '2':\n    time.sleep(60)\n")
    assert subprocess.run([sys.executable, "-c", child, "1"], timeout=60).returncode == 0
    log.unlink()  # as Snakemake does before the job runs again
    assert stopped_once_logged([sys.executable, "-c", child, "2"], log, "attempt 2") == -signal.SIGTERM
    lines = log.read_text().splitlines()
    assert lines[:2] == ["attempt 1", "attempt 2"] and lines[2].startswith("stopped by SIGTERM"), lines
    log.unlink()
    assert subprocess.run([sys.executable, "-c", child, "3"], timeout=60).returncode == 0  # e.g. nothing to train
    assert log.read_text().splitlines() == lines + ["attempt 3"]
    assert attempts_file(log).parent == log.parent and attempts_file(log).samefile(log)


@pytest.mark.parametrize("in_flight", [True, False])
def test_sigterm_lets_the_epoch_commit_in_flight_finish_first(tmp_path, in_flight):
    """Commits are written in the background (convbias.runs.commits.BackgroundCommits): a job stopped by
    SIGTERM while one is in flight (here a commit slowed to 2 s) waits for it, says so, then ends by
    that signal; the folder holds that epoch, committed.  With none in flight (the commit long
    done) it says nothing about commits."""
    log, work = tmp_path / "job.log", tmp_path / "resume" / "exp" / "seed0"
    child = f"""
import time, torch
from convbias.harness import log_to
from convbias.runs.commits import BackgroundCommits
from convbias.runs.work import WorkFolder
log_to([{str(log)!r}])
commit_state = WorkFolder.commit_state
def slow(self, *args, **kwargs):
    time.sleep(2 if {in_flight} else 0)
    return commit_state(self, *args, **kwargs)
WorkFolder.commit_state = slow
model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
with BackgroundCommits() as commits:
    commits.submit(WorkFolder({str(work)!r}, "fingerprint"), 0, model, optimizer, [], {{"seed": 0, "conv_layers": ["0"]}}, "full")
    while not {in_flight} and not WorkFolder({str(work)!r}, "fingerprint").progress_file.exists():
        time.sleep(0.01)
    time.sleep(0 if {in_flight} else 0.2)
    print("submitted", flush=True)
    time.sleep(60)
"""
    assert stopped_once_logged([sys.executable, "-c", child], log, "submitted") == -signal.SIGTERM
    lines = log.read_text().splitlines()
    said = ["the epochs being committed were committed first"] if in_flight else []
    assert lines[:1 + len(said)] == ["submitted", *said], lines
    assert len(lines) == 2 + len(said) and lines[-1].startswith("stopped by SIGTERM"), lines
    assert WorkFolder(work, "fingerprint").last_epoch(clear=False) == 0
