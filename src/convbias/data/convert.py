"""Convert a configured dataset (source + variants) to FFCV files and its ``meta.json``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..specs import DatasetSpec
from .dataset import DatasetMeta, train_indices
from .loaders import write_beton, write_samples
from .downloads import folder_to_read
from .sources import DatasetError, image_folders, load_source
from .variants import channel_stats, noisy_labels, pad, repeat_channels, shuffle_pixels, subset


IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)  # torchvision's constants, in [0, 255] units
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


class _Relabelled:
    """An (image, label) indexable with replaced labels."""

    def __init__(self, samples, labels):
        self.samples, self.labels = samples, labels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i][0], int(self.labels[i])


def convert_image_folder(name: str, spec: DatasetSpec, train_out, test_out, meta_out, workers: int = 1) -> DatasetMeta:
    """An ImageNet-style folder → JPEG FFCV files (FFCV's ImageNet recipe), decoded at ``image_size``."""
    from ffcv.fields import RGBImageField

    for key in ("pixel_shuffle", "channels", "train_images", "test_images"):
        if getattr(spec, key) not in (None, "none"):
            raise DatasetError(f"datasets.{name}.{key} is not supported for JPEG datasets; leave it out")
    train, val = image_folders(spec.path)
    labels = np.asarray(train.targets)
    fit = train_indices(len(labels), spec.val_fraction, spec.split_seed)
    labels = noisy_labels(labels, spec.label_noise, len(train.classes), fit, spec.variant_seed)
    field = dict(write_mode="proportion", max_resolution=spec.max_resolution, jpeg_quality=spec.jpeg_quality,
                 compress_probability=spec.compress_probability)
    write_samples(train_out, _Relabelled(train, labels), RGBImageField(**field), workers)
    write_samples(test_out, val, RGBImageField(**field), workers)
    size = spec.image_size
    meta = DatasetMeta(
        name=name, num_classes=len(train.classes), shape=(size, size, 3), n_train=len(train), n_test=len(val),
        val_fraction=spec.val_fraction, split_seed=spec.split_seed, hflip=spec.hflip,
        pixel_range=spec.pixel_range, mean=IMAGENET_MEAN, std=IMAGENET_STD, encoding="jpeg",
        fingerprint=spec.fingerprint(),
    )
    meta.save(meta_out)
    return meta


def convert(name: str, spec: DatasetSpec, train_out: str | Path, test_out: str | Path, meta_out: str | Path,
            workers: int = 1) -> DatasetMeta:
    """Read dataset ``name`` as ``spec`` describes; write both splits."""
    if spec.source == "imagenet":
        return convert_image_folder(name, spec, train_out, test_out, meta_out, workers)
    synthetic = asdict(spec.synthetic) if spec.synthetic else {}
    arrays = load_source(spec.source, folder_to_read(spec), **synthetic)
    kept = {}
    for split, keep in (("train", spec.train_images), ("test", spec.test_images)):
        images = getattr(arrays, f"{split}_images")
        if keep is not None and keep > len(images):
            raise DatasetError(f"datasets.{name}.{split}_images is {keep}, but its source has {len(images)} {split} "
                               f"images; lower it or leave it out")
        kept[split] = subset(len(images), keep, spec.split_seed, split)
    seed = spec.variant_seed
    # per_image_train is applied to training batches, after augmentation: the files stay clean
    baked = "none" if spec.pixel_shuffle == "per_image_train" else spec.pixel_shuffle

    def images(split):
        subset_images = getattr(arrays, f"{split}_images")[kept[split]]
        return repeat_channels(pad(shuffle_pixels(subset_images, baked, seed), spec.pad), spec.channels)

    train_images, test_images = images("train"), images("test")
    test_labels = arrays.test_labels[kept["test"]]
    fit = train_indices(len(train_images), spec.val_fraction, spec.split_seed)
    train_labels = noisy_labels(arrays.train_labels[kept["train"]], spec.label_noise, arrays.num_classes, fit, seed)
    mean, std = channel_stats(train_images[fit])
    meta = DatasetMeta(
        name=name, num_classes=arrays.num_classes, shape=tuple(int(s) for s in train_images.shape[1:]),
        n_train=len(train_images), n_test=len(test_images), val_fraction=spec.val_fraction,
        split_seed=spec.split_seed, hflip=spec.hflip, pixel_range=spec.pixel_range,
        mean=tuple(mean), std=tuple(std), fingerprint=spec.fingerprint(),
        train_pixel_shuffle_seed=seed if spec.pixel_shuffle == "per_image_train" else None,
    )
    write_beton(train_out, train_images, train_labels, workers)
    write_beton(test_out, test_images, test_labels, workers)
    meta.save(meta_out)
    return meta
