import math
import matplotlib
import numpy as np
import pandas as pd
import pytest

from convbias import figures


def measure_tables(layers=4, epochs=3, seeds=(0, 1)):
    rows, history = [], []
    for seed in seeds:
        for epoch in range(epochs + 1):
            for layer in range(1, layers + 1):
                rows.append({"seed": seed, "epoch": epoch, "layer": layer, "n_l": 0.5 + 0.1 * epoch * (layer % 2)})
            history.append({"experiment": "e", "seed": seed, "epoch": epoch, "lr": 0.01 * 0.1 ** (epoch // 2),
                            "train_loss": 2.0 / (epoch + 1), "val_loss": 2.5 / (epoch + 1),
                            "train_acc": 0.2 * epoch, "val_acc": 0.2 * epoch})
    return pd.DataFrame(rows), pd.DataFrame(history)


def test_measure_figure_panels_and_legends():
    measure, history = measure_tables()
    fig = figures.measure_figure(measure, history, panels=[[1, 2], [3, 4]], title="t")
    axes = fig.axes
    assert len(axes) == 3
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["layer 1", "layer 2"]
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == ["layer 3", "layer 4"]
    assert axes[2].get_xlabel() == "epoch" and "loss" in axes[2].get_ylabel()
    assert len(axes[2].get_legend().get_texts()) == 4
    assert figures.lr_drops(history) == [2]
    # losses are rescaled by their own maximum: the first epoch's train loss is 1
    train_loss = axes[2].get_lines()[0]
    assert np.isclose(train_loss.get_ydata()[0], 1.0)


def test_histogram_figure_has_a_panel_per_layer():
    filters = pd.DataFrame([{"epoch": e, "layer": layer, "cosine": c}
                            for e in (0, 5) for layer in (1, 2, 3) for c in np.linspace(-0.5, 0.5, 11) - 0.1 * e])
    fig = figures.histogram_figure(filters, (0, 5))
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["layer 1", "layer 2", "layer 3"]
    assert len(visible[0].get_legend().get_texts()) == 2


def test_reinit_figure_rows_start_with_rand():
    table = pd.DataFrame([{"seed": s, "source": src, "layer": layer, "drop": 0.1 * layer}
                          for s in (0, 1, 2) for src in ("rand", "0", "1", "10", "2") for layer in (1, 2)])
    fig = figures.reinit_figure(table)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("seed")]
    assert len(panels) == 3
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["rand", "0", "1", "2", "10"]
    assert panels[0].get_xlabel() == "layer"


def test_layer_figure_has_a_line_per_experiment():
    a, _ = measure_tables()
    b, _ = measure_tables()
    measure = pd.concat([a.assign(experiment="cifar10"), b.assign(experiment="mnist", n_l=b["n_l"] / 2)])
    fig = figures.layer_figure(measure, layer=1)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cifar10", "mnist"]
    assert ax.get_ylabel().startswith("layer 1") and ax.get_xlabel() == "epoch"
    assert np.allclose(ax.get_lines()[1].get_ydata(), ax.get_lines()[0].get_ydata() / 2)


def test_grid_figure_has_a_panel_per_experiment_row_major():
    tables = [measure_tables()[0].assign(experiment=name) for name in ("c_step", "c_exp", "i_step")]
    fig = figures.grid_figure(pd.concat(tables), ["c_step", "c_exp", "i_step"], columns=2)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["c_step", "c_exp", "i_step"]
    assert len(fig.axes) == 4 and not fig.axes[3].get_visible()
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == [f"layer {l}" for l in range(1, 5)]


# Content: the plotted numbers are the table's numbers, computed here with numpy from a random table.

def random_measure(rng, layers=(1, 2, 3), epochs=4, seeds=(0, 1, 2), experiment="e"):
    return pd.DataFrame([{"experiment": experiment, "seed": s, "epoch": e, "layer": layer, "n_l": rng.uniform()}
                         for s in seeds for e in range(epochs + 1) for layer in layers])


