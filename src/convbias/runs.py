"""A training run's folder: the one place that names its files.

A finished run (``results/runs/<experiment>/seed<s>/``) holds ``epoch{e:03d}.safetensors`` for
every epoch e = 0…E (0 is the initialization) and ``history.parquet`` (one row per epoch).  A run
in progress (its work folder) holds the weights of the epochs it has committed, the optimizer's
momentum of the last one and ``progress.json``, which commits an epoch: it holds the history so
far and the checksum of every file (written last, atomically).

What an epoch's file keeps is the run's snapshot policy: ``full`` — every tensor of the model;
``conv`` — the weight and bias of every conv layer (what the statistics and the
re-initialization sweep read), with the full state kept at epoch 0, at the final epoch and at
the resume point.  Each file says which in its metadata (``contents``).

The resume point is the last committed epoch whose full state (every tensor, and the
momentum) was written: every epoch by default, or — a run's ``resume_every`` seconds — only
once that many seconds have passed since the last one, so that a large model's epochs write
their snapshot only (VGG19: 80 MB of conv tensors instead of 1.1 GB of state).  A run resumes
from its resume point and trains the epochs after it again, bit-identical.

Integrity: resuming checks the checksums the last commit recorded (a damaged work folder starts over, saying so); a finished run carries
``manifest.json`` (its files' sizes and checksums, what the run is and where it was computed),
and every job that reads a run checks the files it reads against it (:meth:`RunFolder.verify`).
One process at a time works on a run: :func:`run_lock`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .checkpoints import (atomic_write, file_sha256, load_weights, read_metadata, save_weights, weights_bytes,
                          weights_from_bytes, write_bytes)

if TYPE_CHECKING:
    import torch

HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                   "seconds", "images_per_second"]


class RunFolder:
    """The files of one training run (finished or in progress) in folder ``path``."""

    HISTORY = "history.parquet"
    PROGRESS = "progress.json"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def weights(self, epoch: int) -> Path:
        """The weights (state dict and metadata) after ``epoch``; 0 is the initialization."""
        return self.path / f"epoch{epoch:03d}.safetensors"

    def momentum(self, epoch: int) -> Path:
        """The optimizer's momentum after ``epoch`` (kept for the last committed epoch only)."""
        return self.path / f"optimizer{epoch:03d}.safetensors"

    def momentum_files(self) -> list[Path]:
        return sorted(self.path.glob("optimizer*.safetensors"))

    @property
    def history_file(self) -> Path:
        return self.path / self.HISTORY

    @property
    def progress_file(self) -> Path:
        return self.path / self.PROGRESS

    def finished_files(self, epochs: int) -> list[str]:
        """The names of the files of a finished run of ``epochs`` epochs."""
        return [self.weights(e).name for e in range(epochs + 1)] + [self.HISTORY]

    def history(self) -> pd.DataFrame:
        return pd.read_parquet(self.history_file)

    def conv_layers(self) -> list[str] | None:
        """The conv layers' names in forward order, as training recorded them (the same in every epoch)."""
        return read_metadata(self.weights(0)).get("conv_layers")

    MANIFEST = "manifest.json"

    @property
    def manifest_file(self) -> Path:
        return self.path / self.MANIFEST

    def manifest(self) -> dict | None:
        """The finished run's manifest, or None (no run here, or one cut short before publishing ended)."""
        try:
            return json.loads(self.manifest_file.read_text())
        except (OSError, ValueError):
            return None

    def verify(self, names: Iterable[str] | None = None, checksums: bool = True) -> dict:
        """Check files ``names`` (default: all) of a finished run against its manifest — sizes,
        then (``checksums``) SHA-256 — and return the manifest; a damaged run raises :class:`RunDamaged`."""
        manifest = self._manifest_or_damaged()
        names = list(manifest["files"]) if names is None else list(names)
        for name in names:
            self._check(manifest, name)
        for name in names if checksums else ():
            self._check(manifest, name, file_sha256(self.path / name))
        return manifest

    def read_weights(self, epoch: int, keys: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Epoch ``epoch``'s tensors ``keys`` (default all) of a finished run, its file read once
        and checked against the manifest on the way (:class:`RunDamaged` if it does not match)."""
        name = self.weights(epoch).name
        manifest = self._manifest_or_damaged()
        self._check(manifest, name)
        data = (self.path / name).read_bytes()
        self._check(manifest, name, hashlib.sha256(data).hexdigest())
        return weights_from_bytes(data, keys, self.path / name)

    def _manifest_or_damaged(self) -> dict:
        manifest = self.manifest()
        if manifest is None:
            raise RunDamaged(self.path, f"has no readable {self.MANIFEST} (it was made before runs carried "
                                        f"one, or its publishing was cut short)")
        return manifest

    def _check(self, manifest: dict, name: str, sha256: str | None = None) -> None:
        """File ``name`` is in the manifest, present and of its size (and checksum ``sha256``, if given)."""
        files, path = manifest["files"], self.path / name
        if name not in files:
            raise RunDamaged(self.path, f"{name} is not in its manifest")
        if sha256 is not None:
            if sha256 != files[name]["sha256"]:
                raise RunDamaged(self.path, f"{name} does not match its manifest's checksum")
            return
        if not path.is_file():
            raise RunDamaged(self.path, f"{name} is missing")
        if path.stat().st_size != files[name]["bytes"]:
            raise RunDamaged(self.path, f"{name} has {path.stat().st_size} bytes, its manifest says "
                                        f"{files[name]['bytes']}")


class RunDamaged(Exception):
    """A finished run's files do not match its manifest: the message names the run and the fix."""

    def __init__(self, path: Path, what: str):
        super().__init__(f"run {path} is damaged: {what}; delete that folder and run snakemake again "
                         f"(it retrains this run only), or check all runs with `convbias verify`")
        self.path, self.what = path, what


def training_state(model, optimizer, layers: Iterable[str] | None = None, momentum: bool = True) -> tuple[dict, dict]:
    """Copies, in the host's memory, of ``model``'s tensors — only those of ``layers`` (module
    names) if given — and, if ``momentum``, of SGD's momentum buffers (by parameter name): what
    a commit writes, taken at once, so that training may go on (and change the tensors in place)
    while the copies are written."""
    import torch

    def copy(tensor):
        return tensor.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)

    kept = None if layers is None else set(layers)
    weights = {key: copy(value) for key, value in model.state_dict().items() if kept is None or layer_of(key) in kept}
    buffers = {name: copy(optimizer.state[p]["momentum_buffer"]) for name, p in model.named_parameters()
               if momentum and optimizer.state.get(p, {}).get("momentum_buffer") is not None}
    return weights, buffers


