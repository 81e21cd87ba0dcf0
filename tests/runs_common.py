"""What the tests of a run's life share (test_manifests, test_commits, test_publishing, test_harness):
a small LeNet spec, its uninterrupted run, and what makes two runs the same."""

import pandas as pd
import pytest
import torch

from convbias.checkpoints import load_weights
from convbias.runs import RunFolder
from convbias.specs import ModelSpec, TrainSpec
from convbias.train import train_run

SPEC = TrainSpec(model=ModelSpec("lenet", width=0.5, hidden=16, dropout=0.5), epochs=3, batch_size=64, lr=0.01,
                 snapshots="conv")
TIMING = ["seconds", "images_per_second"]


@pytest.fixture(scope="module")
def data(tiny_converted):
    return tiny_converted


@pytest.fixture(scope="module")
def reference(tiny_converted, tmp_path_factory):
    """An uninterrupted run of SPEC, seed 5: what every interrupted run must end up as."""
    meta, train, test = tiny_converted
    root = tmp_path_factory.mktemp("reference")
    train_run(SPEC, 5, meta, train, test, root / "run", root / "resume" / "exp" / "seed5")
    return root / "run"


def same_run(a, b, epochs=SPEC.epochs):
    for e in range(epochs + 1):
        x, y = load_weights(a / f"epoch{e:03d}.safetensors"), load_weights(b / f"epoch{e:03d}.safetensors")
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), e
    pd.testing.assert_frame_equal(RunFolder(a).history().drop(columns=TIMING), RunFolder(b).history().drop(columns=TIMING))
