"""Dataset sources: read raw files in their published formats into uint8 arrays (N, H, W, C)."""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DatasetError(Exception):
    """A dataset is missing or unreadable; the message says which file and what to do."""


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
        raise DatasetError(f"{path} does not exist") from None
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
    raise DatasetError(f"{folder / (stem + '.gz')} does not exist")


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


SOURCES = {
    "fashion_mnist": idx_dataset,
    "mnist": idx_dataset,
}


def load_source(source: str, path: str | Path) -> Arrays:
    """Load the dataset ``source`` from ``path`` (a folder in that source's published format)."""
    if source not in SOURCES:
        raise DatasetError(f"unknown dataset source {source!r}; known: {', '.join(sorted(SOURCES))}")
    return SOURCES[source](path)
