"""The claims scorecard: does each of the paper's claims hold in what the study computed?

One row per (claim, experiment): the statistic, its threshold (:class:`ClaimsSpec`), the value, an
interval over runs where the claim has one, each run's own value, and ``holds`` / ``fails`` /
``inconclusive`` / ``not run`` / ``not applicable``.  A claim gets a row only for the experiments
it speaks of: C2, C3 and C5 for networks meant to learn, C4 for networks meant not to.

- C0 every run learned, as its experiment's ``expect_learning`` means it (:mod:`convbias.learning`);
  for an experiment meant not to learn (``none``), no run learned.  The claims that presuppose
  learning (C2, C3, C5) are ``not applicable`` for an experiment with a run that did not learn, and
  C4 for a control with a run that did: a verdict on noise would be noise;
- C1 at initialization every layer's count of negative cosines lies inside the two-sided
  binomial band around F/2 (p ≥ ``band_alpha``, every seed);
- C2 after training, at least ``biased_fraction`` of the layers beyond the first are biased
  (p < ``bias_p`` in most runs);
- C3 the first layer of a network on RGB images stays unbiased;
- C4 a network that fails to learn keeps every layer inside the band at every epoch;
- C5 biased layers are the critical ones: Spearman ρ, across layers, of the runs' mean q (a layer's
  bias in units that do not depend on its width: the share of unbiased layers of its filter count
  that are less biased, :func:`convbias.stats.null_quantile`) and their mean accuracy drop when the
  layer is reset to epoch ``reset_epoch``;
- C6 test accuracy within ``test_val_gap`` of validation accuracy, and the paper's stated
  train accuracy where it gives one (``train_accuracy``).

**Seeds are the unit of replication.**  C2, C5 and C6 carry an interval over runs: the exact
bootstrap over the experiment's runs (:func:`resamples`).  A claim the study is too small to decide
is ``inconclusive``, with its reason: one run; an interval that holds both no effect and the
paper's effect; a layer too narrow for its binomial test to find the paper's bias; a validation
split whose standard error exceeds C6's threshold.  The rules are in ``config/README.md``
("claims"); the tests behind them, on arrays of many studies at once, in :mod:`convbias.verdicts`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .evidence import Evidence
from .learning import learned as run_learned
from .specs import ClaimsSpec
from .stats import null_quantile
from .verdicts import Correlation, c2_results, c5_results, correlation, deep_biased, mean_interval, too_narrow

__all__ = ["Evidence", "scorecard", "summary", "findings", "learned_runs"]

COLUMNS = ["claim", "experiment", "statistic", "threshold", "value", "low", "high", "per_run", "result", "detail"]
RESULTS = ("holds", "fails", "inconclusive", "not run", "not applicable")

# a result of the scorecard and the colour every view of it (the claims map, the report) gives it
RESULT_COLOURS = {"holds": "#8fd18b", "fails": "#f08a7e", "inconclusive": "#f5d36b", "not applicable": "#c8c8c8",
                  "not run": "#ffffff"}

# what each claim says, in a few words (the claims map) and in a sentence (the report's findings)
CLAIM_NAMES = {"C0": "runs learned", "C1": "unbiased at init", "C2": "deep layers biased", "C3": "layer 1 unbiased",
               "C4": "no learning, no bias", "C5": "biased = critical", "C6": "test ≈ validation"}
CLAIM_TEXT = {"C0": "every run learned (a control meant not to learn: none did)",
              "C1": "at initialization every layer is unbiased",
              "C2": "after training, most layers beyond the first are biased",
              "C3": "the first layer of a network on RGB images stays unbiased",
              "C4": "a network that fails to learn stays unbiased",
              "C5": "biased layers are the critical ones",
              "C6": "test accuracy agrees with validation accuracy (and with the paper's train accuracy)"}

# --- the rows of the scorecard


def _row(claim: str, ev: Evidence, statistic: str, threshold: str, value: float, holds: bool | str | None,
         detail: str = "", low: float = float("nan"), high: float = float("nan"), per_run: str = "") -> dict:
    result = holds if isinstance(holds, str) else "not run" if holds is None else "holds" if holds else "fails"
    return dict(claim=claim, experiment=ev.experiment, statistic=statistic, threshold=threshold, value=value,
                low=low, high=high, per_run=per_run, result=result, detail=detail)


def _not_applicable(row: dict, why: str) -> dict:
    """``row`` without a verdict: its premise (the runs learned, or did not) is false."""
    return {**row, "value": float("nan"), "low": float("nan"), "high": float("nan"), "per_run": "",
            "result": "not applicable", "detail": why}


def _final(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["epoch"] == table["epoch"].max()]


def _numbers(values) -> str:
    return ", ".join(str(int(v)) for v in values) or "none"


def _per_run(values: pd.Series) -> str:
    """Each run's value, ``seed: value; …`` (read back by :func:`per_run_values`)."""
    return "; ".join(f"{int(s)}: {v:.3g}" for s, v in values.items())


