"""FFCV: write datasets to .beton files and load them, with augmentation and pixel scaling in torch.

Images are stored raw as uint8 ``NDArrayField`` of shape (H, W, C) — grayscale stays one
channel.  The loaders return uint8 NHWC batches; :class:`BatchTransform` then shifts, flips
and scales them on the batch's device with an explicit generator, so that a seed and an epoch
fix every random choice (FFCV's own random augmentations are not reproducible).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PIXEL_RANGES = ("standardize", "minus_one_one", "unit")


class _Pairs:
    """An indexable (image, label) dataset over arrays, as FFCV's writer wants."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def write_beton(path: str | Path, images: np.ndarray, labels: np.ndarray, workers: int = 1) -> None:
    """Write uint8 (N, H, W, C) images, raw, and integer labels to an FFCV file, atomically."""
    from ffcv.fields import NDArrayField

    field = NDArrayField(dtype=np.dtype("uint8"), shape=tuple(images.shape[1:]))
    write_samples(path, _Pairs(np.ascontiguousarray(images, dtype=np.uint8), labels), field, workers)


def write_samples(path: str | Path, samples, image_field, workers: int = 1) -> None:
    """Write an indexable of (image, label) pairs with ``image_field`` to an FFCV file, atomically."""
    from ffcv.fields import IntField
    from ffcv.writer import DatasetWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fields = {"image": image_field, "label": IntField()}
    DatasetWriter(str(tmp), fields, num_workers=max(1, workers)).from_indexed_dataset(samples)
    os.replace(tmp, path)


