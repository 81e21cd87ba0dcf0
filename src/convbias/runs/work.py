"""A run in progress: its work folder, how an epoch is committed and read back, and publishing.

A run in progress (its work folder, ``results/resume/<experiment>/seed<s>/``) holds the weights
of the epochs it has committed, the optimizer's momentum of the last resume point and
``progress.json``, which commits an epoch: it holds the history so far and the checksum of every
file (written last, atomically).  What each epoch's file keeps: :mod:`convbias.runs.commits`.

The resume point is the last committed epoch whose full state (every tensor, and the
momentum) was written: every epoch by default, or — a run's ``resume_every`` seconds — only
once that many seconds have passed since the last one, so that a large model's epochs write
their snapshot only (VGG19: 80 MB of conv tensors instead of 1.1 GB of state).  A run resumes
from its resume point and trains the epochs after it again, bit-identical; resuming checks the
checksums the last commit recorded for what the resume point needs (a damaged work folder
starts over, saying so).

Publishing (:func:`publish`) hard-links the finished run into its folder
(:class:`convbias.runs.folder.RunFolder`) and writes its manifest last; the work folder stays,
marked ``published.json``, until the workflow has seen the job end (:func:`forget_published`): a
job killed at any moment loses no finished run.  Every file of a run is written here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd

from ..checkpoints import (atomic_write, file_sha256, load_weights, read_metadata, save_weights, weights_bytes,
                           write_bytes)
from .commits import commit_contents, commit_copies, layer_of
from .folder import HISTORY_COLUMNS, RunDamaged, RunFolder
from .locks import lock_file, unless_locked

PUBLISHED = "published.json"  # in a work folder: where its run was published


def epoch_of(name: str) -> int | None:
    """The epoch of a run's weights file name (``epoch007.safetensors`` → 7), else None."""
    stem = name.removesuffix(".safetensors")
    return int(stem[5:]) if stem.startswith("epoch") and stem[5:].isdigit() else None


class WorkFolder(RunFolder):
    """A run in progress: it commits epochs (weights and momentum, then the progress file, which
    holds the history) and reads them back on resume — only for the run whose ``fingerprint`` it
    was started with, and only if every file still has the checksum its commit recorded."""

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
            why, intact = damaged(self, state.get("files"), resume)
            if why is None:
                self.files, self.committed, self.resume_point = intact, int(state["epoch"]), resume
                return self.resume_point
        if why is not None and say is not None:
            say(f"{self.path}: {why}; starting this run over from epoch 0")
        if clear and self.path.exists():
            shutil.rmtree(self.path)
        self.files, self.resume_point, self.committed = {}, None, None
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
                cuts = self._cuts(epoch, [key for key in weights if layer_of(key) in layers])
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

    def _cuts(self, epoch: int, conv: list[str]) -> list[tuple[int, bytes]]:
        """The files of the epochs between 0 and ``epoch`` that still keep every tensor, cut to the
        tensors ``conv`` (bytes to write once the progress file is), each recorded with both checksums."""
        cuts = []
        for earlier in range(1, epoch):
            cut = conv_only(self.weights(earlier), conv)
            if cut is not None:
                cuts.append((earlier, cut))
                digests = self.files.setdefault(self.weights(earlier).name, [file_sha256(self.weights(earlier))])
                digests.append(hashlib.sha256(cut).hexdigest())
        return cuts

    def restore(self, epoch: int, model, optimizer) -> list[dict]:
        """Load epoch ``epoch`` (a resume point) into ``model`` and SGD's momentum into ``optimizer``;
        returns the history up to it."""
        import torch  # not at the top: the workflow's hooks read this module (forget_published)

        model.load_state_dict(load_weights(self.weights(epoch)))
        opt_file = self.momentum(epoch)
        if opt_file.exists():
            buffers = load_weights(opt_file)
            for name, p in model.named_parameters():
                if name in buffers:  # in the parameter's layout (channels-last): SGD keeps its multi-tensor path
                    optimizer.state[p]["momentum_buffer"] = torch.empty_like(p).copy_(buffers[name])
        rows = json.loads(self.progress_file.read_text())["history"]
        return [row for row in rows if row["epoch"] <= epoch]

    def published_run(self) -> RunFolder | None:
        """The run this work folder was published as, if it is there, intact (its files at their
        manifest's sizes) and made of this folder's files (the checksums its commits recorded); else None."""
        try:
            run = RunFolder(self.path / json.loads((self.path / PUBLISHED).read_text())["run"])
            progress = json.loads(self.progress_file.read_text())
            manifest = run.verify(checksums=False)
        except (OSError, ValueError, KeyError, TypeError, RunDamaged):
            return None
        if manifest.get("fingerprint") != progress.get("fingerprint"):
            return None
        recorded = progress.get("files", {})
        same = all(entry["sha256"] in recorded.get(name, [entry["sha256"]]) for name, entry in manifest["files"].items())
        return run if same else None