def epoch_of(name: str) -> int | None:
    """The epoch of a run's weights file name (``epoch007.safetensors`` → 7), else None."""
    stem = name.removesuffix(".safetensors")
    return int(stem[5:]) if stem.startswith("epoch") and stem[5:].isdigit() else None


def layer_of(key: str) -> str:
    """The module a state-dict key belongs to (``features.0.weight`` → ``features.0``)."""
    return key.rsplit(".", 1)[0]


def commit_contents(snapshots: str, resume: bool) -> str:
    """What the file of an epoch committed under snapshot policy ``snapshots`` keeps: ``full``
    at a resume point and under the ``full`` policy, else ``conv``."""
    return "full" if resume or snapshots == "full" else "conv"


def commit_copies(model, optimizer, meta: dict, snapshots: str, resume: bool, momentum: bool = True) -> tuple[dict, dict]:
    """What a commit of ``model``'s current state writes (:meth:`WorkFolder.commit_state`'s
    ``weights`` and ``momentum``), copied by :func:`training_state`: at a resume point every
    tensor and, if ``momentum``, SGD's buffers; else the tensors of the epoch's snapshot."""
    layers = None if commit_contents(snapshots, resume) == "full" else meta["conv_layers"]
    return training_state(model, optimizer, layers, momentum=resume and momentum)