@dataclass(frozen=True)
class DatasetMeta:
    """What a converted dataset is: shape, classes, split and pixel scaling (``meta.json``)."""

    name: str
    num_classes: int
    shape: tuple[int, int, int]  # H, W, C
    n_train: int
    n_test: int
    val_fraction: float
    split_seed: int
    hflip: bool
    pixel_range: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    encoding: str = "raw"  # raw: NDArrayField of shape ``shape``; jpeg: RGBImageField cropped to ``shape``
    fingerprint: str = ""  # of the dataset's identity (config.dataset_fingerprint): source, variants, seeds

    @classmethod
    def load(cls, path: str | Path) -> "DatasetMeta":
        data = json.loads(Path(path).read_text())
        return cls(**{**data, "shape": tuple(data["shape"]), "mean": tuple(data["mean"]), "std": tuple(data["std"])})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.__dict__, indent=2) + "\n")

    def normalization(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (mean, std) in [0, 255] units that map pixels to the configured range."""
        c = self.shape[2]
        if self.pixel_range == "standardize":
            return np.array(self.mean), np.array(self.std)
        if self.pixel_range == "minus_one_one":
            return np.full(c, 127.5), np.full(c, 127.5)
        if self.pixel_range == "unit":
            return np.zeros(c), np.full(c, 255.0)
        raise ValueError(f"unknown pixel_range {self.pixel_range!r}; use one of {PIXEL_RANGES}")

    def train_indices(self) -> np.ndarray:
        from .variants import train_indices

        return train_indices(self.n_train, self.val_fraction, self.split_seed)

    def val_indices(self) -> np.ndarray:
        from .variants import validation_indices

        return validation_indices(self.n_train, self.val_fraction, self.split_seed)


def shard_sizes(n: int, world: int) -> list[int]:
    """How a batch of ``n`` images is split over ``world`` processes (contiguous, sizes differ by ≤ 1)."""
    return [len(part) for part in np.array_split(np.arange(n), world)]


def global_batches(n: int, batch_size: int, world: int = 1) -> list[int]:
    """The sizes of one epoch's global batches; a last batch smaller than ``world`` is dropped."""
    sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
    return sizes[:-1] if sizes and sizes[-1] < world else sizes


def _sharded_order():
    """FFCV's random order, cut into per-process shards of every global batch.

    Process r of W gets the r-th contiguous part of each global batch of the single-process
    order, so the W processes together see exactly the batches one process would see, and the
    global batch size stays the configured one.  (FFCV's own ``distributed=True`` uses PyTorch's
    ``DistributedSampler``, whose order depends on W.)
    """
    from ffcv.traversal_order import Random

    class ShardedRandom(Random):
        def __init__(self, loader, global_batch: int, rank: int, world: int):
            super().__init__(loader)
            self.global_batch, self.rank, self.world = global_batch, rank, world

        def sample_order(self, epoch: int):
            order = super().sample_order(epoch)  # the single-process order (the loader is not distributed)
            parts, start = [], 0
            for size in global_batches(len(order), self.global_batch, self.world):
                offsets = np.cumsum([0] + shard_sizes(size, self.world))
                parts.append(order[start + offsets[self.rank]:start + offsets[self.rank + 1]])
                start += size
            return np.concatenate(parts) if parts else order[:0]

    return ShardedRandom


def make_loader(path: str | Path, batch_size: int, *, meta: DatasetMeta | None = None, indices=None,
                train: bool = False, seed: int = 0, workers: int = 1, device: torch.device | str = "cpu",
                drop_last: bool = False, distributed: bool = False):
    """An FFCV Loader yielding (uint8 NHWC images, labels) on ``device``.

    ``train`` gives a random order fixed by ``seed`` (and, for JPEG datasets, FFCV's random
    resized crop); otherwise the order is sequential (and JPEGs are centre-cropped, 224 of 256).
    ``distributed`` (``torch.distributed`` initialized, rank r of W): a training loader yields
    rank r's part of every global batch of ``batch_size`` (see :func:`_sharded_order`); an
    evaluation loader yields the r-th contiguous part of the indices.
    """
    from ffcv.fields.decoders import (CenterCropRGBImageDecoder, IntDecoder, NDArrayDecoder,
                                      RandomResizedCropRGBImageDecoder)
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import Squeeze, ToDevice, ToTensor

    device = torch.device(device)
    if meta is not None and meta.encoding == "jpeg":
        size = meta.shape[:2]
        decoder = RandomResizedCropRGBImageDecoder(size) if train else CenterCropRGBImageDecoder(size, 224 / 256)
    else:
        decoder = NDArrayDecoder()
    image = [decoder, ToTensor()]
    label = [IntDecoder(), ToTensor(), Squeeze()]
    if device.type == "cuda":  # pragma: no mutate (GPU only)
        image.append(ToDevice(device, non_blocking=True))  # pragma: no mutate
        label.append(ToDevice(device, non_blocking=True))  # pragma: no mutate
    # pragma: no mutate start (data-parallel only: runs in torchrun's processes, tested by test_train's DDP test)
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
    if distributed and not train:
        everything = np.arange(_num_samples(path)) if indices is None else np.asarray(indices)
        indices = np.array_split(everything, world)[rank]
    # pragma: no mutate end
    per_rank = batch_size
    if distributed and train:  # pragma: no mutate
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not divisible by the {world} processes; "
                             f"change optimizer.batch_size or the number of GPUs")
        per_rank = batch_size // world  # pragma: no mutate
    loader = Loader(
        str(path), batch_size=per_rank, num_workers=max(1, workers),
        order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL, seed=seed,
        indices=None if indices is None else np.asarray(indices), drop_last=drop_last,
        pipelines={"image": image, "label": label},
    )
    if distributed and train:  # pragma: no mutate (FFCV accepts only its own orders by name: swap ours in)
        loader.traversal_order = _sharded_order()(loader, batch_size, rank, world)  # pragma: no mutate
        loader.first_traversal_order = loader.next_traversal_order()  # pragma: no mutate
    return loader


def one_ahead(loader):
    """Iterate ``loader``, letting the host run at most one batch ahead of the GPU.

    The host never waits for the device inside a training step, so it could queue many steps
    ahead; but FFCV reuses a few pinned host buffers for its copies to the GPU, and fills the
    buffer of batch j−1 again as soon as batch j is taken.  So before taking batch j, wait until
    the device has begun the work queued with batch j−1 (its copy is then finished).  The device
    still always has the next step queued.  On the CPU this is plain iteration.
    """
    for batch in loader:
        started = None
        if batch[0].is_cuda:  # pragma: no mutate (GPU only)
            started = torch.cuda.Event()  # pragma: no mutate
            started.record()  # pragma: no mutate (after FFCV made this stream wait for the batch's copy)
        yield batch
        if started is not None:  # pragma: no mutate
            started.synchronize()  # pragma: no mutate


