"""Dataset variants baked into the conversion, and the fixed validation split."""

from __future__ import annotations

import numpy as np


def validation_indices(n_train: int, fraction: float, split_seed: int) -> np.ndarray:
    """Sorted indices of the fixed validation split: a ``fraction`` of the training set."""
    n_val = int(round(n_train * fraction))
    order = np.random.default_rng(split_seed).permutation(n_train)
    return np.sort(order[:n_val])


def train_indices(n_train: int, fraction: float, split_seed: int) -> np.ndarray:
    """Sorted indices of the training set without its validation split."""
    return np.setdiff1d(np.arange(n_train), validation_indices(n_train, fraction, split_seed))


def pad(images: np.ndarray, pixels: int) -> np.ndarray:
    """Zero-pad (N, H, W, C) images by ``pixels`` on every side (e.g. 28×28 → 32×32)."""
    if pixels == 0:
        return images
    return np.pad(images, ((0, 0), (pixels, pixels), (pixels, pixels), (0, 0)))


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 255] units."""
    flat = images.reshape(-1, images.shape[-1]).astype(np.float64)
    return flat.mean(axis=0).tolist(), flat.std(axis=0).tolist()
