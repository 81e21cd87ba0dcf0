"""A run's folder: the one place that names its files, and a finished run read and checked.

A finished run (``results/runs/<experiment>/seed<s>/``) holds ``epoch{e:03d}.safetensors`` for
every epoch e = 0…E (0 is the initialization), ``history.parquet`` (one row per epoch) and
``manifest.json`` (its files' sizes and checksums, what the run is and where it was computed):
every job that reads a run checks the files it reads against it (:meth:`RunFolder.verify`).  How
a run in progress is written until it is published: :mod:`convbias.runs`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..checkpoints import file_sha256, read_metadata, weights_from_bytes

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