def _num_samples(path: str | Path) -> int:
    from ffcv.reader import Reader

    return int(Reader(str(path)).num_samples)


def load_split(path: str | Path, *, meta: DatasetMeta | None = None, indices=None, workers: int = 1, device="cpu"):
    """The whole split (or ``indices`` of it) in memory: uint8 NHWC images and int64 labels."""
    images, labels = [], []
    for x, y in one_ahead(make_loader(path, 1024, meta=meta, indices=indices, workers=workers, device=device)):
        images.append(x.clone())
        labels.append(y.long().clone())
    return torch.cat(images), torch.cat(labels)


class BatchTransform:
    """uint8 NHWC batch → float NCHW: random shifts and flips (seeded), then the pixel range.

    The random choices come from a torch generator, so a seed fixes them on every device.  On
    the CPU shift, flip and scaling are one fused, multi-threaded pass (:func:`_fused_cpu`); on
    a GPU they are a few tensor operations.  Both give the same floats, bit for bit.

    ``reuse_output=True`` writes every CPU batch into the same memory (as FFCV's loaders do with
    theirs), which saves faulting in fresh pages for each batch: the result is then only valid
    until the next call — right for a training loop, wrong for collecting batches.
    """

    def __init__(self, meta: DatasetMeta, device="cpu", shift: int = 4, channels_last: bool = True,
                 reuse_output: bool = False):
        # JPEG datasets are augmented by the loader's random resized crop instead of shifts
        self.shift, self.hflip = (0 if meta.encoding == "jpeg" else shift), meta.hflip
        mean, std = meta.normalization()
        scale = torch.tensor((1.0 / std).tolist(), dtype=torch.float32)
        offset = torch.tensor((-mean / std).tolist(), dtype=torch.float32)
        self.scale = scale.to(device).view(1, -1, 1, 1)
        self.offset = offset.to(device).view(1, -1, 1, 1)
        # value v of channel c → v * scale[c] + offset[c], rounded exactly as the tensor path rounds
        self.lut = (torch.arange(256, dtype=torch.float32)[:, None] * scale[None, :] + offset[None, :]).numpy()
        self.channels_last = channels_last
        self.reuse_output, self._buffer = reuse_output, torch.empty(0)

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image offsets in [0, 2·shift] (row, column) and flip decisions, on the CPU."""
        s = self.shift
        offsets = torch.randint(0, 2 * s + 1, (n, 2), generator=generator)
        flips = torch.rand(n, generator=generator) < 0.5
        return offsets, flips & self.hflip

    def draw_epoch(self, sizes: list[int], generator: torch.Generator,
                   device: torch.device | str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The draws of every global batch of an epoch (``sizes``), in one copy to ``device``.

        The numbers are those of one :meth:`draw` per batch, in order; drawing them up front means
        the training loop never copies random choices to the GPU between two steps.
        """
        if not sizes:
            return []
        drawn = [self.draw(m, generator) for m in sizes]
        offsets, flips = torch.cat([d[0] for d in drawn]), torch.cat([d[1] for d in drawn])
        device = torch.device(device)
        if device.type == "cuda":  # pragma: no mutate (GPU only; pinned, so the copy does not wait for the device)
            offsets = offsets.pin_memory().to(device, non_blocking=True)  # pragma: no mutate
            flips = flips.pin_memory().to(device, non_blocking=True)  # pragma: no mutate
        return list(zip(offsets.split(sizes), flips.split(sizes)))

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Shift each image by up to ``shift`` pixels (zero fill) and flip it with probability ½."""
        return self._shift_flip(x, *self.draw(len(x), generator))

    def _shift_flip(self, x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        n, h, w, _ = x.shape
        s = self.shift
        offsets, flips = offsets.to(x.device), flips.to(x.device)
        if s:
            padded = torch.nn.functional.pad(x, (0, 0, s, s, s, s))
            rows = offsets[:, :1] + torch.arange(h, device=x.device)
            cols = offsets[:, 1:] + torch.arange(w, device=x.device)
            x = padded[torch.arange(n, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
        if self.hflip:
            x = torch.where(flips[:, None, None, None], x.flip(2), x)
        return x

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).float()  # NCHW view of NHWC memory: channels-last already
        return x.mul_(self.scale).add_(self.offset)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None, fused: bool = True,
                 part: tuple[int, int] | None = None,
                 draws: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Augment (with ``draws`` of the batch, or new ones from ``generator``) and scale ``x``.

        ``part=(start, m)``: ``x`` holds images start… of a global batch of m (one process's
        share); the random choices are those of all m and this share's are used."""
        n = len(x)
        start, m = part or (0, n)
        if draws is None and generator is not None:
            draws = self.draw(m, generator)
        if draws is not None:
            offsets, flips = draws[0][start:start + n], draws[1][start:start + n]
        else:
            offsets, flips = torch.full((n, 2), self.shift), torch.zeros(n, dtype=torch.bool)
        if x.device.type == "cpu" and fused:
            if not self.reuse_output:
                out = torch.empty(x.shape, dtype=torch.float32)
            else:  # the first len(x) images of a buffer sized for the largest batch seen
                if self._buffer.shape[1:] != x.shape[1:] or len(self._buffer) < n:
                    self._buffer = torch.empty(x.shape, dtype=torch.float32)
                out = self._buffer[:n]
            _fused_cpu(x.contiguous().numpy(), offsets[:, 0].numpy(), offsets[:, 1].numpy(), flips.numpy(),
                       self.lut, self.shift, out.numpy())
            out = out.permute(0, 3, 1, 2)
        else:
            out = self._scale(self._shift_flip(x, offsets, flips) if draws is not None else x)
        return out if self.channels_last else out.contiguous()