class WorkFolder(RunFolder):
    """A run in progress: it commits epochs (weights and momentum, then the progress file, which
    holds the history)
    and reads them back on resume — only for the run whose ``fingerprint`` it was started with,
    and only if every file still has the checksum its commit recorded."""

    def __init__(self, path: str | Path, fingerprint: str):
        super().__init__(path)
        self.fingerprint = fingerprint
        self.files: dict[str, list[str]] = {}  # name → SHA-256s it may have (two while a cut is pending)
        self.resume_point: int | None = None  # the last committed epoch with its full state
        self.committed: int | None = None  # the last committed epoch (the resume point or after it)

    def last_epoch(self, clear: bool = True, say=None) -> int | None:
        """The resume point of a run with this spec whose files are intact — the last committed
        epoch whose full state was written (see :meth:`commit_state`) —, or None; a folder of
        another spec, an unreadable or a damaged one is cleared (why: one line to ``say``)."""
        state, why = None, None
        if self.progress_file.exists():
            try:
                state = json.loads(self.progress_file.read_text())
                why = "its epochs are of another configuration (spec, seed or data)"
            except ValueError:
                state, why = {}, "its progress file is unreadable (cut short: the disk filled or failed)"
        elif self.path.exists() and any(self.path.iterdir()):
            why = "it has files but no progress file"
        if state is not None and state.get("fingerprint") == self.fingerprint:
            resume = int(state.get("resume", state["epoch"]))  # every epoch, before resume points
            why = self._damaged(state.get("files"), resume)
            if why is None:
                self.committed, self.resume_point = int(state["epoch"]), resume
                return self.resume_point
        if why is not None and say is not None:
            say(f"{self.path}: {why}; starting this run over from epoch 0")
        if clear and self.path.exists():
            shutil.rmtree(self.path)
        self.files, self.resume_point, self.committed = {}, None, None
        return None

    def _damaged(self, files: dict | None, resume: int) -> str | None:
        """Why the files that resume point ``resume`` needs are not intact, or None (and
        ``self.files`` = their checksums).  A file of an epoch after it may differ from the one
        committed — rewritten by an attempt that trained that epoch again (the same bytes on a CPU,
        not always on a GPU) and was killed before committing it —: that epoch trains again anyway."""
        if not files:
            return "its progress file records no checksums (written before they were kept)"
        actual = {}
        for name, digests in files.items():
            path = self.path / name
            digest = file_sha256(path) if path.is_file() else None
            if digest not in digests:
                if (epoch_of(name) or 0) > resume:
                    continue
                return (f"{name} is missing" if digest is None else
                        f"{name} is damaged (its checksum differs from the one its commit recorded)")
            actual[name] = [digest]
        self.files = actual
        return None

    def commit(self, epoch: int, model, optimizer, history: list[dict], meta: dict, snapshots: str = "full",
               resume: bool = True, momentum: bool = True) -> None:
        """Write epoch ``epoch`` and commit it: :meth:`commit_state` of :func:`commit_copies` now."""
        self.commit_state(epoch, *commit_copies(model, optimizer, meta, snapshots, resume, momentum), history, meta,
                          snapshots, resume)

    def commit_state(self, epoch: int, weights: dict, momentum: dict, history: list[dict], meta: dict,
                     snapshots: str = "full", resume: bool = True) -> None:
        """Write epoch ``epoch``'s ``weights`` and ``momentum`` (from :func:`training_state`), then
        commit it.  Reads nothing of the model: it may run in another thread while the next epoch
        trains (``convbias.train``), one commit at a time.

        ``resume``: the epoch becomes the resume point — ``weights`` are every tensor, ``momentum``
        SGD's buffers (none after the final epoch: nothing trains after it); the momentum of the
        resume point before it is dropped and, under the ``conv`` snapshot policy, the epochs
        before it (but 0) keep only their conv layers' tensors.  Else ``weights`` are the epoch's
        snapshot (:func:`commit_contents`: under ``conv`` its conv tensors only) and the resume
        point stays where it was: a run killed later trains this epoch again.

        The progress file, written last, commits the epoch together with the resume point and the
        checksum of every file of the run; a cut still to be made is recorded with both
        checksums, so a commit killed at any point leaves a folder that resumes."""
        if not resume and self.resume_point is None:
            raise ValueError(f"epoch {epoch} of {self.path} would be committed with no resume point before it: "
                             f"a run's first commit writes its full state")
        name = self.weights(epoch).name
        self.files[name] = [save_weights(self.weights(epoch), weights, epoch=epoch,
                                         contents=commit_contents(snapshots, resume), **meta)]
        cuts = []
        if resume:
            for old in self.momentum_files():
                self.files.pop(old.name, None)
            if momentum:
                self.files[self.momentum(epoch).name] = [save_weights(self.momentum(epoch), momentum)]
            if snapshots == "conv":  # every earlier full file, also one a killed commit left behind
                layers = set(meta["conv_layers"])
                conv = [key for key in weights if layer_of(key) in layers]
                for earlier in range(1, epoch):
                    cut = self.cut(earlier, conv)
                    if cut is not None:
                        cuts.append((earlier, cut))
                        digests = self.files.setdefault(self.weights(earlier).name, [file_sha256(self.weights(earlier))])
                        digests.append(hashlib.sha256(cut).hexdigest())
            self.resume_point = epoch
        self.committed = epoch
        rows = pd.DataFrame(history, columns=HISTORY_COLUMNS).to_dict("records")  # the history commits with the epoch
        state = json.dumps({"fingerprint": self.fingerprint, "epoch": epoch, "resume": self.resume_point,
                            "files": self.files, "history": rows})
        atomic_write(self.progress_file, lambda tmp: tmp.write_text(state))
        for earlier, cut in cuts:
            self.files[self.weights(earlier).name] = [write_bytes(self.weights(earlier), cut)]
        for old in self.momentum_files() if resume else ():
            if old != self.momentum(epoch):
                old.unlink()

    def cut(self, epoch: int, keys: list[str]) -> bytes | None:
        """Epoch ``epoch``'s file with only the tensors ``keys``, as bytes to write; None if it
        keeps only those already."""
        path = self.weights(epoch)
        meta = read_metadata(path)
        if meta.get("contents") != "full":
            return None
        return weights_bytes(load_weights(path, keys), **{**meta, "contents": "conv"})

    def restore(self, epoch: int, model, optimizer) -> list[dict]:
        import torch

        model.load_state_dict(load_weights(self.weights(epoch)))
        opt_file = self.momentum(epoch)
        if opt_file.exists():
            buffers = load_weights(opt_file)
            for name, p in model.named_parameters():
                if name in buffers:  # in the parameter's layout (channels-last): SGD keeps its multi-tensor path
                    optimizer.state[p]["momentum_buffer"] = torch.empty_like(p).copy_(buffers[name])
        rows = json.loads(self.progress_file.read_text())["history"]
        return [row for row in rows if row["epoch"] <= epoch]

    PUBLISHED = "published.json"

    def publish(self, out_dir: Path, epochs: int, about: dict) -> None:
        """Hard-link the finished run into ``out_dir`` and write its manifest (the files' sizes and
        checksums, and ``about``: what the run is and where it was computed) last.  Only a run
        whose manifest is written counts as published.

        The work folder stays, saying where it was published (``published.json``): a job killed
        at any moment until it has exited is one Snakemake deletes the outputs of, and the run is
        then published again from it, not trained again.  :func:`forget_published` drops it once
        the workflow has seen the job end (a hard link: it costs no disk meanwhile)."""
        if out_dir.exists():  # what was there is not this run (see replaced_because): none of its files stays
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        frame = pd.DataFrame(json.loads(self.progress_file.read_text())["history"], columns=HISTORY_COLUMNS)
        self.files[self.HISTORY] = [write_bytes(self.history_file, frame.to_parquet(index=False))]
        files = {}
        for name in self.finished_files(epochs):
            target = out_dir / name
            target.unlink(missing_ok=True)
            try:
                os.link(self.path / name, target)
            except OSError:
                shutil.copy2(self.path / name, target)
            files[name] = {"bytes": target.stat().st_size, "sha256": self.files[name][-1]}
        manifest = json.dumps({"format": 1, "files": files, **about}, indent=1)
        where = json.dumps({"run": os.path.relpath(out_dir, self.path)})
        atomic_write(self.path / self.PUBLISHED, lambda tmp: tmp.write_text(where))
        atomic_write(out_dir / self.MANIFEST, lambda tmp: tmp.write_text(manifest + "\n"))

    def published_run(self) -> RunFolder | None:
        """The run this work folder was published as, if it is there, intact (its files at their
        manifest's sizes) and made of this folder's files (the checksums its commits recorded); else None."""
        try:
            run = RunFolder(self.path / json.loads((self.path / self.PUBLISHED).read_text())["run"])
            progress = json.loads(self.progress_file.read_text())
            manifest = run.verify(checksums=False)
        except (OSError, ValueError, KeyError, TypeError, RunDamaged):
            return None
        if manifest.get("fingerprint") != progress.get("fingerprint"):
            return None
        recorded = progress.get("files", {})
        same = all(entry["sha256"] in recorded.get(name, [entry["sha256"]]) for name, entry in manifest["files"].items())
        return run if same else None


