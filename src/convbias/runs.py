"""A training run's folder: the one place that names its files.

A finished run (``results/runs/<experiment>/seed<s>/``) holds ``epoch{e:03d}.safetensors`` for
every epoch e = 0…E (0 is the initialization) and ``history.parquet`` (one row per epoch).  A run
in progress (its work folder) holds the same files for the epochs it has committed, plus the
optimizer's momentum of the last one and ``progress.json``, which commits an epoch.

What an epoch's file keeps is the run's snapshot policy: ``full`` — every tensor of the model;
``conv`` — the weight and bias of every conv layer (what the statistics and the
re-initialization sweep read), with the full state kept at epoch 0, at the final epoch and at
the last committed epoch (the resume point).  Each file says which in its metadata (``contents``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import torch

from .checkpoints import atomic_write, load_weights, read_metadata, save_weights

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


class WorkFolder(RunFolder):
    """A run in progress: it commits epochs (weights, momentum, history, then the progress file)
    and reads them back on resume — only for the run whose ``fingerprint`` it was started with."""

    def __init__(self, path: str | Path, fingerprint: str):
        super().__init__(path)
        self.fingerprint = fingerprint

    def last_epoch(self, clear: bool = True) -> int | None:
        """The last committed epoch of a run with this spec, or None (a stale folder is cleared)."""
        if self.progress_file.exists():
            state = json.loads(self.progress_file.read_text())
            if state.get("fingerprint") == self.fingerprint:
                return int(state["epoch"])
        if clear and self.path.exists():
            shutil.rmtree(self.path)
        return None

    def commit(self, epoch: int, model, optimizer, history: list[dict], meta: dict, snapshots: str = "full") -> None:
        """Write epoch ``epoch`` (the full state), then commit it; under the ``conv`` snapshot
        policy the epochs before it (but 0) then keep only their conv layers' tensors."""
        save_weights(self.weights(epoch), model.state_dict(), epoch=epoch, contents="full", **meta)
        momentum = {name: optimizer.state[p]["momentum_buffer"] for name, p in model.named_parameters()
                    if optimizer.state.get(p, {}).get("momentum_buffer") is not None}
        if momentum:
            save_weights(self.momentum(epoch), momentum)
        frame = pd.DataFrame(history, columns=HISTORY_COLUMNS)
        atomic_write(self.history_file, lambda tmp: frame.to_parquet(tmp, index=False))
        state = json.dumps({"fingerprint": self.fingerprint, "epoch": epoch})
        atomic_write(self.progress_file, lambda tmp: tmp.write_text(state))
        for old in self.momentum_files():
            if old != self.momentum(epoch):
                old.unlink()
        if snapshots == "conv":  # every earlier full file, also one a killed commit left behind
            layers = set(meta["conv_layers"])
            conv = [key for key in model.state_dict() if key.rsplit(".", 1)[0] in layers]
            for earlier in range(1, epoch):
                self.keep_only(earlier, conv)

    def keep_only(self, epoch: int, keys: list[str]) -> None:
        """Rewrite epoch ``epoch``'s full file with only the tensors ``keys`` (atomically)."""
        path = self.weights(epoch)
        meta = read_metadata(path)
        if meta.get("contents") == "full":
            save_weights(path, load_weights(path, keys), **{**meta, "contents": "conv"})

    def restore(self, epoch: int, model, optimizer) -> list[dict]:
        model.load_state_dict(load_weights(self.weights(epoch)))
        opt_file = self.momentum(epoch)
        if opt_file.exists():
            buffers = load_weights(opt_file)
            for name, p in model.named_parameters():
                if name in buffers:  # in the parameter's layout (channels-last): SGD keeps its multi-tensor path
                    optimizer.state[p]["momentum_buffer"] = torch.empty_like(p).copy_(buffers[name])
        history = self.history()
        return history[history["epoch"] <= epoch].to_dict("records")

    def publish(self, out_dir: Path, epochs: int) -> None:
        """Hard-link the finished run into ``out_dir``, then drop the work folder."""
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in self.finished_files(epochs):
            target = out_dir / name
            target.unlink(missing_ok=True)
            try:
                os.link(self.path / name, target)
            except OSError:
                shutil.copy2(self.path / name, target)
        shutil.rmtree(self.path)
