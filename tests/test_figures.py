import numpy as np
import pandas as pd

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
