"""FFCV files: written once by the conversion, read back as uint8 NHWC batches.

Images are stored raw as uint8 ``NDArrayField`` of shape (H, W, C) — grayscale stays one
channel — or, for image folders, as JPEG.  Loaders return uint8 NHWC batches; augmentation and
pixel scaling happen afterwards in torch (:mod:`.transform`), because FFCV's own random
augmentations are not reproducible.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .dataset import DatasetMeta
from .numba_cache import cache_typed_dict_helpers

# every FFCV import of the package is in this module or in convert, which imports it: numba's
# typed-dict helpers are cached on disk before FFCV's first import builds one (numba_cache)
cache_typed_dict_helpers()


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


def shard_sizes(n: int, world: int) -> list[int]:
    """How a batch of ``n`` images is split over ``world`` processes (contiguous, sizes differ by ≤ 1)."""
    return [len(part) for part in np.array_split(np.arange(n), world)]


def global_batches(n: int, batch_size: int, world: int = 1) -> list[int]:
    """The sizes of one epoch's global batches; a last batch smaller than ``world`` is dropped."""
    sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
    return sizes[:-1] if sizes and sizes[-1] < world else sizes


ORDERS = ("random", "quasi_random")


def _traversal(order: str):
    """The FFCV traversal order class for ``order``, drawn from (seed, epoch) alone.

    ``random`` is FFCV's ``Random``.  ``quasi_random`` is FFCV's ``QuasiRandom`` (pages read in
    a random order, images drawn at random from a few pages at a time: for files larger than
    memory), except that FFCV shuffles its page table in place, so its order for epoch e depends
    on the epochs drawn before — a resumed run would see other batches.  Here every draw starts
    from the same table.
    """
    from ffcv.traversal_order import QuasiRandom, Random

    class ReproducibleQuasiRandom(QuasiRandom):
        def prepare_data_structures(self):
            super().prepare_data_structures()
            self.pristine = self.page_to_samples_array.copy()

        def sample_order(self, epoch: int):
            self.page_to_samples_array[:] = self.pristine
            return super().sample_order(epoch)

    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; use one of {ORDERS}")
    return Random if order == "random" else ReproducibleQuasiRandom


def _sharded_order(base):
    """``base`` order, cut into per-process shards of every global batch.

    Process r of W gets the r-th contiguous part of each global batch of the single-process
    order, so the W processes together see exactly the batches one process would see, and the
    global batch size stays the configured one.  (FFCV's own ``distributed=True`` uses PyTorch's
    ``DistributedSampler``, whose order depends on W.)
    """

    class Sharded(base):
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

    return Sharded


def _seeded_random_resized_crop():
    """FFCV's random resized crop decoder (scale 0.08–1, aspect ratio 3/4–4/3), except that each
    image's crop is drawn from (the loader's ``seed``, the epoch, the image's index in the file)
    alone.  FFCV draws crops from numba's per-thread generators, seeded from the OS: two runs of
    one seed, or a run resumed after a kill, saw other crops.  The epoch is the one the loader is
    iterating (its ``next_epoch`` as the epoch starts); the loader recompiles its code each
    epoch (``recompile=True``: the epoch's seed is a constant of the compiled code)."""
    from ffcv.fields.rgb_image import (IMAGE_MODES, RandomResizedCropRGBImageDecoder, get_random_crop, imdecode,
                                       resize_crop)
    from ffcv.pipeline.compiler import Compiler

    class SeededRandomResizedCrop(RandomResizedCropRGBImageDecoder):
        def __init__(self, output_size, seed: int):
            super().__init__(output_size)
            self.seed, self.loader = seed, None

        def generate_code(self):  # FFCV's decode loop, with each image's generator seeded before its crop
            jpg, mem_read, images = IMAGE_MODES["jpg"], self.memory_read, Compiler.get_iterator()
            imdecode_c, resize_crop_c = Compiler.compile(imdecode), Compiler.compile(resize_crop)
            get_crop_c = Compiler.compile(get_random_crop)
            scale, ratio = np.array(self.scale), np.array(self.ratio)
            epoch = 0 if self.loader is None else self.loader.next_epoch - 1
            base = np.int64(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])

            def decode(batch_indices, my_storage, metadata, storage_state):
                destination, temp_storage = my_storage
                for dst_ix in images(len(batch_indices)):
                    source_ix = batch_indices[dst_ix]
                    field = metadata[source_ix]
                    image_data = mem_read(field["data_ptr"], storage_state)
                    height, width = np.uint32(field["height"]), np.uint32(field["width"])
                    if field["mode"] == jpg:
                        decoded = temp_storage[dst_ix]
                        imdecode_c(image_data, decoded, height, width, height, width, 0, 0, 1, 1, False, False)
                        decoded = decoded.reshape(-1)[:3 * height * width].reshape(height, width, 3)
                    else:
                        decoded = image_data.reshape(height, width, 3)
                    np.random.seed((base + np.int64(source_ix) * 1_000_003) % 4_294_967_296)  # this thread's generator
                    i, j, h, w = get_crop_c(height, width, scale, ratio)
                    resize_crop_c(decoded, i, i + h, j, j + w, destination[dst_ix])
                return destination[:len(batch_indices)]

            decode.is_parallel = True
            return decode

    return SeededRandomResizedCrop


