"""A training run's folder: the one place that names its files, and the locks around runs.

A finished run (``results/runs/<experiment>/seed<s>/``) holds ``epoch{e:03d}.safetensors`` for
every epoch e = 0…E (0 is the initialization), ``history.parquet`` (one row per epoch) and
``manifest.json`` (its files' sizes and checksums, what the run is and where it was computed):
every job that reads a run checks the files it reads against it (:meth:`RunFolder.verify`).  How
a run in progress is written and committed until it is published: :mod:`convbias.commits`.

One process at a time works on a run (:func:`run_lock`), one workflow at a time on a results
folder (:func:`hold_results_lock`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .checkpoints import file_sha256, read_metadata, weights_from_bytes

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

    def stopped(self) -> dict | None:
        """``{"epoch": e, "why": …}`` for a finished run that stopped before its last epoch (it
        diverged: :func:`convbias.train.diverged`; its files end at epoch e), else None."""
        return (self.manifest() or {}).get("stopped")

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


def provenance(device: torch.device, precision: str, processes: int, seconds: list[float]) -> dict:
    """Where and how a run was computed, for its manifest: the workflow's git commit, library
    versions, the device, precision, number of processes and the wall time of each epoch."""
    import importlib.metadata
    import platform
    import subprocess

    import torch

    def version(package):
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    def git(*args):
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())  # pragma: no mutate
    return {"git_commit": commit, "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None,
            "versions": {p: version(p) for p in ("convbias", "torch", "torchvision", "ffcv", "numpy")},
            "python": platform.python_version(), "host": platform.node(), "device": f"{device.type}: {name}",
            "precision": precision, "processes": processes, "seconds_per_epoch": seconds[1:]}