def damaged(work: WorkFolder, files: dict | None, resume: int) -> tuple[str | None, dict]:
    """Why the files of ``work`` that resume point ``resume`` needs do not have the checksums its
    last commit recorded (``files``), or None, with the checksums of the files as they are.  A file
    of an epoch after it may differ from the one committed — rewritten by an attempt that trained
    that epoch again (the same bytes on a CPU, not always on a GPU) and was killed before committing
    it —: that epoch trains again anyway."""
    if not files:
        return "its progress file records no checksums (written before they were kept)", {}
    actual = {}
    for name, digests in files.items():
        path = work.path / name
        digest = file_sha256(path) if path.is_file() else None
        if digest not in digests:
            if (epoch_of(name) or 0) > resume:
                continue
            return (f"{name} is missing" if digest is None else
                    f"{name} is damaged (its checksum differs from the one its commit recorded)"), {}
        actual[name] = [digest]
    return None, actual


def conv_only(path: Path, keys: list[str]) -> bytes | None:
    """The weights file ``path`` with only the tensors ``keys`` (an epoch's conv layers), as bytes to
    write; None if it keeps only those already."""
    meta = read_metadata(path)
    if meta.get("contents") != "full":
        return None
    return weights_bytes(load_weights(path, keys), **{**meta, "contents": "conv"})


def publish(work: WorkFolder, out_dir: Path, epochs: int, about: dict) -> None:
    """Hard-link the finished run of ``work`` into ``out_dir`` and write its manifest (the files' sizes and
    checksums, and ``about``: what the run is and where it was computed) last.  Only a run
    whose manifest is written counts as published.

    The work folder stays, saying where it was published (``published.json``): a job killed
    at any moment until it has exited is one Snakemake deletes the outputs of, and the run is
    then published again from it, not trained again.  :func:`forget_published` drops it once
    the workflow has seen the job end (a hard link: it costs no disk meanwhile)."""
    if out_dir.exists():  # what was there is not this run (see replaced_because): none of its files stays
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    frame = pd.DataFrame(json.loads(work.progress_file.read_text())["history"], columns=HISTORY_COLUMNS)
    work.files[RunFolder.HISTORY] = [write_bytes(work.history_file, frame.to_parquet(index=False))]
    files = {}
    for name in work.finished_files(epochs):
        target = out_dir / name
        target.unlink(missing_ok=True)
        try:
            os.link(work.path / name, target)
        except OSError:
            shutil.copy2(work.path / name, target)
        files[name] = {"bytes": target.stat().st_size, "sha256": work.files[name][-1]}
    manifest = json.dumps({"format": 1, "files": files, **about}, indent=1)
    where = json.dumps({"run": os.path.relpath(out_dir, work.path)})
    atomic_write(work.path / PUBLISHED, lambda tmp: tmp.write_text(where))
    atomic_write(out_dir / RunFolder.MANIFEST, lambda tmp: tmp.write_text(manifest + "\n"))


def forget_published(results: Path) -> list[Path]:
    """Drop the work folders under ``results/resume`` whose run is published and intact (see
    :func:`publish`) and that no process works on; returns them.  Called by the
    workflow when it starts and ends (``Snakefile``), when no job of it is running: after a job
    was killed, Snakemake has deleted its outputs by then, and such a folder is kept to publish again."""
    dropped = []
    for marker in sorted((Path(results) / "resume").glob(f"*/*/{PUBLISHED}")):
        work = WorkFolder(marker.parent, fingerprint="")
        with unless_locked(work.path) as held:
            if held and work.published_run() is not None:  # not held: a job (an orphan of a killed Snakemake) works on it
                shutil.rmtree(work.path)
                lock_file(work.path).unlink(missing_ok=True)
                dropped.append(work.path)
        with contextlib.suppress(OSError):
            work.path.parent.rmdir()  # the experiment's folder of work folders, once empty
    return dropped