def use_os_cache(os_cache: bool | None, order: str, file_bytes: int, memory_bytes: int) -> bool:
    """Whether a loader reads through the OS page cache (FFCV's ``os_cache``).

    ``os_cache`` if set; else FFCV's guidance: the OS cache when the file fits comfortably (half
    of ``memory_bytes``, the job's memory), FFCV's own page cache otherwise — and always for the
    quasi-random order, which exists for files that do not fit and needs FFCV's page table.
    """
    if order == "quasi_random":
        if os_cache:
            raise ValueError("order quasi_random reads through FFCV's own page cache: set os_cache to false or leave it out")
        return False
    if os_cache is not None:
        return bool(os_cache)
    return file_bytes <= memory_bytes // 2


def make_loader(path: str | Path, batch_size: int, *, meta: DatasetMeta | None = None, indices=None,
                train: bool = False, seed: int = 0, workers: int = 1, device: torch.device | str = "cpu",
                drop_last: bool = False, distributed: bool = False, order: str = "random", os_cache: bool = True):
    """An FFCV Loader yielding (uint8 NHWC images, labels) on ``device``.

    ``train`` gives a random ``order`` (:func:`_traversal`) fixed by ``seed`` and the epoch (and,
    for JPEG datasets, FFCV's random resized crop, drawn from them too:
    :func:`_seeded_random_resized_crop`); otherwise the order is sequential (and JPEGs
    are centre-cropped, 224 of 256).  ``os_cache``: read through the OS page cache (see
    :func:`use_os_cache`).
    ``distributed`` (``torch.distributed`` initialized, rank r of W): a training loader yields
    rank r's part of every global batch of ``batch_size`` (see :func:`_sharded_order`); an
    evaluation loader yields the r-th contiguous part of the indices.
    """
    from ffcv.fields.decoders import CenterCropRGBImageDecoder, IntDecoder, NDArrayDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import Squeeze, ToDevice, ToTensor

    device = torch.device(device)
    jpeg_crops = train and meta is not None and meta.encoding == "jpeg"
    if meta is not None and meta.encoding == "jpeg":
        size = meta.shape[:2]
        decoder = _seeded_random_resized_crop()(size, seed) if train else CenterCropRGBImageDecoder(size, 224 / 256)
    else:
        decoder = NDArrayDecoder()
    image = [decoder, ToTensor()]
    label = [IntDecoder(), ToTensor(), Squeeze(1)]  # (B, 1) → (B,), also when B is 1
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
    traversal = _traversal(order) if train else None
    named = {"random": OrderOption.RANDOM, "quasi_random": OrderOption.QUASI_RANDOM}
    loader = Loader(
        str(path), batch_size=per_rank, num_workers=max(1, workers),
        order=named[order] if train else OrderOption.SEQUENTIAL, seed=seed, os_cache=os_cache,
        indices=None if indices is None else np.asarray(indices), drop_last=drop_last,
        pipelines={"image": image, "label": label}, recompile=jpeg_crops,  # each epoch's crops: its own code
    )
    if jpeg_crops:
        decoder.loader = loader
    # FFCV takes only its own orders by name: swap ours in (and draw the first epoch's again)
    if distributed and train:  # pragma: no mutate (data-parallel only)
        loader.traversal_order = _sharded_order(traversal)(loader, batch_size, rank, world)  # pragma: no mutate
        loader.first_traversal_order = loader.next_traversal_order()  # pragma: no mutate
    elif train and order == "quasi_random":
        loader.traversal_order = traversal(loader)
        loader.first_traversal_order = loader.next_traversal_order()
    return loader


def batch_indices(loader, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """The file indices of the images of each batch ``loader``'s next pass will yield, on ``device``.

    FFCV's pass takes its traversal order for ``loader.next_epoch`` and cuts it into chunks of the
    batch size, in order: this is the same order, cut the same way, computed without decoding.
    """
    order = np.asarray(loader.next_traversal_order())[: len(loader) * loader.batch_size]
    return list(torch.as_tensor(order, dtype=torch.int64).to(device).split(loader.batch_size))


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
        if batch[0].is_cuda:
            started = torch.cuda.Event()
            started.record()  # after FFCV made this stream wait for the batch's copy
        yield batch
        if started is not None:
            started.synchronize()


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
