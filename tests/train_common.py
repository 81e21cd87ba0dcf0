"""What the training tests share (test_train, test_resume, test_ddp): two small LeNet specs and the
tiny converted dataset."""

import pytest

from convbias.specs import ModelSpec, TrainSpec

SPEC = TrainSpec(model=ModelSpec("lenet", hidden=32, dropout=0.0), epochs=3, batch_size=16, lr=0.01)
# dropout draws random numbers in every step: resuming must reproduce them too
DROPOUT = TrainSpec(**{**SPEC.__dict__, "model": ModelSpec("lenet", width=0.5, hidden=32, dropout=0.5)})


@pytest.fixture(scope="module")
def data(tiny_converted):
    return tiny_converted
