"""Dataset sources: read raw files in their published formats into uint8 arrays (N, H, W, C)."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DatasetError(Exception):
    """A dataset is missing or unreadable; the message says which file and what to do."""


class MissingDataset(DatasetError):
    """A dataset's files are not where the config says."""


@dataclass
class Arrays:
    """A dataset in memory: uint8 images (N, H, W, C) and int64 labels, train and test."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or .gz), as published for MNIST and Fashion-MNIST."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise MissingDataset(f"{path} does not exist") from None
    except (OSError, EOFError) as err:
        raise DatasetError(f"{path} is not a readable IDX file ({err}); replace it with an intact copy") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path} is not an IDX file (bad magic number); replace it with an intact copy")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DatasetError(
            f"{path} is truncated or corrupt ({len(raw)} bytes, the header promises {expected}); "
            "replace it with an intact copy"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).exists():
            return folder / name
    raise MissingDataset(f"{folder / (stem + '.gz')} does not exist")


def idx_dataset(folder: str | Path, num_classes: int = 10) -> Arrays:
    """MNIST-style dataset: the four IDX files (train/t10k images and labels) in ``folder``."""
    folder = Path(folder)
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(
                f"{folder}: {prefix} images {images.shape} and labels {labels.shape} do not match"
            )
        parts[split] = (images[..., None].astype(np.uint8), labels.astype(np.int64))
    return Arrays(*parts["train"], *parts["test"], num_classes=num_classes)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: a CIFAR batch cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _cifar_batches(folder: Path, archive: str, base: str, names: list[str]) -> dict[str, dict]:
    """The named pickle batches, from ``base/`` in ``folder`` or from the ``archive`` .tar.gz there."""
    raw: dict[str, bytes] = {}
    if (folder / base).is_dir():
        for name in names:
            if (folder / base / name).exists():
                raw[name] = (folder / base / name).read_bytes()
    elif (folder / archive).exists():
        try:
            with tarfile.open(folder / archive) as tar:
                for name in names:
                    member = f"{base}/{name}"
                    if member in tar.getnames():
                        raw[name] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DatasetError(f"{folder / archive} is not a readable .tar.gz ({err}); replace it with an intact copy") from None
    else:
        raise MissingDataset(f"{folder / archive} does not exist")
    missing = [n for n in names if n not in raw]
    if missing:
        raise DatasetError(f"{folder} lacks the batches {', '.join(missing)} of {archive}; replace it with an intact copy")
    batches = {}
    for name, blob in raw.items():
        try:
            batches[name] = _ArrayUnpickler(io.BytesIO(blob), encoding="bytes").load()
        except Exception as err:
            raise DatasetError(f"{base}/{name} in {folder} is not a CIFAR batch ({err}); replace it with an intact copy") from None
    return batches


def _cifar_arrays(batch: dict, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(batch[label_key], dtype=np.int64)


def cifar_dataset(folder: str | Path, num_classes: int = 10) -> Arrays:
    """CIFAR-10 or CIFAR-100 from the standard python pickle batches (archive or extracted folder)."""
    folder = Path(folder)
    if num_classes == 10:
        archive, base, train, test, key = "cifar-10-python.tar.gz", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"
    else:
        archive, base, train, test, key = "cifar-100-python.tar.gz", "cifar-100-python", ["train"], ["test"], b"fine_labels"
    batches = _cifar_batches(folder, archive, base, train + test)
    try:
        parts = [_cifar_arrays(batches[n], key) for n in train + test]
    except (KeyError, ValueError) as err:
        raise DatasetError(f"{folder}: a batch of {archive} lacks or garbles {err}; replace it with an intact copy") from None
    tr, te = parts[: len(train)], parts[len(train):]
    return Arrays(np.concatenate([p[0] for p in tr]), np.concatenate([p[1] for p in tr]),
                  np.concatenate([p[0] for p in te]), np.concatenate([p[1] for p in te]), num_classes=num_classes)


# pragma: no mutate start (demo data: any seeded learnable images will do)
def synthetic_dataset(*, n_train: int, n_test: int, size: int, channels: int, num_classes: int, seed: int) -> Arrays:
    """A seeded, learnable dataset: each class is a smooth random pattern, each image a noisy shifted copy
    (the defaults of a config's ``synthetic`` keys are the schema's)."""
    rng = np.random.default_rng(seed)
    cell = max(1, size // 4)
    templates = np.kron(rng.normal(size=(num_classes, 4, 4, channels)), np.ones((1, cell, cell, 1)))
    templates = np.pad(templates, ((0, 0), (0, size - 4 * cell), (0, size - 4 * cell), (0, 0)), mode="edge")

    def draw(n):
        labels = rng.integers(0, num_classes, size=n)
        shifts = rng.integers(-2, 3, size=(n, 2))
        images = np.stack([np.roll(templates[y], tuple(s), axis=(0, 1)) for y, s in zip(labels, shifts)])
        images = images + rng.normal(scale=0.7, size=images.shape)
        return np.clip(128 + 50 * images, 0, 255).astype(np.uint8), labels.astype(np.int64)

    return Arrays(*draw(n_train), *draw(n_test), num_classes=num_classes)


# pragma: no mutate end
def image_folders(root: str | Path):
    """ILSVRC2012-style ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` as torchvision ImageFolders."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    splits = []
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise MissingDataset(f"{root / split} does not exist (expected {split}/<class>/<image>.JPEG)")
        try:
            splits.append(ImageFolder(str(root / split)))
        except (FileNotFoundError, OSError) as err:
            raise DatasetError(f"{root / split} is not an image folder ({err})") from None
    if splits[0].classes != splits[1].classes:
        raise DatasetError(f"{root}: train/ and val/ have different class folders")
    return splits


SOURCES = {
    "fashion_mnist": idx_dataset,
    "mnist": idx_dataset,
    "cifar10": lambda path: cifar_dataset(path, 10),
    "cifar100": lambda path: cifar_dataset(path, 100),
}


def load_source(source: str, path: str | Path | None, **options) -> Arrays:
    """Load the dataset ``source`` from ``path`` (a folder in that source's published format).

    Nothing is downloaded here (convbias.data.downloads does that, in its own rule);
    ``synthetic`` takes no path but ``options`` (see :func:`synthetic_dataset`).
    """
    if source == "synthetic":
        return synthetic_dataset(**options)
    if source not in SOURCES:
        raise DatasetError(f"unknown dataset source {source!r}; known: {', '.join(sorted(SOURCES))}")
    return SOURCES[source](path)
