"""The claims scorecard: does each of the paper's claims hold in what the study computed?

One row per (claim, experiment): the statistic, its threshold (:class:`ClaimsSpec`), the value and
``holds`` / ``fails`` / ``not run`` / ``not applicable``.  A claim gets a row only for the
experiments it speaks of: C2, C3 and C5 for networks meant to learn, C4 for networks meant not to.

- C0 every run learned, as its experiment's ``expect_learning`` means it (:mod:`convbias.learning`:
  final validation accuracy ≥ ``learned_accuracy_factor`` × chance and train loss below
  ``learned_loss_fraction`` × ln C; train loss only for ``memorize``); for an experiment meant not
  to learn (``none``), no run learned.  The claims that presuppose learning (C2, C3, C5) are
  ``not applicable`` for an experiment with a run that did not learn, and C4 for a control with a
  run that did: a verdict on noise would be noise;
- C1 at initialization every layer's count of negative cosines lies inside the two-sided
  binomial band around F/2 (p ≥ ``band_alpha``, every seed);
- C2 after training, layers beyond the first are biased (p < ``bias_p`` in most seeds) — at
  least ``biased_fraction`` of them;
- C3 the first layer of a network on RGB images stays unbiased;
- C4 a network that fails to learn keeps every layer inside the band at every epoch;
- C5 biased layers are the critical ones: Spearman correlation, across layers, between the
  final bias |n_l − ½| and the accuracy drop when the layer is reset to epoch ``reset_epoch``;
- C6 test accuracy within ``test_val_gap`` of validation accuracy, and the paper's stated
  train accuracy where it gives one (``train_accuracy``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .learning import learned as run_learned
from .specs import ClaimsSpec

COLUMNS = ["claim", "experiment", "statistic", "threshold", "value", "result", "detail"]

# a result of the scorecard and the colour every view of it (the claims map, the report) gives it
RESULT_COLOURS = {"holds": "#8fd18b", "fails": "#f08a7e", "not applicable": "#c8c8c8", "not run": "#ffffff"}


@dataclass(frozen=True)
class Evidence:
    """What the study computed for one experiment."""

    experiment: str
    measure: pd.DataFrame  # the measure table: every (seed, epoch, layer)
    history: pd.DataFrame  # the training history of every run, with its seed
    reinit: pd.DataFrame | None  # the re-initialization tables of its runs; None: no sweep
    num_classes: int
    channels: int
    expect_learning: str = "generalize"  # the experiment's expect_learning: generalize | memorize | none


def _row(claim: str, ev: Evidence, statistic: str, threshold: str, value: float, holds: bool | None,
         detail: str = "") -> dict:
    result = "not run" if holds is None else "holds" if holds else "fails"
    return dict(claim=claim, experiment=ev.experiment, statistic=statistic, threshold=threshold,
                value=value, result=result, detail=detail)


def _not_applicable(row: dict, why: str) -> dict:
    """``row`` without a verdict: its premise (the runs learned, or did not) is false."""
    return {**row, "value": float("nan"), "result": "not applicable", "detail": why}


def _final(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["epoch"] == table["epoch"].max()]


def _numbers(values) -> str:
    return ", ".join(str(int(v)) for v in values) or "none"


def _last_epochs(history: pd.DataFrame) -> pd.DataFrame:
    """The last epoch's row of each run (indexed by seed)."""
    return history.sort_values("epoch").groupby("seed").last()


def learned_runs(ev: Evidence, spec: ClaimsSpec) -> pd.Series:
    """Per seed: whether the run learned (C0's test at its final epoch, as ``expect_learning`` means it;
    for ``none`` the test of ``generalize``)."""
    final = _last_epochs(ev.history)
    expect = "generalize" if ev.expect_learning == "none" else ev.expect_learning
    return pd.Series({seed: run_learned(row.train_loss, row.val_acc, ev.num_classes, expect,
                                        spec.learned_accuracy_factor, spec.learned_loss_fraction)
                      for seed, row in final.iterrows()}, dtype=bool).sort_index()