def forget_published(results: Path) -> list[Path]:
    """Drop the work folders under ``results/resume`` whose run is published and intact (see
    :meth:`WorkFolder.publish`) and that no process works on; returns them.  Called by the
    workflow when it starts and ends (``Snakefile``), when no job of it is running: after a job
    was killed, Snakemake has deleted its outputs by then, and such a folder is kept to publish again."""
    dropped = []
    for marker in sorted((Path(results) / "resume").glob(f"*/*/{WorkFolder.PUBLISHED}")):
        work = WorkFolder(marker.parent, fingerprint="")
        lock = lock_file(work.path)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a job (an orphan of a killed Snakemake) works on it
            os.close(fd)
            continue
        try:
            if work.published_run() is not None:
                shutil.rmtree(work.path)
                lock.unlink(missing_ok=True)
                dropped.append(work.path)
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            work.path.parent.rmdir()  # the experiment's folder of work folders, once empty
    return dropped


def lock_file(work_dir: Path) -> Path:
    """The run lock of the run whose work folder is ``work_dir``: a file beside it."""
    return work_dir.with_name(work_dir.name + ".lock")


class DiskFull(OSError):
    """A training run's disk filled up: one sentence naming the folder, the space the run needs
    and the fix.  What was committed stays intact (the commit protocol of :class:`WorkFolder`).

    ``filename``: the file whose write failed, if the error named one; else the full folder is the
    one of ``folders`` (the work folder, the run's folder) whose disk has the least space left."""

    def __init__(self, filename: str | None, needed: int, folders: list[Path]):
        folder = Path(filename).parent if filename else min(folders, key=_space_left)
        files = {p.stat().st_ino: p.stat().st_size for f in folders if f.is_dir() for p in f.iterdir() if p.is_file()}
        written = sum(files.values())  # once each: a publishing run's files are in both folders
        super().__init__(errno.ENOSPC, f"no space left on the disk of {folder}: this run needs about "
                         f"{amount(needed)} there in all and has {amount(written)} of it written; free "
                         f"at least the difference there (or put results/ on a bigger disk) and run snakemake "
                         f"again: it resumes from the last epoch whose full state was saved")

    def __str__(self) -> str:
        return self.strerror


