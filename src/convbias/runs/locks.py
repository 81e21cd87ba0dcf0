"""The locks around runs: one process at a time works on a run (:func:`run_lock`), one workflow
at a time on a results folder (:func:`hold_results_lock`).

A run's lock is a file beside its work folder (``<work_dir>.lock``) holding the PID and host of
its holder, for a process that waits for it and for ``convbias status``; ``flock`` holds it, so
it goes when its holder ends, however it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
from pathlib import Path


def lock_file(work_dir: Path) -> Path:
    """The run lock of the run whose work folder is ``work_dir``: a file beside it."""
    return work_dir.with_name(work_dir.name + ".lock")


def lock_holder(lock: Path) -> tuple[str, str]:
    """(PID, host) its holder wrote into run lock ``lock`` ("" where unknown)."""
    try:
        pid, _, host = lock.read_text(errors="replace").strip().partition(" ")
    except OSError:
        return "", ""
    return pid, host



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


@contextlib.contextmanager
def unless_locked(work_dir: Path):
    """Hold the lock of the run whose work folder is ``work_dir`` if no process holds it now: yields
    True while held, False (at once, without waiting) when another process works on the run."""
    fd = os.open(lock_file(work_dir), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
