"""Synthetic studies for the claims scorecard: is a verdict a test that can fail for the right reason?

A synthetic study is what the scorecard reads of one experiment's runs — each layer's count of
negative cosines at the final epoch and its accuracy drop when reset — drawn with a known truth:

- **no effect**: every layer's negatives ~ Binomial(F, ½) (no layer biased), drops of any depth
  profile (:data:`DROPS`) plus noise. A verdict may say ``holds`` here at most α of the time;
- **the paper's effect** (§3.3, figs 2 and 7): the first layers biased (negatives ~ Binomial(F,
  ``biased_n``)) and critical, the others unbiased and ambient. There a verdict must find it.

The arrays go through the scorecard's own array functions (:func:`convbias.verdicts.correlation`,
:func:`convbias.verdicts.c5_results`, :func:`convbias.verdicts.deep_biased`,
:func:`convbias.verdicts.c2_results`), thousands of studies at once.  ``tools/claims_simulation.py``
prints the rates for every filter-count profile of the study.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy.stats import binom

from .verdicts import c2_results, c5_results, correlation, deep_biased, too_narrow
from .specs import ClaimsSpec
from .stats import null_quantile

# depth profiles of the drop when a layer is reset (layer index 0..L-1 of L, filters F): what a
# study might see with no bias at all; "width" follows the no-bias level 0.4/√F of |n_l − ½|
DROPS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "falling": lambda i, f: 0.4 - 0.38 * i / max(len(i) - 1, 1),
    "rising": lambda i, f: 0.02 + 0.38 * i / max(len(i) - 1, 1),
    "flat": lambda i, f: np.full(len(i), 0.1),
    "u-shaped": lambda i, f: 0.02 + 0.38 * (2 * i / max(len(i) - 1, 1) - 1) ** 2,
    "width": lambda i, f: 0.4 * np.sqrt(f.min() / f),
}


class Studies(NamedTuple):
    """Synthetic studies, arrays of shape (studies, runs, layers)."""

    negatives: np.ndarray
    filters: np.ndarray  # (layers,)
    drops: np.ndarray

    @property
    def n_l(self) -> np.ndarray:
        return self.negatives / self.filters

    @property
    def q(self) -> np.ndarray:
        return null_quantile(self.negatives, self.filters)

    @property
    def p_values(self) -> np.ndarray:
        """The two-sided binomial p-value of each count against ½ (as ``scipy.stats.binomtest``)."""
        k = np.minimum(self.negatives, self.filters - self.negatives)
        return np.minimum(1.0, 2 * binom.cdf(k, self.filters, 0.5))


def studies(filters, runs: int, count: int, rng: np.random.Generator, drops: str = "falling",
            biased_layers: int = 0, biased_n: float = 0.7, critical_drop: float = 0.3, ambient_drop: float = 0.02,
            noise: float = 0.03) -> Studies:
    """``count`` studies of ``runs`` runs of a network with ``filters`` per conv layer. With
    ``biased_layers`` = 0 no layer is biased and the drops follow ``drops`` (:data:`DROPS`); with
    ``biased_layers`` = k the first k layers are biased (``biased_n``) and critical
    (``critical_drop``), the others unbiased and ambient (``ambient_drop``). Noise N(0, ``noise``)
    on every drop."""
    f = np.asarray(filters)
    layers = np.arange(len(f))
    truth = np.where(layers < biased_layers, biased_n, 0.5)
    mean_drop = (np.where(layers < biased_layers, critical_drop, ambient_drop) if biased_layers
                 else DROPS[drops](layers, f))
    negatives = rng.binomial(np.broadcast_to(f, (count, runs, len(f))), truth)
    return Studies(negatives, f, mean_drop + rng.normal(0.0, noise, size=negatives.shape))


def c5_rates(s: Studies, spec: ClaimsSpec) -> dict[str, float]:
    """How often C5 says each result, and how often the earlier scorecard's C5 (Spearman ρ of the
    mean |n_l − ½|, > 0 with p < ``correlation_p``, no interval) said ``holds``."""
    runs = s.negatives.shape[1]
    verdicts = c5_results(correlation(s.q, s.drops, spec.interval), runs, spec)
    old = correlation(np.abs(s.n_l - 0.5), s.drops, spec.interval)
    rates = {r: float((verdicts == r).mean()) for r in ("holds", "fails", "inconclusive")}
    return {**rates, "old holds": float(((old.rho > 0) & (old.p < spec.correlation_p)).mean())}


def c2_rates(s: Studies, spec: ClaimsSpec) -> dict[str, float]:
    """How often C2 says each result, and how often the earlier C2 (the fraction of layers 2..L biased
    in most runs ≥ ``biased_fraction``, no interval, narrow layers counted unbiased) said ``holds``."""
    import pandas as pd

    p = s.p_values[..., 1:]
    narrow = too_narrow(pd.Series(s.filters[1:]), spec).to_numpy()
    fraction, low, _ = deep_biased(p, spec.bias_p, spec.interval)
    _, _, high_if_narrow = deep_biased(p, spec.bias_p, spec.interval, narrow)
    verdicts = c2_results(low, high_if_narrow, s.negatives.shape[1], spec)
    rates = {r: float((verdicts == r).mean()) for r in ("holds", "fails", "inconclusive")}
    return {**rates, "old holds": float((fraction >= spec.biased_fraction).mean())}
