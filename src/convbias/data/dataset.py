"""The contract of a converted dataset: ``meta.json`` (shape, classes, pixel range, identity)
and its fixed validation split, as every loader, model and run reads them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PIXEL_RANGES = ("standardize", "minus_one_one", "unit")


def validation_indices(n_train: int, fraction: float, split_seed: int) -> np.ndarray:
    """Sorted indices of the fixed validation split: a ``fraction`` of the training set."""
    n_val = int(round(n_train * fraction))
    order = np.random.default_rng(split_seed).permutation(n_train)
    return np.sort(order[:n_val])


def train_indices(n_train: int, fraction: float, split_seed: int) -> np.ndarray:
    """Sorted indices of the training set without its validation split."""
    return np.setdiff1d(np.arange(n_train), validation_indices(n_train, fraction, split_seed))



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
    fingerprint: str = ""  # of the dataset's identity (DatasetSpec.fingerprint): source, variants, seeds
    # pixel_shuffle: per_image_train — training batches get image i's own permutation after shift
    # and flip (variants.image_permutations with this seed); None: batches are not shuffled
    train_pixel_shuffle_seed: int | None = None

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
        return train_indices(self.n_train, self.val_fraction, self.split_seed)

    def val_indices(self) -> np.ndarray:
        return validation_indices(self.n_train, self.val_fraction, self.split_seed)
