import gzip

import numpy as np
import pytest
import torch

from convbias.data.convert import convert
from convbias.data.dataset import DatasetMeta, train_indices, validation_indices
from convbias.data.loaders import load_split, make_loader
from convbias.data.transform import BatchTransform
from convbias.data.sources import DatasetError, MissingDataset, load_source, read_idx
from convbias.data.sources import idx_dataset as read_source
from conftest import make_cifar_archive, make_image_folder
from convbias.data.variants import noisy_labels, shuffle_pixels
from convbias.specs import DatasetSpec

SPEC = {"source": "mnist", "pad": 2, "val_fraction": 0.1, "split_seed": 0, "hflip": False,
        "pixel_range": "standardize"}


@pytest.fixture(scope="module")
def converted(idx_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("beton")
    meta = convert("tiny", DatasetSpec.from_config({**SPEC, "path": str(idx_dataset)}),
                   out / "train.beton", out / "test.beton",
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
        loader = make_loader(out / "train.beton", 50, meta=meta, indices=meta.train_indices(), train=True, seed=seed)
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


@pytest.mark.parametrize("channels,hflip,encoding", [(3, True, "raw"), (1, False, "raw"), (3, True, "jpeg")])
def test_fused_cpu_transform_equals_tensor_ops(channels, hflip, encoding):
    """The one-pass CPU kernel and the tensor operations (the GPU path) give the same floats."""
    meta = DatasetMeta("t", 10, (20, 24, channels), 100, 10, 0.1, 0, hflip, "standardize",
                       (120.0, 110.0, 100.0)[:channels], (60.0, 50.0, 40.0)[:channels], encoding)
    x = torch.randint(0, 256, (64, 20, 24, channels), dtype=torch.uint8)
    t = BatchTransform(meta)
    reuse = BatchTransform(meta, reuse_output=True)
    for seed in (None, 0, 1):
        gen = lambda: None if seed is None else torch.Generator().manual_seed(seed)  # noqa: E731
        expected = t(x, gen(), fused=False)
        assert torch.equal(t(x, gen()), expected)
        assert torch.equal(reuse(x, gen()), expected)
        assert torch.equal(reuse(x[:10], gen()), t(x[:10], gen(), fused=False))  # a last, smaller batch
    assert expected.shape == (64, channels, 20, 24)
    assert expected.is_contiguous(memory_format=torch.channels_last) or channels == 1
    if encoding == "raw":  # shifts happen: some output differs from the unshifted image
        assert not torch.equal(t(x, torch.Generator().manual_seed(0)), t(x))
    else:  # JPEG: the loader's random resized crop augments; the transform only flips
        seeded, plain = t(x, torch.Generator().manual_seed(0)), t(x)
        assert all(torch.equal(s, p) or torch.equal(s, p.flip(-1)) for s, p in zip(seeded, plain))
        assert not torch.equal(seeded, plain)


@pytest.mark.parametrize("order", ["random", "quasi_random"])
def test_sharded_training_order_splits_every_global_batch(converted, order):
    """Process r of W gets the r-th part of each single-process batch, augmented the same way."""
    from convbias.data.loaders import _sharded_order, _traversal, global_batches, shard_sizes

    out, meta = converted
    kwargs = {"meta": meta, "indices": meta.train_indices(), "train": True, "seed": 5, "order": order,
              "os_cache": order == "random"}
    single = make_loader(out / "train.beton", 35, **kwargs)
    single.next_epoch = 2
    transform = BatchTransform(meta)
    gen = torch.Generator().manual_seed(9)
    expected = [(transform(x, gen).clone(), y.clone()) for x, y in single]
    world = 7
    sizes = global_batches(len(meta.train_indices()), 35, world)
    assert sizes == [len(y) for _, y in expected] and sizes[-1] % world  # uneven shares of the last batch
    for rank in range(world):
        loader = make_loader(out / "train.beton", 35 // world, **kwargs)
        loader.traversal_order = _sharded_order(_traversal(order))(loader, 35, rank, world)
        loader.first_traversal_order = loader.next_traversal_order()
        loader.next_epoch = 2
        gen = torch.Generator().manual_seed(9)
        for step, (x, y) in enumerate(loader):
            shares = shard_sizes(sizes[step], world)
            start = sum(shares[:rank])
            ex, ey = expected[step]
            assert torch.equal(y, ey[start:start + len(y)])
            assert torch.equal(transform(x, gen, part=(start, sizes[step])), ex[start:start + len(y)])
        assert step == len(sizes) - 1


def test_label_noise_is_exact_and_never_the_true_label():
    labels = np.random.default_rng(0).integers(0, 10, size=1000)
    fit = train_indices(1000, 0.1, 0)
    for p in (0.0, 0.25, 1.0):
        noisy = noisy_labels(labels, p, 10, fit, seed=3)
        changed = noisy != labels
        assert changed.sum() == round(p * len(fit))
        assert not changed[validation_indices(1000, 0.1, 0)].any()
        assert ((noisy >= 0) & (noisy < 10)).all()
    assert np.array_equal(noisy_labels(labels, 0.5, 10, fit, 3), noisy_labels(labels, 0.5, 10, fit, 3))


@pytest.mark.parametrize("mode", ["fixed", "per_image"])
def test_pixel_shuffle_keeps_each_images_pixels(mode):
    images = np.random.default_rng(0).integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    shuffled = shuffle_pixels(images, mode, seed=1)
    assert not np.array_equal(shuffled, images)
    for a, b in zip(images, shuffled):
        # the multiset of (r, g, b) pixels is unchanged: channels move together
        assert sorted(map(tuple, a.reshape(-1, 3))) == sorted(map(tuple, b.reshape(-1, 3)))
    positions = np.arange(64, dtype=np.uint8).reshape(1, 8, 8, 1).repeat(20, axis=0)
    orders = shuffle_pixels(positions, mode, seed=1).reshape(20, 64)
    same = all(np.array_equal(orders[0], o) for o in orders)
    assert same == (mode == "fixed")


def test_variants_are_baked_into_the_conversion(idx_dataset, tmp_path):
    spec = {**SPEC, "path": str(idx_dataset), "label_noise": 1.0, "pixel_shuffle": "fixed", "variant_seed": 5}
    meta = convert("noisy", DatasetSpec.from_config(spec),
                   tmp_path / "train.beton", tmp_path / "test.beton", tmp_path / "meta.json")
    source = read_source(idx_dataset)
    _, labels = load_split(tmp_path / "train.beton")
    fit, val = meta.train_indices(), meta.val_indices()
    assert (labels.numpy()[fit] != source.train_labels[fit]).all()
    assert (labels.numpy()[val] == source.train_labels[val]).all()
    _, test_labels = load_split(tmp_path / "test.beton")
    assert (test_labels.numpy() == source.test_labels).all()


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


def test_epoch_draws_are_the_per_batch_draws_in_one_piece():
    meta = DatasetMeta("m", 10, (8, 8, 3), 100, 10, 0.1, 0, True, "unit", (0.0,) * 3, (1.0,) * 3)
    transform = BatchTransform(meta)
    sizes = [32, 32, 7]
    epoch = transform.draw_epoch(sizes, torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    for (offsets, flips), m in zip(epoch, sizes):
        expected = transform.draw(m, generator)
        assert torch.equal(offsets, expected[0]) and torch.equal(flips, expected[1])
    x = torch.randint(0, 256, (7, 8, 8, 3), dtype=torch.uint8)
    assert torch.equal(transform(x, draws=epoch[2]), transform(x, draws=epoch[2], fused=False))
    assert not torch.equal(transform(x, draws=epoch[2]), transform(x))


def test_one_ahead_takes_a_gpu_batch_only_after_the_device_began_the_previous_one(monkeypatch):
    """FFCV refills the pinned buffer of batch j-1 as soon as batch j is taken."""
    from convbias.data import loaders

    log = []

    class Event:
        def __init__(self):
            self.id = None

        def record(self):
            self.id = len([e for e in log if e[0] == "record"])
            log.append(("record", self.id))

        def synchronize(self):
            log.append(("wait", self.id))

    class Batch:
        is_cuda = True

    def loader():
        for j in range(3):
            log.append(("take", j))
            yield Batch(), j

    monkeypatch.setattr(torch.cuda, "Event", Event)
    for _, j in loaders.one_ahead(loader()):
        log.append(("step", j))
    assert log == [("take", 0), ("record", 0), ("step", 0), ("wait", 0),
                   ("take", 1), ("record", 1), ("step", 1), ("wait", 1),
                   ("take", 2), ("record", 2), ("step", 2), ("wait", 2)]


# Content against arrays the test writes and parses itself (never re-read through convbias's readers).

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


@pytest.mark.parametrize("pixel_range,expected", [
    ("unit", lambda x, m, s: x / 255.0),
    ("minus_one_one", lambda x, m, s: x / 127.5 - 1.0),
    ("standardize", lambda x, m, s: (x - m) / s),
])
@pytest.mark.parametrize("fused", [True, False])
def test_pixel_ranges_map_each_value_exactly(pixel_range, expected, fused):
    mean, std = (100.0, 120.0, 140.0), (50.0, 60.0, 70.0)
    meta = DatasetMeta("t", 10, (6, 5, 3), 100, 10, 0.1, 0, False, pixel_range, mean, std)
    x = torch.randint(0, 256, (4, 6, 5, 3), dtype=torch.uint8)
    y = BatchTransform(meta)(x, fused=fused)
    want = expected(x.double().numpy(), np.array(mean), np.array(std)).transpose(0, 3, 1, 2)
    assert y.shape == (4, 3, 6, 5)
    assert np.allclose(y.numpy(), want, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("hflip", [False, True])
def test_shifts_stay_within_four_pixels_and_flips_happen_only_when_asked(hflip, fused):
    """One bright pixel per image: after augmentation it lies within ±4 of where it was, or — only
    with hflip — within ±4 of its mirror position; every offset in [-4, 4] occurs in both axes."""
    meta = DatasetMeta("t", 10, (24, 24, 1), 100, 10, 0.1, 0, hflip, "unit", (0.0,), (1.0,))
    n, r, c = 2000, 10, 6
    x = torch.zeros(n, 24, 24, 1, dtype=torch.uint8)
    x[:, r, c] = 255
    y = BatchTransform(meta)(x, torch.Generator().manual_seed(0), fused=fused)[:, 0]
    rows, cols = (y == 1).nonzero()[:, 1:].T
    assert len(rows) == n  # the pixel never leaves a 24×24 image when 4 pixels from any border
    dr, dc = rows - r, cols - c
    mirrored = (cols - (23 - c)).abs() <= 4
    assert set(dr.tolist()) == set(range(-4, 5))
    if hflip:
        assert 0.45 < mirrored.float().mean() < 0.55
        assert set((cols - (23 - c))[mirrored].tolist()) == set(range(-4, 5))
        assert set(dc[~mirrored].tolist()) == set(range(-4, 5))
    else:
        assert not mirrored.any() and set(dc.tolist()) == set(range(-4, 5))


def test_augmentation_draws_differ_between_seeds_and_repeat_for_one_seed():
    meta = DatasetMeta("t", 10, (16, 16, 3), 100, 10, 0.1, 0, True, "unit", (0.0,) * 3, (1.0,) * 3)
    x = torch.randint(0, 256, (32, 16, 16, 3), dtype=torch.uint8)
    t = BatchTransform(meta)
    batch = lambda seed: t(x, torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(batch(1), batch(1))
    assert not torch.equal(batch(1), batch(2))
    assert not torch.equal(batch(1), t(x))  # augmented differs from plain scaling


def test_fixed_pixel_shuffle_moves_train_and_test_pixels_alike(tmp_path):
    """The test set is a copy of the first training images: after conversion with one fixed
    permutation, test image i equals training image i, and both differ from the written image."""
    from conftest import learnable_images, write_idx

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 40).astype(np.uint8)
    images = learnable_images(labels, rng)
    for prefix, part in (("train", slice(None)), ("t10k", slice(0, 12))):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images[part])
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels[part])
    spec = {**SPEC, "path": str(tmp_path), "pixel_shuffle": "fixed", "variant_seed": 3}
    convert("s", DatasetSpec.from_config(spec), tmp_path / "train.beton", tmp_path / "test.beton", tmp_path / "m.json")
    train, _ = load_split(tmp_path / "train.beton")
    test, _ = load_split(tmp_path / "test.beton")
    train, test = train.numpy()[..., 0], test.numpy()[..., 0]
    assert np.array_equal(test, train[:12])
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    assert (train != padded).mean() > 0.2  # shuffled …
    assert (train[:, :2] == 0).all() and (train[:, :, -2:] == 0).all()  # … before padding: the border stays black
    inner, written = train[:, 2:-2, 2:-2].reshape(40, -1), images.reshape(40, -1)
    assert np.array_equal(np.sort(inner, axis=1), np.sort(written, axis=1))  # each image keeps its own pixels
    # one permutation for all: a pixel position's values across the 40 images move together
    moved = {tuple(column) for column in inner.T}
    assert moved == {tuple(column) for column in written.T}


def test_variant_helpers_against_numpy_by_hand():
    from convbias.data.variants import channel_stats, pad

    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (20, 5, 7, 3), dtype=np.uint8)
    mean, std = channel_stats(images)
    assert mean == pytest.approx([images[..., c].mean() for c in range(3)])
    assert std == pytest.approx([images[..., c].std() for c in range(3)])
    one = pad(images, 1)
    assert one.shape == (20, 7, 9, 3) and np.array_equal(one[:, 1:-1, 1:-1], images) and one[:, 0].sum() == 0
    assert pad(images, 0) is images
    shuffled = shuffle_pixels(images, "per_image", 0)
    assert shuffled.shape == images.shape and shuffled.dtype == np.uint8


def test_noisy_labels_use_every_other_class():
    labels = np.zeros(3000, dtype=np.int64)
    noisy = noisy_labels(labels, 1.0, 4, np.arange(3000), seed=0)
    counts = np.bincount(noisy, minlength=4)
    assert counts[0] == 0 and all(900 < c < 1100 for c in counts[1:])  # uniform over the 3 wrong classes


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


def test_image_folder_label_noise_changes_training_labels_only_and_pixel_shuffle_is_refused(tmp_path):
    root = make_image_folder(tmp_path / "imagenet", classes=3, per_class={"train": 10, "val": 2}, size=32)
    spec = {**SPEC, "source": "imagenet", "path": str(root), "max_resolution": 64, "jpeg_quality": 90,
            "compress_probability": 0.0, "image_size": 24, "val_fraction": 0.2, "label_noise": 1.0, "variant_seed": 4}
    meta = convert("noisy", DatasetSpec.from_config(spec),
                   tmp_path / "train.beton", tmp_path / "test.beton", tmp_path / "meta.json")
    clean = np.repeat(np.arange(3), 10)  # ImageFolder order: class by class
    _, labels = load_split(tmp_path / "train.beton", meta=meta)
    fit, val = meta.train_indices(), meta.val_indices()
    assert len(fit) == 24 and (labels.numpy()[fit] != clean[fit]).all() and (labels.numpy()[val] == clean[val]).all()
    assert np.array_equal(labels.numpy(), noisy_labels(clean, 1.0, 3, fit, seed=4))
    _, test_labels = load_split(tmp_path / "test.beton", meta=meta)
    assert test_labels.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(DatasetError, match="pixel_shuffle"):
        convert("s", DatasetSpec.from_config({**spec, "pixel_shuffle": "fixed"}),
                tmp_path / "a", tmp_path / "b", tmp_path / "c")


def test_image_permutations_depend_on_the_seed_and_the_index_only():
    """Image i's permutation is the same whatever other images are asked for, in whatever order."""
    from convbias.data.variants import image_permutations

    together = image_permutations(7, [5, 2, 9], 64)
    assert together.dtype == np.int16 and together.shape == (3, 64)
    assert np.array_equal(together[1], image_permutations(7, [2], 64)[0])
    assert np.array_equal(together[[2, 0]], image_permutations(7, [9, 5], 64))
    assert all(np.array_equal(np.sort(row), np.arange(64)) for row in together)  # each a permutation
    assert len({row.tobytes() for row in together}) == 3  # one per image
    assert not np.array_equal(together, image_permutations(8, [5, 2, 9], 64))  # the seed matters
    assert (image_permutations(0, [0], 40_000).dtype == np.int32)  # positions beyond int16


@pytest.mark.parametrize("fused", [True, False])
def test_per_image_train_shuffle_permutes_each_training_image_after_shift_and_flip(fused):
    """The shuffled batch is the augmented batch with image k's pixel positions in the order of
    the permutation of its index (checked here position by position); no indices: clean."""
    from convbias.data.variants import image_permutations

    meta = DatasetMeta("t", 10, (6, 5, 3), 50, 10, 0.1, 0, True, "unit", (0.0,) * 3, (1.0,) * 3,
                       train_pixel_shuffle_seed=4)
    clean = BatchTransform(DatasetMeta(**{**meta.__dict__, "train_pixel_shuffle_seed": None}))
    t = BatchTransform(meta, reuse_output=True)
    assert t.permutes and not clean.permutes
    x = torch.randint(0, 256, (8, 6, 5, 3), dtype=torch.uint8)
    indices = torch.tensor([3, 41, 0, 17, 3, 22, 8, 30])
    draws = t.draw(8, torch.Generator().manual_seed(2))
    augmented = clean(x, draws=draws, fused=fused)  # (n, C, H, W)
    shuffled = t(x, draws=draws, indices=indices, fused=fused)
    perms = image_permutations(4, indices.tolist(), 30)
    flat = augmented.permute(0, 2, 3, 1).reshape(8, 30, 3).numpy()
    for k in range(8):
        got = shuffled[k].permute(1, 2, 0).reshape(30, 3).numpy()
        for position in range(30):
            assert np.array_equal(got[position], flat[k, perms[k, position]])
    assert not torch.equal(shuffled, augmented)
    assert torch.equal(t(x, draws=draws, fused=fused), augmented)  # evaluation batches: no indices, no shuffle
    assert torch.equal(clean(x, draws=draws, indices=indices, fused=fused), augmented)  # other datasets ignore them


def test_batch_indices_are_those_of_the_images_the_next_pass_yields(tmp_path):
    """Images that carry their own index: the indices computed ahead equal the ones decoded."""
    from convbias.data.loaders import batch_indices, write_beton

    n = 300
    images = np.zeros((n, 2, 2, 1), dtype=np.uint8)
    images[:, 0, 0, 0], images[:, 0, 1, 0] = np.arange(n) // 256, np.arange(n) % 256
    write_beton(tmp_path / "i.beton", images, np.zeros(n, dtype=np.int64))
    subset = np.arange(0, n, 3)
    loader = make_loader(tmp_path / "i.beton", 32, indices=subset, train=True, seed=6)
    for epoch in (0, 3, 1):
        loader.next_epoch = epoch
        ahead = batch_indices(loader)
        seen = [(x[:, 0, 0, 0].long() * 256 + x[:, 0, 1, 0].long()) for x, _ in loader]
        assert [len(a) for a in ahead] == [len(s) for s in seen] and len(seen) == 4
        assert all(torch.equal(a, s) for a, s in zip(ahead, seen))
        assert sorted(torch.cat(ahead).tolist()) == subset.tolist()


def test_per_image_train_shuffle_leaves_the_files_clean_and_records_its_seed(idx_dataset, converted, tmp_path):
    out, plain = converted
    spec = {**SPEC, "path": str(idx_dataset), "pixel_shuffle": "per_image_train", "variant_seed": 9}
    meta = convert("s", DatasetSpec.from_config(spec), tmp_path / "train.beton", tmp_path / "test.beton",
                   tmp_path / "meta.json")
    assert meta.train_pixel_shuffle_seed == 9 and DatasetMeta.load(tmp_path / "meta.json") == meta
    assert plain.train_pixel_shuffle_seed is None
    assert meta.fingerprint != plain.fingerprint
    for split in ("train", "test"):
        assert torch.equal(load_split(tmp_path / f"{split}.beton")[0], load_split(out / f"{split}.beton")[0])


def test_quasi_random_order_is_a_function_of_seed_and_epoch(tmp_path):
    """Over a file of several 2 MiB pages: the order a fresh loader draws for epoch 3 is the order a
    loader that went through epochs 0-2 draws (FFCV's own QuasiRandom differs: it reshuffles its
    page table in place), so a resumed run sees the same batches; seeds and epochs change it."""
    from ffcv.fields import IntField, NDArrayField
    from ffcv.writer import DatasetWriter

    from convbias.data.loaders import batch_indices

    n = 3000
    images = np.zeros((n, 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0, 0], images[:, 0, 1, 0] = np.arange(n) // 256, np.arange(n) % 256

    class Pairs:
        def __len__(self):
            return n

        def __getitem__(self, i):
            return images[i], 0

    fields = {"image": NDArrayField(dtype=np.dtype("uint8"), shape=(32, 32, 3)), "label": IntField()}
    DatasetWriter(str(tmp_path / "q.beton"), fields, page_size=1 << 21, num_workers=1).from_indexed_dataset(Pairs())
    subset = np.arange(0, n, 2)
    make = lambda seed: make_loader(tmp_path / "q.beton", 100, indices=subset, train=True, seed=seed,  # noqa: E731
                                    order="quasi_random", os_cache=False)
    walked = make(4)
    for _ in range(3):
        list(walked)
    fresh = make(4)
    fresh.next_epoch = 3
    orders = [torch.cat(batch_indices(loader)) for loader in (walked, fresh)]
    assert torch.equal(orders[0], orders[1])
    seen = torch.cat([(x[:, 0, 0, 0].long() * 256 + x[:, 0, 1, 0].long()) for x, _ in fresh])
    assert torch.equal(seen, orders[1]) and sorted(seen.tolist()) == subset.tolist()
    other_seed, other_epoch = make(5), make(4)
    other_seed.next_epoch, other_epoch.next_epoch = 3, 2
    assert not torch.equal(torch.cat(batch_indices(other_seed)), seen)
    assert not torch.equal(torch.cat(batch_indices(other_epoch)), seen)
    assert len(fresh.traversal_order.page_to_samples) >= 4  # several pages: the order is FFCV's quasi-random one


def test_os_cache_follows_the_setting_else_whether_the_file_fits_half_the_memory():
    from convbias.data.loaders import use_os_cache

    assert use_os_cache(None, "random", 4 * 2**30, 16 * 2**30) is True
    assert use_os_cache(None, "random", 9 * 2**30, 16 * 2**30) is False
    assert use_os_cache(False, "random", 1, 16 * 2**30) is False and use_os_cache(True, "random", 2**40, 1) is True
    assert use_os_cache(None, "quasi_random", 1, 2**40) is False
    with pytest.raises(ValueError, match="os_cache"):
        use_os_cache(True, "quasi_random", 1, 2**40)


@pytest.mark.subprocess
def test_numba_code_of_a_training_process_is_compiled_once_then_loaded_from_disk(tmp_path):
    """FFCV's import (numba typed-dict helpers) and the CPU augmentation kernel are kept in numba's
    on-disk cache: a second process loads them and compiles nothing (every job used to pay ~3.8 s)."""
    import os
    import subprocess
    import sys

    script = """
import numpy as np, torch
from convbias.data.loaders import make_loader  # noqa: F401  (the module that imports FFCV; it switches the cache on)
import ffcv  # noqa: F401
from convbias.data.transform import _fused_cpu
out = np.zeros((2, 8, 8, 3), np.float32)
_fused_cpu(np.full((2, 8, 8, 3), 7, np.uint8), np.array([0, 2]), np.array([1, 4]), np.array([True, False]),
           np.tile(np.arange(256, dtype=np.float32)[:, None], (1, 3)), 2, out)
assert out[1, 2, 2, 0] == 7 and out[0, 0, 0, 0] == 0
"""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}

    def run():
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "cannot cache" not in proc.stderr.lower(), proc.stderr[-3000:]  # numba's NumbaWarning
        return {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.nb[ic]")}

    first = run()
    names = " ".join(p.name for p in first)
    assert "typeddict._make_dict" in names and "typeddict._setitem" in names, names
    assert "_fused_cpu.locals.kernel" in names, names
    assert run() == first  # the second process found everything: no file written again


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
