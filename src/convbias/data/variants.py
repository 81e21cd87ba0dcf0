"""Dataset variants baked into the conversion: padding, label noise, pixel shuffles, channel statistics."""

from __future__ import annotations

import numpy as np


def pad(images: np.ndarray, pixels: int) -> np.ndarray:
    """Zero-pad (N, H, W, C) images by ``pixels`` on every side (e.g. 28×28 → 32×32)."""
    if pixels == 0:
        return images
    return np.pad(images, ((0, 0), (pixels, pixels), (pixels, pixels), (0, 0)))


def subset(n: int, keep: int | None, seed: int, split: str) -> np.ndarray:
    """Sorted indices of a fixed random subset of ``keep`` of ``n`` images (all of them for None),
    drawn from ``seed`` and the ``split`` (train, test) alone."""
    if keep is None:
        return np.arange(n)
    if not 0 < keep <= n:
        raise ValueError(f"cannot keep {keep} of {n} {split} images")
    rng = np.random.default_rng([seed, ("train", "test").index(split)])
    return np.sort(rng.permutation(n)[:keep])


def repeat_channels(images: np.ndarray, channels: int | None) -> np.ndarray:
    """(N, H, W, 1) grayscale images with their channel repeated ``channels`` times (None or the
    images' own count: unchanged)."""
    if channels is None or channels == images.shape[-1]:
        return images
    if images.shape[-1] != 1:
        raise ValueError(f"cannot make {images.shape[-1]}-channel images {channels}-channel: only a grayscale "
                         f"channel can be repeated")
    return np.repeat(images, channels, axis=-1)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 255] units."""
    flat = images.reshape(-1, images.shape[-1]).astype(np.float64)
    return flat.mean(axis=0).tolist(), flat.std(axis=0).tolist()


def noisy_labels(labels: np.ndarray, fraction: float, num_classes: int, indices: np.ndarray,
                 seed: int) -> np.ndarray:
    """Replace exactly round(fraction × len(indices)) of ``labels[indices]`` by a different class.

    A replaced label y becomes (y + randint(1, C − 1)) mod C, so it never equals the true one.
    Labels outside ``indices`` (validation, test) stay clean.
    """
    rng = np.random.default_rng(seed)
    out = labels.copy()
    chosen = rng.permutation(indices)[: int(round(fraction * len(indices)))]
    out[chosen] = (out[chosen] + rng.integers(1, num_classes, size=len(chosen))) % num_classes
    return out


def shuffle_pixels(images: np.ndarray, mode: str, seed: int) -> np.ndarray:
    """Permute the pixel positions of (N, H, W, C) images, channels kept together.

    ``fixed``: one permutation for every image (Zhang et al.'s "shuffled pixels");
    ``per_image``: a permutation per image ("random pixels"); ``none``: unchanged.  (The
    authors' ``per_image_train`` is not baked in: see :func:`image_permutations`.)
    """
    if mode == "none":
        return images
    n, h, w, c = images.shape
    flat = images.reshape(n, h * w, c)
    rng = np.random.default_rng(seed)
    if mode == "fixed":
        return flat[:, rng.permutation(h * w)].reshape(images.shape)
    if mode == "per_image":
        order = np.argsort(rng.random((n, h * w)), axis=1)
        return np.take_along_axis(flat, order[:, :, None], axis=1).reshape(images.shape)
    raise ValueError(f"unknown pixel_shuffle {mode!r}; use none, fixed or per_image")


def image_permutations(seed: int, indices, size: int) -> np.ndarray:
    """One permutation of ``size`` pixel positions per image index, drawn from (``seed``, index) alone.

    The ``per_image_train`` shuffle: image i of the training file always gets the same
    permutation, whatever the epoch, the batch or the order it comes in, so a resumed run sees
    exactly the pixels it would have seen.  Rows are int16 when the positions fit.
    """
    dtype = np.int16 if size <= np.iinfo(np.int16).max else np.int32
    out = np.empty((len(indices), size), dtype=dtype)
    for row, i in enumerate(indices):
        out[row] = np.random.default_rng((seed, int(i))).permutation(size)
    return out
