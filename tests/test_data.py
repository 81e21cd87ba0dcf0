"""Dataset sources and their conversion to FFCV files: IDX, CIFAR, image folders and synthetic
data, read exactly, refused with one sentence when broken, and converted with their splits and statistics."""

import gzip

import numpy as np
import pytest
import torch

from conftest import make_cifar_archive, make_image_folder
from convbias.data.convert import convert
from convbias.data.dataset import DatasetMeta, train_indices, validation_indices
from convbias.data.loaders import load_split, make_loader
from convbias.data.sources import DatasetError, MissingDataset, load_source, read_idx
from convbias.data.sources import idx_dataset as read_source
from convbias.specs import DatasetSpec
from data_common import SPEC, converted  # noqa: F401 (fixtures)


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


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_batches_convert_exactly(tmp_path, classes):
    batches = make_cifar_archive(tmp_path / "cifar", classes)
    key = b"labels" if classes == 10 else b"fine_labels"
    train_names = [n for n in batches if n not in ("test_batch", "test")]
    test_name = "test_batch" if classes == 10 else "test"
    source = "cifar10" if classes == 10 else "cifar100"
    spec = {**SPEC, "source": source, "path": str(tmp_path / "cifar"), "pad": 0, "download": False}
    meta = convert(source, DatasetSpec.from_config(spec),
                   tmp_path / "train.beton", tmp_path / "test.beton", tmp_path / "meta.json")
    assert meta.shape == (32, 32, 3) and meta.num_classes == classes
    images, labels = load_split(tmp_path / "train.beton")
    expected = np.concatenate([batches[n][b"data"] for n in train_names]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    assert np.array_equal(images.numpy(), expected)
    assert labels.tolist() == sum((batches[n][key] for n in train_names), [])
    _, test_labels = load_split(tmp_path / "test.beton")
    assert test_labels.tolist() == batches[test_name][key]


def test_cifar_extracted_folder_and_bad_files(tmp_path):
    import tarfile

    make_cifar_archive(tmp_path / "a")
    with tarfile.open(tmp_path / "a" / "cifar-10-python.tar.gz") as tar:
        tar.extractall(tmp_path / "b", filter="data")
    assert load_source("cifar10", tmp_path / "b").train_images.shape == (30, 32, 32, 3)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b truncated")
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz"):
        load_source("cifar10", tmp_path / "c")
    with pytest.raises(MissingDataset, match="does not exist"):
        load_source("cifar10", tmp_path / "missing")


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_cifar_batch_with_code_is_refused(tmp_path, capsys):
    import pickle

    make_cifar_archive(tmp_path / "a")
    folder = tmp_path / "b" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": Payload()}, protocol=2))
    with pytest.raises(DatasetError, match="not a CIFAR batch"):
        load_source("cifar10", tmp_path / "b")
    assert "code ran" not in capsys.readouterr().out


@pytest.mark.parametrize("compress", [0.0, 1.0])
def test_image_folder_converts_within_jpeg_tolerance(tmp_path, compress):
    from PIL import Image

    root = make_image_folder(tmp_path / "imagenet")
    spec = {**SPEC, "source": "imagenet", "path": str(root), "hflip": True, "max_resolution": 500,
            "jpeg_quality": 90, "compress_probability": compress, "image_size": 56}
    meta = convert("imagenet", DatasetSpec.from_config(spec),
                   tmp_path / "train.beton", tmp_path / "test.beton", tmp_path / "meta.json")
    assert meta.encoding == "jpeg" and meta.num_classes == 2 and meta.n_train == 10 and meta.n_test == 4
    images, labels = load_split(tmp_path / "test.beton", meta=meta)
    assert images.shape == (4, 56, 56, 3) and labels.tolist() == [0, 0, 1, 1]
    files = sorted((root / "val").rglob("*.JPEG"))
    # centre crop of 224/256 of a 64×64 image is its middle 56×56, stored raw or re-encoded as JPEG
    expected = np.stack([np.asarray(Image.open(f).convert("RGB"))[4:60, 4:60] for f in files])
    error = np.abs(images.numpy().astype(int) - expected.astype(int))
    assert error.max() == 0 if compress == 0.0 else error.mean() < 3
    train_images, _ = next(iter(make_loader(tmp_path / "train.beton", 4, meta=meta, train=True, seed=0)))
    assert train_images.shape == (4, 56, 56, 3)


def test_missing_image_folder_is_named(tmp_path):
    spec = {**SPEC, "source": "imagenet", "path": str(tmp_path / "nowhere"), "max_resolution": 500,
            "jpeg_quality": 90, "compress_probability": 0.5, "image_size": 224}
    with pytest.raises(MissingDataset, match="nowhere/train"):
        convert("imagenet", DatasetSpec.from_config(spec), tmp_path / "a", tmp_path / "b", tmp_path / "c")


def test_synthetic_is_seeded_and_learnable(tmp_path):
    a = load_source("synthetic", None, n_train=300, n_test=100, size=16, channels=3, num_classes=4, seed=1)
    b = load_source("synthetic", None, n_train=300, n_test=100, size=16, channels=3, num_classes=4, seed=1)
    assert a.train_images.shape == (300, 16, 16, 3) and np.array_equal(a.train_images, b.train_images)
    # a nearest-class-mean classifier already separates the classes: the labels are learnable
    x = a.train_images.reshape(300, -1).astype(float)
    means = np.stack([x[a.train_labels == c].mean(0) for c in range(4)])
    test = a.test_images.reshape(100, -1).astype(float)
    predicted = ((test[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == a.test_labels).mean() > 0.9


def raw_idx(path):
    """An IDX .gz file parsed by hand: 4 magic bytes, one big-endian uint32 per dimension, then the bytes."""
    raw = gzip.open(path).read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(shape)


def test_idx_conversion_stores_the_files_pixels_row_major(tmp_path):
    """Rows stay rows: images with a bright row (not column) come out with that row bright, padded by 2."""
    from conftest import write_idx

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.zeros((n, 28, 28), np.uint8)
        images[np.arange(n)[:, None], (labels + 3)[:, None], np.arange(5, 20)] = (200 + labels)[:, None]  # a horizontal bar at a class-dependent row
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    convert("t", DatasetSpec.from_config({**SPEC, "path": str(tmp_path)}),
            tmp_path / "train.beton", tmp_path / "test.beton", tmp_path / "m.json")
    for prefix, split in (("train", "train"), ("t10k", "test")):
        images, labels = load_split(tmp_path / f"{split}.beton")
        written = raw_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz")
        assert np.array_equal(images.numpy()[..., 0], np.pad(written, ((0, 0), (2, 2), (2, 2))))
        assert np.array_equal(labels.numpy(), raw_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz"))
        for image, label in zip(images.numpy()[..., 0], labels.numpy()):
            assert (image[label + 5, 7:22] == 200 + label).all() and image[:, 7:22].sum() == 15 * (200 + label)


def test_conversion_stores_the_channel_statistics_of_the_training_part(idx_dataset, converted):
    out, meta = converted
    images = np.pad(raw_idx(idx_dataset / "train-images-idx3-ubyte.gz"), ((0, 0), (2, 2), (2, 2))).astype(float)
    fit = np.setdiff1d(np.arange(800), np.sort(np.random.default_rng(0).permutation(800)[:80]))
    assert meta.mean[0] == pytest.approx(images[fit].mean()) and meta.std[0] == pytest.approx(images[fit].std())
    assert not np.isclose(meta.mean[0], images.mean())  # the validation images are left out


def test_a_datasets_fingerprint_is_its_content_not_where_its_files_are(idx_dataset, tmp_path):
    def dataset_fingerprint(entry):
        return DatasetSpec.from_config(entry).fingerprint()

    base = {**SPEC, "path": "/data/mnist", "download": False}
    same = [{**base, "path": "/elsewhere"}, {**base, "download": True}, {k: v for k, v in base.items() if k != "path"},
            {**base, "label_noise": 0.0, "variant_seed": 0}, {k: v for k, v in base.items() if k != "split_seed"}]
    assert all(dataset_fingerprint(s) == dataset_fingerprint(base) for s in same)
    other = [{**base, "label_noise": 0.5}, {**base, "pixel_shuffle": "fixed"}, {**base, "variant_seed": 1},
             {**base, "pad": 0}, {**base, "split_seed": 1}, {**base, "pixel_range": "unit"}, {**base, "source": "fashion_mnist"}]
    prints = {dataset_fingerprint(s) for s in other}
    assert len(prints) == len(other) and dataset_fingerprint(base) not in prints
    meta = convert("t", DatasetSpec.from_config({**base, "path": str(idx_dataset)}),
                   tmp_path / "train.beton", tmp_path / "test.beton",
                   tmp_path / "meta.json")
    assert meta.fingerprint == dataset_fingerprint(base) == DatasetMeta.load(tmp_path / "meta.json").fingerprint


def test_idx_headers_types_and_plain_files(tmp_path):
    """Plain (not gzipped) IDX files, big-endian int32 payloads, and every bad magic byte."""
    values = np.arange(-3, 9, dtype=">i4").reshape(3, 4)
    (tmp_path / "ints-idx2").write_bytes(bytes([0, 0, 0x0C, 2]) + (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
                                         + values.tobytes())
    assert np.array_equal(read_idx(tmp_path / "ints-idx2"), values.astype(np.int32))
    good = bytes([0, 0, 0x08, 1]) + (2).to_bytes(4, "big") + bytes([7, 9])
    assert read_idx_bytes(tmp_path, good).tolist() == [7, 9]
    for magic in ([1, 0, 0x08, 1], [0, 1, 0x08, 1], [0, 0, 0x07, 1]):
        with pytest.raises(DatasetError, match="bad magic"):
            read_idx_bytes(tmp_path, bytes(magic) + good[4:])
    with pytest.raises(DatasetError, match="bad magic"):
        read_idx_bytes(tmp_path, bytes([0, 0, 0x08]))


def read_idx_bytes(folder, raw):
    path = folder / "f-idx1"
    path.write_bytes(raw)
    return read_idx(path)


def test_idx_datasets_whose_images_and_labels_disagree_are_refused(tmp_path):
    from conftest import write_idx

    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    for images, labels in ((np.zeros((5, 28, 28)), np.zeros(4)), (np.zeros((4, 784)), np.zeros(4)),
                           (np.zeros((4, 28, 28)), np.zeros((4, 1)))):
        write_idx(tmp_path / "train-images-idx3-ubyte.gz", images.astype(np.uint8))
        write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels.astype(np.uint8))
        with pytest.raises(DatasetError, match="do not match"):
            read_source(tmp_path)


def test_image_folders_need_the_same_classes_in_train_and_val(tmp_path):
    from convbias.data.sources import image_folders

    make_image_folder(tmp_path, classes=2, per_class={"train": 1, "val": 1}, size=16)
    import shutil

    shutil.rmtree(tmp_path / "val" / "n00000001")
    with pytest.raises(DatasetError, match="different class folders"):
        image_folders(tmp_path)


def test_a_subset_of_grey_images_made_rgb_keeps_the_chosen_images_pixels_and_labels(idx_dataset, tmp_path):
    """train_images / test_images keep a fixed random subset of each split (the same in every
    conversion, drawn from split_seed); channels: 3 repeats the grey channel; the validation split is
    a fraction of the subset; too many images or colour made grey are refused."""
    from convbias.config import ConfigError, _check_dataset

    source = read_source(idx_dataset)
    spec = {**SPEC, "path": str(idx_dataset), "channels": 3, "train_images": 40, "test_images": 7, "split_seed": 3}
    metas = [convert("s", DatasetSpec.from_config(spec), tmp_path / f"{i}train.beton", tmp_path / f"{i}test.beton",
                     tmp_path / f"{i}meta.json") for i in range(2)]
    assert metas[0] == metas[1] and metas[0].shape == (32, 32, 3) and (metas[0].n_train, metas[0].n_test) == (40, 7)
    assert len(metas[0].val_indices()) == 4  # 10 % of the 40 kept
    for split, n, images_of, labels_of in (("train", 40, source.train_images, source.train_labels),
                                           ("test", 7, source.test_images, source.test_labels)):
        images, labels = load_split(tmp_path / f"0{split}.beton")
        again, _ = load_split(tmp_path / f"1{split}.beton")
        assert torch.equal(images, again) and len(images) == n
        # every kept image is one of the source's, in the source's order, with its own label, grey in all three channels
        grey = images.numpy()[:, 2:-2, 2:-2, 0]
        assert (images.numpy() == images.numpy()[..., :1]).all()
        kept = [next(i for i in range(len(images_of)) if np.array_equal(images_of[i, ..., 0], g)) for g in grey]
        assert kept == sorted(set(kept)) and np.array_equal(labels.numpy(), labels_of[kept])
        assert len(kept) < len(images_of)
    other = convert("o", DatasetSpec.from_config({**spec, "split_seed": 4}), tmp_path / "o.beton",
                    tmp_path / "ot.beton", tmp_path / "om.json")
    assert not torch.equal(load_split(tmp_path / "o.beton")[0], load_split(tmp_path / "0train.beton")[0])
    assert other.fingerprint != metas[0].fingerprint
    with pytest.raises(DatasetError, match=r"datasets\.big\.train_images is 10000, but its source has \d+ train images"):
        convert("big", DatasetSpec.from_config({**spec, "train_images": 10_000}), tmp_path / "b", tmp_path / "c",
                tmp_path / "d")
    with pytest.raises(ConfigError, match=r"datasets\.c\.channels is 1, but its source's images are in colour"):
        _check_dataset("c", DatasetSpec.from_config({"source": "cifar10", "path": "x", "channels": 1}))
    with pytest.raises(ConfigError, match=r"datasets\.m\.test_images is 20000, but its source has 10000 test images"):
        _check_dataset("m", DatasetSpec.from_config({"source": "mnist", "path": "x", "test_images": 20_000}))
    with pytest.raises(ConfigError, match=r"datasets\.i\.train_images is not supported for an image folder"):
        _check_dataset("i", DatasetSpec.from_config({"source": "imagenet", "path": "x", "train_images": 5}))
    # unset, the keys are no part of a dataset's identity: existing conversions keep their fingerprints
    assert "train_images" not in DatasetSpec.from_config({**SPEC, "path": "x"}).identity()
