"""Robustness, uniqueness, ARUC (paper Section 5.1.5, Eqs. 6-7), AUC and the matching-rate gap.

Positives are post-processed copies of the target (should be verified), negatives are independent models
(should not). A suspect is verified at threshold tau when its matching rate is >= tau.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .constants import ARUC_INTERVALS

_EPS = 1e-9  # matching rates are m/n; compare with the grid tau = t/r without float surprises


def _arr(x: Sequence[float], what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{what} must not be empty")
    if np.any(a < 0) or np.any(a > 1) or not np.all(np.isfinite(a)):
        raise ValueError(f"{what} must be matching rates in [0, 1]")
    return a


def robustness(positive_rates: Sequence[float], tau: float) -> float:
    """R(tau): fraction of positive suspects with matching rate >= tau."""
    p = _arr(positive_rates, "positive_rates")
    return float(np.mean(p >= tau - _EPS))


def uniqueness(negative_rates: Sequence[float], tau: float) -> float:
    """U(tau): fraction of negative suspects with matching rate < tau (not verified)."""
    q = _arr(negative_rates, "negative_rates")
    return float(np.mean(q < tau - _EPS))


def ru_curves(positive_rates, negative_rates, r: int = ARUC_INTERVALS):
    """(tau, R(tau), U(tau)) on the grid tau = 1/r, 2/r, ..., 1 used by Eq. 7."""
    if r < 1:
        raise ValueError(f"r must be >= 1, got {r}")
    p = _arr(positive_rates, "positive_rates")
    q = _arr(negative_rates, "negative_rates")
    taus = np.arange(1, r + 1) / r
    R = np.array([np.mean(p >= t - _EPS) for t in taus])
    U = np.array([np.mean(q < t - _EPS) for t in taus])
    return taus, R, U


def aruc(positive_rates, negative_rates, r: int = ARUC_INTERVALS) -> float:
    """ARUC by Eq. 7: (1/r) * sum_{t=1..r} min(R(t/r), U(t/r)), r = 100 in the paper."""
    _, R, U = ru_curves(positive_rates, negative_rates, r)
    return float(np.mean(np.minimum(R, U)))


def auc(positive_rates, negative_rates) -> float:
    """ROC AUC of the matching rate as a score separating positives from negatives (scikit-learn)."""
    from sklearn.metrics import roc_auc_score

    p = _arr(positive_rates, "positive_rates")
    q = _arr(negative_rates, "negative_rates")
    y = np.r_[np.ones(p.size), np.zeros(q.size)]
    return float(roc_auc_score(y, np.r_[p, q]))


def gap(positive_rates, negative_rates) -> float:
    """Smallest positive matching rate minus largest negative one (> 0: some threshold separates them)."""
    return float(_arr(positive_rates, "positive_rates").min() - _arr(negative_rates, "negative_rates").max())


def perfect_thresholds(positive_rates, negative_rates, r: int = ARUC_INTERVALS) -> np.ndarray:
    """Grid thresholds at which robustness = uniqueness = 1."""
    taus, R, U = ru_curves(positive_rates, negative_rates, r)
    return taus[(R == 1) & (U == 1)]
