"""Convert a configured dataset (source + variants) to FFCV files and its ``meta.json``."""

from __future__ import annotations

from pathlib import Path

from .ffcv_io import DatasetMeta, write_beton
from .sources import load_source
from .variants import channel_stats, noisy_labels, pad, shuffle_pixels, train_indices


def convert(name: str, spec: dict, train_out: str | Path, test_out: str | Path, meta_out: str | Path,
            workers: int = 1) -> DatasetMeta:
    """Read dataset ``name`` as ``spec`` (a validated ``datasets`` entry) describes; write both splits."""
    arrays = load_source(spec["source"], spec["path"], allow_download=spec.get("download", False))
    shuffle, seed = spec.get("pixel_shuffle", "none"), spec.get("variant_seed", 0)
    train_images = pad(shuffle_pixels(arrays.train_images, shuffle, seed), spec["pad"])
    test_images = pad(shuffle_pixels(arrays.test_images, shuffle, seed), spec["pad"])
    fit = train_indices(len(train_images), spec["val_fraction"], spec["split_seed"])
    train_labels = noisy_labels(arrays.train_labels, spec.get("label_noise", 0.0), arrays.num_classes, fit, seed)
    mean, std = channel_stats(train_images[fit])
    meta = DatasetMeta(
        name=name, num_classes=arrays.num_classes, shape=tuple(int(s) for s in train_images.shape[1:]),
        n_train=len(train_images), n_test=len(test_images), val_fraction=spec["val_fraction"],
        split_seed=spec["split_seed"], hflip=spec["hflip"], pixel_range=spec["pixel_range"],
        mean=tuple(mean), std=tuple(std),
    )
    write_beton(train_out, train_images, train_labels, workers)
    write_beton(test_out, test_images, arrays.test_labels, workers)
    meta.save(meta_out)
    return meta
