import numpy as np
import pandas as pd
import pytest
import torch

from convbias.specs import ModelSpec
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


def test_chunks_are_sized_from_the_memory_budget_and_change_nothing():
    from convbias.reinit import plan_chunks

    # VGG19 at 224²: 12.8 MB per image enter conv 2; 54 GB of a card give ~1,500-image chunks
    chunk, batch = plan_chunks(64 * 224 * 224 * 4, 64 * 224 * 224 * 4, 3 * 224 * 224 * 4, 50_000, 54 * 10**9, 256)
    assert batch == 256 and chunk % batch == 0
    assert 2 * chunk * 64 * 224 * 224 * 4 + 3 * batch * 64 * 224 * 224 * 4 <= 54 * 10**9
    assert chunk >= 1024
    assert plan_chunks(100, 100, 10, 40, 10**12) == (40, 40)  # everything fits: one chunk

    torch.manual_seed(1)
    model = build_model(ModelSpec("vgg11", width=0.125, dropout=0.0), 3, 10, 32)
    states = {s: {k: v.clone() for k, v in initialize(model).state_dict().items()} for s in ("rand", "0")}
    inputs = torch.randn(200, 3, 32, 32)
    model.eval()
    labels = model(inputs).argmax(1)
    final = {k: v.clone() for k, v in model.state_dict().items()}
    naive = naive_sweep(model, final, states, inputs, labels, batch=50)
    # a budget that holds ~60 images (8×32×32 floats enter conv 2): several chunks, same table
    small = reinit_sweep(model.to(memory_format=torch.channels_last), final, states,
                         inputs.contiguous(memory_format=torch.channels_last), labels, memory=60 * 2 * 8 * 32 * 32 * 4)
    pd.testing.assert_frame_equal(small, naive)


def test_a_reset_layer_takes_the_sources_weight_and_bias():
    """Sources with non-zero, distinct biases; the expected accuracies come from a forward pass
    of a copy of the model with the layer set by hand, not from the code under test."""
    import copy

    torch.manual_seed(2)
    model = build_model(ModelSpec("vgg11", width=0.125, dropout=0.0), 3, 10, 32).eval()
    final = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = torch.randn(120, 3, 32, 32)
    with torch.no_grad():
        labels = model(inputs).argmax(1)
    # source "bias": the final weights, every conv bias shifted; source "both": weights and biases new
    bias = {k: v + (torch.randn_like(v) * 3 if k.endswith("bias") and k.startswith("features") else 0)
            for k, v in final.items()}
    both = {k: v + torch.randn_like(v) * 0.3 for k, v in final.items()}
    table = reinit_sweep(model, final, {"bias": bias, "both": both}, inputs, labels, batch=50)
    convs = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    for layer, name in enumerate(convs, 1):
        for source, state in (("bias", bias), ("both", both)):
            by_hand = copy.deepcopy(model)
            conv = dict(by_hand.named_modules())[name]
            with torch.no_grad():
                conv.weight.copy_(state[f"{name}.weight"])
                conv.bias.copy_(state[f"{name}.bias"])
                expected = (by_hand(inputs).argmax(1) == labels).float().mean().item()
            got = table[(table["source"] == source) & (table["layer"] == layer)]["accuracy"].item()
            assert got == pytest.approx(expected, abs=1e-9), (source, layer)
    assert (table[table["source"] == "bias"]["accuracy"] < 1).any()  # a bias alone changes answers
    # the table around the accuracies: names, the final accuracy (here 1: labels are the model's
    # own answers) and the relative drop (final − accuracy) / final
    assert list(table.columns) == ["source", "layer", "name", "accuracy", "drop", "final_accuracy"]
    assert list(table["name"]) == [name for name in convs for _ in range(2)]
    assert (table["final_accuracy"] == 1.0).all()
    assert np.allclose(table["drop"], 1.0 - table["accuracy"])
    # the model is left as it was given: the final weights in every layer
    assert all(torch.equal(v, final[k]) for k, v in model.state_dict().items())


def test_drop_is_relative_to_the_final_accuracy_and_undefined_without_one():
    from convbias.reinit import _table

    table = _table([("rand", 1, "features.0", 0.2), ("0", 1, "features.0", 0.5)], 0.8)
    assert table["drop"].tolist() == pytest.approx([0.75, 0.375]) and (table["final_accuracy"] == 0.8).all()
    assert _table([("rand", 1, "features.0", 0.0)], 0.0)["drop"].isna().all()


