"""Verify (paper Section 4.1): a suspect's statistic on the fingerprint, and the verdict.

The statistic is the fingerprint method's (:mod:`ipguard_tf.registry`): the matching rate m/n (IPGuard and the
baselines), or SAC's correlation distance (:func:`sac_distance`, lower = more likely a copy), which needs the
suspect's class scores. Local (:func:`verify`), remote (:func:`ipguard_tf.remote.verify_remote`) and sweep
(:func:`ipguard_tf.evaluation.matching_rates`) verification all count matches with :func:`matching_rate` and
decide with :func:`meets_threshold`, which takes the statistic's direction; robustness, uniqueness and ARUC
(:mod:`ipguard_tf.metrics`) use the same rule. Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

import numpy as np

from .constants import DEFAULT_THRESHOLD
from .errors import ModelError, ParameterError
from .fingerprint import Fingerprint
from .sharding import run_sharded

log = logging.getLogger(__name__)

#: slack of the threshold rule: statistics are ratios m/n and thresholds often grid values t/r; comparing them
#: with this slack keeps a float rounding from flipping a verdict (m/n and t/r differ by >= 1/(n r) otherwise)
THRESHOLD_EPS = 1e-9


def check_threshold(threshold: float) -> float:
    """``threshold`` if it lies in [0, 1], else :class:`ParameterError`."""
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ParameterError(f"threshold must be a number in [0, 1], got {threshold!r}") from None
    if not 0.0 <= t <= 1.0:
        raise ParameterError(f"threshold must lie in [0, 1], got {threshold}")
    return t


def meets_threshold(value: Union[float, np.ndarray], threshold: float, higher_is_copy: bool = True):
    """The threshold rule (paper Section 4.1): a suspect is verified as a copy when its statistic is at least
    the threshold (at most, for a statistic where lower means "copy"). Works on scalars and arrays."""
    v = np.asarray(value, np.float64)
    out = v >= threshold - THRESHOLD_EPS if higher_is_copy else v <= threshold + THRESHOLD_EPS
    return bool(out) if out.ndim == 0 else out


def count_matches(fingerprint_labels: np.ndarray, suspect_labels: np.ndarray) -> Tuple[int, int]:
    """(m, n): how many of the n points the suspect labels as the fingerprint does."""
    a = np.asarray(fingerprint_labels).reshape(-1)
    b = np.asarray(suspect_labels).reshape(-1)
    if a.shape != b.shape:
        raise ParameterError(f"label arrays differ in length: {a.shape[0]} vs {b.shape[0]}")
    if a.size == 0:
        raise ParameterError("cannot compute a matching rate on zero points")
    return int(np.count_nonzero(a == b)), int(a.size)


def matching_rate(fingerprint_labels: np.ndarray, suspect_labels: np.ndarray) -> float:
    """m / n: the fraction of points whose suspect label equals the fingerprint label."""
    m, n = count_matches(fingerprint_labels, suspect_labels)
    return m / n


def verdict(rate: float, threshold: float = DEFAULT_THRESHOLD, higher_is_copy: bool = True) -> int:
    """1 (pirated) when the statistic meets the threshold (:func:`meets_threshold`), else 0."""
    return int(meets_threshold(rate, check_threshold(threshold), higher_is_copy))


# -- SAC's statistic -------------------------------------------------------------------------------------------------
def correlation_matrix(outputs: np.ndarray) -> np.ndarray:
    """SAC's sample correlation (official ``correlation_wrong.py``): ``C_ij = (1 - cos(O_i, O_j)) / 2`` of the
    output rows, an N x N matrix with entries in [0, 1] (a zero row has cosine 0 with every row)."""
    o = np.asarray(outputs, np.float64)
    if o.ndim != 2 or not np.all(np.isfinite(o)):
        raise ParameterError(f"outputs must be a finite (N, C) array, got shape {o.shape}")
    norm = np.linalg.norm(o, axis=1, keepdims=True)
    u = o / np.maximum(norm, 1e-12)  # torch's F.normalize: x / max(||x||, eps)
    return np.clip((1.0 - u @ u.T) / 2.0, 0.0, 1.0)  # clip: float rounding only


def sac_distance(outputs_a: np.ndarray, outputs_b: np.ndarray) -> float:
    """SAC's distance between two models' outputs on the same N samples: the mean over the N x N entries of
    ``|C_a - C_b|`` (:func:`correlation_matrix`); 0 for identical outputs, symmetric, in [0, 1]."""
    a, b = correlation_matrix(outputs_a), correlation_matrix(outputs_b)
    if a.shape != b.shape:
        raise ParameterError(f"outputs cover {a.shape[0]} and {b.shape[0]} samples; they must be the same samples")
    return float(np.mean(np.abs(a - b)))


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of class scores (float64)."""
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def looks_like_probabilities(scores: np.ndarray) -> bool:
    """Whether rows of class scores are probabilities (entries in [0, 1], rows summing to 1 within 1e-3), as a
    prediction API's answers are judged when it does not say which it gives."""
    a = np.asarray(scores)
    return bool(a.size) and bool(np.all(a >= 0) and np.all(a <= 1) and np.allclose(a.sum(axis=1), 1.0, atol=1e-3))