def amount(size: float) -> str:
    """``size`` bytes for a person: ``1.2 GB``, ``312 MB``, ``84 kB``."""
    if size >= 1e9:
        return f"{size / 1e9:,.1f} GB"
    return f"{size / 1e6:,.0f} MB" if size >= 1e6 else f"{size / 1e3:,.0f} kB"


def _space_left(folder: Path) -> int:
    """Bytes free on the disk of ``folder`` (or of its nearest existing parent)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


class DataParallelFailed(RuntimeError):
    """A data-parallel run's processes failed (:func:`convbias.train.launch`); the message is one
    sentence: the failing process's own (a full disk, a damaged run), or its exit status."""


def lock_holder(lock: Path) -> tuple[str, str]:
    """(PID, host) its holder wrote into run lock ``lock`` ("" where unknown)."""
    try:
        pid, _, host = lock.read_text(errors="replace").strip().partition(" ")
    except OSError:
        return "", ""
    return pid, host


def seconds_left(history: list[dict], epochs: int) -> float:
    """Seconds a run whose ``history`` rows end at some epoch needs for the rest of its ``epochs``,
    at its mean epoch time so far (NaN before its first trained epoch)."""
    timed = [row["seconds"] for row in history if row["epoch"] > 0]
    return (epochs - history[-1]["epoch"]) * sum(timed) / len(timed) if timed else float("nan")