def mean_std(table, layer, epochs):
    """n_l of ``layer`` per epoch: mean and sample std over seeds, by plain numpy."""
    values = np.array([[r.n_l for r in table.itertuples() if r.layer == layer and r.epoch == e] for e in epochs])
    return values.mean(axis=1), values.std(axis=1, ddof=1)


def band(collection):
    """Lower and upper edge of a fill_between band, per x, from its polygon's vertices."""
    xy = collection.get_paths()[0].vertices
    xs = np.unique(xy[:, 0])
    return xs, np.array([xy[xy[:, 0] == x, 1].min() for x in xs]), np.array([xy[xy[:, 0] == x, 1].max() for x in xs])


def test_measure_figure_plots_each_layers_mean_and_std_over_seeds():
    rng = np.random.default_rng(0)
    measure = random_measure(rng)
    _, history = measure_tables(layers=3, epochs=4, seeds=(0, 1, 2))
    fig = figures.measure_figure(measure, history, panels=[[1, 2], [3]])
    epochs = range(5)
    for ax, panel in zip(fig.axes, [[1, 2], [3]]):
        lines = [line for line in ax.get_lines() if line.get_label().startswith("layer")]
        for line, band_, layer in zip(lines, ax.collections, panel):
            mean, std = mean_std(measure, layer, epochs)
            assert line.get_label() == f"layer {layer}"
            assert np.allclose(line.get_xdata(), list(epochs)) and np.allclose(line.get_ydata(), mean)
            xs, low, high = band(band_)
            assert np.allclose(xs, list(epochs)) and np.allclose(low, mean - std) and np.allclose(high, mean + std)


def test_training_panel_plots_the_mean_accuracy_and_each_runs_rescaled_loss():
    rng = np.random.default_rng(1)
    history = pd.DataFrame([{"experiment": "e", "seed": s, "epoch": e, "lr": 0.1 if e < 3 else 0.01,
                             "train_loss": rng.uniform(1, 3), "val_loss": rng.uniform(1, 3),
                             "train_acc": rng.uniform(), "val_acc": rng.uniform()} for s in (0, 1) for e in range(6)])
    fig = figures.measure_figure(random_measure(rng, epochs=5, seeds=(0, 1)), history)
    lines = {line.get_label(): line for line in fig.axes[-1].get_lines()}
    val_acc = history.pivot(index="epoch", columns="seed", values="val_acc").to_numpy()
    assert np.allclose(lines["val acc"].get_ydata(), val_acc.mean(axis=1))
    loss = history.pivot(index="epoch", columns="seed", values="train_loss").to_numpy()
    assert np.allclose(lines["train loss (rescaled)"].get_ydata(), (loss / loss.max(axis=0)).mean(axis=1))
    drops = [line.get_xdata()[0] for line in fig.axes[-1].get_lines() if line.get_marker() == "|"]
    assert drops == [3]


def test_layer_and_grid_figures_plot_the_right_layers_and_experiments():
    rng = np.random.default_rng(2)
    measure = pd.concat([random_measure(rng, experiment=name) for name in ("a", "b", "c")])
    ax = figures.layer_figure(measure, layer=2).axes[0]
    for line, name in zip(ax.get_lines(), ("a", "b", "c")):
        assert np.allclose(line.get_ydata(), mean_std(measure[measure["experiment"] == name], 2, range(5))[0])
    fig = figures.grid_figure(measure, ["c", "a", "b"], columns=2)
    for ax, name in zip(fig.axes, ("c", "a", "b")):
        lines = [line for line in ax.get_lines() if line.get_label().startswith("layer")]
        for line, layer in zip(lines, (1, 2, 3)):
            assert np.allclose(line.get_ydata(), mean_std(measure[measure["experiment"] == name], layer, range(5))[0])


