"""Trainability: does every trained family of the paper study leave chance with its exact recipe?

Each family is an experiment of the paper study, trained by the study's own ``train_run`` with its
recipe from ``config/config.yaml`` as it stands — init, optimizer, batch size, dropout, pixel
range, precision, augmentation — on real images available offline (Fashion-MNIST, the Debian
package) and on the project's synthetic set, several seeds each:

  vgg19_32     vgg19_cifar10_step    Fashion-MNIST padded to 32×32 and repeated to 3 channels (raw FFCV file)
  vgg19_224    vgg19_imagenet_step   Fashion-MNIST upscaled to 256², written as JPEGs and converted by the
                                     ImageNet path (random resized crop to 224, flips; centre crop to test)
  alexnet_224  alexnet_imagenet      as vgg19_224
  lenet_28     lenet_mnist           Fashion-MNIST as it is, 28×28×1 (no flips, as for digits)
  control      vgg19_imagenet_normal_init's init (fig 15, N(0, 0.01)) on vgg19_32's data: meant NOT to learn

Protocols: ``new`` is the study's config (the authors' code: torchvision's VGG init, PyTorch's
default for AlexNet, per-channel standardization); ``old`` is the paper text's reading that the
study used before (Kaiming normal on every conv and linear weight, pixels in [−1, 1]; LeNet
keeps its Xavier init, only its pixel range changes).

What is reduced, so that it runs on a CPU: the width (``--width`` per family; the torchvision head
keeps its 4096 units), the number of images, and the epochs: every "epoch" here is a slice of the
recipe's first real epoch, trained at that epoch's learning rate (the schedules hold the base LR
for the first 25 epochs, or decay it by < 9 % per real epoch).  The classes are Fashion-MNIST's
10 (ImageNet's recipe has 1000).  A run *leaves chance* when its last slice's train loss is below
0.8 · ln C; it *learned* by claim C0's test (``convbias.learning``, the config's thresholds).

Usage (each family × protocol × seed is one run; about 1.5 hours for everything on 2 CPU cores):
  .venv/bin/python bench/trainability.py [--families vgg19_32 lenet_28 …] [--protocols new old]
      [--data fmnist synthetic] [--seeds 0 1 2] [--device cpu] [--out results/bench/trainability.csv]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from convbias.data.convert import convert_image_folder
from convbias.data.dataset import DatasetMeta
from convbias.data.loaders import write_beton
from convbias.data.sources import idx_dataset, synthetic_dataset
from convbias.data.variants import channel_stats, pad
from convbias.learning import chance_loss, learned
from convbias.specs import ClaimsSpec, DatasetSpec, ExperimentSpec, Schedule
from convbias.train import train_run

ROOT = Path(__file__).resolve().parents[1]
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


@dataclasses.dataclass(frozen=True)
class Family:
    experiment: str  # the paper study's experiment whose recipe is trained
    shape: str  # "32x3", "224" or "28x1"
    width: float  # the proxy's width multiplier
    images: int  # training images per slice (the validation split comes on top)
    slices: int  # "epochs": slices of the recipe's first epoch
    expect: str = "generalize"
    init: dict | None = None  # replaces the experiment's init (the control)


FAMILIES = {
    "vgg19_32": Family("vgg19_cifar10_step", "32x3", 0.25, 6400, 8),
    "vgg19_224": Family("vgg19_imagenet_step", "224", 0.0625, 3200, 12),
    "alexnet_224": Family("alexnet_imagenet", "224", 0.25, 3200, 12),
    "lenet_28": Family("lenet_mnist", "28x1", 1.0, 6400, 16),
    "control": Family("vgg19_cifar10_step", "32x3", 0.25, 6400, 4, "none", {"scheme": "normal", "std": 0.01}),
}
OLD = {"init": {"scheme": "kaiming_normal"}, "pixel_range": "minus_one_one"}  # the text's reading


def recipe(config: dict, family: Family, protocol: str, slices: int | None = None):
    """(TrainSpec, pixel range) of ``family`` under ``protocol``: the study's experiment entry, reduced."""
    entry = dict(config["experiments"][family.experiment])
    entry["model"] = {**entry["model"], "width": family.width}
    if family.init is not None:
        entry["init"] = family.init
    elif protocol == "old" and entry["model"]["arch"] != "lenet":
        entry["init"] = OLD["init"]
    exp = ExperimentSpec.from_config(entry)
    train = exp.train
    first_lr = train.schedule.lr(train.lr, 1)  # every slice trains at the first real epoch's rate
    spec = dataclasses.replace(train, epochs=slices or family.slices, schedule=Schedule(kind="constant"),
                               lr=first_lr, snapshots="conv", compile=False)
    data = DatasetSpec.from_config(config["datasets"][exp.dataset])
    pixel_range = OLD["pixel_range"] if protocol == "old" else data.pixel_range
    return spec, pixel_range


