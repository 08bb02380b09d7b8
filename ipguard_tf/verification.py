"""Verify (paper Section 4.1): the matching rate m/n of a suspect on the fingerprint, and the verdict.

Local (:func:`verify`), remote (:func:`ipguard_tf.remote.verify_remote`) and sweep
(:func:`ipguard_tf.evaluation.matching_rates`) verification all count matches with :func:`matching_rate` and
decide with :func:`meets_threshold`; robustness, uniqueness and ARUC (:mod:`ipguard_tf.metrics`) use the same
rule. Importing this module does not import TensorFlow.
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


def verdict(rate: float, threshold: float = DEFAULT_THRESHOLD) -> int:
    """1 (pirated) when the matching rate meets the threshold (:func:`meets_threshold`), else 0."""
    return int(meets_threshold(rate, check_threshold(threshold)))


@dataclass(frozen=True)
class Verification:
    """Outcome of verifying one suspect."""

    suspect: str
    matches: int
    n: int
    matching_rate: float
    threshold: float
    verdict: int

    @classmethod
    def of(cls, suspect: str, labels: np.ndarray, fingerprint_labels: np.ndarray, threshold: float) -> "Verification":
        """The outcome for a suspect that gave ``labels`` on points labelled ``fingerprint_labels``."""
        m, n = count_matches(fingerprint_labels, labels)
        return cls(suspect, m, n, m / n, threshold, verdict(m / n, threshold))

    def as_dict(self) -> dict:
        return {"suspect": self.suspect, "matching_rate": self.matching_rate, "verdict": self.verdict,
                "matches": self.matches, "n": self.n, "threshold": self.threshold}


def check_statistic(fingerprint: Fingerprint) -> None:
    """Refuse a fingerprint whose method is verified by another statistic than the matching rate (none of the
    registered methods is yet; the registry says which statistic each method uses)."""
    from . import registry

    name = fingerprint.metadata.get("method")
    if name in registry.names():
        stat = registry.get(name).statistic
        if stat.name != registry.MATCHING_RATE.name:
            raise ParameterError(f"{name} fingerprints are verified by {stat.display}, which this version "
                                 "cannot compute")


def verify(fingerprint: Fingerprint, suspect: Any, threshold: float = DEFAULT_THRESHOLD, *,
           name: Optional[str] = None, batch_size: Optional[int] = None, distribute: Any = None,
           **adapter_kw: Any) -> Verification:
    """Query ``suspect`` (anything :func:`~ipguard_tf.models.as_classifier` accepts; labels suffice) on the
    fingerprint points and return its matching rate and verdict. With a ``tf.distribute`` strategy the points
    are split across its replica devices."""
    from .models import as_classifier

    threshold = check_threshold(threshold)
    check_statistic(fingerprint)
    clf = as_classifier(suspect, **adapter_kw)
    classes = fingerprint.metadata.get("num_classes")
    if classes and clf.num_classes and int(clf.num_classes) != int(classes):
        raise ModelError(f"suspect {name or clf.name} has {clf.num_classes} classes; the fingerprinted model has "
                         f"{classes}, so it cannot be a copy of it (nor be compared point by point)")
    labels = np.concatenate(run_sharded(distribute, len(fingerprint),
                                        lambda idx: clf.predict_labels(fingerprint.x[idx], batch_size)))
    return Verification.of(name or clf.name, labels, fingerprint.y, threshold)
