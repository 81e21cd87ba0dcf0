import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import binom

from convbias.specs import ModelSpec
from convbias.models import build_model, conv_layers, initialize
from convbias.stats import (binomial_pvalue, checkpoint_filters, filter_cosines, layer_summary, natural_key,
                            measure_table)


def three_filters():
    w = np.zeros((3, 1, 2, 2))
    w[0] = 1.0                                          # all ones: cosine 1
    w[1] = np.array([[1.0, -1.0], [1.0, -1.0]])         # sums to 0: cosine 0 (a tie counts as negative)
    w[2] = np.array([[-1.0, -2.0], [0.0, 0.0]])         # -3 / (sqrt(5) * 2)
    return w


def test_hand_computed_cosines_and_n_l():
    cos = filter_cosines(three_filters())
    assert cos == pytest.approx([1.0, 0.0, -3 / (math.sqrt(5) * 2)])
    summary = layer_summary(cos)
    assert summary["negatives"] == 2
    assert summary["n_l"] == pytest.approx(2 / 3)
    assert summary["mean_cosine"] == pytest.approx((1 - 3 / (2 * math.sqrt(5))) / 3)


def test_cosine_uses_c_k_k_of_the_filter():
    w = np.ones((2, 3, 3, 3))
    w[1, 0] = -5.0                                      # 9 entries of -5, 18 of +1
    expected = (18 - 45) / (math.sqrt(18 + 9 * 25) * math.sqrt(27))
    assert filter_cosines(w) == pytest.approx([1.0, expected])


def test_invariances():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 4, 3, 3))
    cos = filter_cosines(w)
    scales = rng.uniform(0.01, 100, size=(16, 1, 1, 1))
    assert filter_cosines(w * scales) == pytest.approx(cos)
    assert filter_cosines(-w) == pytest.approx(-cos)
    state = {"conv.weight": torch.tensor(w), "conv.bias": torch.zeros(16)}
    with_bias = {"conv.weight": torch.tensor(w), "conv.bias": torch.full((16,), 3.0)}
    assert checkpoint_filters(state)["cosine"].to_numpy() == pytest.approx(
        checkpoint_filters(with_bias)["cosine"].to_numpy())


def test_zero_norm_filter_is_reported_not_negative():
    w = three_filters()
    w[0] = 0.0
    cos = filter_cosines(w)
    assert np.isnan(cos[0])
    summary = layer_summary(cos)
    assert summary["zero_norm"] == 1
    assert summary["negatives"] == 2
    assert summary["n_l"] == pytest.approx(1.0)


def test_binomial_pvalue():
    assert binomial_pvalue(5, 10) == pytest.approx(1.0)
    assert binomial_pvalue(0, 10) == pytest.approx(2 * 0.5**10)
    assert binomial_pvalue(10, 10) == pytest.approx(2 * 0.5**10)


@pytest.mark.parametrize("seed", [0, 1])
def test_kaiming_init_vgg19_is_unbiased(seed):
    torch.manual_seed(seed)
    model = initialize(build_model(ModelSpec("vgg19"), 3, 10, 32), "kaiming_normal")
    for name, conv in conv_layers(model):
        f = conv.out_channels
        low, high = binom.interval(0.999, f, 0.5)
        negatives = layer_summary(filter_cosines(conv.weight.detach()))["negatives"]
        assert low <= negatives <= high, (name, negatives, f)


def test_layer_order_from_metadata_and_natural_order():
    state = {f"features.{i}.weight": torch.randn(2, 1, 3, 3) for i in (10, 2, 0)}
    state["features.4.weight"] = torch.randn(2, 1, 1, 1)  # a 1x1 conv: skipped unless asked
    table = checkpoint_filters(state)
    assert list(table.drop_duplicates("layer")["name"]) == ["features.0", "features.2", "features.10"]
    assert list(table["layer"].unique()) == [1, 2, 3]
    with_1x1 = checkpoint_filters(state, include_1x1=True)
    assert list(with_1x1.drop_duplicates("layer")["name"]) == ["features.0", "features.2", "features.4", "features.10"]
    given = checkpoint_filters(state, ["features.10", "features.4", "features.0"])
    assert list(given.drop_duplicates("layer")["name"]) == ["features.10", "features.0"]
    assert list(given["layer"].unique()) == [1, 2]
    given = checkpoint_filters(state, ["features.10", "features.4", "features.0"], include_1x1=True)
    assert list(given.drop_duplicates("layer")["name"]) == ["features.10", "features.4", "features.0"]
    assert sorted(["b10", "b2", "a"], key=natural_key) == ["a", "b2", "b10"]