def comparable_outputs(fingerprint: Fingerprint, suspect_scores: np.ndarray, suspect_kind: str) -> Tuple[np.ndarray, np.ndarray]:
    """The target's and the suspect's outputs in the same kind: logits where both are logits, else
    probabilities (a suspect behind a probability API, or a TFLite file ending in softmax: the target's stored
    logits go through a softmax). ``suspect_kind`` is "logits" or "probabilities"."""
    ref = fingerprint.outputs
    if ref is None:
        raise ParameterError("the fingerprint holds no target outputs; it was not made by a SAC method")
    ref_kind = fingerprint.metadata.get("outputs_kind", "logits")
    if ref_kind == suspect_kind:
        return ref, np.asarray(suspect_scores)
    if ref_kind == "logits" and suspect_kind == "probabilities":
        return softmax(ref), np.asarray(suspect_scores)
    return ref, softmax(suspect_scores)


@dataclass(frozen=True)
class Verification:
    """Outcome of verifying one suspect: its ``value`` of the fingerprint's ``statistic`` and the verdict
    (``matches`` and ``matching_rate`` are those of the matching rate, None for other statistics)."""

    suspect: str
    matches: Optional[int]
    n: int
    matching_rate: Optional[float]
    threshold: float
    verdict: int
    statistic: str = "matching_rate"
    value: Optional[float] = None
    #: 95 % Clopper-Pearson interval of the matching rate (:func:`~ipguard_tf.metrics.clopper_pearson`); None
    #: for other statistics
    ci: Optional[Tuple[float, float]] = None
    #: p-value of the matches under a calibrated null (:mod:`ipguard_tf.calibration`); None without one
    p_value: Optional[float] = None

    def __post_init__(self) -> None:
        if self.value is None:
            object.__setattr__(self, "value", self.matching_rate)
        if self.ci is None and self.matches is not None and self.n:
            from .metrics import clopper_pearson

            object.__setattr__(self, "ci", clopper_pearson(int(self.matches), int(self.n)))

    @classmethod
    def of(cls, suspect: str, labels: np.ndarray, fingerprint_labels: np.ndarray, threshold: float) -> "Verification":
        """The outcome for a suspect that gave ``labels`` on points labelled ``fingerprint_labels``."""
        m, n = count_matches(fingerprint_labels, labels)
        return cls(suspect, m, n, m / n, threshold, verdict(m / n, threshold))

    @classmethod
    def of_statistic(cls, suspect: str, statistic: Any, value: float, n: int, threshold: float) -> "Verification":
        """The outcome for a statistic other than the matching rate (a registry ``Statistic``)."""
        return cls(suspect, None, n, None, threshold, verdict(value, threshold, statistic.higher_is_copy),
                   statistic.name, float(value))

    def as_dict(self) -> dict:
        d = {"suspect": self.suspect, "statistic": self.statistic, "value": self.value, "verdict": self.verdict,
             "n": self.n, "threshold": self.threshold}
        if self.statistic == "matching_rate":
            d.update(matching_rate=self.matching_rate, matches=self.matches)
            if self.ci is not None:
                d.update(ci95_low=self.ci[0], ci95_high=self.ci[1])
        if self.p_value is not None:
            d["p_value"] = self.p_value
        return d


