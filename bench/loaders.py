"""FFCV training pipeline vs the torchvision DataLoader a user would otherwise write, side by side.

Same images, same batch size, same number of workers, equivalent augmentation:
  CIFAR-shaped raw uint8 (32×32×3): shifts of up to 4 pixels + horizontal flip + standardization;
  ImageNet-shaped JPEGs: random resized crop 224 + horizontal flip + standardization.
Prints images per second of each and the ratio.  Usage:
  .venv/bin/python bench/loaders.py [--images 20000] [--jpegs 2000] [--workers 2] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

from convbias.data.convert import IMAGENET_MEAN, IMAGENET_STD, convert
from convbias.specs import DatasetSpec
from convbias.data.loaders import make_loader
from convbias.data.transform import BatchTransform


class ArrayDataset(Dataset):
    """uint8 (N, H, W, C) arrays through torchvision transforms, as a torchvision user would."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def rate(batches, device, epochs: int = 2) -> tuple[float, float]:
    """Images/s of the first epoch and of the later ones, every batch moved to ``device``."""
    times = []
    for _ in range(epochs):
        start, seen = time.perf_counter(), 0
        for x, y in batches():
            x = x.to(device, non_blocking=True)
            seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(seen / (time.perf_counter() - start))
    return times[0], float(np.mean(times[1:]))


def compare(name, ffcv_batches, torch_batches, device, repeats: int = 3):
    """Both pipelines ``repeats`` times, interleaved (the one that goes first alternating); the
    ratio of each round's steady-state rates, min and median."""
    rounds = []
    for r in range(repeats):
        sides = [ffcv_batches, torch_batches] if r % 2 == 0 else [torch_batches, ffcv_batches]
        measured = {id(b): rate(b, device) for b in sides}
        rounds.append((measured[id(ffcv_batches)], measured[id(torch_batches)]))
    ratios = sorted(f[1] / t[1] for f, t in rounds)
    for (f_first, f), (_, t) in rounds:
        print(f"{name:<18} FFCV {f:9.0f} img/s (first epoch {f_first:.0f})   torchvision {t:9.0f} img/s   "
              f"ratio {f / t:5.2f}x")
    print(f"{name:<18} ratio over {repeats} interleaved rounds: min {ratios[0]:.2f}x  median {np.median(ratios):.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--jpegs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of both pipelines")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    # converted sets and JPEGs (~70 MB at the test's sizes, more at the defaults): removed at the end
    with tempfile.TemporaryDirectory(prefix="convbias-bench-") as work:
        run(args, Path(work))


def run(args, work: Path):
    device = torch.device(args.device)
    torch.set_num_threads(args.workers)
    print(f"device {device}, {args.workers} workers, batch {args.batch_size}")

    # CIFAR-shaped raw data
    spec = {"source": "synthetic", "synthetic": {"n_train": args.images, "n_test": 10, "size": 32, "channels": 3},
            "pad": 0, "val_fraction": 0.1, "split_seed": 0, "hflip": True, "pixel_range": "standardize"}
    meta = convert("bench", DatasetSpec.from_config(spec),
                   work / "train.beton", work / "test.beton", work / "meta.json", args.workers)
    loader = make_loader(work / "train.beton", args.batch_size, meta=meta, train=True, workers=args.workers, device=device)
    augment = BatchTransform(meta, device, reuse_output=True)  # as the training loop
    generator = torch.Generator().manual_seed(0)
    ffcv_batches = lambda: ((augment(x, generator), y) for x, y in loader)  # noqa: E731
    from convbias.data.sources import synthetic_dataset

    arrays = synthetic_dataset(n_train=args.images, n_test=10, size=32, channels=3, num_classes=10, seed=0)
    mean, std = meta.normalization()
    normalize = transforms.Normalize((mean / 255).tolist(), (std / 255).tolist())
    tv = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), normalize])
    tv_loader = DataLoader(ArrayDataset(arrays.train_images, arrays.train_labels, tv), batch_size=args.batch_size,
                           shuffle=True, num_workers=args.workers, pin_memory=device.type == "cuda",
                           persistent_workers=True)
    compare("CIFAR-shaped raw", ffcv_batches, lambda: iter(tv_loader), device, args.repeats)

    # ImageNet-shaped JPEGs: ~400×350 photos-like images in an ImageFolder
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:350, 0:400] / 400
    for i in range(args.jpegs):
        folder = work / "imagenet" / ("val" if (i // 10) % 10 == 0 else "train") / f"n{i % 10:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        a = rng.uniform(20, 200, size=(3, 1, 1))
        img = a[:, 0, 0] * np.stack([yy, xx, (yy + xx) / 2], -1) + rng.normal(0, 12, size=(350, 400, 3)) + 30
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i}.JPEG", quality=90)
    spec = {"source": "imagenet", "path": str(work / "imagenet"), "val_fraction": 0.1, "split_seed": 0, "hflip": True,
            "pixel_range": "standardize", "max_resolution": 500, "jpeg_quality": 90, "compress_probability": 0.5,
            "image_size": 224}
    meta = convert("bench-jpeg", DatasetSpec.from_config(spec),
                   work / "jtrain.beton", work / "jtest.beton", work / "jmeta.json", args.workers)
    loader = make_loader(work / "jtrain.beton", args.batch_size, meta=meta, train=True, workers=args.workers, device=device)
    augment = BatchTransform(meta, device, reuse_output=True)  # as the training loop
    ffcv_batches = lambda: ((augment(x, generator), y) for x, y in loader)  # noqa: E731
    tv = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize([m / 255 for m in IMAGENET_MEAN], [s / 255 for s in IMAGENET_STD])])
    # (the FFCV side standardizes with the same ImageNet constants: meta.normalization())
    tv_loader = DataLoader(datasets.ImageFolder(str(work / "imagenet" / "train"), tv), batch_size=args.batch_size,
                           shuffle=True, num_workers=args.workers, pin_memory=device.type == "cuda",
                           persistent_workers=True)
    compare("ImageNet-shaped JPEG", ffcv_batches, lambda: iter(tv_loader), device, args.repeats)


if __name__ == "__main__":
    main()
