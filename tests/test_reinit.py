import pandas as pd
import torch

from convbias.config import ModelSpec
from convbias.models import build_model, initialize
from convbias.reinit import naive_sweep, reinit_sweep


def test_cached_sweep_equals_naive_sweep():
    torch.manual_seed(0)
    model = build_model(ModelSpec("vgg11", width=0.125, dropout=0.0), 3, 10, 32)
    states = {}
    for source in ("rand", "0", "1", "2"):
        states[source] = {k: v.clone() for k, v in initialize(model).state_dict().items()}
    inputs, labels = torch.randn(300, 3, 32, 32), torch.randint(0, 10, (300,))
    labels = model.eval()(inputs).argmax(1)  # the final model is right on every example
    final = {k: v.clone() for k, v in model.state_dict().items()}
    cached = reinit_sweep(model, final, states, inputs, labels, batch=128)
    naive = naive_sweep(model, final, states, inputs, labels, batch=128)
    pd.testing.assert_frame_equal(cached, naive)
    # in chunks (the last one smaller), scaling each chunk on the way: the same table
    chunked = reinit_sweep(model, final, states, inputs / 2, labels, batch=64, chunk=70, transform=lambda x: x * 2)
    pd.testing.assert_frame_equal(chunked, naive)
    assert len(cached) == 8 * 4
    assert cached["final_accuracy"].iloc[0] == 1.0
    assert (cached["drop"] > 0).any()
    # the model is left at its final weights
    assert all(torch.equal(v, final[k]) for k, v in model.state_dict().items())
