"""The tests behind the scorecard's verdicts (:mod:`convbias.claims`), on arrays of many studies at once.

Seeds are the unit of replication: an interval over runs is the exact bootstrap over an
experiment's runs (:func:`resamples`).  C5 is a Spearman correlation across layers
(:func:`correlation`, :func:`c5_results`), C2 a fraction of layers biased in most runs
(:func:`deep_biased`, :func:`c2_results`); a layer can be too narrow for its binomial test to tell
(:func:`too_narrow`).  The null simulations of the tests (:mod:`convbias.simulation`) run
thousands of synthetic studies through these same functions.
"""

from __future__ import annotations

import math
from functools import lru_cache
from itertools import combinations_with_replacement
from typing import NamedTuple

import numpy as np
import pandas as pd

from .specs import ClaimsSpec
from .stats import binomial_power

EXACT_RESAMPLES = 5000  # the bootstrap enumerates every multiset of runs up to this many (8 runs: 6435) ...
DRAWS = 4000  # ... else draws this many resamples, seeded



@lru_cache(maxsize=None)
def resamples(runs: int) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap over ``runs`` runs: (weights, probability), weights of shape (M, runs) summing to
    1 per row. Every multiset of ``runs`` draws with replacement, with its multinomial probability,
    while there are at most ``EXACT_RESAMPLES`` (deterministic, exact); else ``DRAWS`` seeded draws."""
    if math.comb(2 * runs - 1, runs) <= EXACT_RESAMPLES:
        counts = np.array([np.bincount(c, minlength=runs) for c in combinations_with_replacement(range(runs), runs)])
        log_p = (math.lgamma(runs + 1) - np.sum([[math.lgamma(k + 1) for k in row] for row in counts], axis=1)
                 - runs * math.log(runs))
        probability = np.exp(log_p)
    else:
        draws = np.random.default_rng(0).integers(0, runs, size=(DRAWS, runs))
        counts = np.stack([np.bincount(d, minlength=runs) for d in draws])
        probability = np.full(DRAWS, 1 / DRAWS)
    return counts / runs, probability / probability.sum()


def quantiles(values: np.ndarray, probability: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The central ``level`` interval of ``values`` (..., M) drawn with ``probability`` (M,): the
    smallest value whose cumulative probability reaches (1 − level)/2, and 1 − (1 − level)/2."""
    order = np.argsort(values, axis=-1)
    ordered = np.take_along_axis(values, order, axis=-1)
    cumulative = np.cumsum(probability[order], axis=-1)
    tail = (1 - level) / 2
    low = np.argmax(cumulative >= tail - 1e-12, axis=-1)
    high = np.argmax(cumulative >= 1 - tail - 1e-12, axis=-1)
    return (np.take_along_axis(ordered, low[..., None], -1)[..., 0],
            np.take_along_axis(ordered, high[..., None], -1)[..., 0])


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman's (ρ, two-sided p) along the last axis, as ``scipy.stats.spearmanr`` computes them
    (average ranks for ties, Student's t with n − 2 degrees of freedom); ρ is 0 where a side is constant."""
    from scipy.stats import rankdata  # here, not at the top: every job and Snakemake start imports this module
    from scipy.stats import t as student_t  # (through convbias.claims), and scipy.stats costs 0.5–1 s CPU

    rx, ry = rankdata(x, axis=-1), rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.nan_to_num((rx * ry).sum(-1) / np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum(-1)))
        rho = np.clip(rho, -1.0, 1.0)
        n = x.shape[-1]
        t = rho * np.sqrt((n - 2) / np.maximum(1 - rho ** 2, 0))
    return rho, np.where(np.abs(rho) >= 1, 0.0, 2 * student_t.sf(np.abs(t), n - 2))


class Correlation(NamedTuple):
    """ρ, across layers, of the runs' mean bias and mean drop (p: its Spearman p-value), the central
    interval of ρ over the bootstrap of runs, and each run's own ρ (..., runs)."""

    rho: np.ndarray
    p: np.ndarray
    low: np.ndarray
    high: np.ndarray
    per_run: np.ndarray


def correlation(bias: np.ndarray, drops: np.ndarray, level: float) -> Correlation:
    """C5's statistic for studies of shape (..., runs, layers): ``bias`` per run and layer (C5: q)
    and ``drops``; the layer means are taken over runs, in every bootstrap resample of the runs."""
    weights, probability = resamples(bias.shape[-2])
    rho, p = spearman(bias.mean(-2), drops.mean(-2))
    boot_rho, _ = spearman(np.einsum("mr,...rl->...ml", weights, bias), np.einsum("mr,...rl->...ml", weights, drops))
    low, high = quantiles(boot_rho, probability, level)
    return Correlation(rho, p, low, high, spearman(bias, drops)[0])


def c5_results(c: Correlation, runs: int, spec: ClaimsSpec) -> np.ndarray:
    """C5's verdicts: ``holds`` when ρ > 0 with p < ``correlation_p`` and the interval over runs lies
    above 0; else ``fails`` when the interval lies below the paper's ρ (``c5_paper_rho``); else
    ``inconclusive`` (it holds both no effect and the paper's); one run is always ``inconclusive``."""
    holds = (c.rho > 0) & (c.p < spec.correlation_p) & (c.low > 0)
    fails = c.high < spec.c5_paper_rho
    result = np.where(holds, "holds", np.where(fails, "fails", "inconclusive"))
    return np.full_like(result, "inconclusive") if runs < 2 else result


def deep_biased(p_values: np.ndarray, bias_p: float, level: float,
                narrow: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """C2's statistic for studies of shape (..., runs, layers 2..L): the fraction of layers biased
    (p < ``bias_p``) in most runs, and its central interval over the bootstrap of runs; ``narrow``
    (layers,): layers counted as biased whatever their p-value (what they could be, untold)."""
    weights, probability = resamples(p_values.shape[-2])
    biased = (p_values < bias_p).astype(float)
    if narrow is not None:
        biased = np.maximum(biased, narrow.astype(float))
    fraction = (biased.mean(-2) > 0.5).mean(-1)
    boot = (np.einsum("mr,...rl->...ml", weights, biased) > 0.5 + 1e-9).mean(-1)
    low, high = quantiles(boot, probability, level)
    return fraction, low, high


def c2_results(low: np.ndarray, high_if_narrow_biased: np.ndarray, runs: int, spec: ClaimsSpec) -> np.ndarray:
    """C2's verdicts: ``holds`` when the interval over runs lies at or above ``biased_fraction``;
    ``fails`` when it lies below even with every layer too narrow to tell counted as biased; else
    ``inconclusive``; one run is always ``inconclusive``."""
    result = np.where(low >= spec.biased_fraction, "holds",
                      np.where(high_if_narrow_biased < spec.biased_fraction, "fails", "inconclusive"))
    return np.full_like(result, "inconclusive") if runs < 2 else result


def too_narrow(filters: pd.Series, spec: ClaimsSpec) -> pd.Series:
    """Per layer (its filter count): whether its binomial test (p < ``bias_p``) would find a layer as
    biased as the paper's (n_l = ``paper_n_l``) in fewer than ``min_power`` of runs."""
    return filters.map(lambda n: binomial_power(int(n), spec.paper_n_l, spec.bias_p) < spec.min_power).astype(bool)


def mean_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` interval of the mean of ``values`` (one per run) over the bootstrap of runs."""
    weights, probability = resamples(len(values))
    low, high = quantiles(weights @ np.asarray(values, dtype=float), probability, level)
    return float(low), float(high)