def raw_dataset(folder: Path, name: str, train_images, train_labels, test_images, test_labels, hflip: bool):
    """Write uint8 (N, H, W, C) arrays as the study's raw FFCV files; returns (meta, train, test)."""
    folder.mkdir(parents=True, exist_ok=True)
    meta_file = folder / "meta.json"
    if not meta_file.exists():
        meta = DatasetMeta(name, 10, tuple(int(s) for s in train_images.shape[1:]), len(train_images),
                           len(test_images), 0.1, 0, hflip, "standardize", (0.0,), (1.0,))
        mean, std = channel_stats(train_images[meta.train_indices()])
        write_beton(folder / "train.beton", train_images, train_labels, workers=2)
        write_beton(folder / "test.beton", test_images, test_labels, workers=2)
        dataclasses.replace(meta, mean=tuple(mean), std=tuple(std)).save(meta_file)
    return DatasetMeta.load(meta_file), folder / "train.beton", folder / "test.beton"


def jpeg_dataset(folder: Path, train_images, train_labels, test_images, test_labels):
    """Images upscaled to 256², as JPEG files of an ImageNet-style folder, converted by the study's
    ImageNet path (FFCV JPEG files; random resized crop to 224 in training)."""
    from PIL import Image

    meta_file = folder / "meta.json"
    if not meta_file.exists():
        for split, images, labels in (("train", train_images, train_labels), ("val", test_images, test_labels)):
            for i, (image, label) in enumerate(zip(images, labels)):
                path = folder / "jpeg" / split / f"c{label}" / f"{i:05d}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image[..., 0]).resize((256, 256), Image.BILINEAR).convert("RGB").save(path, quality=90)
        spec = DatasetSpec.from_config({"source": "imagenet", "path": str(folder / "jpeg")})
        convert_image_folder("fmnist_224", spec, folder / "train.beton", folder / "test.beton", meta_file, workers=2)
    return DatasetMeta.load(meta_file), folder / "train.beton", folder / "test.beton"


def datasets(work: Path, data: str, shape: str, images: int, fmnist: str):
    """(meta, train file, test file) of ``data`` (fmnist | synthetic) at ``shape``, ``images`` training images."""
    total, n_test = math.ceil(images / 0.9), 1000
    if data == "synthetic":
        if shape == "224":
            return None  # 224² raw files would be ~150 kB an image; the synthetic set is for the small shapes
        size, channels = (32, 3) if shape == "32x3" else (28, 1)
        a = synthetic_dataset(n_train=total, n_test=n_test, size=size, channels=channels, num_classes=10, seed=0)
        return raw_dataset(work / f"synthetic_{shape}_{total}", "synthetic", a.train_images, a.train_labels,
                           a.test_images, a.test_labels, hflip=shape == "32x3")
    a = idx_dataset(fmnist)
    train, labels, test, test_labels = (a.train_images[:total], a.train_labels[:total], a.test_images[:n_test],
                                        a.test_labels[:n_test])
    if shape == "224":
        return jpeg_dataset(work / f"fmnist_224_{total}", train, labels, test, test_labels)
    if shape == "32x3":
        train, test = (np.repeat(pad(x, 2), 3, axis=3) for x in (train, test))
    return raw_dataset(work / f"fmnist_{shape}_{total}", "fmnist", train, labels, test, test_labels,
                       hflip=shape == "32x3")


