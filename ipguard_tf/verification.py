"""Verify (paper Section 4.1): the matching rate m/n of a suspect on the fingerprint, and the verdict."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .constants import DEFAULT_THRESHOLD
from .errors import ModelError
from .fingerprint import Fingerprint
from .models import as_classifier
from .sharding import run_sharded

log = logging.getLogger(__name__)


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
        m = int(np.count_nonzero(np.asarray(labels) == np.asarray(fingerprint_labels)))
        n = len(fingerprint_labels)
        return cls(suspect, m, n, m / n, threshold, verdict(m / n, threshold))

    def as_dict(self) -> dict:
        return {"suspect": self.suspect, "matching_rate": self.matching_rate, "verdict": self.verdict,
                "matches": self.matches, "n": self.n, "threshold": self.threshold}


def matching_rate(fingerprint_labels: np.ndarray, suspect_labels: np.ndarray) -> float:
    """m / n: the fraction of points whose suspect label equals the fingerprint label."""
    a = np.asarray(fingerprint_labels).reshape(-1)
    b = np.asarray(suspect_labels).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"label arrays differ in length: {a.shape[0]} vs {b.shape[0]}")
    if a.size == 0:
        raise ValueError("cannot compute a matching rate on zero points")
    return float(np.count_nonzero(a == b)) / a.size


def verdict(rate: float, threshold: float = DEFAULT_THRESHOLD) -> int:
    """1 (pirated) when the matching rate is at least the threshold, else 0 (paper Section 4.1)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    return int(rate >= threshold - 1e-12)


def verify(fingerprint: Fingerprint, suspect: Any, threshold: float = DEFAULT_THRESHOLD, *,
           name: Optional[str] = None, batch_size: Optional[int] = None, distribute: Any = None,
           **adapter_kw: Any) -> Verification:
    """Query ``suspect`` (anything :func:`~ipguard_tf.models.as_classifier` accepts; labels suffice) on the
    fingerprint points and return its matching rate and verdict. With a ``tf.distribute`` strategy the points
    are split across its replica devices."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    clf = as_classifier(suspect, **adapter_kw)
    classes = fingerprint.metadata.get("num_classes")
    if classes and clf.num_classes and int(clf.num_classes) != int(classes):
        raise ModelError(f"suspect {name or clf.name} has {clf.num_classes} classes; the fingerprinted model has "
                         f"{classes}, so it cannot be a copy of it (nor be compared point by point)")
    labels = np.concatenate(run_sharded(distribute, len(fingerprint),
                                        lambda idx: clf.predict_labels(fingerprint.x[idx], batch_size)))
    return Verification.of(name or clf.name, labels, fingerprint.y, threshold)