def _fused_cpu(x, rows, cols, flips, lut, shift, out):
    """out[i, r, c] = lut[x[i, r + rows[i] − shift, c′ + cols[i] − shift]], c′ = c or W−1−c when
    flipped, lut[0] outside the image — shift, flip and scaling in one parallel pass."""
    import numba

    global _fused_cpu_kernel
    if _fused_cpu_kernel is None:

        @numba.njit(inline="always")
        def fill(o, start, stop, lut):
            for col in range(start, stop):
                for ch in range(o.shape[1]):
                    o[col, ch] = lut[0, ch]

        @numba.njit(parallel=True, nogil=True)
        def kernel(x, rows, cols, flips, lut, shift, out):
            n, h, w, c = x.shape
            for i in numba.prange(n):
                dy, dx = rows[i] - shift, cols[i] - shift
                lo, hi = max(0, -dx), min(w, w - dx)  # shifted columns whose source is inside
                for r in range(h):
                    o, sr = out[i, r], r + dy
                    if sr < 0 or sr >= h:
                        fill(o, 0, w, lut)
                    elif flips[i]:  # output column w − 1 − k shows shifted column k
                        fill(o, 0, w - hi, lut)
                        fill(o, w - lo, w, lut)
                        src = x[i, sr]
                        for k in range(lo, hi):
                            for ch in range(c):
                                o[w - 1 - k, ch] = lut[src[k + dx, ch], ch]
                    else:
                        fill(o, 0, lo, lut)
                        fill(o, hi, w, lut)
                        src = x[i, sr]
                        for k in range(lo, hi):
                            for ch in range(c):
                                o[k, ch] = lut[src[k + dx, ch], ch]

        _fused_cpu_kernel = kernel
    numba.set_num_threads(min(numba.config.NUMBA_NUM_THREADS, torch.get_num_threads()))  # the job's share
    _fused_cpu_kernel(x, rows, cols, flips, lut, shift, out)


_fused_cpu_kernel = None
