"""The training loop: SGD with the paper's schedules, a checkpoint every epoch, resume after a kill.

A run writes into a work folder as it goes — ``epoch{e:03d}.safetensors`` (epoch 0 is the
initialization), the optimizer's momentum of the last finished epoch, ``history.parquet`` and
``progress.json``, written last, which commits an epoch.  Started again with the same spec, a
run continues after the last committed epoch; with another spec it starts over.  When the last
epoch is committed the files are hard-linked into the output folder and the work folder is
removed, so Snakemake deleting a failed job's outputs never loses finished epochs.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoints import atomic_write, load_weights, save_weights
from .config import TrainSpec
from .data.ffcv_io import BatchTransform, DatasetMeta, make_loader
from .models import build_model, conv_layers, initialize

HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                   "seconds", "images_per_second"]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of everything random in one epoch of one run (dropout, shifts, flips)."""
    return seed * 100_003 + epoch


def init_model(spec: TrainSpec, meta: DatasetMeta, seed: int) -> torch.nn.Module:
    """The run's model at epoch 0: built and initialized on the CPU, so every device gets the same weights."""
    torch.manual_seed(seed)
    h, _, c = meta.shape
    model = build_model(spec.model, c, meta.num_classes, h)
    return initialize(model, spec.init, spec.init_std)


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` (a no-op for fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def evaluate(model: torch.nn.Module, loader, transform: BatchTransform, precision: str = "fp32") -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` over ``loader``."""
    model.eval()
    loss = correct = count = 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for x, y in loader:
            with autocast(device, precision):
                out = model(transform(x)).float()
            y = y.long()
            loss = loss + F.cross_entropy(out, y, reduction="sum")
            correct = correct + (out.argmax(1) == y).sum()
            count += len(y)
    return float(loss) / count, float(correct) / count


class _Work:
    """The work folder of a run: committed epochs, momentum and history, read back on resume."""

    def __init__(self, folder: Path, fingerprint: str):
        self.folder, self.fingerprint = folder, fingerprint
        self.progress = folder / "progress.json"

    def last_epoch(self) -> int | None:
        """The last committed epoch of a run with this spec, or None (a stale folder is cleared)."""
        if self.progress.exists():
            state = json.loads(self.progress.read_text())
            if state.get("fingerprint") == self.fingerprint:
                return int(state["epoch"])
        if self.folder.exists():
            shutil.rmtree(self.folder)
        return None

    def commit(self, epoch: int, model, optimizer, history: list[dict], meta: dict) -> None:
        save_weights(self.folder / f"epoch{epoch:03d}.safetensors", model.state_dict(), epoch=epoch, **meta)
        momentum = {name: optimizer.state[p]["momentum_buffer"] for name, p in model.named_parameters()
                    if optimizer.state.get(p, {}).get("momentum_buffer") is not None}
        if momentum:
            save_weights(self.folder / f"optimizer{epoch:03d}.safetensors", momentum)
        frame = pd.DataFrame(history, columns=HISTORY_COLUMNS)
        atomic_write(self.folder / "history.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
        state = json.dumps({"fingerprint": self.fingerprint, "epoch": epoch})
        atomic_write(self.progress, lambda tmp: tmp.write_text(state))
        for old in self.folder.glob("optimizer*.safetensors"):
            if old.name != f"optimizer{epoch:03d}.safetensors":
                old.unlink()

    def restore(self, epoch: int, model, optimizer) -> list[dict]:
        model.load_state_dict(load_weights(self.folder / f"epoch{epoch:03d}.safetensors"))
        opt_file = self.folder / f"optimizer{epoch:03d}.safetensors"
        if opt_file.exists():
            buffers = load_weights(opt_file)
            for name, p in model.named_parameters():
                if name in buffers:
                    optimizer.state[p]["momentum_buffer"] = buffers[name].to(p.device)
        history = pd.read_parquet(self.folder / "history.parquet")
        return history[history["epoch"] <= epoch].to_dict("records")

    def publish(self, out_dir: Path, epochs: int) -> None:
        """Hard-link the finished run into ``out_dir``, then drop the work folder."""
        out_dir.mkdir(parents=True, exist_ok=True)
        names = [f"epoch{e:03d}.safetensors" for e in range(epochs + 1)] + ["history.parquet"]
        for name in names:
            target = out_dir / name
            target.unlink(missing_ok=True)
            try:
                os.link(self.folder / name, target)
            except OSError:
                shutil.copy2(self.folder / name, target)
        shutil.rmtree(self.folder)


def train_run(spec: TrainSpec, seed: int, meta: DatasetMeta, train_file: str | Path, test_file: str | Path,
              out_dir: str | Path, work_dir: str | Path, device: str = "auto", threads: int = 1,
              stop_after: int | None = None) -> pd.DataFrame:
    """Train one seed of ``spec``; returns the history.  ``stop_after`` ends early (for tests)."""
    dev = resolve_device(device)
    torch.set_num_threads(max(1, threads))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    work = _Work(Path(work_dir), spec.fingerprint(seed=seed, data=meta.__dict__))
    # channels-last is faster on GPUs and, measured here, on CPUs too (~35% for small convs)
    model = init_model(spec, meta, seed).to(dev, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum,
                                weight_decay=spec.weight_decay)
    forward = torch.compile(model) if spec.compile else model  # shares the parameters of ``model``
    transform = BatchTransform(meta, dev, reuse_output=True)  # each batch is used before the next
    workers = max(1, threads)
    train_loader = make_loader(train_file, spec.batch_size, meta=meta, indices=meta.train_indices(), train=True,
                               seed=seed, workers=workers, device=dev)
    val_loader = make_loader(train_file, 512, meta=meta, indices=meta.val_indices(), workers=workers, device=dev)
    test_loader = make_loader(test_file, 512, meta=meta, workers=workers, device=dev)
    ckpt_meta = {"seed": seed, "conv_layers": [name for name, _ in conv_layers(model)]}

    def measure(epoch, lr, train_loss, train_acc, seconds, images):
        val_loss, val_acc = evaluate(forward, val_loader, transform, spec.precision)
        test_loss, test_acc = evaluate(forward, test_loader, transform, spec.precision)
        return {"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
                "seconds": seconds, "images_per_second": images / seconds if seconds else float("nan")}

    last = work.last_epoch()
    if last is None:
        history = [measure(0, float("nan"), float("nan"), float("nan"), 0.0, 0)]
        work.commit(0, model, optimizer, history, ckpt_meta)
        last = 0
    else:
        history = work.restore(last, model, optimizer)
        tqdm.write(f"resuming from epoch {last} saved in {work.folder}", file=sys.stderr)

    epochs = range(last + 1, spec.epochs + 1)
    for epoch in tqdm(epochs, desc=f"seed {seed}", unit="epoch", initial=last, total=spec.epochs):
        lr = spec.schedule.lr(spec.lr, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(epoch_seed(seed, epoch))
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        train_loader.next_epoch = epoch - 1
        forward.train()
        start, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
        for x, y in tqdm(train_loader, desc=f"epoch {epoch}", unit="batch", leave=False):
            x = transform(x, generator if spec.augment else None)
            y = y.long()
            with autocast(dev, spec.precision):
                out = forward(x).float()
            loss = F.cross_entropy(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum = loss_sum + loss.detach() * len(y)
            correct = correct + (out.detach().argmax(1) == y).sum()
            seen += len(y)
        seconds = time.perf_counter() - start
        history.append(measure(epoch, lr, float(loss_sum) / seen, float(correct) / seen, seconds, seen))
        work.commit(epoch, model, optimizer, history, ckpt_meta)
        if stop_after is not None and epoch >= stop_after:
            return pd.DataFrame(history, columns=HISTORY_COLUMNS)
    work.publish(Path(out_dir), spec.epochs)
    return pd.DataFrame(history, columns=HISTORY_COLUMNS)
