"""Robustness, uniqueness, ARUC (paper Section 5.1.5, Eqs. 6-7), AUC and the matching-rate gap.

Positives are post-processed copies of the target (should be verified), negatives are independent models
(should not). A suspect is verified at threshold tau by the one threshold rule of Verify
(:func:`ipguard_tf.core.threshold.meets_threshold`: matching rate >= tau).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

from ipguard_tf.core.checks import check_number
from ipguard_tf.core.constants import ARUC_INTERVALS
from ipguard_tf.core.errors import ParameterError
from ipguard_tf.core.threshold import meets_threshold


def by_role(
    values: Union[Mapping[str, float], Iterable[Tuple[float, Optional[str]]]],
    roles: Optional[Mapping[str, Optional[str]]] = None,
    exclude: Iterable[str] = (),
) -> Tuple[List[float], List[float]]:
    """(positives, negatives): the statistics of the suspects whose role is ``positive`` / ``negative``.
    ``values`` maps suspect names to statistics (then ``roles`` maps names to roles, and names in ``exclude`` are
    left out) or is a sequence of (statistic, role) pairs; any other role (none, the target, CAE's ensemble)
    counts as neither."""
    if roles is not None:
        skip = set(exclude)
        pairs = [(v, roles.get(n)) for n, v in values.items() if n not in skip]  # type: ignore[union-attr]
    else:
        pairs = list(values)  # type: ignore[arg-type]
    return [v for v, r in pairs if r == "positive"], [v for v, r in pairs if r == "negative"]


def _arr(x: ArrayLike, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ParameterError(f"{what} must not be empty")
    if np.any(a < 0) or np.any(a > 1) or not np.all(np.isfinite(a)):
        raise ParameterError(f"{what} must be matching rates in [0, 1]")
    return a


def robustness(positive_rates: ArrayLike, tau: float, higher_is_copy: bool = True) -> float:
    """R(tau): fraction of positive suspects verified at threshold tau (matching rate >= tau; a distance
    statistic, ``higher_is_copy=False``: <= tau)."""
    return float(np.mean(meets_threshold(_arr(positive_rates, "positive_rates"), tau, higher_is_copy)))


def uniqueness(negative_rates: ArrayLike, tau: float, higher_is_copy: bool = True) -> float:
    """U(tau): fraction of negative suspects not verified at threshold tau (matching rate < tau)."""
    return float(np.mean(~meets_threshold(_arr(negative_rates, "negative_rates"), tau, higher_is_copy)))


def ru_curves(positive_rates, negative_rates, r: int = ARUC_INTERVALS, higher_is_copy: bool = True):
    """(tau, R(tau), U(tau)) on the grid tau = 1/r, 2/r, ..., 1 used by Eq. 7 (statistics in [0, 1]; for a
    distance the grid starts at 0: tau = 0, 1/r, ..., (r-1)/r, so a perfect separator is found as for rates)."""
    if r < 1:
        raise ParameterError(f"r must be >= 1, got {r}")
    p = _arr(positive_rates, "positive_rates")
    q = _arr(negative_rates, "negative_rates")
    taus = np.arange(1, r + 1) / r if higher_is_copy else np.arange(0, r) / r
    R = np.array([np.mean(meets_threshold(p, t, higher_is_copy)) for t in taus])
    U = np.array([np.mean(~meets_threshold(q, t, higher_is_copy)) for t in taus])
    return taus, R, U


def aruc(positive_rates, negative_rates, r: int = ARUC_INTERVALS, higher_is_copy: bool = True) -> float:
    """ARUC by Eq. 7: (1/r) * sum_{t=1..r} min(R(t/r), U(t/r)), r = 100 in the paper."""
    _, R, U = ru_curves(positive_rates, negative_rates, r, higher_is_copy)
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


def gap(positive_rates, negative_rates, higher_is_copy: bool = True) -> float:
    """Smallest positive matching rate minus largest negative one (a distance: smallest negative minus largest
    positive); > 0 when some threshold separates them."""
    p, q = _arr(positive_rates, "positive_rates"), _arr(negative_rates, "negative_rates")
    return float(p.min() - q.max()) if higher_is_copy else float(q.min() - p.max())


def perfect_thresholds(
    positive_rates, negative_rates, r: int = ARUC_INTERVALS, higher_is_copy: bool = True
) -> np.ndarray:
    """Grid thresholds at which robustness = uniqueness = 1."""
    taus, R, U = ru_curves(positive_rates, negative_rates, r, higher_is_copy)
    return taus[(R == 1) & (U == 1)]


def summary(
    positive_rates,
    negative_rates,
    threshold: Optional[float] = None,
    r: int = ARUC_INTERVALS,
    higher_is_copy: bool = True,
) -> Dict[str, Any]:
    """Everything a sweep or a zoo verification reports about positives vs negatives: counts, ARUC (Eq. 7),
    AUC, gap, the extreme statistics (the least copy-like positive, the most copy-like negative), the grid
    thresholds with robustness = uniqueness = 1 (``None`` if none), and, given a ``threshold``, robustness and
    uniqueness there. ``higher_is_copy=False`` for a distance (SAC)."""
    p = _arr(positive_rates, "positive_rates")
    q = _arr(negative_rates, "negative_rates")
    hic = higher_is_copy
    perfect = perfect_thresholds(p, q, r, hic)
    out: Dict[str, Any] = {
        "n_positive": int(p.size),
        "n_negative": int(q.size),
        "aruc": aruc(p, q, r, hic),
        "auc": roc_auc(p, q, hic),
        "gap": gap(p, q, hic),
        **(
            {"min_positive": float(p.min()), "max_negative": float(q.max())}
            if hic
            else {"max_positive": float(p.max()), "min_negative": float(q.min())}
        ),
        "perfect_thresholds": [float(perfect.min()), float(perfect.max())] if len(perfect) else None,
    }
    if threshold is not None:
        out.update(
            threshold=threshold, robustness=robustness(p, threshold, hic), uniqueness=uniqueness(q, threshold, hic)
        )
    return out


def clopper_pearson(matches: int, n: int, level: float = 0.95) -> Tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided confidence interval of a matching rate: ``matches`` of ``n`` points
    matched (issue 16: ``verify`` prints it). Conservative: covers the true rate with probability >= ``level``
    for every rate, with beta quantiles, (0, ...) at 0 matches and (..., 1) at n."""
    from scipy.stats import beta

    if n < 1 or not 0 <= matches <= n:
        raise ParameterError(f"need 0 <= matches <= n and n >= 1, got {matches} of {n}")
    check_number(level, "level", 0.0, 1.0, low_open=True, high_open=True)
    a = (1.0 - level) / 2.0
    lo = 0.0 if matches == 0 else float(beta.ppf(a, matches, n - matches + 1))
    hi = 1.0 if matches == n else float(beta.ppf(1.0 - a, matches + 1, n - matches))
    return lo, hi
