"""The paper study's recipes, as config/config.yaml has them, on real images (Fashion-MNIST, the
Debian package ``make`` installs): VGG19 starts at chance and leaves it; the text's reading that
the study used before (Kaiming on every layer, pixels in [−1, 1]) starts far from chance.

The CPU proxy of ``bench/trainability.py`` (BENCHMARKS.md, "Trainability", has the full table)."""

import dataclasses
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from trainability import FAMILIES, FASHION_MNIST, datasets, recipe  # noqa: E402

from convbias.data.loaders import make_loader  # noqa: E402
from convbias.data.transform import BatchTransform  # noqa: E402
from convbias.learning import at_chance  # noqa: E402
from convbias.models import init_model  # noqa: E402
from convbias.train import train_run  # noqa: E402

CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
LN10 = math.log(10)


@pytest.fixture(scope="module")
def fashion_32(tmp_path_factory):
    """Fashion-MNIST, 3,200 training images padded to 32×32 and repeated to 3 channels (+ validation)."""
    assert Path(FASHION_MNIST).is_dir(), "Fashion-MNIST is missing: make test installs dataset-fashion-mnist"
    return datasets(tmp_path_factory.mktemp("fmnist"), "fmnist", "32x3", 3200, FASHION_MNIST)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vgg19_of_the_study_starts_at_chance_and_the_texts_reading_far_from_it(fashion_32, seed):
    """Full width: the study's logits are ~0 (loss ln 10); Kaiming on the 4096 → 10 layer (std √(2/10))
    with [−1, 1] pixels gives logits of std 1.0–1.6 and a loss of 2.6–3.2 (seeds 0–2) before any step."""
    meta, _, test = fashion_32
    family = dataclasses.replace(FAMILIES["vgg19_32"], width=1.0)
    images, labels = next(iter(make_loader(test, 64, meta=meta)))
    found = {}
    for protocol in ("new", "old"):
        spec, pixel_range = recipe(CONFIG, family, protocol)
        run_meta = dataclasses.replace(meta, pixel_range=pixel_range)
        with torch.no_grad():
            logits = init_model(spec, run_meta, seed).eval()(BatchTransform(run_meta)(images))
        found[protocol] = (spec.init, logits.std().item(), torch.nn.functional.cross_entropy(logits, labels.long()).item())
    assert found["new"][0] == "torchvision_vgg" and found["new"][1] < 0.05 and abs(found["new"][2] - LN10) < 0.01
    assert found["old"][0] == "kaiming_normal" and found["old"][1] > 0.5 and found["old"][2] > 1.1 * LN10


def test_vgg19_of_the_study_leaves_chance_on_real_images(fashion_32, tmp_path):
    """The vgg19_cifar10_step recipe at width 1/8 (the ladder's narrowest rung; the torchvision head keeps
    its 4096 units), 3 slices of 25 steps of its first epoch: the train loss leaves ln 10 and validation
    accuracy passes 1.5 × chance (here: loss 2.29 → 2.01, validation accuracy 0.30 after the third)."""
    meta, train, test = fashion_32
    spec, pixel_range = recipe(CONFIG, dataclasses.replace(FAMILIES["vgg19_32"], width=0.125), "new", slices=3)
    assert (spec.init, pixel_range, spec.lr, spec.batch_size) == ("torchvision_vgg", "standardize", 0.01, 128)
    history = train_run(spec, 0, dataclasses.replace(meta, pixel_range=pixel_range), train, test,
                        tmp_path / "run", tmp_path / "work", threads=2)
    last = history.iloc[-1]
    assert not at_chance(last.train_loss, 10) and last.train_loss < history["train_loss"].iloc[1] - 0.05, history
    assert last.val_acc > 0.15, history


def test_the_bench_table_counts_seeds_that_left_chance_and_those_below_it_at_the_end():
    import pandas as pd

    from trainability import summary

    rows = [{"data": "fmnist", "family": "vgg19_32", "experiment": "vgg19_cifar10_step", "protocol": "new",
             "init": "torchvision_vgg", "pixel_range": "standardize", "width": 0.25, "seed": s, "steps": 400,
             "train_loss": losses, "val_acc": [0.1, 0.5], "left_chance": min(losses) < 0.8 * LN10,
             "at_end": losses[-1] < 0.8 * LN10, "expect": "generalize"}
            for s, losses in enumerate([[2.3, 1.2], [1.3, 2.4], [2.3, 2.3]])]
    table = summary(pd.DataFrame(rows)).splitlines()
    assert len(table) == 3  # header, rule, one (data, family, protocol)
    assert "| 2/3 | 1/3 | 2.30 1.20; 1.30 2.40; 2.30 2.30 | 0.50, 0.50, 0.50 |" in table[2]