def per_run_values(text: str) -> pd.Series:
    """The per-run values of a scorecard row (its ``per_run`` column), indexed by seed."""
    pairs = [item.split(":") for item in str(text).split(";") if item.strip() and item.strip() != "nan"]
    return pd.Series({int(s): float(v) for s, v in pairs}, dtype=float)


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


def _layer_filters(final: pd.DataFrame) -> pd.Series:
    """Per layer: its filters with a direction (the binomial test's n)."""
    counted = final["filters"] - final.get("zero_norm", 0)
    return counted.groupby(final["layer"]).min()


def _narrow_words(layers, spec: ClaimsSpec) -> str:
    which = f"layer {_numbers(layers)} is" if len(layers) == 1 else f"layers {_numbers(layers)} are"
    return (f"{which} too narrow to tell (a binomial test on so few filters finds n_l = {spec.paper_n_l} "
            f"in fewer than {spec.min_power:.0%} of runs)")


def deep_layers_biased(ev: Evidence, spec: ClaimsSpec) -> dict:
    final = _final(ev.measure)
    p_values = final.pivot_table(index="seed", columns="layer", values="p_value")
    p_values = p_values[[layer for layer in p_values.columns if layer > 1]]
    statistic = f"fraction of layers 2..L biased (p < {spec.bias_p} in most runs) after training"
    threshold = f">= {spec.biased_fraction} over runs"
    if p_values.empty:
        return _row("C2", ev, statistic, threshold, float("nan"), "inconclusive", "no layer beyond the first")
    narrow = too_narrow(_layer_filters(final), spec).reindex(p_values.columns).to_numpy()
    array = p_values.to_numpy()
    fraction, low, high = deep_biased(array, spec.bias_p, spec.interval)
    _, _, high_if_narrow = deep_biased(array, spec.bias_p, spec.interval, narrow)
    runs = len(p_values)
    result = str(c2_results(low, high_if_narrow, runs, spec))
    biased = p_values.columns[(p_values < spec.bias_p).mean() > 0.5]
    per_run = (p_values < spec.bias_p).mean(axis=1)
    detail = f"biased layers: {_numbers(biased)}"
    if result == "inconclusive":
        why = ["1 run: no interval over seeds"] if runs < 2 else []
        untold = narrow & ~p_values.columns.isin(biased)  # narrow layers not found biased: they could be
        if untold.any() and runs >= 2 and not low >= spec.biased_fraction:
            why.append(_narrow_words(p_values.columns[untold], spec))
        if runs >= 2 and low < spec.biased_fraction <= high:
            why.append(f"the interval over runs [{float(low):.2g}, {float(high):.2g}] holds {spec.biased_fraction}")
        detail += "; inconclusive: " + "; ".join(why or ["the interval over runs spans the threshold"])
    return _row("C2", ev, statistic, threshold, float(fraction), result, detail, float(low), float(high),
                _per_run(per_run))


def first_layer_unbiased(ev: Evidence, spec: ClaimsSpec) -> dict:
    final = _final(ev.measure)
    first = final.query("layer == 1")["p_value"]
    statistic, threshold = "median binomial p-value of layer 1 after training", f">= {spec.bias_p}"
    if first.empty:
        return _row("C3", ev, statistic, threshold, float("nan"), None, "no layer 1 in the measure table")
    biased = bool(biased_layers(ev.measure, spec.bias_p).get(1, False))
    if not biased and too_narrow(_layer_filters(final), spec).get(1, False):
        return _row("C3", ev, statistic, threshold, first.median(), "inconclusive",
                    "inconclusive: " + _narrow_words([1], spec))
    return _row("C3", ev, statistic, threshold, first.median(), not biased)


