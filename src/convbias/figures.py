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

from .claims import CLAIM_NAMES, per_run_values  # noqa: E402
from .claims import RESULT_COLOURS as SCORECARD_COLOURS  # noqa: E402
from .specs import KIND_TABLES, FigureSpec  # noqa: E402


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
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")  # beside the panel: it covers no line


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
    if not seeds:  # every run diverged (convbias.train.diverged): no final weights, no sweep
        fig, ax = plt.subplots(figsize=(4.6, 4))
        ax.text(0.5, 0.5, "no sweep: every run stopped\nbefore its last epoch (diverged)", ha="center", va="center")
        ax.set_axis_off()
        ax.set_title(title, fontsize="medium")
        return fig
    # the panels share their rows (labelled on the first only); constrained layout keeps each panel's
    # tick labels clear of its neighbour's and makes room for the colour bar
    fig, axes = plt.subplots(1, len(seeds), figsize=(2.6 * len(seeds) + 1.6, 4), squeeze=False, sharey=True,
                             layout="constrained")
    order = sorted(reinit["source"].unique(), key=lambda s: -1 if s == "rand" else int(s))
    image = None
    for ax, seed in zip(axes[0], seeds):
        table = reinit[reinit["seed"] == seed].pivot(index="source", columns="layer", values="drop").reindex(order)
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


def critical_figure(measure: pd.DataFrame, reinit: pd.DataFrame, title: str = "", level: float = 0.95) -> plt.Figure:
    """Biased vs critical (claim C5): each conv layer's final bias q (:func:`convbias.stats.null_quantile`:
    its width-free units) against its test-accuracy drop when reset to its initialization, a dot per
    (layer, run) and the layer's mean over runs numbered; the title gives C5's ρ over the layer means,
    its interval over runs (``level``) and each run's own ρ."""
    from .claims import bias_and_criticality, c5_statistic

    points = bias_and_criticality(measure, reinit, reset_epoch=0)
    fig, ax = plt.subplots(figsize=(6, 4.6))
    if points.empty:
        ax.text(0.5, 0.5, "no sweep: every run stopped\nbefore its last epoch (diverged)", ha="center", va="center")
        ax.set_axis_off()
        ax.set_title(title, fontsize="medium")
        return fig
    c, seeds = c5_statistic(points, level)
    scatter = ax.scatter(points["q"], points["drop"], c=points["layer"], cmap="viridis", s=14, alpha=0.6)
    means = points.groupby("layer")[["q", "drop"]].mean()
    ax.scatter(means["q"], means["drop"], c=means.index, cmap="viridis", s=90, edgecolors="black", linewidths=0.8,
               vmin=points["layer"].min(), vmax=points["layer"].max())
    middle = (points["layer"].min() + points["layer"].max()) / 2  # viridis: dark below, bright above
    for layer, row in means.iterrows():
        ax.annotate(str(layer), (row["q"], row["drop"]), fontsize="x-small", ha="center", va="center",
                    color="white" if layer <= middle else "black")
    fig.colorbar(scatter, ax=ax, label="layer")
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)  # q's mean with no bias, at any width
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("final bias q (share of unbiased layers of its width that are less biased)")
    ax.set_ylabel("test accuracy drop, reset to epoch 0")
    per_run = ", ".join(f"{r:.2f}" for r in np.atleast_1d(c.per_run))
    ax.set_title(f"{title + ': ' if title else ''}C5, Spearman ρ of the layer means over {len(seeds)} runs = "
                 f"{float(c.rho):.2f}\n{level:.0%} interval over runs [{float(c.low):.2f}, {float(c.high):.2f}]; "
                 f"each run's own ρ {per_run}", fontsize="small")
    return fig


# claims_map: a cell per (claim, experiment), coloured by the scorecard's result
CLAIMS = tuple(CLAIM_NAMES)
RESULTS = (*SCORECARD_COLOURS, "not scored")  # not scored: the claim has no row
RESULT_COLOURS = (*SCORECARD_COLOURS.values(), "#f2f2f2")
WORST_FIRST = ("fails", "inconclusive", "not applicable", "not run", "holds")


def width_label(width: float) -> str:
    """A width multiplier as people write it: 1/8, 1/4, 1, 3/2."""
    from fractions import Fraction

    w = Fraction(width).limit_denominator(64)
    return str(w.numerator) if w.denominator == 1 else f"{w.numerator}/{w.denominator}"


