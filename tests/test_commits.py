"""An epoch's commit leaves a work folder that resumes, bit-identical, from wherever training
stopped: a damaged work folder, a cut killed half-way, commits written while the next epoch trains,
resume points every resume_every seconds, and a full disk."""

import errno
import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from convbias.checkpoints import file_sha256, load_weights, read_metadata
from convbias.harness import stops_with_one_sentence
from convbias.runs import RunFolder
from convbias.runs.work import WorkFolder, forget_published
from convbias.specs import TrainSpec
from convbias.train import train_run
from runs_common import SPEC, data, reference, same_run  # noqa: F401 (fixtures)


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