def test_histogram_bars_count_each_epochs_cosines_in_its_own_colour():
    rng = np.random.default_rng(3)
    filters = pd.DataFrame([{"epoch": e, "layer": layer, "cosine": c}
                            for e, shift in ((0, 0.0), (9, -0.4)) for layer in (1, 2)
                            for c in np.clip(rng.normal(shift, 0.2, 40 + 10 * layer), -1, 1)])
    fig = figures.histogram_figure(filters, (0, 9))
    for ax, layer in zip(fig.axes, (1, 2)):
        part = filters[filters["layer"] == layer]
        edges = np.histogram_bin_edges(part["cosine"], bins=30)
        first, second = ax.containers
        for container, epoch in ((first, 0), (second, 9)):
            expected, _ = np.histogram(part[part["epoch"] == epoch]["cosine"], bins=edges)
            assert [bar.get_height() for bar in container] == expected.tolist()
            assert np.allclose([bar.get_x() for bar in container], edges[:-1])
        assert ax.get_legend_handles_labels()[1] == ["initialization (epoch 0)", "trained (epoch 9)"]


def test_reinit_heatmap_cells_are_the_drops_of_their_source_and_layer():
    rng = np.random.default_rng(4)
    table = pd.DataFrame([{"seed": s, "source": src, "layer": layer, "drop": rng.uniform()}
                          for s in (0, 1) for src in ("10", "rand", "2", "0") for layer in (3, 1, 2)])
    fig = figures.reinit_figure(table)
    for ax, seed in zip([ax for ax in fig.axes if ax.get_title().startswith("seed")], (0, 1)):
        image = ax.get_images()[0].get_array()
        for i, source in enumerate(("rand", "0", "2", "10")):
            for j, layer in enumerate((1, 2, 3)):
                row = table[(table.seed == seed) & (table.source == source) & (table.layer == layer)]
                assert image[i, j] == pytest.approx(row["drop"].item())


# What a reader sees besides the data: axis labels, ranges, distinct colours, no stray titles.

def test_labels_ranges_and_colours_of_the_measure_figure():
    measure, history = measure_tables(layers=3, seeds=(0,))
    fig = figures.measure_figure(measure, history)
    top, bottom = fig.axes
    assert top.get_ylim() == (-0.02, 1.02) and bottom.get_ylim() == (0, 1.05)
    assert top.get_ylabel() == "fraction negative $n_l$" and bottom.get_ylabel() == "loss / accuracy"
    assert top.get_title() == "" and fig._suptitle is None
    colours = [line.get_color() for line in top.get_lines() if line.get_label().startswith("layer")]
    assert len({tuple(np.atleast_1d(c)) for c in colours}) == 3
    training = [line.get_color() for line in bottom.get_lines() if line.get_marker() != "|"]
    assert training == ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    assert all(tick == int(tick) for tick in bottom.get_xticks())
    # one seed: the std band has no width
    xs, low, high = band(top.collections[0])
    assert np.allclose(low, high)


def test_lr_drops_are_halvings_or_more_anywhere_in_the_run():
    history = pd.DataFrame({"epoch": range(6), "lr": [0.1, 0.1, 0.05, 0.04, 0.04, 0.01]})
    assert figures.lr_drops(history) == [2, 5]
    assert figures.lr_drops(pd.DataFrame({"epoch": [0, 1, 2], "lr": [0.1, 0.06, 0.06]})) == []