def runs_learned(ev: Evidence, spec: ClaimsSpec, learned: pd.Series) -> dict:
    """C0: every run learned (for an experiment meant not to learn: none did)."""
    final = _last_epochs(ev.history)
    factor, fraction = spec.learned_accuracy_factor, spec.learned_loss_fraction
    test = f"train loss < {fraction} ln {ev.num_classes}"
    if ev.expect_learning != "memorize":
        test = f"validation accuracy >= {factor}/{ev.num_classes} and {test}"
    losses = ", ".join(f"{s}: {v:.3g}" for s, v in final["train_loss"].items())
    if ev.expect_learning == "none":
        return _row("C0", ev, f"runs that did not learn ({test} is false; meant not to learn)", "every run",
                    float((~learned).mean()), not learned.any(),
                    f"learned: {_numbers(learned.index[learned])}; final train loss per seed {losses}")
    return _row("C0", ev, f"runs that learned ({test})", "every run", float(learned.mean()), bool(learned.all()),
                f"did not learn: {_numbers(learned.index[~learned])}; final train loss per seed {losses}")


def biased_layers(measure: pd.DataFrame, p: float) -> pd.Series:
    """Per layer of the final epoch: biased (p-value below ``p``) in most seeds."""
    final = _final(measure)
    return (final["p_value"] < p).groupby(final["layer"]).mean() > 0.5


def _inside_band(claim: str, ev: Evidence, measure: pd.DataFrame, statistic: str, spec: ClaimsSpec) -> dict:
    """Every (seed, layer) row of ``measure`` has a binomial p-value ≥ ``band_alpha``."""
    outside = sorted(set(measure.loc[measure["p_value"] < spec.band_alpha, "layer"]))
    return _row(claim, ev, statistic, f">= {spec.band_alpha}", measure["p_value"].min(), not outside,
                f"layers outside the band: {_numbers(outside)}")


def init_inside_band(ev: Evidence, spec: ClaimsSpec) -> dict:
    init = ev.measure[ev.measure["epoch"] == 0]
    return _inside_band("C1", ev, init, "smallest binomial p-value at epoch 0", spec)


def deep_layers_biased(ev: Evidence, spec: ClaimsSpec) -> dict:
    biased = biased_layers(ev.measure, spec.bias_p)
    deep = biased[biased.index > 1]
    fraction = deep.mean() if len(deep) else float("nan")
    return _row("C2", ev, f"fraction of layers 2..L biased (p < {spec.bias_p}) after training",
                f">= {spec.biased_fraction}", fraction, bool(fraction >= spec.biased_fraction),
                f"biased layers: {_numbers(deep.index[deep])}")


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
        learned = learned_runs(ev, spec)
        rows += [runs_learned(ev, spec, learned), init_inside_band(ev, spec)]
        if ev.expect_learning == "none":
            row = failed_network_unbiased(ev, spec)
            rows.append(_not_applicable(row, f"learned: runs {_numbers(learned.index[learned])}") if learned.any() else row)
        else:
            presupposing = [deep_layers_biased(ev, spec)]
            if ev.channels == 3:
                presupposing.append(first_layer_unbiased(ev, spec))
            presupposing.append(biased_are_critical(ev, spec))
            if not learned.all():
                why = f"did not learn: runs {_numbers(learned.index[~learned])}"
                presupposing = [_not_applicable(row, why) for row in presupposing]
            rows += presupposing
        rows.extend(accuracies(ev, spec))
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values(["claim", "experiment"], kind="stable").reset_index(drop=True)


def summary(table: pd.DataFrame) -> str:
    """One screen: a line per row, then the counts."""
    lines = [f"{r.claim}  {r.result:<8} {r.experiment:<32} {r.value:.3g} ({r.threshold})  {r.detail}".rstrip()
             for r in table.itertuples()]
    counts = table["result"].value_counts()
    lines.append(", ".join(f"{counts.get(k, 0)} {k}" for k in ("holds", "fails", "not run", "not applicable")))
    return "\n".join(lines)
