"""A training run's life, as a training loop meets it: :class:`Run`.

    run = Run(out_dir, work_dir, fingerprint, epochs, ...)
    with run.open(disk_needed):                 # its lock, its background commits
        if run.published() is not None: ...      # published and intact already: nothing to train
        last, history = run.resume(model, optimizer, meta)   # (None, []): a fresh start
        run.commit(epoch, history)               # every epoch, while the next one trains
        run.publish(history, about)              # hard links and the manifest, last
    Run.forget(results)                          # the workflow's hooks, once its jobs have ended

Everything else — the work folder's checksums and cuts, the published marker, hard links, the
run's lock, the commit thread — is :class:`Run`'s own (:mod:`convbias.runs`), and so is the
policy of which epochs are resume points.  In a data-parallel run every process holds a
:class:`Run`; only process 0 writes or speaks, and the others wait for it where they must.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from .commits import BackgroundCommits
from .folder import RunFolder, replaced_because
from .locks import run_lock
from .work import WorkFolder, forget_published, publish

if TYPE_CHECKING:
    import pandas as pd
    import torch


def _finished(out_dir: str | Path) -> str:
    return (f"{out_dir} is this run, published and intact (manifest and checksums verified): nothing left to "
            f"train (to train it again, delete that folder)")


class Run:
    """One training run: the finished run's folder ``out_dir`` and its work folder ``work_dir``
    (:class:`WorkFolder`, of the run whose ``fingerprint`` it is), ``epochs`` long.

    Resume points — epochs whose full state (every tensor, SGD's momentum) is committed — are
    epoch 0, the last epoch, ``stop_after`` (for tests) and one every ``resume_every`` seconds
    (0: every epoch); the epochs between keep their snapshot only (policy ``snapshots``).
    ``rank``, ``world``: this process's place in a data-parallel run."""

    def __init__(self, out_dir: str | Path, work_dir: str | Path, fingerprint: str, epochs: int, *,
                 snapshots: str = "full", resume_every: float = 0, stop_after: int | None = None,
                 rank: int = 0, world: int = 1):
        self.out, self.work = Path(out_dir), WorkFolder(work_dir, fingerprint)
        self.epochs, self.snapshots, self.resume_every, self.stop_after = epochs, snapshots, resume_every, stop_after
        self.rank, self.world = rank, world
        self._commits: BackgroundCommits | None = None
        self._training: tuple | None = None  # (model, optimizer, metadata of every file): what a commit saves
        self._resumable_at = monotonic()  # when the last resume point was committed

    def say(self, message: str) -> None:
        """One line to the job's log (process 0 of a data-parallel run only), beside tqdm's bars."""
        if self.rank == 0:
            tqdm.write(message, file=sys.stderr)

    @contextlib.contextmanager
    def open(self, disk_needed: Callable[[], int]):
        """Hold the run: its lock (:func:`convbias.runs.locks.run_lock`: a second process waits,
        then continues from what this one left; a data-parallel run's launcher holds it for all its
        processes) and its background commits, finished before the lock is let go.  A full disk
        ends it with :class:`DiskFull`, which names the folder and ``disk_needed()`` bytes."""
        with contextlib.ExitStack() as stack:
            if self.world == 1:
                stack.enter_context(run_lock(self.work.path))
            self._commits = stack.enter_context(BackgroundCommits())
            try:
                yield self
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
                raise DiskFull(err.filename, disk_needed(), [self.work.path, self.out]) from None

    @staticmethod
    def finished(out_dir: str | Path, work_dir: str | Path, fingerprint: str) -> bool:
        """Whether the run of ``fingerprint`` is published and intact with no work folder beside it
        (saying so when it is): what a job may learn before it imports torch or reads the data —
        Snakemake reruns every training job whose run it finds touched or copied with new file
        times.  Safe without the run's lock: a process training any run in ``work_dir`` keeps its
        work folder until it has published.  Anything else: :meth:`open`, then :meth:`published`."""
        if Path(work_dir).exists() or replaced_because(Path(out_dir), fingerprint) is not None:
            return False
        tqdm.write(_finished(out_dir), file=sys.stderr)
        return True

    def published(self) -> pd.DataFrame | None:
        """The history of this run if it is published already and intact (manifest and checksums:
        by another process while this one waited for the lock, or before this job started —
        Snakemake reruns a job it saw killed, and with ``--forcerun``), else None."""
        replaced = replaced_because(self.out, self.work.fingerprint)
        if replaced is None:
            self.say(_finished(self.out))
            if self.rank == 0 and self.work.path.exists():
                shutil.rmtree(self.work.path)  # left by a publish killed after its manifest
            return RunFolder(self.out).history()
        if self.out.exists():
            self.say(f"{self.out} will be replaced when this run is published: {replaced}")
        return None

    def resume(self, model: torch.nn.Module, optimizer, meta: dict) -> tuple[int | None, list[dict]]:
        """Hold ``model`` and ``optimizer`` for the commits to come (each file records ``meta``) and
        load the resume point into them: (its epoch, the history up to it), or (None, []) when the
        run starts from epoch 0 — its work folder empty, or of another spec, or damaged (cleared,
        saying why)."""
        self._training = (model, optimizer, meta)
        if self.rank == 0:
            self.work.last_epoch(say=self.say)  # clears a folder of another spec, or a damaged one, before anyone reads it
        self._barrier()
        last = self.work.last_epoch(clear=False)
        if last is None:
            return None, []
        history = self.work.restore(last, model, optimizer)
        again = (f" (epochs {last + 1}–{self.work.committed} were committed without their full state: they train "
                 f"again)" if self.work.committed > last else "")
        self.say(f"resuming from epoch {last} saved in {self.work.path}{again}")
        return last, history

    def commit(self, epoch: int, history: list[dict], last: bool = False) -> None:
        """Commit ``epoch`` (its history rows so far) while the next epoch trains; ``last``: the
        run stops here (it diverged) — a resume point without momentum, as the final epoch is."""
        if self.rank == 0:
            now = monotonic()
            last = last or epoch == self.epochs
            resume = (last or epoch == 0 or (self.stop_after is not None and epoch >= self.stop_after)
                      or self.resume_every <= 0 or now - self._resumable_at >= self.resume_every)
            if resume:
                self._resumable_at = now
            model, optimizer, meta = self._training
            self._commits.submit(self.work, epoch, model, optimizer, history, meta, self.snapshots, resume=resume,
                                 momentum=not last)
        self._barrier()

    def wait(self) -> None:
        """Return once every epoch submitted is committed (the error of a failed commit is raised)."""
        self._commits.wait()

    def publish(self, history: list[dict], about: Callable[[], dict]) -> None:
        """Publish the run, its epochs up to the last row of ``history``, once they are committed:
        its files hard-linked into its folder and the manifest written last, recording its
        fingerprint and ``about()`` (what the run is, where it was computed)."""
        if self.rank == 0:
            self.wait()
            publish(self.work, self.out, history[-1]["epoch"], {"fingerprint": self.work.fingerprint, **about()})

    @staticmethod
    def forget(results: str | Path) -> list[Path]:
        """Drop the work folders of published, intact runs under ``results`` that no job works on
        (:func:`convbias.runs.work.forget_published`): the workflow's hooks, when no job of it runs."""
        return forget_published(Path(results))

    def _barrier(self) -> None:
        if self.world > 1:
            import torch.distributed  # pragma: no mutate (DDP only)

            torch.distributed.barrier()


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


class DataParallelFailed(RuntimeError):
    """A data-parallel run's processes failed (:func:`convbias.train.launch`); the message is one
    sentence: the failing process's own (a full disk, a damaged run), or its exit status."""


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


def provenance(device: torch.device, precision: str, processes: int, seconds: list[float]) -> dict:
    """Where and how a run was computed, for its manifest: the workflow's git commit, library
    versions, the device (a GPU's model, or the CPU's), the host's CPU model, precision, number of
    processes and the wall time of each epoch."""
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
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()  # pragma: no mutate
    return {"git_commit": commit, "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None,
            "versions": {p: version(p) for p in ("convbias", "torch", "torchvision", "ffcv", "numpy")},
            "python": platform.python_version(), "host": platform.node(), "device": f"{device.type}: {name}",
            "cpu": cpu_model(), "precision": precision, "processes": processes, "seconds_per_epoch": seconds[1:]}


def cpu_model() -> str:
    """This machine's CPU model as its maker names it (Linux: ``model name`` of ``/proc/cpuinfo``),
    else what Python knows of it (``platform.processor()``, at least the architecture)."""
    import platform

    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine()