def test_labels_and_ranges_of_layer_grid_histogram_and_reinit_figures():
    measure = pd.concat([random_measure(np.random.default_rng(5), experiment=n) for n in ("a", "b", "c")])
    ax = figures.layer_figure(measure).axes[0]
    assert ax.get_ylabel() == "layer 1: fraction negative $n_l$" and ax.get_ylim() == (-0.02, 1.02)
    assert ax.get_title() == ""
    assert len({line.get_color() for line in ax.get_lines()[:3]}) == 3
    grid = figures.grid_figure(measure, ["a", "b", "c"], columns=2)
    assert [a.get_ylabel() for a in grid.axes] == ["fraction negative $n_l$", "", "fraction negative $n_l$", ""]
    assert [a.get_xlabel() for a in grid.axes[:3]] == ["epoch"] * 3 and grid._suptitle is None
    assert len(grid.axes) == 4 and [a.get_visible() for a in grid.axes] == [True, True, True, False]
    assert len({tuple(line.get_color()) for line in grid.axes[0].get_lines()[:3]}) == 3

    filters = pd.DataFrame({"layer": [1] * 6 + [2] * 6 + [3] * 6 + [4] * 6 + [5] * 6, "cosine": np.linspace(-1, 1, 30)})
    hist = figures.cosine_histograms(filters)
    assert [a.get_visible() for a in hist.axes] == [True] * 5 + [False] * 3  # 4 columns, 2 rows
    assert hist.axes[0].get_ylabel() == "filters" and hist.axes[1].get_ylabel() == ""
    assert [a.get_xlabel() for a in hist.axes[:5]] == ["cosine"] * 5 and hist._suptitle is None
    assert hist.axes[0].get_legend_handles_labels()[1] == ["weights (epoch 0)"]
    assert [b.get_height() for b in hist.axes[0].containers[0]] == np.histogram(np.linspace(-1, 1, 30)[:6], 30)[0].tolist()
    assert figures.cosine_histograms(filters, title="T")._suptitle.get_text() == "T"

    table = pd.DataFrame([{"seed": s, "source": src, "layer": layer, "drop": 0.5}
                          for s in (0, 1) for src in ("rand", "0") for layer in (1, 2)])
    fig = figures.reinit_figure(table)
    panels = [a for a in fig.axes if a.get_title().startswith("seed")]
    colorbar = [a for a in fig.axes if a not in panels][0]
    assert colorbar.get_ylabel() == "relative test accuracy drop"
    assert panels[0].get_ylabel() == "re-initialized from epoch" and panels[1].get_ylabel() == ""
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["1", "2"]
    image = panels[0].get_images()[0]
    assert image.get_clim() == (0, 1) and image.get_cmap().name == "viridis" and panels[0].get_aspect() == "auto"
    assert fig._suptitle is None


def test_every_kind_of_the_schema_is_in_the_registry_and_draws_from_its_config_entry(monkeypatch):
    """KINDS and the schema's enum of figure kinds agree, and each kind passes its config keys on."""
    from convbias.schema import schema
    from convbias.specs import KIND_TABLES, FigureSpec

    assert set(schema()["$defs"]["figure"]["properties"]["kind"]["enum"]) == set(figures.KINDS) == set(KIND_TABLES)

    calls = {}
    for name in ("measure_figure", "layer_figure", "grid_figure", "histogram_figure", "reinit_figure", "critical_figure",
                 "claims_map_figure"):
        monkeypatch.setattr(figures, name, lambda *a, _name=name, **k: calls.setdefault(_name, []).append((a, k)))
    measure, history = measure_tables()
    filters = pd.DataFrame({"seed": [3, 3], "epoch": [0, 7], "layer": [1, 1], "cosine": [0.1, -0.2]})
    claims = pd.DataFrame({"claim": ["C0"], "experiment": ["a"]})
    scales = pd.DataFrame({"experiment": ["a", "b"], "width": [1.0, 0.5], "epochs": [2, 2], "reset_epoch": [1, 1]})
    tables = {"measure": measure, "histories": history, "filters": filters, "reinit": measure, "pretrained": filters,
              "claims": claims, "scales": scales}
    entry = {"experiments": ["a", "b"], "panels": [[1], [2]], "layer": 3, "columns": 4, "pretrained": "vgg16",
             "caption": "c"}
    for kind in figures.KINDS:
        spec = FigureSpec.from_config({**entry, "kind": kind})
        figures.KINDS[kind].draw({t: tables[t] for t in figures.KINDS[kind].tables}, spec)
    assert calls["measure_figure"] == [((measure, history, ((1,), (2,))), {"title": "a, b"})]
    assert calls["layer_figure"] == [((measure, 3), {})]
    assert calls["grid_figure"] == [((measure, ("a", "b"), 4), {})]
    assert calls["reinit_figure"] == [((measure,), {"title": "a, b"})]
    assert calls["critical_figure"] == [((measure, measure), {"title": "a, b"})]
    assert calls["claims_map_figure"] == [((claims, scales, 1), {"title": "Where the claims hold: study paper"})]
    (run, run_kw), (pre, pre_kw) = calls["histogram_figure"]
    assert run[1:] == ((0, 7),) and run_kw == {"title": "a, seed 3"}
    assert pre[1:] == ((0, 1),) and pre_kw == {"labels": ("random initialization", "pretrained"), "title": "vgg16"}
    assert [figures.KINDS[k].tables for k in ("measure", "histograms", "reinit", "pretrained")] == [
        ("measure", "histories"), ("filters",), ("reinit",), ("pretrained",)]


