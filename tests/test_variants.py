"""Dataset variants (label noise, pixel shuffles): exact, seeded, written into the files or applied
to training batches, and left out of what must stay clean."""

import numpy as np
import pytest
import torch

from conftest import make_image_folder
from convbias.data.convert import convert
from convbias.data.dataset import DatasetMeta, train_indices, validation_indices
from convbias.data.loaders import load_split
from convbias.data.sources import DatasetError
from convbias.data.sources import idx_dataset as read_source
from convbias.data.transform import BatchTransform
from convbias.data.variants import noisy_labels, shuffle_pixels
from convbias.specs import DatasetSpec
from data_common import SPEC, converted  # noqa: F401 (fixtures)


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