def length_dodge(k: int, lengths: int) -> float:
    """The factor that moves the ``k``-th of ``lengths`` lengths off its width on the claims map's
    log-scaled width axis: 2**±0.04 apart, centred on the width."""
    return 2 ** (0.08 * (k - (lengths - 1) / 2))


def _cell(rows: pd.DataFrame, claim: str) -> tuple[str, str]:
    """(result, text) of one claim's rows for one experiment: the worst result of its rows, and its
    statistics (C5: ρ; an interval over runs below a value that has one)."""
    if rows.empty:
        return "not scored", "–"
    result = next(r for r in WORST_FIRST if (rows["result"] == r).any())
    if result in ("not applicable", "not run"):
        return result, "n/a" if result == "not applicable" else "not run"
    texts = []
    for row in rows.itertuples():
        text = f"ρ = {row.value:.2f}" if claim == "C5" else f"{row.value:.2g}"
        low, high = getattr(row, "low", float("nan")), getattr(row, "high", float("nan"))
        texts.append(text + ("" if pd.isna(low) else f"\n[{low:.2g}, {high:.2g}]"))
    return result, "\n".join(texts)


def claims_map_figure(claims: pd.DataFrame, scales: pd.DataFrame, reset_epoch: int = 0, title: str = "") -> plt.Figure:
    """Where each claim holds: above, a cell per claim (rows C0–C6) and experiment (columns, in the
    order of ``scales``: experiment, width, epochs), coloured by the scorecard's result and labelled
    with its statistic and interval over runs; below, C5's ρ of each experiment against its width, a
    line per length (epochs), its interval over runs as a bar and each run's own ρ beside it — all
    read from the scorecard."""
    experiments = list(scales["experiment"])
    width_in = max(6.0, 1.35 * len(experiments) + 2)
    fig, (grid, rho_ax) = plt.subplots(2, 1, figsize=(width_in, 9),
                                       gridspec_kw={"height_ratios": [len(CLAIMS), 4]})
    codes = np.zeros((len(CLAIMS), len(experiments)))
    for j, exp in enumerate(experiments):
        for i, claim in enumerate(CLAIMS):
            result, text = _cell(claims[(claims["experiment"] == exp) & (claims["claim"] == claim)], claim)
            codes[i, j] = RESULTS.index(result)
            grid.text(j, i, text, ha="center", va="center", fontsize="x-small")
    grid.imshow(codes, cmap=matplotlib.colors.ListedColormap(RESULT_COLOURS), vmin=-0.5, vmax=len(RESULTS) - 0.5,
                aspect="auto")
    labels = [f"{exp}\nwidth {width_label(w)}, {e} ep"
              for exp, w, e in scales[["experiment", "width", "epochs"]].itertuples(index=False)]
    grid.set_xticks(range(len(experiments)), labels, fontsize="x-small")
    grid.set_yticks(range(len(CLAIMS)), [f"{c}  {CLAIM_NAMES[c]}" for c in CLAIMS])
    grid.xaxis.tick_top()
    grid.set_xticks(np.arange(len(experiments) + 1) - 0.5, minor=True)
    grid.set_yticks(np.arange(len(CLAIMS) + 1) - 0.5, minor=True)
    grid.grid(which="minor", color="white", linewidth=2)
    grid.tick_params(which="minor", length=0)
    handles = [matplotlib.patches.Patch(facecolor=c, edgecolor="grey", label=r) for r, c in zip(RESULTS, RESULT_COLOURS)]
    grid.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), fontsize="x-small", frameon=False,
                ncol=len(RESULTS) if width_in >= 7 else 3)  # one row where it fits, else two

    c5 = claims[(claims["claim"] == "C5") & claims["value"].notna()].set_index("experiment")
    colours, markers = plt.get_cmap("tab10"), "os^Dv<>p"
    lengths = sorted(scales["epochs"].unique())
    for k, epochs in enumerate(lengths):
        # each length a little apart (x is a log scale): rungs of one width do not hide each other
        dodge = length_dodge(k, len(lengths))
        rungs = [(e, w * dodge) for e, w in scales[scales["epochs"] == epochs].sort_values("width")[["experiment", "width"]]
                 .itertuples(index=False) if e in c5.index]
        marker = markers[k % len(markers)]
        for exp, width in rungs:
            row, seeds = c5.loc[exp], per_run_values(c5.loc[exp, "per_run"])
            rho_ax.scatter([width] * len(seeds), seeds, color=colours(k), s=12, alpha=0.5)
            if not pd.isna(row["low"]):
                rho_ax.errorbar([width], [row["value"]], yerr=[[row["value"] - row["low"]], [row["high"] - row["value"]]],
                                color=colours(k), capsize=3, fmt="none")
            rho_ax.scatter([width], [row["value"]], s=60, edgecolors=colours(k), linewidths=1.5, marker=marker,
                           facecolors=colours(k) if row["result"] == "holds" else "none")
        rho_ax.plot([w for _, w in rungs], [c5.loc[e, "value"] for e, _ in rungs], color=colours(k), marker=marker,
                    markersize=0, label=f"{epochs} epochs")
    rho_ax.axhline(0, color="grey", linestyle=":", linewidth=1)
    rho_ax.set_xscale("log", base=2)
    widths = sorted(scales["width"].unique())
    rho_ax.set_xticks(widths, [width_label(w) for w in widths])
    rho_ax.set_xlim(widths[0] / 2 ** 0.5, widths[-1] * 2 ** 0.5)  # half a doubling of room each side
    rho_ax.minorticks_off()
    rho_ax.set_xlabel("width (× the paper's filters per layer)")
    rho_ax.set_ylabel(f"C5: Spearman ρ of q and drop\n(reset to epoch {reset_epoch}), layer means")
    rho_ax.set_ylim(-1.05, 1.05)
    rho_ax.legend(fontsize="small", title="length (filled: C5 holds; bar: interval over runs)",
                  title_fontsize="small", loc="best")  # where it hides no rung
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class FigureKind:
    """A figure kind: the tables it reads and ``draw(tables, spec)``, ``spec`` its FigureSpec.

    Tables: ``measure`` (per-layer measure of each experiment), ``histories`` (training history
    of each run, with experiment and seed), ``filters`` (per-filter table of one run),
    ``reinit`` (re-initialization tables of the runs drawn), ``pretrained`` (per-filter table of
    a network trained elsewhere), ``claims`` (the study's claims scorecard), ``scales`` (one row
    per experiment of the figure: its ``width`` and ``epochs``, and the ``reset_epoch`` of claim
    C5 — from the config, not a file).  ``workflow/rules/common.smk`` names their files."""

    tables: tuple[str, ...]
    draw: Callable[[Mapping[str, pd.DataFrame], FigureSpec], plt.Figure]


