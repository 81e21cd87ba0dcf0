"""The paper's projection statistic (eq. 1 and 2), its significance, and per-layer tables.

For a conv weight ``W`` of shape ``F x C x k x k``, filter ``i`` is row ``i`` of
``W.reshape(F, -1)`` and its cosine with the all-ones direction is
``sum(W_i) / (||W_i|| * sqrt(C k k))``.  ``n_l`` is the fraction of filters whose cosine
is ``<= 0``.  Zero-norm filters have no direction: their cosine is NaN and they are
counted apart, never as negative.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import pandas as pd


def natural_key(name: str):
    """Sort key that orders ``features.2`` before ``features.10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def filter_cosines(weight) -> np.ndarray:
    """Cosine of every filter (row of ``weight.reshape(F, -1)``) with the all-ones vector, in float64."""
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim < 2:
        raise ValueError(f"expected a weight with a filter axis (F x ...), got shape {w.shape}")
    rows = w.reshape(w.shape[0], -1)
    norms = np.linalg.norm(rows, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = rows.sum(axis=1) / (norms * np.sqrt(rows.shape[1]))
    cos[norms == 0] = np.nan
    return cos


def relative_distance(weight, start) -> float:
    """How far a layer's ``weight`` moved from ``start`` (e.g. its initialization): ‖W − W₀‖ / ‖W₀‖, in float64."""
    w, w0 = np.asarray(weight, dtype=np.float64), np.asarray(start, dtype=np.float64)
    if w.shape != w0.shape:
        raise ValueError(f"shapes differ: {w.shape} and {w0.shape}")
    return float(np.linalg.norm(w - w0) / np.linalg.norm(w0))


def binomial_pvalue(negatives: int, n: int) -> float:
    """Two-sided p-value of ``negatives`` out of ``n`` under Binomial(n, 1/2) (random init)."""
    from scipy.stats import binomtest  # here, not at the top: training jobs import this module, not scipy

    if n == 0:
        return float("nan")
    return float(binomtest(int(negatives), int(n), 0.5).pvalue)


def null_quantile(negatives, n):
    """How biased a layer of ``n`` filters with ``negatives`` negative cosines is, in units that do not
    depend on ``n``: the probability that a layer of ``n`` filters with no bias (Binomial(n, ½)) is
    less far from n/2, ties counted half (1 − the two-sided mid-p value). With no bias it averages
    exactly ½ at every ``n`` (|n_l − ½| averages about 0.4/√n; a z-score is always 1 at n = 1); a
    biased layer is near 1."""
    from scipy.stats import binom

    k, n = np.asarray(negatives, dtype=np.float64), np.asarray(n, dtype=np.float64)
    m = np.minimum(k, n - k)
    tie = binom.pmf(m, n, 0.5) * np.where(2 * m == n, 1.0, 2.0)  # P(|X − n/2| = |k − n/2|)
    at_least = np.minimum(1.0, 2 * binom.cdf(m, n, 0.5))  # P(|X − n/2| ≥ |k − n/2|)
    return 1.0 - (at_least - tie / 2)


def binomial_power(n: int, fraction: float, alpha: float) -> float:
    """How often the two-sided binomial test of a layer of ``n`` filters (p < ``alpha`` against 1/2)
    finds a layer whose filters are negative with probability ``fraction``."""
    from scipy.stats import binom

    k = np.arange(n + 1)
    rejected = 2 * binom.cdf(np.minimum(k, n - k), n, 0.5) < alpha  # binomtest's two-sided p at 1/2
    return float(binom.pmf(k[rejected], n, fraction).sum())


def layer_summary(cosines: np.ndarray) -> dict:
    """n_l (eq. 2), the counts behind it, mean cosine and binomial p-value for one layer."""
    cos = np.asarray(cosines, dtype=np.float64)
    valid = cos[~np.isnan(cos)]
    negatives = int((valid <= 0).sum())
    n = int(valid.size)
    return {
        "filters": int(cos.size),
        "zero_norm": int(cos.size - n),
        "negatives": negatives,
        "n_l": negatives / n if n else float("nan"),
        "mean_cosine": float(valid.mean()) if n else float("nan"),
        "p_value": binomial_pvalue(negatives, n),
    }


def conv_weight_names(state: Mapping[str, object], include_1x1: bool = False) -> list[str]:
    """Keys of the conv weights (4-d tensors) of a state dict, in stored order, 1x1 kernels optional."""
    names = []
    for key, value in state.items():
        shape = tuple(getattr(value, "shape", ()))
        if not key.endswith("weight") or len(shape) != 4:
            continue
        if shape[2:] == (1, 1) and not include_1x1:
            continue
        names.append(key)
    return names


class NonFiniteWeights(ValueError):
    """A conv weight holds NaN or infinity: its filters have no direction (a diverged run, or a damaged file)."""


def filter_table(layers: Mapping[str, object]) -> pd.DataFrame:
    """One row per (layer, filter): layer number (1..L in the given order), layer name, cosine.
    Raises :class:`NonFiniteWeights` for a layer with NaN or infinite weights (never counted as
    zero-norm filters)."""
    frames = []
    for number, (name, weight) in enumerate(layers.items(), start=1):
        bad = int((~np.isfinite(np.asarray(weight, dtype=np.float64))).sum())
        if bad:
            raise NonFiniteWeights(f"layer {name} has {bad} NaN or infinite weights, so its cosines are undefined "
                                   f"(a diverged training run, or a damaged file)")
        cos = filter_cosines(weight)
        frames.append(
            pd.DataFrame({"layer": number, "name": name, "filter": np.arange(cos.size), "cosine": cos})
        )
    if not frames:
        return pd.DataFrame({"layer": [], "name": [], "filter": [], "cosine": []})
    return pd.concat(frames, ignore_index=True)


def measure_table(filters: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per-group layer summary (n_l, mean cosine, p-value, counts) of a filter table."""
    rows = []
    for key, group in filters.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), **layer_summary(group["cosine"].to_numpy())})
    return pd.DataFrame(rows)


def checkpoint_filters(state: Mapping[str, object], conv_layers: list[str] | None = None,
                       include_1x1: bool = False) -> pd.DataFrame:
    """Filter table of a state dict; ``conv_layers`` (module names in forward order) or else natural key order."""
    if conv_layers:
        keys = [f"{name}.weight" for name in conv_layers]
        keys = [k for k in keys if include_1x1 or tuple(state[k].shape[2:]) != (1, 1)]
    else:
        keys = sorted(conv_weight_names(state, include_1x1), key=natural_key)
    return filter_table({k.removesuffix(".weight"): state[k] for k in keys})