def test_the_plan_measures_activations_and_keeps_both_buffers_and_a_batch_within_budget():
    from convbias.models import sequential_layers
    from convbias.reinit import _activation_bytes, plan_chunks, sweep_plan

    model = build_model(ModelSpec("vgg11", width=0.125, dropout=0.0), 3, 10, 32).eval()
    sample = torch.randn(1, 3, 32, 32)
    layers = sequential_layers(model)
    positions = [i for i, m in enumerate(layers) if isinstance(m, torch.nn.Conv2d)]
    # by hand: the first conv's 8×32×32 output is the largest layer output; convs 2.. are entered
    # by at most 8×16×16 floats (after the first pooling) and conv 1 by the 3×32×32 input
    assert _activation_bytes(layers, sample, positions) == (3 * 32 * 32 * 4, 8 * 32 * 32 * 4)
    assert _activation_bytes(layers, sample, positions[1:]) == (8 * 16 * 16 * 4, 8 * 32 * 32 * 4)
    cached, largest, image = 100, 400, 10
    for budget in (10**4, 10**5, 10**6):
        chunk, batch = plan_chunks(cached, largest, image, 5000, budget)
        assert batch == max(1, budget // (12 * largest)) and chunk % batch == 0
        assert 2 * cached * chunk + image * chunk + 3 * largest * batch <= budget
        assert 2 * cached * (chunk + batch) + image * (chunk + batch) + 3 * largest * batch > budget
    assert plan_chunks(cached, largest, image, 5000, 10**12, max_batch=64) == (5000, 64)
    assert plan_chunks(cached, largest, image, 5000, 10) == (1, 1)  # never less than one image
    chunk, batch, per_image = sweep_plan(model, sample, 1000, 10**6, max_batch=32)
    assert per_image == 3 * 32 * 32 * 4 and batch == min(32, 10**6 // (12 * 8 * 32 * 32 * 4))


def test_free_memory_is_seventy_percent_of_what_is_available(monkeypatch):
    import os

    from convbias.reinit import free_memory

    sizes = {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(os, "sysconf", lambda name: sizes[name])
    assert free_memory(torch.device("cpu")) == int(0.7 * 1000 * 4096)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10**9 if device == torch.device("cuda", 1) else 0, 0))
    assert free_memory(torch.device("cuda", 1)) == 7 * 10**8


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_activation_buffers_take_the_shape_and_layout_of_the_activations(layout):
    from convbias.reinit import _buffer

    like = torch.randn(3, 5, 4, 6).contiguous(memory_format=layout)  # H ≠ W
    flat = torch.zeros(2 * 5 * 4 * 6 * 4 + 16, dtype=torch.uint8)
    out = _buffer(flat, like, 2)
    assert out.shape == (2, 5, 4, 6) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=layout)
    out.copy_(like[:2])
    assert torch.equal(_buffer(flat, like, 2), like[:2])  # the bytes stay in the buffer


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_the_sweep_computes_in_the_runs_precision(precision, dtype):
    torch.manual_seed(3)
    model = build_model(ModelSpec("lenet", width=0.5, hidden=16, dropout=0.0), 1, 10, 28).eval()
    final = {k: v.clone() for k, v in model.state_dict().items()}
    seen = set()
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.register_forward_hook(lambda mod, i, out: seen.add(out.dtype))
    inputs, labels = torch.randn(40, 1, 28, 28), torch.randint(0, 10, (40,))
    reinit_sweep(model, final, {"0": final}, inputs, labels, precision=precision, memory=10**8)
    assert seen == {dtype}


def test_sources_read_from_files_one_layer_at_a_time_give_the_same_table(tmp_path, monkeypatch):
    """Files (full or conv-only) in place of state dicts: the same table, and every read asks
    for one conv layer's weight and bias only — what the sweep holds never grows with the sources."""
    import convbias.reinit as reinit
    from convbias.checkpoints import save_weights
    from convbias.models import conv_layers

    torch.manual_seed(1)
    model = build_model(ModelSpec("vgg11", width=0.125, dropout=0.0), 3, 10, 32)
    states = {s: {k: v.clone() for k, v in initialize(model).state_dict().items()} for s in ("0", "1", "2")}
    names = [name for name, _ in conv_layers(model)]
    for s, state in states.items():
        save_weights(tmp_path / f"{s}.safetensors", state)
        conv = {k: v for k, v in state.items() if k.rsplit(".", 1)[0] in names}
        save_weights(tmp_path / f"conv{s}.safetensors", conv)
    inputs = torch.randn(200, 3, 32, 32)
    final = {k: v.clone() for k, v in model.state_dict().items()}
    labels = model.eval()(inputs).argmax(1)
    expected = reinit_sweep(model, final, {"rand": states["0"], **states, "T": final}, inputs, labels, batch=64)
    reads, load = [], reinit.load_weights

    def spy(path, keys=None):
        reads.append(sorted(keys))
        return load(path, keys)

    monkeypatch.setattr(reinit, "load_weights", spy)
    for prefix in ("", "conv"):
        files = {s: tmp_path / f"{prefix}{s}.safetensors" for s in states}
        got = reinit_sweep(model, final, {"rand": states["0"], **files, "T": final}, inputs, labels, batch=64, chunk=90)
        pd.testing.assert_frame_equal(got, expected)
    assert len(reads) == 2 * 3 * len(names) * 3  # 2 kinds of file, 3 files, every layer, 3 chunks
    assert all(r == [f"{n}.bias", f"{n}.weight"] for r, n in zip(reads, [n for n in names for _ in range(3)] * 6))
    assert (expected.loc[expected["source"] == "T", "drop"] == 0).all()
    assert (expected.loc[expected["source"] == "rand", "accuracy"].to_numpy()
            == expected.loc[expected["source"] == "0", "accuracy"].to_numpy()).all()
