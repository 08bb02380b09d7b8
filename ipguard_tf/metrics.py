"""Robustness, uniqueness, ARUC (paper Section 5.1.5, Eqs. 6-7), AUC and the matching-rate gap.

Positives are post-processed copies of the target (should be verified), negatives are independent models
(should not). A suspect is verified at threshold tau by the one threshold rule of Verify
(:func:`ipguard_tf.verification.meets_threshold`: matching rate >= tau).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np

from .constants import ARUC_INTERVALS
from .errors import ParameterError
from .verification import meets_threshold


def _arr(x: Sequence[float], what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ParameterError(f"{what} must not be empty")
    if np.any(a < 0) or np.any(a > 1) or not np.all(np.isfinite(a)):
        raise ParameterError(f"{what} must be matching rates in [0, 1]")
    return a


def robustness(positive_rates: Sequence[float], tau: float) -> float:
    """R(tau): fraction of positive suspects with matching rate >= tau."""
    return float(np.mean(meets_threshold(_arr(positive_rates, "positive_rates"), tau)))


def uniqueness(negative_rates: Sequence[float], tau: float) -> float:
    """U(tau): fraction of negative suspects with matching rate < tau (not verified)."""
    return float(np.mean(~meets_threshold(_arr(negative_rates, "negative_rates"), tau)))


def ru_curves(positive_rates, negative_rates, r: int = ARUC_INTERVALS):
    """(tau, R(tau), U(tau)) on the grid tau = 1/r, 2/r, ..., 1 used by Eq. 7."""
    if r < 1:
        raise ParameterError(f"r must be >= 1, got {r}")
    p = _arr(positive_rates, "positive_rates")
    q = _arr(negative_rates, "negative_rates")
    taus = np.arange(1, r + 1) / r
    R = np.array([np.mean(meets_threshold(p, t)) for t in taus])
    U = np.array([np.mean(~meets_threshold(q, t)) for t in taus])
    return taus, R, U


def aruc(positive_rates, negative_rates, r: int = ARUC_INTERVALS) -> float:
    """ARUC by Eq. 7: (1/r) * sum_{t=1..r} min(R(t/r), U(t/r)), r = 100 in the paper."""
    _, R, U = ru_curves(positive_rates, negative_rates, r)
    return float(np.mean(np.minimum(R, U)))


def roc_auc(positive, negative, higher_is_copy: bool = True) -> float:
    """ROC AUC (scikit-learn, as SAC computes it) of any finite statistic as a score separating positives from
    negatives; a statistic where lower means "copy" (a distance) is negated first."""
    from sklearn.metrics import roc_auc_score

    p = np.asarray(positive, np.float64).reshape(-1)
    q = np.asarray(negative, np.float64).reshape(-1)
    if p.size == 0 or q.size == 0 or not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
        raise ParameterError("AUC needs at least one positive and one negative, all finite")
    y = np.r_[np.ones(p.size), np.zeros(q.size)]
    score = np.r_[p, q]
    return float(roc_auc_score(y, score if higher_is_copy else -score))


def auc(positive_rates, negative_rates) -> float:
    """ROC AUC of the matching rate as a score separating positives from negatives (scikit-learn)."""
    return roc_auc(_arr(positive_rates, "positive_rates"), _arr(negative_rates, "negative_rates"))


def gap(positive_rates, negative_rates) -> float:
    """Smallest positive matching rate minus largest negative one (> 0: some threshold separates them)."""
    return float(_arr(positive_rates, "positive_rates").min() - _arr(negative_rates, "negative_rates").max())


def perfect_thresholds(positive_rates, negative_rates, r: int = ARUC_INTERVALS) -> np.ndarray:
    """Grid thresholds at which robustness = uniqueness = 1."""
    taus, R, U = ru_curves(positive_rates, negative_rates, r)
    return taus[(R == 1) & (U == 1)]


def summary(positive_rates, negative_rates, threshold: Optional[float] = None,
            r: int = ARUC_INTERVALS) -> Dict[str, Any]:
    """Everything a sweep or a zoo verification reports about positives vs negatives: counts, ARUC (Eq. 7),
    AUC, gap, the extreme rates, the grid thresholds with robustness = uniqueness = 1 (``None`` if none), and,
    given a ``threshold``, robustness and uniqueness there."""
    p = _arr(positive_rates, "positive_rates")
    q = _arr(negative_rates, "negative_rates")
    perfect = perfect_thresholds(p, q, r)
    out: Dict[str, Any] = {
        "n_positive": int(p.size), "n_negative": int(q.size), "aruc": aruc(p, q, r), "auc": auc(p, q),
        "gap": gap(p, q), "min_positive": float(p.min()), "max_negative": float(q.max()),
        "perfect_thresholds": [float(perfect.min()), float(perfect.max())] if len(perfect) else None}
    if threshold is not None:
        out.update(threshold=threshold, robustness=robustness(p, threshold), uniqueness=uniqueness(q, threshold))
    return out

