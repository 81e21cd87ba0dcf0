"""Loading a converted dataset: sample orders that depend on the seed and epoch alone, shards of every
global batch, and the batch transforms (pixel ranges, shifts and flips drawn from a generator, fused
on the CPU), each equal to what it stands for."""

import numpy as np
import pytest
import torch

from convbias.data.dataset import DatasetMeta
from convbias.data.loaders import load_split, make_loader
from convbias.data.transform import BatchTransform
from data_common import converted  # noqa: F401 (fixtures)


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
