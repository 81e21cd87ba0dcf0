import gzip

import numpy as np
import pytest
import torch

from convbias.data.convert import convert
from convbias.data.ffcv_io import BatchTransform, DatasetMeta, load_split, make_loader
from convbias.data.sources import DatasetError, read_idx
from convbias.data.sources import idx_dataset as read_source
from convbias.data.variants import train_indices, validation_indices

SPEC = {"source": "mnist", "pad": 2, "val_fraction": 0.1, "split_seed": 0, "hflip": False,
        "pixel_range": "standardize"}


@pytest.fixture(scope="module")
def converted(idx_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("beton")
    meta = convert("tiny", {**SPEC, "path": str(idx_dataset)}, out / "train.beton", out / "test.beton",
                   out / "meta.json")
    return out, meta


def test_idx_roundtrip(idx_dataset):
    data = read_idx(idx_dataset / "train-images-idx3-ubyte.gz")
    assert data.shape == (800, 28, 28) and data.dtype == np.uint8


def test_truncated_and_corrupt_idx_fail_clearly(idx_dataset, tmp_path):
    raw = gzip.open(idx_dataset / "train-images-idx3-ubyte.gz").read()
    truncated = tmp_path / "truncated-idx3-ubyte.gz"
    with gzip.open(truncated, "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(truncated)
    garbage = tmp_path / "garbage.gz"
    garbage.write_bytes(b"not a gzip file at all")
    with pytest.raises(DatasetError, match="garbage.gz"):
        read_idx(garbage)
    with pytest.raises(DatasetError, match="does not exist"):
        read_idx(tmp_path / "missing.gz")


def test_missing_dataset_names_the_file(tmp_path):
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz"):
        read_source(tmp_path)


def test_conversion_keeps_pixels_and_labels(idx_dataset, converted):
    out, meta = converted
    source = read_source(idx_dataset)
    images, labels = load_split(out / "test.beton")
    expected = np.pad(source.test_images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    assert images.shape == (200, 32, 32, 1)
    assert np.array_equal(images.numpy(), expected)
    assert np.array_equal(labels.numpy(), source.test_labels)
    assert DatasetMeta.load(out / "meta.json") == meta
    assert meta.shape == (32, 32, 1) and meta.n_train == 800 and meta.num_classes == 10


def test_validation_split_is_fixed_and_disjoint():
    val = validation_indices(1000, 0.1, 0)
    assert len(val) == 100
    assert np.array_equal(val, validation_indices(1000, 0.1, 0))
    assert not set(val) & set(train_indices(1000, 0.1, 0))
    assert len(train_indices(1000, 0.1, 0)) == 900


def test_loader_order_depends_on_seed_only(converted):
    out, meta = converted
    def order(seed, epoch):
        loader = make_loader(out / "train.beton", 50, indices=meta.train_indices(), shuffle=True, seed=seed)
        loader.next_epoch = epoch
        return torch.cat([y for _, y in loader])
    assert torch.equal(order(3, 1), order(3, 1))
    assert not torch.equal(order(3, 0), order(3, 1))
    assert not torch.equal(order(3, 0), order(4, 0))


def test_batch_transform_scales_and_augments(converted):
    out, meta = converted
    images, _ = load_split(out / "train.beton", indices=meta.train_indices())
    x = BatchTransform(meta)(images)
    assert x.shape == (len(images), 1, 32, 32)
    assert x.mean().item() == pytest.approx(0.0, abs=1e-4) and x.std().item() == pytest.approx(1.0, abs=1e-2)
    for rng_name, lo, hi in (("minus_one_one", -1, 1), ("unit", 0, 1)):
        m = DatasetMeta(**{**meta.__dict__, "pixel_range": rng_name})
        y = BatchTransform(m)(images)
        assert y.min().item() >= lo and y.max().item() <= hi
    t = BatchTransform(meta)
    a = t.augment(images[:16], torch.Generator().manual_seed(1))
    b = t.augment(images[:16], torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    # a shift moves pixels and fills with zeros: it never adds brightness
    assert a.shape == images[:16].shape
    assert (a.float().sum((1, 2, 3)) <= images[:16].float().sum((1, 2, 3))).all()