def test_a_figure_averages_only_its_seeds(tmp_path, monkeypatch):
    """`seeds` of a figure selects the runs of every table it reads (fig 22: the same three runs per schedule)."""
    from convbias.jobs import figure
    from convbias.specs import FigureSpec

    random_measure(np.random.default_rng(0), seeds=(0, 1, 2)).to_parquet(tmp_path / "m.parquet")
    drawn = []
    monkeypatch.setattr(figures, "layer_figure", lambda table, layer: drawn.append(sorted(set(table["seed"]))))
    for seeds, expected in (([0, 2], [0, 2]), (None, [0, 1, 2])):
        entry = {"kind": "layer", "experiments": ["e"], "caption": "c"} | ({"seeds": seeds} if seeds else {})
        figure(FigureSpec.from_config(entry), {"measure": [tmp_path / "m.parquet"]})
        assert drawn.pop() == expected


def counted_measure(rng, layers=(1, 2, 3, 4), epochs=3, seeds=(0, 1), filters=(8, 16, 32, 64)):
    """A measure table with counts: negatives drawn at random, n_l = negatives / filters."""
    rows = []
    for s in seeds:
        for e in range(epochs + 1):
            for layer, f in zip(layers, filters):
                k = int(rng.integers(0, f + 1))
                rows.append({"experiment": "e", "seed": s, "epoch": e, "layer": layer, "filters": f, "zero_norm": 0,
                             "negatives": k, "n_l": k / f})
    return pd.DataFrame(rows)


def no_bias_quantile(k: int, n: int) -> float:
    """P(|X − n/2| < |k − n/2|) + ½ P(=) for X ~ Binomial(n, ½), by enumeration."""
    pmf = {j: math.comb(n, j) / 2 ** n for j in range(n + 1)}
    d = abs(k - n / 2)
    return sum(p for j, p in pmf.items() if abs(j - n / 2) < d) + sum(p for j, p in pmf.items() if abs(j - n / 2) == d) / 2


