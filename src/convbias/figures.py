"""One function per figure kind: DataFrames in, a matplotlib Figure out (no I/O).

:data:`KINDS` is the registry of the config's figure kinds: the tables each reads and how its
config entry becomes a call of its function.  Adding a kind: a function here, an entry in KINDS
and the kind's name in the schema's enum (a test checks that the two lists agree).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402

from .specs import FigureSpec  # noqa: E402


def lr_drops(history: pd.DataFrame) -> list[int]:
    """Epochs whose learning rate is at most half the previous epoch's (the step schedule's drops)."""
    lr = history.drop_duplicates("epoch").set_index("epoch")["lr"].sort_index().dropna()
    return [int(e) for e, prev, cur in zip(lr.index[1:], lr.values[:-1], lr.values[1:]) if cur <= prev / 2]


def _training_panel(ax, history: pd.DataFrame) -> None:
    """Train/val loss (each rescaled by its maximum in its run) and accuracy, mean ± std over runs."""
    colors = {"train_loss": "tab:blue", "val_loss": "tab:orange", "train_acc": "tab:green", "val_acc": "tab:red"}
    run = [c for c in ("experiment", "seed") if c in history.columns]
    for column, color in colors.items():
        values = history[[*run, "epoch", column]].dropna()
        if column.endswith("loss"):
            values[column] = values[column] / values.groupby(run)[column].transform("max")
        stats = values.groupby("epoch")[column].agg(["mean", "std"]).fillna(0)
        label = column.replace("_", " ") + (" (rescaled)" if column.endswith("loss") else "")
        ax.plot(stats.index, stats["mean"], color=color, label=label)
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=color, alpha=0.2)
    for epoch in lr_drops(history):
        ax.plot([epoch], [0], marker="|", color="red", markersize=12, clip_on=False)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss / accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="center right", fontsize="small")


def measure_figure(measure: pd.DataFrame, history: pd.DataFrame, panels: Sequence[Sequence[int]] | None = None,
                   title: str = "") -> plt.Figure:
    """n_l over epochs (mean ± std over seeds), a line per layer, one panel per layer group, training below."""
    layers = sorted(measure["layer"].unique())
    panels = [list(p) for p in panels] if panels else [layers]
    fig, axes = plt.subplots(len(panels) + 1, 1, figsize=(7, 2.6 * (len(panels) + 1)), sharex=True, squeeze=False)
    axes = axes[:, 0]
    cmap = plt.get_cmap("viridis", max(len(layers), 2))
    for ax, panel in zip(axes, panels):
        for layer in panel:
            values = measure[measure["layer"] == layer]
            stats = values.groupby("epoch")["n_l"].agg(["mean", "std"]).fillna(0)
            color = cmap(layers.index(layer)) if layer in layers else None
            ax.plot(stats.index, stats["mean"], color=color, label=f"layer {layer}")
            ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=color, alpha=0.2)
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("fraction negative $n_l$")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    _training_panel(axes[-1], history)
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    return fig


def _measure_lines(ax, measure: pd.DataFrame, key: str, values, cmap, label) -> None:
    """n_l over epochs, mean ± std over seeds, one line per value of ``key``."""
    for i, value in enumerate(values):
        stats = measure[measure[key] == value].groupby("epoch")["n_l"].agg(["mean", "std"]).fillna(0)
        color = cmap(i)
        ax.plot(stats.index, stats["mean"], color=color, label=label(value))
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=color, alpha=0.2)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(-0.02, 1.02)


def layer_figure(measure: pd.DataFrame, layer: int = 1, title: str = "") -> plt.Figure:
    """One layer's n_l over epochs in several experiments (``experiment`` column), a line each (fig 21)."""
    experiments = list(dict.fromkeys(measure["experiment"]))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    _measure_lines(ax, measure[measure["layer"] == layer], "experiment", experiments,
                   plt.get_cmap("tab10"), str)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"layer {layer}: fraction negative $n_l$")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def grid_figure(measure: pd.DataFrame, experiments: Sequence[str], columns: int = 2, title: str = "") -> plt.Figure:
    """A panel per experiment (row-major, ``columns`` per row), n_l of every layer over epochs (fig 22)."""
    rows = math.ceil(len(experiments) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3 * rows), sharey=True, squeeze=False)
    for ax, experiment in zip(axes.flat, experiments):
        part = measure[measure["experiment"] == experiment]
        layers = sorted(part["layer"].unique())
        _measure_lines(ax, part, "layer", layers, plt.get_cmap("viridis", max(len(layers), 2)), lambda l: f"layer {l}")
        ax.set_title(experiment, fontsize="medium")
        ax.set_xlabel("epoch")
    for ax in list(axes.flat)[len(experiments):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("fraction negative $n_l$")
    axes[0, -1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="x-small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def histogram_figure(filters: pd.DataFrame, epochs: tuple[int, int], labels: tuple[str, str] = ("initialization", "trained"),
                     title: str = "") -> plt.Figure:
    """Per-layer histograms of filter cosines at two epochs (e.g. initialization vs final)."""
    layers = sorted(filters["layer"].unique())
    cols = min(4, len(layers))
    rows = math.ceil(len(layers) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), squeeze=False)
    for ax, layer in zip(axes.flat, layers):
        layer_filters = filters[filters["layer"] == layer]
        cosines = [layer_filters[layer_filters["epoch"] == epoch]["cosine"].dropna() for epoch in epochs]
        bins = np.histogram_bin_edges(pd.concat(cosines), bins=30)
        for cos, epoch, label, color in zip(cosines, epochs, labels, ("tab:blue", "tab:orange")):
            ax.hist(cos, bins=bins, alpha=0.6, color=color, label=f"{label} (epoch {epoch})")
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_title(f"layer {layer}", fontsize="medium")
        ax.set_xlabel("cosine")
    for ax in list(axes.flat)[len(layers):]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel("filters")
    axes[0, 0].legend(fontsize="x-small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def cosine_histograms(filters: pd.DataFrame, title: str = "") -> plt.Figure:
    """Per-layer histograms of the filter cosines of one network (``layer``, ``cosine`` columns)."""
    return histogram_figure(filters.assign(epoch=0), (0,), labels=("weights",), title=title)


def reinit_figure(reinit: pd.DataFrame, title: str = "") -> plt.Figure:
    """Heatmaps of the relative test-accuracy drop: rows = source epoch (``rand`` first), columns = layer, a panel per seed."""
    seeds = sorted(reinit["seed"].unique())
    fig, axes = plt.subplots(1, len(seeds), figsize=(3.6 * len(seeds) + 1, 4), squeeze=False)
    image = None
    for ax, seed in zip(axes[0], seeds):
        table = reinit[reinit["seed"] == seed].pivot(index="source", columns="layer", values="drop")
        order = sorted(table.index, key=lambda s: -1 if s == "rand" else int(s))
        table = table.loc[order]
        image = ax.imshow(table.to_numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns])
        ax.set_yticks(range(table.shape[0]), list(table.index))
        ax.set_xlabel("layer")
        ax.set_title(f"seed {seed}", fontsize="medium")
    axes[0, 0].set_ylabel("re-initialized from epoch")
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), label="relative test accuracy drop")
    if title:
        fig.suptitle(title)
    return fig