def test_measure_table_groups():
    table = checkpoint_filters({"c.weight": torch.tensor(three_filters())})
    table["epoch"] = 0
    out = measure_table(table, ["epoch", "layer"])
    assert len(out) == 1 and out["n_l"].iloc[0] == pytest.approx(2 / 3) and out["filters"].iloc[0] == 3


def test_cosines_are_computed_in_float64_whatever_the_stored_dtype():
    """float16 weights whose filter sums overflow float16 (> 65504) still give exact cosines."""
    w = np.full((2, 100, 1, 1), 1000.0, dtype=np.float16)
    w[1, :50] = -1000.0
    w[1, 50:] = 999.0
    assert filter_cosines(w) == pytest.approx([1.0, -50 / (math.sqrt(50 * 1000.0**2 + 50 * 999.0**2) * 10)])


def test_linear_weights_have_filters_and_vectors_do_not():
    assert filter_cosines(np.array([[1.0, 1.0], [1.0, -3.0]])) == pytest.approx([1.0, -2 / (math.sqrt(10) * math.sqrt(2))])
    with pytest.raises(ValueError, match="filter axis"):
        filter_cosines(np.ones(3))


def test_unit_norm_filters_are_kept_and_zero_norm_ones_warn_nothing():
    import warnings

    w = np.zeros((3, 1, 2, 2))
    w[0, 0, 0, 0] = 1.0  # norm exactly 1
    w[1, 0, 1, 1] = -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cos = filter_cosines(w)
    assert cos[:2] == pytest.approx([0.5, -0.5]) and np.isnan(cos[2])


def test_a_layer_with_no_usable_filter_has_nan_statistics():
    summary = layer_summary(np.array([np.nan, np.nan]))
    assert summary["filters"] == 2 and summary["zero_norm"] == 2 and summary["negatives"] == 0
    assert all(np.isnan(summary[k]) for k in ("n_l", "mean_cosine", "p_value"))
    assert np.isnan(binomial_pvalue(0, 0)) and binomial_pvalue(1, 1) == pytest.approx(1.0)
    assert set(layer_summary(np.array([0.5]))) == {"filters", "zero_norm", "negatives", "n_l", "mean_cosine", "p_value"}


def test_filter_table_columns_and_index_with_and_without_layers():
    from convbias.stats import conv_weight_names, filter_table

    table = filter_table({"a": np.ones((2, 1, 3, 3)), "b": -np.ones((3, 2, 3, 3))})
    assert list(table.columns) == ["layer", "name", "filter", "cosine"]
    assert list(table.index) == list(range(5)) and list(table["filter"]) == [0, 1, 0, 1, 2]
    assert list(filter_table({}).columns) == ["layer", "name", "filter", "cosine"]
    state = {"a.weight": torch.ones(2, 1, 1, 1), "a.bias": torch.ones(2), "b.weight": torch.ones(2, 2, 3, 3),
             "fc.weight": torch.ones(3, 4), "step": 5}
    assert conv_weight_names(state) == ["b.weight"] and conv_weight_names(state, True) == ["a.weight", "b.weight"]
    # only 1×1 kernels are skipped: 1×3 and 3×1 kernels are convs of the statistic
    assert conv_weight_names({"c.weight": torch.ones(2, 2, 1, 3), "d.weight": torch.ones(2, 2, 3, 1)}) == ["c.weight", "d.weight"]
    given = checkpoint_filters({"c.weight": torch.ones(2, 2, 1, 3), "d.weight": torch.ones(2, 2, 3, 1)}, ["d", "c"])
    assert list(given.drop_duplicates("layer")["name"]) == ["d", "c"]