def test_critical_figure_plots_each_layers_final_bias_q_against_its_reset_drop():
    """A dot per (seed, layer): x = q at the last epoch, y = the drop when reset to epoch 0; a larger
    marker per layer at its means; the title says it is C5's ρ over the layer means, with its
    interval over runs and each run's own ρ."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    measure = counted_measure(rng)
    reinit = pd.DataFrame([{"seed": s, "source": src, "layer": layer, "drop": rng.uniform()}
                           for s in (0, 1) for src in ("rand", "0", "2") for layer in (1, 2, 3, 4)])
    fig = figures.critical_figure(measure, reinit, title="e")
    dots, means = (c.get_offsets() for c in fig.axes[0].collections[:2])
    last = measure[measure["epoch"] == 3].sort_values(["seed", "layer"])
    reset = reinit[reinit["source"] == "0"].sort_values(["seed", "layer"])
    q = [no_bias_quantile(k, n) for k, n in zip(last["negatives"], last["filters"])]
    assert np.allclose(sorted(map(tuple, dots)), sorted(zip(q, reset["drop"])))
    layers = pd.DataFrame({"q": q, "drop": reset["drop"].to_numpy(), "layer": last["layer"].to_numpy()}).groupby("layer").mean()
    assert np.allclose(sorted(map(tuple, means)), sorted(map(tuple, layers[["q", "drop"]].to_numpy())))
    rho = spearmanr(layers["q"], layers["drop"])[0]
    per_run = [spearmanr(np.array(q)[last["seed"].to_numpy() == s], reset[reset["seed"] == s]["drop"])[0] for s in (0, 1)]
    title = fig.axes[0].get_title()
    assert title.startswith(f"e: C5, Spearman ρ of the layer means over 2 runs = {rho:.2f}\n95% interval over runs [")
    assert title.endswith(f"each run's own ρ {per_run[0]:.2f}, {per_run[1]:.2f}")
    assert fig.axes[0].get_xlabel().startswith("final bias q")


def test_claims_map_cells_colours_statistics_and_c5_come_from_the_scorecard():
    """A cell per (claim, experiment): its colour is the scorecard's result (the worst of its rows),
    its text the statistic and interval over runs; below, each experiment's C5 ρ sits at its width on
    the line of its length, its interval as a bar, its runs' own ρ beside it — all from the scorecard."""
    scales = pd.DataFrame({"experiment": ["a", "b", "c"], "width": [0.125, 0.25, 0.125], "epochs": [4, 4, 12],
                           "reset_epoch": [0, 0, 0]})
    nan = float("nan")
    claims = pd.DataFrame([
        ("C0", "a", 1.0, nan, nan, "", "holds"), ("C1", "a", 0.4, nan, nan, "", "holds"),
        ("C2", "a", 0.75, 0.5, 0.875, "0: 0.5; 1: 0.875", "holds"),
        ("C5", "a", 0.3, -0.2, 0.4, "0: -0.2; 1: 0.4", "fails"),
        ("C6", "a", 0.004, 0.001, 0.006, "", "holds"), ("C6", "a", 0.9, 0.85, 0.95, "", "inconclusive"),  # worst wins
        ("C0", "b", 0.5, nan, nan, "", "fails"), ("C2", "b", nan, nan, nan, "", "not applicable"),
        ("C5", "b", nan, nan, nan, "", "not applicable"),
        ("C0", "c", 1.0, nan, nan, "", "holds"), ("C5", "c", 0.9, 0.6, 1.0, "0: 0.6; 1: 1; 2: 0.8", "holds"),
    ], columns=["claim", "experiment", "value", "low", "high", "per_run", "result"])
    fig = figures.claims_map_figure(claims, scales, reset_epoch=0, title="t")
    grid, rho_ax = fig.axes[:2]

    image = grid.get_images()[0]
    codes = np.asarray(image.get_array())
    assert codes.shape == (7, 3)
    colour = {r: figures.RESULT_COLOURS[figures.RESULTS.index(r)] for r in figures.RESULTS}
    cell_colour = lambda i, j: matplotlib.colors.to_hex(image.cmap(image.norm(codes[i, j])))  # noqa: E731
    expected = {("C0", 0): "holds", ("C6", 0): "inconclusive", ("C5", 0): "fails", ("C0", 1): "fails",
                ("C2", 1): "not applicable", ("C5", 2): "holds", ("C3", 0): "not scored", ("C4", 2): "not scored"}
    for (claim, j), result in expected.items():
        assert cell_colour(figures.CLAIMS.index(claim), j) == colour[result], (claim, j)
    assert colour["inconclusive"] not in (colour["holds"], colour["fails"], colour["not applicable"])
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in grid.texts}
    assert texts[(0, 0)] == "1" and texts[(2, 0)] == "0.75\n[0.5, 0.88]"
    assert texts[(6, 0)] == "0.004\n[0.001, 0.006]\n0.9\n[0.85, 0.95]"
    assert texts[(2, 1)] == "n/a" and texts[(3, 0)] == "–" and texts[(5, 0)] == "ρ = 0.30\n[-0.2, 0.4]"
    assert [t.get_text() for t in grid.get_xticklabels()] == [
        "a\nwidth 1/8, 4 ep", "b\nwidth 1/4, 4 ep", "c\nwidth 1/8, 12 ep"]

    lines = {line.get_label(): line.get_xydata() for line in rho_ax.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {"4 epochs", "12 epochs"}
    # the two lengths of width 1/8 side by side, a little apart, not on one another
    short, long = 0.125 * 2 ** -0.04, 0.125 * 2 ** 0.04
    assert np.allclose(lines["4 epochs"], [[short, 0.3]]) and np.allclose(lines["12 epochs"], [[long, 0.9]])
    dots = np.vstack([c.get_offsets() for c in rho_ax.collections if len(c.get_offsets()) in (2, 3)])
    assert np.allclose(sorted(map(tuple, dots)), sorted([(short, -0.2), (short, 0.4), (long, 0.6), (long, 1.0), (long, 0.8)]))
    bars = [c for c in rho_ax.collections if isinstance(c, matplotlib.collections.LineCollection)]
    assert sorted(tuple(np.round(seg[:, 1], 3)) for bar in bars for seg in bar.get_segments()) == [(-0.2, 0.4), (0.6, 1.0)]
    assert [t.get_text() for t in rho_ax.get_xticklabels()] == ["1/8", "1/4"]


def test_reinit_and_critical_figures_of_an_experiment_whose_every_run_diverged_say_so():
    """A diverged run's sweep has no rows (convbias.reinit.no_sweep): an experiment of only such
    runs still gets its figures, the heatmap saying why it is empty."""
    from convbias.figures import critical_figure, reinit_figure
    from convbias.reinit import no_sweep

    fig = reinit_figure(no_sweep(), title="e")
    assert "every run stopped" in " ".join(t.get_text() for t in fig.axes[0].texts)
    measure = pd.DataFrame({"experiment": "e", "seed": 0, "epoch": [0], "layer": [1], "name": ["c"], "n_l": [0.5],
                            "p_value": [1.0]})
    critical_figure(measure, no_sweep(), title="e")


def test_no_label_or_legend_of_the_reinit_and_measure_figures_covers_another_panel_or_a_line():
    """Drawn as saved: each heatmap's tick labels stay clear of the panels beside it (the second
    panel's "rand" touched the first), and the training panel's legend covers none of its lines."""
    table = pd.DataFrame([{"seed": s, "source": src, "layer": layer, "drop": 0.3}
                          for s in (0, 1, 2) for src in ("rand", "0", "1", "12") for layer in range(1, 9)])
    fig = figures.reinit_figure(table, title="t")
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("seed")]
    for ax in panels:
        labels = [t.get_window_extent(renderer) for t in ax.get_yticklabels() + ax.get_xticklabels()
                  if t.get_visible() and t.get_text()]
        assert labels
        for other in panels:
            if other is not ax:
                assert not any(label.padded(4).overlaps(other.get_window_extent(renderer)) for label in labels)  # 4 px clear
    assert [t.get_text() for t in panels[0].get_yticklabels() if t.get_visible()] == ["rand", "0", "1", "12"]

    measure, history = measure_tables(layers=8, epochs=4)
    fig = figures.measure_figure(measure, history, title="t")
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    training = fig.axes[-1]
    legend = training.get_legend().get_window_extent(renderer)
    for line in training.get_lines():
        points = training.transData.transform(np.column_stack([line.get_xdata(), line.get_ydata()]))
        inside = [(x, y) for x, y in points if legend.x0 <= x <= legend.x1 and legend.y0 <= y <= legend.y1]
        assert not inside, (line.get_label(), inside)
    assert not legend.overlaps(training.get_window_extent(renderer))
