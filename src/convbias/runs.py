"""A training run's folder: the one place that names its files.

A finished run (``results/runs/<experiment>/seed<s>/``) holds ``epoch{e:03d}.safetensors`` for
every epoch e = 0…E (0 is the initialization) and ``history.parquet`` (one row per epoch).  A run
in progress (its work folder) holds the same files for the epochs it has committed, plus the
optimizer's momentum of the last one and ``progress.json``, which commits an epoch.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .checkpoints import read_metadata


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