def test_measure_table_sorts_groups_and_names_its_columns():
    table = pd.DataFrame({"epoch": [2, 2, 0, 0, 1], "cosine": [0.5, -0.5, -0.1, -0.2, 0.3]})
    out = measure_table(table, ["epoch"])
    assert list(out["epoch"]) == [0, 1, 2] and list(out["n_l"]) == [1.0, 0.0, 0.5]
    assert list(out.columns) == ["epoch", "filters", "zero_norm", "negatives", "n_l", "mean_cosine", "p_value"]


def finished_run(folder, states: list[dict], conv_layers: list[str]):
    """A finished run in ``folder`` as the filters job reads it: epoch files 0…E of ``states`` and a manifest
    of their sizes and checksums."""
    import json

    from convbias.checkpoints import save_weights
    from convbias.runs import RunFolder

    run, files = RunFolder(folder), {}
    folder.mkdir(parents=True)
    for epoch, state in enumerate(states):
        sha256 = save_weights(run.weights(epoch), state, epoch=epoch, contents="full", conv_layers=conv_layers)
        files[run.weights(epoch).name] = {"bytes": run.weights(epoch).stat().st_size, "sha256": sha256}
    run.manifest_file.write_text(json.dumps({"format": 1, "files": files}))
    return folder


def test_the_filters_job_computes_its_table_again_when_include_1x1_changes(tmp_path, capfd):
    """workflow/scripts/filters.py as Snakemake runs it, on a run with a 3x3 and a 1x1 conv layer.
    The job keeps a table made from the same run, parameters and code (only file times changed);
    include_1x1 is one of those parameters: switching it (Snakemake reruns the job, its params
    changed) computes the table again — with the 1x1 layer, then without it — never keeps the old one."""
    import runpy
    from pathlib import Path
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(0)
    states = [{"features.0.weight": torch.randn(8, 1, 3, 3, generator=g), "features.0.bias": torch.zeros(8),
               "features.2.weight": torch.randn(6, 8, 1, 1, generator=g), "features.2.bias": torch.zeros(6)}
              for _ in range(2)]
    run = finished_run(tmp_path / "runs" / "e" / "seed3", states, ["features.0", "features.2"])
    table = tmp_path / "filters" / "e" / "seed3.parquet"
    table.parent.mkdir(parents=True)
    script = Path(__file__).resolve().parents[1] / "workflow" / "scripts" / "filters.py"

    def job(include_1x1: bool) -> tuple[dict, str]:
        """The filters job of the run: {layer: name} of its table, and what it said."""
        snakemake = SimpleNamespace(input=SimpleNamespace(run=str(run)), output=[str(table)], log=[],
                                    params=SimpleNamespace(epochs=1, include_1x1=include_1x1),
                                    wildcards=SimpleNamespace(experiment="e", seed="3"))
        capfd.readouterr()
        runpy.run_path(str(script), init_globals={"snakemake": snakemake}, run_name="__main__")
        filters = pd.read_parquet(table)
        assert sorted(filters["epoch"].unique()) == [0, 1] and set(filters["seed"]) == {3}
        return dict(zip(filters["layer"], filters["name"])), capfd.readouterr().err

    assert job(False)[0] == {1: "features.0"}  # 1x1 convs are left out unless asked for
    kept = job(False)
    assert kept[0] == {1: "features.0"} and "kept, nothing recomputed" in kept[1]  # the same inputs: kept
    with_1x1 = job(True)
    assert with_1x1[0] == {1: "features.0", 2: "features.2"}, "include_1x1 switched on: the old table was kept"
    assert "kept" not in with_1x1[1]
    without = job(False)
    assert without[0] == {1: "features.0"}, "include_1x1 switched off: the old table was kept"
    assert "kept" not in without[1]