def run(args) -> pd.DataFrame:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    claims = ClaimsSpec.from_config(config.get("claims", {}))
    work = Path(args.work)
    rows = []
    for data in args.data:
        for name in args.families:
            family = FAMILIES[name] if args.width is None else dataclasses.replace(FAMILIES[name], width=args.width)
            files = datasets(work, data, family.shape, args.images or family.images, args.fmnist)
            if files is None:
                continue
            meta, train_file, test_file = files
            for protocol in (["new"] if family.init else args.protocols):
                spec, pixel_range = recipe(config, family, protocol, args.slices)
                run_meta = dataclasses.replace(meta, pixel_range=pixel_range)
                for seed in args.seeds:
                    start = time.perf_counter()
                    with tempfile.TemporaryDirectory(dir=work) as tmp:
                        run_dir = Path(tmp) / f"{data}-{name}-{protocol}" / f"seed{seed}"  # names the epoch lines
                        history = train_run(spec, seed, run_meta, train_file, test_file, run_dir,
                                            Path(tmp) / "work", device=args.device, threads=args.threads)
                    history = history[history["epoch"] > 0]
                    last = history.iloc[-1]
                    row = {"data": data, "family": name, "experiment": family.experiment, "protocol": protocol,
                           "init": spec.init, "pixel_range": pixel_range, "width": family.width, "seed": seed,
                           "steps": len(history) * math.ceil(len(meta.train_indices()) / spec.batch_size),
                           "train_loss": list(history["train_loss"].round(4)),
                           "val_acc": list(history["val_acc"].round(4)),
                           "left_chance": bool(history["train_loss"].min() < 0.8 * chance_loss(meta.num_classes)),
                           "at_end": bool(last.train_loss < 0.8 * chance_loss(meta.num_classes)),
                           "learned": learned(last.train_loss, last.val_acc, meta.num_classes, "generalize",
                                              claims.learned_accuracy_factor, claims.learned_loss_fraction),
                           "expect": family.expect, "seconds": round(time.perf_counter() - start, 1)}
                    rows.append(row)
                    print(f"{data:9} {name:11} {protocol:3} seed {seed}: train loss {row['train_loss']} "
                          f"val acc {row['val_acc']} → {'left chance' if row['left_chance'] else 'AT CHANCE'}"
                          f"{'' if row['at_end'] or not row['left_chance'] else ', back at chance at the end'}"
                          f" ({row['seconds']} s)", flush=True)
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> str:
    """One line per (data, family, protocol, length): seeds that left chance (train loss < 0.8 ln C in some
    slice) and that are below it at the end; per seed the train loss of each slice, the final
    validation accuracy."""
    lines = ["| data | family (experiment) | protocol | init, pixels | width | steps | left chance | below at the end "
             "| train loss per slice, per seed | final val acc per seed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (data, family, protocol, _), g in table.groupby(["data", "family", "protocol", "steps"], sort=False):
        first = g.iloc[0]
        losses = "; ".join(" ".join(f"{x:.2f}" for x in v) for v in g["train_loss"])
        accs = ", ".join(f"{v[-1]:.2f}" for v in g["val_acc"])
        meant = " (meant not to)" if first.expect == "none" else ""
        lines.append(f"| {data} | {family} ({first.experiment}) | {protocol} | {first.init}, {first.pixel_range} "
                     f"| {first.width:g} | {first.steps} | {int(g['left_chance'].sum())}/{len(g)}{meant} "
                     f"| {int(g['at_end'].sum())}/{len(g)} | {losses} | {accs} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--protocols", nargs="+", default=["new", "old"], choices=["new", "old"])
    parser.add_argument("--data", nargs="+", default=["fmnist", "synthetic"], choices=["fmnist", "synthetic"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--width", type=float, help="width multiplier of every family (default: the family's; 1: the paper's)")
    parser.add_argument("--images", type=int, help="training images per slice (default: the family's)")
    parser.add_argument("--slices", type=int, help="epochs, each a slice of the first real epoch (default: the family's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fmnist", default=FASHION_MNIST, help="folder with Fashion-MNIST's four IDX .gz files")
    parser.add_argument("--work", default=str(ROOT / "results" / "bench" / "trainability"))
    parser.add_argument("--out", help="CSV of every run (per-slice train loss and validation accuracy)")
    parser.add_argument("--summarize", nargs="+", metavar="CSV", help="print the table of earlier runs' CSVs; train nothing")
    args = parser.parse_args(argv)
    if args.summarize:
        import json

        table = pd.concat([pd.read_csv(f) for f in args.summarize], ignore_index=True)
        for column in ("train_loss", "val_acc"):  # lists as Python wrote them, nan included
            table[column] = table[column].map(lambda text: json.loads(text.replace("nan", "NaN")))
        below = 0.8 * chance_loss(10)  # Fashion-MNIST and the synthetic set have 10 classes
        table["left_chance"] = table["train_loss"].map(lambda v: min(v) < below)
        table["at_end"] = table["train_loss"].map(lambda v: v[-1] < below)
        print(summary(table))
        return 0
    Path(args.work).mkdir(parents=True, exist_ok=True)
    table = run(args)
    if args.out:
        table.to_csv(args.out, index=False)
    print(summary(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