def failed_network_unbiased(ev: Evidence, spec: ClaimsSpec) -> dict:
    return _inside_band("C4", ev, ev.measure, "smallest binomial p-value over every epoch (did not learn)", spec)


def bias_and_criticality(measure: pd.DataFrame, reinit: pd.DataFrame, reset_epoch: int) -> pd.DataFrame:
    """Per (seed, layer): the final q (C5's bias, :func:`convbias.stats.null_quantile`), |n_l − ½| (the
    width-confounded statistic of earlier scorecards) and the drop when the layer is reset to ``reset_epoch``."""
    reset = reinit[reinit["source"] == str(reset_epoch)][["seed", "layer", "drop"]]
    if reset.empty:  # no sweep rows: every run stopped before its last epoch (convbias.reinit.no_sweep)
        return pd.DataFrame(columns=["seed", "layer", "q", "bias", "drop"])
    final = _final(measure)
    counted = final["filters"] - final.get("zero_norm", 0)
    final = final.assign(q=null_quantile(final["negatives"], counted), bias=(final["n_l"] - 0.5).abs())
    return final[["seed", "layer", "q", "bias"]].merge(reset, on=["seed", "layer"])


def bias_critical_arrays(points: pd.DataFrame, column: str = "q") -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """(bias, drops) of shape (runs, layers) from :func:`bias_and_criticality`, and the runs' seeds."""
    bias = points.pivot_table(index="seed", columns="layer", values=column).dropna(axis=1)
    drops = points.pivot_table(index="seed", columns="layer", values="drop")[bias.columns]
    return bias.to_numpy(), drops.to_numpy(), bias.index


def c5_statistic(points: pd.DataFrame, level: float, column: str = "q") -> tuple[Correlation, pd.Index]:
    """C5's :class:`Correlation` of :func:`bias_and_criticality` (``column``: q, or bias for |n_l − ½|)."""
    bias, drops, seeds = bias_critical_arrays(points, column)
    return correlation(bias, drops, level), seeds


def biased_are_critical(ev: Evidence, spec: ClaimsSpec) -> dict:
    statistic = (f"Spearman rho, across layers, of mean q (bias in no-bias quantiles) and mean drop when reset to "
                 f"epoch {spec.reset_epoch} (layer means over runs)")
    threshold = f"> 0 with p < {spec.correlation_p}, interval > 0; fails: interval < {spec.c5_paper_rho}"
    if ev.reinit is None:
        return _row("C5", ev, statistic, threshold, float("nan"), None, "no re-initialization sweep")
    points = bias_and_criticality(ev.measure, ev.reinit, spec.reset_epoch)
    if points.empty:
        return _row("C5", ev, statistic, threshold, float("nan"), None, f"no sweep rows at epoch {spec.reset_epoch}")
    c, seeds = c5_statistic(points, spec.interval)
    old, _ = c5_statistic(points, spec.interval, "bias")
    result = str(c5_results(c, len(seeds), spec))
    detail = f"p = {float(c.p):.3g} over {points['layer'].nunique()} layers and {len(seeds)} runs"
    if result == "inconclusive":
        detail += ("; inconclusive: 1 run: no interval over seeds" if len(seeds) < 2 else
                   f"; inconclusive: the interval over runs [{float(c.low):.2f}, {float(c.high):.2f}] holds both "
                   f"no effect (0) and the paper's rho ({spec.c5_paper_rho})")
    detail += f"; with |n_l - 1/2| instead of q (confounded with the filter count): rho {float(old.rho):.2f}"
    return _row("C5", ev, statistic, threshold, float(c.rho), result, detail, float(c.low), float(c.high),
                _per_run(pd.Series(c.per_run, index=seeds)))