def _histograms(tables: Mapping[str, pd.DataFrame], spec: FigureSpec) -> plt.Figure:
    filters = tables["filters"]
    epochs = (int(filters["epoch"].min()), int(filters["epoch"].max()))
    return histogram_figure(filters, epochs, title=f"{spec.experiments[0]}, seed {filters['seed'].iloc[0]}")


_DRAW: dict[str, Callable[[Mapping[str, pd.DataFrame], FigureSpec], plt.Figure]] = {
    "measure": lambda t, spec: measure_figure(t["measure"], t["histories"], spec.panels,
                                              title=", ".join(spec.experiments)),
    "histograms": _histograms,
    "layer": lambda t, spec: layer_figure(t["measure"], spec.layer),
    "grid": lambda t, spec: grid_figure(t["measure"], spec.experiments, spec.columns),
    "reinit": lambda t, spec: reinit_figure(t["reinit"], title=", ".join(spec.experiments)),
    "critical": lambda t, spec: critical_figure(t["measure"], t["reinit"], title=", ".join(spec.experiments)),
    "claims_map": lambda t, spec: claims_map_figure(t["claims"], t["scales"], int(t["scales"]["reset_epoch"].iloc[0]),
                                                    title=f"Where the claims hold: study {spec.study}"),
    "pretrained": lambda t, spec: histogram_figure(t["pretrained"], (0, 1),
                                                   labels=("random initialization", "pretrained"), title=spec.pretrained),
}
KINDS: dict[str, FigureKind] = {kind: FigureKind(KIND_TABLES[kind], draw) for kind, draw in _DRAW.items()}
