"""The claims scorecard: does each of the paper's claims hold in what the study computed?

One row per (claim, experiment): the statistic, its threshold (:class:`ClaimsSpec`), the value and
``holds`` / ``fails`` / ``not run``.  A claim gets a row only for the experiments it speaks of:
C2, C3 and C5 for networks that learned, C4 for networks that did not.

- C1 at initialization every layer's count of negative cosines lies inside the two-sided
  binomial band around F/2 (p ≥ ``band_alpha``, every seed);
- C2 after training, layers beyond the first are biased (p < ``bias_p`` in most seeds) — at
  least ``biased_fraction`` of them;
- C3 the first layer of a network on RGB images stays unbiased;
- C4 a network that fails to learn (validation accuracy below chance + ``chance_margin``)
  keeps every layer inside the band at every epoch;
- C5 biased layers are the critical ones: Spearman correlation, across layers, between the
  final bias |n_l − ½| and the accuracy drop when the layer is reset to epoch ``reset_epoch``;
- C6 test accuracy within ``test_val_gap`` of validation accuracy, and the paper's stated
  train accuracy where it gives one (``train_accuracy``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .specs import ClaimsSpec

COLUMNS = ["claim", "experiment", "statistic", "threshold", "value", "result", "detail"]


@dataclass(frozen=True)
class Evidence:
    """What the study computed for one experiment."""

    experiment: str
    measure: pd.DataFrame  # the measure table: every (seed, epoch, layer)
    history: pd.DataFrame  # the training history of every run, with its seed
    reinit: pd.DataFrame | None  # the re-initialization tables of its runs; None: no sweep
    num_classes: int
    channels: int


def _row(claim: str, ev: Evidence, statistic: str, threshold: str, value: float, holds: bool | None,
         detail: str = "") -> dict:
    result = "not run" if holds is None else "holds" if holds else "fails"
    return dict(claim=claim, experiment=ev.experiment, statistic=statistic, threshold=threshold,
                value=value, result=result, detail=detail)


def _final(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["epoch"] == table["epoch"].max()]


def _layers(values) -> str:
    return ", ".join(str(int(v)) for v in values) or "none"


def learned(ev: Evidence, spec: ClaimsSpec) -> bool:
    """Whether the runs learned: final validation accuracy (mean over seeds) above chance + margin."""
    return _final(ev.history)["val_acc"].mean() > 1 / ev.num_classes + spec.chance_margin


def biased_layers(measure: pd.DataFrame, p: float) -> pd.Series:
    """Per layer of the final epoch: biased (p-value below ``p``) in most seeds."""
    final = _final(measure)
    return (final["p_value"] < p).groupby(final["layer"]).mean() > 0.5


def _inside_band(claim: str, ev: Evidence, measure: pd.DataFrame, statistic: str, spec: ClaimsSpec) -> dict:
    """Every (seed, layer) row of ``measure`` has a binomial p-value ≥ ``band_alpha``."""
    outside = sorted(set(measure.loc[measure["p_value"] < spec.band_alpha, "layer"]))
    return _row(claim, ev, statistic, f">= {spec.band_alpha}", measure["p_value"].min(), not outside,
                f"layers outside the band: {_layers(outside)}")


def init_inside_band(ev: Evidence, spec: ClaimsSpec) -> dict:
    init = ev.measure[ev.measure["epoch"] == 0]
    return _inside_band("C1", ev, init, "smallest binomial p-value at epoch 0", spec)


def deep_layers_biased(ev: Evidence, spec: ClaimsSpec) -> dict:
    biased = biased_layers(ev.measure, spec.bias_p)
    deep = biased[biased.index > 1]
    fraction = deep.mean() if len(deep) else float("nan")
    return _row("C2", ev, f"fraction of layers 2..L biased (p < {spec.bias_p}) after training",
                f">= {spec.biased_fraction}", fraction, bool(fraction >= spec.biased_fraction),
                f"biased layers: {_layers(deep.index[deep])}")


def first_layer_unbiased(ev: Evidence, spec: ClaimsSpec) -> dict:
    first = _final(ev.measure).query("layer == 1")["p_value"]
    return _row("C3", ev, "median binomial p-value of layer 1 after training", f">= {spec.bias_p}",
                first.median(), not biased_layers(ev.measure, spec.bias_p).get(1, False))


def failed_network_unbiased(ev: Evidence, spec: ClaimsSpec) -> dict:
    return _inside_band("C4", ev, ev.measure, "smallest binomial p-value over every epoch (did not learn)", spec)


def bias_and_criticality(measure: pd.DataFrame, reinit: pd.DataFrame, reset_epoch: int) -> pd.DataFrame:
    """Per (seed, layer): the final bias |n_l − ½| and the drop when the layer is reset to ``reset_epoch``."""
    final = _final(measure).assign(bias=lambda t: (t["n_l"] - 0.5).abs())[["seed", "layer", "bias"]]
    reset = reinit[reinit["source"] == str(reset_epoch)][["seed", "layer", "drop"]]
    return final.merge(reset, on=["seed", "layer"])


def bias_critical_correlation(points: pd.DataFrame) -> tuple[float, float, int]:
    """Spearman (rho, p) across layers of the mean bias and mean drop of :func:`bias_and_criticality`."""
    from scipy.stats import spearmanr

    layers = points.groupby("layer")[["bias", "drop"]].mean()
    rho, p = spearmanr(layers["bias"], layers["drop"])
    return float(rho), float(p), len(layers)


def biased_are_critical(ev: Evidence, spec: ClaimsSpec) -> dict:
    statistic = f"Spearman rho of |n_l - 1/2| and the drop when reset to epoch {spec.reset_epoch}"
    threshold = f"> 0 with p < {spec.correlation_p}"
    if ev.reinit is None:
        return _row("C5", ev, statistic, threshold, float("nan"), None, "no re-initialization sweep")
    rho, p, layers = bias_critical_correlation(bias_and_criticality(ev.measure, ev.reinit, spec.reset_epoch))
    return _row("C5", ev, statistic, threshold, rho, bool(rho > 0 and p < spec.correlation_p),
                f"p = {p:.3g} over {layers} layers")


def accuracies(ev: Evidence, spec: ClaimsSpec) -> list[dict]:
    final = _final(ev.history)
    gap = abs(final["test_acc"].mean() - final["val_acc"].mean())
    rows = [_row("C6", ev, "|test - validation| accuracy after training", f"<= {spec.test_val_gap}",
                 gap, bool(gap <= spec.test_val_gap))]
    if ev.experiment in spec.train_accuracy:
        stated, ours = spec.train_accuracy[ev.experiment], final["train_acc"].mean()
        rows.append(_row("C6", ev, f"train accuracy after training (paper: {stated})",
                         f"within {spec.train_accuracy_tolerance}", ours,
                         bool(abs(ours - stated) <= spec.train_accuracy_tolerance)))
    return rows


def scorecard(evidence: list[Evidence], spec: ClaimsSpec) -> pd.DataFrame:
    """Every claim for every experiment of ``evidence``, in claim order."""
    rows = []
    for ev in evidence:
        rows.append(init_inside_band(ev, spec))
        if learned(ev, spec):
            rows.append(deep_layers_biased(ev, spec))
            if ev.channels == 3:
                rows.append(first_layer_unbiased(ev, spec))
            rows.append(biased_are_critical(ev, spec))
        else:
            rows.append(failed_network_unbiased(ev, spec))
        rows.extend(accuracies(ev, spec))
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values(["claim", "experiment"], kind="stable").reset_index(drop=True)


def summary(table: pd.DataFrame) -> str:
    """One screen: a line per row, then the counts."""
    lines = [f"{r.claim}  {r.result:<8} {r.experiment:<32} {r.value:.3g} ({r.threshold})  {r.detail}".rstrip()
             for r in table.itertuples()]
    counts = table["result"].value_counts()
    lines.append(", ".join(f"{counts.get(k, 0)} {k}" for k in ("holds", "fails", "not run")))
    return "\n".join(lines)