def _equivalence(ev: Evidence, spec: ClaimsSpec, values: pd.Series, centre: float, tolerance: float,
                 statistic: str, threshold: str, shown: float) -> dict:
    """C6's rule for ``values`` (one per run): holds when the interval of their mean over runs lies
    within ``centre`` ± ``tolerance``, fails when it lies outside, else inconclusive."""
    if len(values) < 2:
        return _row("C6", ev, statistic, threshold, shown, "inconclusive", "inconclusive: 1 run: no interval over seeds",
                    per_run=_per_run(values))
    low, high = mean_interval(values.to_numpy(), spec.interval)
    inside = centre - tolerance <= low and high <= centre + tolerance
    outside = low > centre + tolerance or high < centre - tolerance
    result = "holds" if inside else "fails" if outside else "inconclusive"
    detail = (f"inconclusive: the interval over runs [{low:.3g}, {high:.3g}] reaches past {centre:.3g} ± {tolerance}"
              if result == "inconclusive" else "")
    return _row("C6", ev, statistic, threshold, shown, result, detail, low, high, _per_run(values))


def accuracies(ev: Evidence, spec: ClaimsSpec) -> list[dict]:
    final = _last_epochs(ev.history)
    gaps = final["test_acc"] - final["val_acc"]
    statistic, threshold = "test - validation accuracy after training (mean over runs)", \
        f"within +-{spec.test_val_gap} over runs"
    row = _equivalence(ev, spec, gaps, 0.0, spec.test_val_gap, statistic, threshold, float(gaps.mean()))
    accuracy = float(final["val_acc"].mean())
    if ev.val_images:
        error = math.sqrt(accuracy * (1 - accuracy) / ev.val_images)
        if error > spec.test_val_gap:
            row = {**row, "result": "inconclusive",
                   "detail": f"inconclusive: the validation split's {ev.val_images} images give its accuracy "
                             f"({accuracy:.2f}) a standard error of {error:.3f}, above the threshold"}
    rows = [row]
    if ev.experiment in spec.train_accuracy:
        stated = spec.train_accuracy[ev.experiment]
        rows.append(_equivalence(ev, spec, final["train_acc"], stated, spec.train_accuracy_tolerance,
                                 f"train accuracy after training (paper: {stated})",
                                 f"within {spec.train_accuracy_tolerance} over runs", float(final["train_acc"].mean())))
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


def counts(table: pd.DataFrame) -> str:
    """``3 holds, 1 fails, 2 inconclusive, 0 not run, 0 not applicable``."""
    counted = table["result"].value_counts()
    return ", ".join(f"{counted.get(k, 0)} {k}" for k in RESULTS)


def _interval(row) -> str:
    low, high = getattr(row, "low", float("nan")), getattr(row, "high", float("nan"))
    return "" if pd.isna(low) else f" [{low:.3g}, {high:.3g}]"


def summary(table: pd.DataFrame) -> str:
    """One screen: a line per row (value, interval over runs, threshold, per-run values, detail), then the counts."""
    lines = []
    for r in table.itertuples():
        per_run = getattr(r, "per_run", "")
        per_run = f"  per run {per_run}" if isinstance(per_run, str) and per_run else ""
        lines.append(f"{r.claim}  {r.result:<12} {r.experiment:<32} {r.value:.3g}{_interval(r)} ({r.threshold})"
                     f"{per_run}  {r.detail}".rstrip())
    lines.append(counts(table))
    return "\n".join(lines)


def _found(row) -> str:
    """What one row found, in a few words: its value and interval over runs, and why when inconclusive."""
    said, detail = f"{row.result} for {row.experiment}", str(row.detail) if isinstance(row.detail, str) else ""
    if row.result in ("holds", "fails", "inconclusive") and not pd.isna(row.value):
        interval = _interval(row).strip(" []").replace(", ", " to ")
        said += f" ({row.value:.3g}" + (f", over runs {interval}" if interval else "")
        reason = detail.split("inconclusive: ", 1)[1] if row.result == "inconclusive" and "inconclusive: " in detail else ""
        said += f": {reason})" if reason else ")"
    elif row.result != "holds" and detail:
        said += f" ({detail})"
    return said


def findings(table: pd.DataFrame) -> list[str]:
    """One sentence per claim of a study's scorecard: what the claim says and what the study found
    for each experiment it speaks of."""
    sentences = []
    for claim, rows in table.groupby("claim", sort=True):
        parts = "; ".join(_found(row) for row in rows.itertuples())
        sentences.append(f"{claim}, {CLAIM_TEXT[claim]}: {parts}.")
    return sentences