def statistic_of(fingerprint: Fingerprint):
    """The registry ``Statistic`` a fingerprint is verified by (its metadata's ``statistic``; files without one
    use the matching rate); an unknown one is a :class:`ParameterError`."""
    from . import registry

    name = fingerprint.metadata.get("statistic", registry.MATCHING_RATE.name)
    if name not in registry.STATISTICS:
        raise ParameterError(f"fingerprints verified by {name!r} cannot be verified by this version "
                             f"(it knows {', '.join(registry.STATISTICS)})")
    return registry.STATISTICS[name]


def check_statistic(fingerprint: Fingerprint) -> None:
    """Refuse a fingerprint whose statistic this version cannot compute (see :func:`statistic_of`)."""
    statistic_of(fingerprint)


def verify(fingerprint: Fingerprint, suspect: Any, threshold: Optional[float] = None, *,
           name: Optional[str] = None, batch_size: Optional[int] = None, distribute: Any = None,
           **adapter_kw: Any) -> Verification:
    """Query ``suspect`` (anything :func:`~ipguard_tf.models.as_classifier` accepts) on the fingerprint points
    and return its statistic and verdict: the matching rate (labels suffice), or SAC's distance (the suspect's
    class scores: its logits, or the probabilities a TFLite file gives; label-only suspects are refused).
    ``threshold`` defaults to the statistic's (:mod:`ipguard_tf.registry`). With a ``tf.distribute`` strategy
    the points are split across its replica devices."""
    from .models import as_classifier

    stat = statistic_of(fingerprint)
    threshold = check_threshold(stat.default_threshold if threshold is None else threshold)
    if stat.task_agnostic:  # TAFA: the suspect's raw outputs, any task
        from .methods.tafa import verify_statistic

        who = name or getattr(suspect, "name", None) or str(suspect)
        value = verify_statistic(fingerprint, suspect, batch_size or 512)
        return Verification.of_statistic(who, stat, value, len(fingerprint), threshold)
    clf = as_classifier(suspect, **adapter_kw)
    who = name or clf.name
    classes = fingerprint.metadata.get("num_classes")
    # a matching rate compares labels, so the label sets must agree; SAC's correlations compare each model's
    # outputs among themselves, so a copy transferred to another label set can still be checked (SAC Table 5)
    if classes and clf.num_classes and int(clf.num_classes) != int(classes) and not stat.needs_scores:
        raise ModelError(f"suspect {who} has {clf.num_classes} classes; the fingerprinted model has "
                         f"{classes}, so it cannot be a copy of it (nor be compared point by point)")
    if stat.needs_scores:
        if not clf.has_scores:
            raise ModelError(f"suspect {who} gives labels only; {stat.display} needs its class scores")
        scores = np.concatenate(run_sharded(distribute, len(fingerprint),
                                            lambda idx: clf.predict_scores(fingerprint.x[idx], batch_size)))
        ref, sus = comparable_outputs(fingerprint, scores, clf.scores_kind)
        return Verification.of_statistic(who, stat, sac_distance(ref, sus), len(fingerprint), threshold)
    labels = np.concatenate(run_sharded(distribute, len(fingerprint),
                                        lambda idx: clf.predict_labels(fingerprint.x[idx], batch_size)))
    return Verification.of(who, labels, fingerprint.y, threshold)