def critical_figure(measure: pd.DataFrame, reinit: pd.DataFrame, title: str = "") -> plt.Figure:
    """Biased vs critical: each conv layer's final |n_l − ½| against its test-accuracy drop when
    reset to its initialization, a point per (layer, seed); ρ of claim C5 in the title."""
    from .claims import bias_and_criticality, bias_critical_correlation

    points = bias_and_criticality(measure, reinit, reset_epoch=0)
    rho, p, _ = bias_critical_correlation(points)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    scatter = ax.scatter(points["bias"], points["drop"], c=points["layer"], cmap="viridis", s=24)
    fig.colorbar(scatter, ax=ax, label="layer")
    ax.set_xlabel("final bias |n_l − ½|")
    ax.set_ylabel("test accuracy drop, reset to epoch 0")
    ax.set_title(f"{title + ': ' if title else ''}Spearman ρ = {rho:.2f} (p = {p:.2g})", fontsize="medium")
    return fig


@dataclass(frozen=True)
class FigureKind:
    """A figure kind: the tables it reads and ``draw(tables, spec)``, ``spec`` its FigureSpec.

    Tables: ``measure`` (per-layer measure of each experiment), ``histories`` (training history
    of each run, with experiment and seed), ``filters`` (per-filter table of one run),
    ``reinit`` (re-initialization tables of the runs drawn), ``pretrained`` (per-filter table of
    a network trained elsewhere).  ``workflow/rules/common.smk`` names their files."""

    tables: tuple[str, ...]
    draw: Callable[[Mapping[str, pd.DataFrame], FigureSpec], plt.Figure]


def _histograms(tables: Mapping[str, pd.DataFrame], spec: FigureSpec) -> plt.Figure:
    filters = tables["filters"]
    epochs = (int(filters["epoch"].min()), int(filters["epoch"].max()))
    return histogram_figure(filters, epochs, title=f"{spec.experiments[0]}, seed {filters['seed'].iloc[0]}")


KINDS: dict[str, FigureKind] = {
    "measure": FigureKind(("measure", "histories"), lambda t, spec: measure_figure(
        t["measure"], t["histories"], spec.panels, title=", ".join(spec.experiments))),
    "histograms": FigureKind(("filters",), _histograms),
    "layer": FigureKind(("measure",), lambda t, spec: layer_figure(t["measure"], spec.layer)),
    "grid": FigureKind(("measure",), lambda t, spec: grid_figure(t["measure"], spec.experiments,
                                                                 spec.columns)),
    "reinit": FigureKind(("reinit",), lambda t, spec: reinit_figure(t["reinit"], title=", ".join(spec.experiments))),
    "critical": FigureKind(("measure", "reinit"), lambda t, spec: critical_figure(
        t["measure"], t["reinit"], title=", ".join(spec.experiments))),
    "pretrained": FigureKind(("pretrained",), lambda t, spec: histogram_figure(
        t["pretrained"], (0, 1), labels=("random initialization", "pretrained"), title=spec.pretrained)),
}
