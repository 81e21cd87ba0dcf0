"""A run stopped anywhere resumes bit-identical: resumed, killed by SIGKILL, restarted with another
spec or on other data, with its momentum in the parameters' layout, and on JPEG data."""

import pandas as pd
import pytest
import torch

from convbias.checkpoints import load_weights
from convbias.data.convert import convert
from convbias.data.loaders import make_loader
from convbias.models import init_model
from convbias.specs import DatasetSpec, ModelSpec, TrainSpec
from convbias.train import train_run
from train_common import DROPOUT, SPEC, data  # noqa: F401 (fixtures)


@pytest.mark.parametrize("order,os_cache,shuffle", [("random", True, False), ("quasi_random", False, False),
                                                   ("random", True, True)])
def test_resume_is_bit_identical(data, tmp_path, order, os_cache, shuffle):
    """Also with pixel_shuffle per_image_train (``shuffle``), whose batches need their file indices."""
    import dataclasses

    meta, train, test = data
    meta = dataclasses.replace(meta, train_pixel_shuffle_seed=3) if shuffle else meta
    loading = {"order": order, "os_cache": os_cache}
    train_run(DROPOUT, 1, meta, train, test, tmp_path / "full", tmp_path / "w1", **loading)
    train_run(DROPOUT, 1, meta, train, test, tmp_path / "part", tmp_path / "w2", stop_after=1, **loading)
    assert (tmp_path / "w2" / "progress.json").exists() and not (tmp_path / "part").exists()
    committed = (tmp_path / "w2" / "epoch001.safetensors").stat()
    history = train_run(DROPOUT, 1, meta, train, test, tmp_path / "part", tmp_path / "w2", **loading)
    resumed = (tmp_path / "part" / "epoch001.safetensors").stat()  # the committed file, not epoch 1 trained again
    assert (resumed.st_ino, resumed.st_mtime_ns) == (committed.st_ino, committed.st_mtime_ns)
    assert list(history["epoch"]) == [0, 1, 2, 3]
    for e in range(4):
        a = load_weights(tmp_path / "full" / f"epoch{e:03d}.safetensors")
        b = load_weights(tmp_path / "part" / f"epoch{e:03d}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), e


def test_changed_spec_starts_over(data, tmp_path):
    meta, train, test = data
    stopped = train_run(SPEC, 2, meta, train, test, tmp_path / "run", tmp_path / "work", stop_after=1)
    other = TrainSpec(**{**SPEC.__dict__, "lr": 2 * SPEC.lr})
    history = train_run(other, 2, meta, train, test, tmp_path / "run", tmp_path / "work")
    fresh = train_run(other, 2, meta, train, test, tmp_path / "fresh", tmp_path / "work2")
    pd.testing.assert_series_equal(history["train_loss"], fresh["train_loss"])
    assert history["lr"].iloc[1] == 2 * SPEC.lr and stopped["lr"].iloc[1] == SPEC.lr
    assert history["train_loss"].iloc[1] != stopped["train_loss"].iloc[1]  # epoch 1 was trained again


def test_a_run_interrupted_on_other_data_starts_over(idx_dataset, tmp_path):
    """Interrupted on clean labels, continued after the dataset got label noise: the run trains
    again from epoch 0 on the new labels (the dataset's fingerprint is part of the run's)."""
    spec = {"source": "mnist", "path": str(idx_dataset), "pad": 0, "val_fraction": 0.1, "split_seed": 0,
            "hflip": True, "pixel_range": "minus_one_one"}
    clean = convert("d", DatasetSpec.from_config(spec),
                    tmp_path / "a" / "train.beton", tmp_path / "a" / "test.beton", tmp_path / "a" / "m.json")
    noisy = convert("d", DatasetSpec.from_config({**spec, "label_noise": 0.5}),
                    tmp_path / "b" / "train.beton", tmp_path / "b" / "test.beton",
                    tmp_path / "b" / "m.json")
    assert clean.fingerprint != noisy.fingerprint and len(clean.fingerprint) == 16
    short = TrainSpec(**{**SPEC.__dict__, "epochs": 2})
    files = lambda d: (tmp_path / d / "train.beton", tmp_path / d / "test.beton")  # noqa: E731
    train_run(short, 0, clean, *files("a"), tmp_path / "run", tmp_path / "work", stop_after=1)
    interrupted = load_weights(tmp_path / "work" / "epoch001.safetensors")
    history = train_run(short, 0, noisy, *files("b"), tmp_path / "run", tmp_path / "work")
    fresh = train_run(short, 0, noisy, *files("b"), tmp_path / "fresh", tmp_path / "work2")
    timing = ["seconds", "images_per_second"]
    pd.testing.assert_frame_equal(history.drop(columns=timing), fresh.drop(columns=timing))
    resumed = load_weights(tmp_path / "run" / "epoch001.safetensors")
    assert all(torch.equal(resumed[k], load_weights(tmp_path / "fresh" / "epoch001.safetensors")[k]) for k in resumed)
    assert not torch.equal(resumed["features.0.weight"], interrupted["features.0.weight"])


KILLABLE = """
import sys
from convbias.specs import TrainSpec
from convbias.data.dataset import DatasetMeta
from convbias.train import train_run
spec = TrainSpec.from_dict({spec!r})
train_run(spec, 3, DatasetMeta.load({meta!r}), {train!r}, {test!r}, sys.argv[1], sys.argv[2])
"""


@pytest.mark.subprocess
def test_sigkill_mid_run_then_rerun_is_bit_identical(data, tmp_path):
    import json
    import signal
    import subprocess
    import sys
    import time

    meta, train, test = data
    spec = TrainSpec(**{**DROPOUT.__dict__, "epochs": 6})
    script = tmp_path / "train.py"
    script.write_text(KILLABLE.format(spec=spec.to_dict(), meta=str(train.with_name("meta.json")),
                                      train=str(train), test=str(test)))
    run = lambda out, work: subprocess.Popen([sys.executable, str(script), str(tmp_path / out), str(tmp_path / work)],  # noqa: E731
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    progress = tmp_path / "w_killed" / "progress.json"
    victim = run("killed", "w_killed")
    deadline = time.time() + 120
    while time.time() < deadline and victim.poll() is None:
        if progress.exists() and json.loads(progress.read_text())["epoch"] >= 2:
            break
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = json.loads(progress.read_text())["epoch"]
    assert 2 <= killed_at < 6 and not (tmp_path / "killed").exists()

    resumed = run("killed", "w_killed")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resuming from epoch {killed_at}" in err
    reference = run("reference", "w_reference")
    reference.communicate(timeout=300)
    assert reference.returncode == 0
    for e in range(7):
        a = load_weights(tmp_path / "reference" / f"epoch{e:03d}.safetensors")
        b = load_weights(tmp_path / "killed" / f"epoch{e:03d}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), e
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "reference" / "history.parquet").drop(columns=["seconds", "images_per_second"]),
        pd.read_parquet(tmp_path / "killed" / "history.parquet").drop(columns=["seconds", "images_per_second"]))


def test_momentum_restored_on_resume_has_the_parameters_layout(data, tmp_path):
    """SGD's multi-tensor path needs each momentum buffer laid out like its (channels-last) parameter."""
    from convbias.runs.work import WorkFolder

    meta, train, test = data
    train_run(SPEC, 0, meta, train, test, tmp_path / "run", tmp_path / "work", stop_after=1)
    model = init_model(SPEC, meta, 0).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    WorkFolder(tmp_path / "work", "unused").restore(1, model, optimizer)
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    for p in model.parameters():
        buffer = optimizer.state[p]["momentum_buffer"]
        assert buffer.stride() == p.stride() and buffer.abs().sum() > 0


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """A tiny ImageNet-style JPEG dataset (2 classes of 48² images, cropped to 32²), converted."""
    from conftest import make_image_folder

    root = tmp_path_factory.mktemp("jpegs")
    folder = make_image_folder(root / "imagenet", classes=2, per_class={"train": 40, "val": 8}, size=48)
    spec = {"source": "imagenet", "path": str(folder), "val_fraction": 0.1, "split_seed": 0, "hflip": True,
            "max_resolution": 48, "jpeg_quality": 90, "compress_probability": 0.0, "image_size": 32}
    meta = convert("imagenet", DatasetSpec.from_config(spec), root / "train.beton", root / "test.beton",
                   root / "meta.json")
    return meta, root / "train.beton", root / "test.beton"


def test_random_resized_crops_are_drawn_from_the_seed_and_epoch_alone(jpegs):
    """FFCV's random resized crop (the 224² path) drew from numba's OS-seeded generators: two
    loaders of one seed — as two invocations of a run — cropped differently.  Now the same seed
    and epoch give the same images, in two decoding threads as in one; another epoch or seed other ones."""
    meta, train, _ = jpegs

    def epoch_images(seed, epoch, workers):
        loader = make_loader(train, 16, meta=meta, indices=meta.train_indices(), train=True, seed=seed, workers=workers)
        loader.next_epoch = epoch
        return torch.cat([x.clone() for x, _ in loader])

    first = epoch_images(3, 1, 2)
    assert torch.equal(first, epoch_images(3, 1, 2)) and torch.equal(first, epoch_images(3, 1, 1))
    assert not torch.equal(first, epoch_images(3, 2, 2)) and not torch.equal(first, epoch_images(4, 1, 2))


def test_a_resumed_run_on_jpegs_equals_an_uninterrupted_one(jpegs, tmp_path):
    """The bit-identical resume of test_resume_is_bit_identical on the JPEG path (random resized crops)."""
    meta, train, test = jpegs
    spec = TrainSpec(model=ModelSpec("lenet", width=0.5, hidden=16, dropout=0.0), epochs=2, batch_size=16, lr=0.01)
    train_run(spec, 1, meta, train, test, tmp_path / "full", tmp_path / "w1", threads=2)
    train_run(spec, 1, meta, train, test, tmp_path / "part", tmp_path / "w2", threads=2, stop_after=1)
    train_run(spec, 1, meta, train, test, tmp_path / "part", tmp_path / "w2", threads=2)
    for e in range(3):
        a = load_weights(tmp_path / "full" / f"epoch{e:03d}.safetensors")
        b = load_weights(tmp_path / "part" / f"epoch{e:03d}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), e