def replaced_because(out_dir: Path, fingerprint: str) -> str | None:
    """Why the folder ``out_dir`` is not the intact published run of ``fingerprint`` (so that a
    job training that run replaces it when it publishes), or None when it is: its manifest names
    ``fingerprint`` and every file has the size and checksum the manifest records.  A published
    run is never trained again by accident, whatever Snakemake decided (an incomplete marker left
    by a killed Snakemake, ``--forcerun``): only deleting its folder, or changing what it is, does."""
    run = RunFolder(out_dir)
    manifest = run.manifest()
    if manifest is None:
        return "it has no readable manifest (its publishing was cut short)" if out_dir.exists() else "it does not exist"
    if manifest.get("fingerprint") != fingerprint:
        return "it is a run of another configuration (spec, seed or data)"
    try:
        run.verify()
    except RunDamaged as err:
        return err.what
    return None


_RESULTS_LOCKS: list[int] = []  # file descriptors held until this process ends


def hold_results_lock(results: Path) -> None:
    """Hold, until this process ends, the lock of the folder ``results`` (``results/.workflow.lock``,
    holding the PID, host and working folder of its holder).  Snakemake locks its working folder,
    not the outputs' folder: two checkouts whose ``results`` is one folder (a symlink to a big
    disk) would otherwise run the same jobs at once and delete each other's files.  A second
    workflow raises :class:`ResultsBusy`; the lock goes when its holder ends, however it ends."""
    results.mkdir(parents=True, exist_ok=True)
    lock = results / ".workflow.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by the jobs this process starts
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").split(" ", 2)
        os.close(fd)
        pid, host, where = (holder + ["?", "?", "?"])[:3]
        raise ResultsBusy(f"another Snakemake (PID {pid} on {host}, working in {where}) is running on {results.resolve()}: "
                          f"wait until it ends, or give this checkout a results folder of its own") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {os.getcwd()}".encode(), 0)
    _RESULTS_LOCKS.append(fd)


class ResultsBusy(Exception):
    """Another workflow holds the lock of the results folder (:func:`hold_results_lock`)."""


@contextlib.contextmanager
def run_lock(work_dir: Path, say=None):
    """Hold the exclusive lock of the run whose work folder is ``work_dir`` (a file beside it:
    ``<work_dir>.lock``, holding the PID and host of its holder).  A second process waits — saying which
    PID it waits for — and then continues from what the first left.  On leaving, a run whose work
    folder is gone (published) removes its lock file, and the folder holding both if now empty."""
    lock = lock_file(work_dir)
    while True:
        lock.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # a finishing holder removed the empty folder just now
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, host = lock_holder(lock)
            (say or _stderr)(f"waiting for process {pid or '?'}{f' on {host}' if host else ''}, which is working "
                             f"on this run ({lock}); this one continues from what that one leaves")
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break  # still the lock file of the run (a finished holder removes it)
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}".encode(), 0)  # who holds it: for waiters and `convbias status`
        yield
    finally:
        if not work_dir.exists():
            lock.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                lock.parent.rmdir()  # the experiment's folder of work folders, once empty
        os.close(fd)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
