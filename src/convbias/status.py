"""``convbias status``: every run of a target at a glance, from what is on disk.

A run is ``done`` (its folder carries a manifest, and every file the size it records),
``damaged`` (its files do not match its manifest: the note says how and the fix), ``running`` (the process named in its lock
file is alive — or, when it runs on another host, its last commit is recent: within two epochs'
time; shown with epoch e/E, the last validation accuracy, and the time left at its mean epoch
time), ``interrupted`` (a work folder nobody works on: it resumes when its job runs again) or
``not started``.  A run whose train loss has stayed at ln C for its experiment's
``stall_epochs`` says so in its ``note`` (:func:`convbias.learning.stall_message`).
Snakemake cannot show this from outside a job; nothing here writes or locks.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path

import pandas as pd

from .config import Study
from .learning import stall_message
from .plan import target_figures
from .runs import RunDamaged, RunFolder, lock_file, lock_holder, seconds_left


def holder_alive(lock: Path) -> bool | None:
    """Whether the process named in run lock ``lock`` is alive: True/False when it ran on this
    host, None when it ran on another (a compute node) or the file names none."""
    pid, host = lock_holder(lock)
    if not pid.isdigit() or host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def run_status(experiment: str, seed: int, epochs: int, runs: Path, resume: Path, *, num_classes: int,
               stall_epochs: int) -> dict:
    """One row: the state of run (``experiment``, ``seed``) of ``epochs`` epochs, on ``num_classes``
    classes; a ``note`` when its train loss has been at ln C for ``stall_epochs`` epochs."""
    row = {"experiment": experiment, "seed": seed, "state": "not started", "epoch": 0, "epochs": epochs,
           "val_acc": math.nan, "test_acc": math.nan, "hours_left": math.nan, "note": ""}
    note = lambda history: stall_message(history, num_classes, stall_epochs) or ""  # noqa: E731
    finished = RunFolder(runs / experiment / f"seed{seed}")
    if finished.manifest() is not None:
        try:  # every file there at its manifest's size (instant); `convbias verify` also reads every checksum
            manifest = finished.verify(checksums=False)
        except RunDamaged as err:
            return {**row, "state": "damaged", "note": str(err)}
        history, stopped = finished.history(), manifest.get("stopped")  # as RunFolder.stopped reads it
        said = f"stopped at epoch {stopped['epoch']}: {stopped['why']}" if stopped else note(history.to_dict("records"))
        return {**row, "state": "done", "epoch": int(history["epoch"].max()),
                "val_acc": float(history["val_acc"].iloc[-1]), "test_acc": float(history["test_acc"].iloc[-1]),
                "hours_left": 0.0, "note": said}
    work = RunFolder(resume / experiment / f"seed{seed}")
    lock = lock_file(work.path)
    try:
        progress = json.loads(work.progress_file.read_text())
    except (OSError, ValueError):
        progress = None
    alive = holder_alive(lock) if lock.exists() else False
    if progress is None:
        return {**row, "state": "starting" if alive else "not started"}
    history, epoch = progress["history"], int(progress["epoch"])
    left = seconds_left(history, epochs)
    if alive is None:  # held on another host: running if it committed within two epochs' time (or an hour)
        per_epoch = left / (epochs - epoch) if epoch < epochs else math.nan
        age = time.time() - work.progress_file.stat().st_mtime
        alive = age < (3600 if math.isnan(per_epoch) else 2 * per_epoch + 600)
    resume = int(progress.get("resume", epoch))  # where a rerun continues from (its resume point)
    again = f"resumes from epoch {resume}" if not alive and resume < epoch else ""
    return {**row, "state": "running" if alive else "interrupted", "epoch": epoch,
            "val_acc": float(history[-1]["val_acc"]), "test_acc": float(history[-1]["test_acc"]),
            "hours_left": left / 3600, "note": "; ".join(filter(None, [note(history), again]))}


def status(study: Study, target: str = "all", runs: str | Path = "results/runs",
           resume: str | Path = "results/resume") -> pd.DataFrame:
    """One row per run (experiment, seed) that ``target`` trains."""
    experiments = sorted({e for f in target_figures(study, target) for e in study.figures[f].experiments or ()})
    from .resources import data_size

    def of(name, seed):
        exp = study.experiments[name]
        return run_status(name, seed, exp.train.epochs, Path(runs), Path(resume),
                          num_classes=data_size(study.datasets[exp.dataset]).classes, stall_epochs=exp.warn_after())

    rows = [of(name, seed) for name in experiments for seed in study.experiments[name].seeds]
    return pd.DataFrame(rows, columns=["experiment", "seed", "state", "epoch", "epochs", "val_acc", "test_acc",
                                       "hours_left", "note"])
