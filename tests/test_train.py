import pandas as pd
import pytest
import torch

from convbias.checkpoints import load_weights, read_metadata
from convbias.config import ModelSpec, TrainSpec
from convbias.data.convert import convert
from convbias.train import HISTORY_COLUMNS, train_run

SPEC = TrainSpec(model=ModelSpec("lenet", hidden=32, dropout=0.0), epochs=3, batch_size=16, lr=0.01)
# dropout draws random numbers in every step: resuming must reproduce them too
DROPOUT = TrainSpec(**{**SPEC.__dict__, "model": ModelSpec("lenet", width=0.5, hidden=32, dropout=0.5)})


@pytest.fixture(scope="module")
def data(idx_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    meta = convert("tiny", {"source": "mnist", "path": str(idx_dataset), "pad": 0, "val_fraction": 0.1,
                            "split_seed": 0, "hflip": True, "pixel_range": "minus_one_one"},
                   out / "train.beton", out / "test.beton", out / "meta.json")
    return meta, out / "train.beton", out / "test.beton"


def test_training_writes_every_epoch_and_learns(data, tmp_path):
    meta, train, test = data
    history = train_run(SPEC, 0, meta, train, test, tmp_path / "run", tmp_path / "work")
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [f"epoch{e:03d}.safetensors" for e in range(4)] + ["history.parquet"]
    assert not (tmp_path / "work").exists()
    assert list(pd.read_parquet(run / "history.parquet").columns) == HISTORY_COLUMNS
    assert list(history["epoch"]) == [0, 1, 2, 3]
    assert history["test_acc"].iloc[-1] > history["test_acc"].iloc[0] + 0.2
    meta0 = read_metadata(run / "epoch000.safetensors")
    assert meta0["epoch"] == 0 and meta0["conv_layers"][0] == "features.0"


def test_resume_is_bit_identical(data, tmp_path):
    meta, train, test = data
    train_run(DROPOUT, 1, meta, train, test, tmp_path / "full", tmp_path / "w1")
    train_run(DROPOUT, 1, meta, train, test, tmp_path / "part", tmp_path / "w2", stop_after=1)
    assert (tmp_path / "w2" / "progress.json").exists() and not (tmp_path / "part").exists()
    history = train_run(DROPOUT, 1, meta, train, test, tmp_path / "part", tmp_path / "w2")
    assert list(history["epoch"]) == [0, 1, 2, 3]
    for e in range(4):
        a = load_weights(tmp_path / "full" / f"epoch{e:03d}.safetensors")
        b = load_weights(tmp_path / "part" / f"epoch{e:03d}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), e


def test_changed_spec_starts_over(data, tmp_path):
    meta, train, test = data
    train_run(SPEC, 2, meta, train, test, tmp_path / "run", tmp_path / "work", stop_after=1)
    other = TrainSpec(**{**SPEC.__dict__, "lr": 0.01})
    history = train_run(other, 2, meta, train, test, tmp_path / "run", tmp_path / "work")
    fresh = train_run(other, 2, meta, train, test, tmp_path / "fresh", tmp_path / "work2")
    pd.testing.assert_series_equal(history["train_loss"], fresh["train_loss"])
