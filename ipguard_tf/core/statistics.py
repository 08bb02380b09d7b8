"""The statistics a suspect is compared by (paper Section 4.1 and the baselines), each computing itself.

A :class:`Statistic` says what it reads from a suspect (:attr:`Statistic.reads`: a class label per point, a row of
class scores, or the raw outputs of any task), how it turns those answers into one number
(:meth:`Statistic.value`) and which way is "copy" (:attr:`Statistic.higher_is_copy`); :meth:`Statistic.verification`
gives the :class:`Verification` with the verdict (:func:`~ipguard_tf.core.threshold.verdict`). Callers (local,
remote and sweep verification) ask the suspect what the statistic reads and hand the answers over; none of them
branches on which statistic it is (foolbox's distances are callables in the same way).

* :data:`MATCHING_RATE`: IPGuard's m/n (and every adversarial-example baseline's);
* :data:`SAC_DISTANCE`: SAC's correlation distance (Guan et al. 2022), lower = more likely a copy;
* :data:`OUTPUT_CORRELATION` and :data:`BEND_RATE`: TAFA's (reconstruction; :mod:`ipguard_tf.core.tafa_statistics`).

NumPy only: importing this module imports neither TensorFlow nor anything that reads files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ipguard_tf.core.constants import (
    DEFAULT_THRESHOLD,
    SAC_DEFAULT_THRESHOLD,
    TAFA_CORRELATION_THRESHOLD,
    TAFA_DEFAULT_THRESHOLD,
    TAFA_EPSILON,
)
from ipguard_tf.core.errors import ModelError, ParameterError
from ipguard_tf.core.fingerprint import Fingerprint
from ipguard_tf.core.metrics import clopper_pearson
from ipguard_tf.core.tafa_statistics import bend_rate, output_correlation
from ipguard_tf.core.threshold import verdict

#: a suspect's answers as a statistic asks for them: a function from a batch of points to labels (n,), class
#: scores (n, C) or raw outputs (n, ...)
Answer = Callable[[np.ndarray], np.ndarray]

#: what a statistic reads from a suspect
READS = ("labels", "scores", "outputs")


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


def resolve_scores_kind(scores: np.ndarray, kind: str) -> str:
    """``kind`` of class scores, with ``auto`` (a service that does not say) judged from the rows themselves
    (:func:`looks_like_probabilities`)."""
    if kind != "auto":
        return kind
    return "probabilities" if looks_like_probabilities(scores) else "logits"


def comparable_outputs(
    fingerprint: Fingerprint, suspect_scores: np.ndarray, suspect_kind: str
) -> Tuple[np.ndarray, np.ndarray]:
    """The target's and the suspect's outputs in the same kind: logits where both are logits, else
    probabilities (a suspect behind a probability API, or a TFLite file ending in softmax: the target's stored
    logits go through a softmax). ``suspect_kind`` is "logits", "probabilities" or "auto" (a service that does not
    say: judged by :func:`looks_like_probabilities`)."""
    suspect_kind = resolve_scores_kind(suspect_scores, suspect_kind)
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
    #: 95 % Clopper-Pearson interval of the matching rate (:func:`~ipguard_tf.core.metrics.clopper_pearson`); None
    #: for other statistics
    ci: Optional[Tuple[float, float]] = None
    #: p-value of the matches under a calibrated null (:mod:`ipguard_tf.core.calibration`); None without one
    p_value: Optional[float] = None

    def __post_init__(self) -> None:
        if self.value is None:
            object.__setattr__(self, "value", self.matching_rate)
        if self.ci is None and self.matches is not None and self.n:
            object.__setattr__(self, "ci", clopper_pearson(int(self.matches), int(self.n)))

    @classmethod
    def of(cls, suspect: str, labels: np.ndarray, fingerprint_labels: np.ndarray, threshold: float) -> "Verification":
        """The outcome for a suspect that gave ``labels`` on points labelled ``fingerprint_labels``."""
        m, n = count_matches(fingerprint_labels, labels)
        return cls(suspect, m, n, m / n, threshold, verdict(m / n, threshold))

    @classmethod
    def of_statistic(cls, suspect: str, statistic: Any, value: float, n: int, threshold: float) -> "Verification":
        """The outcome for a statistic other than the matching rate (a :class:`Statistic`)."""
        return cls(
            suspect,
            None,
            n,
            None,
            threshold,
            verdict(value, threshold, statistic.higher_is_copy),
            statistic.name,
            float(value),
        )

    def as_dict(self) -> dict:
        d = {
            "suspect": self.suspect,
            "statistic": self.statistic,
            "value": self.value,
            "verdict": self.verdict,
            "n": self.n,
            "threshold": self.threshold,
        }
        if self.statistic == "matching_rate":
            d.update(matching_rate=self.matching_rate, matches=self.matches)
            if self.ci is not None:
                d.update(ci95_low=self.ci[0], ci95_high=self.ci[1])
        if self.p_value is not None:
            d["p_value"] = self.p_value
        return d


@dataclass(frozen=True)
class Statistic:
    """How a suspect is compared with a fingerprint; subclasses compute the value (:meth:`value`).

    Args:
        name: identifier recorded in fingerprint files (``matching_rate``).
        display: how tables print it.
        higher_is_copy: True when a larger value means "more likely a copy" (the matching rate); False for
            distances.
        default_threshold: the verdict threshold when the user gives none.
        reads: what the suspect must answer per point: ``labels``, ``scores`` (class scores: logits or
            probabilities) or ``outputs`` (its raw outputs, any task: TAFA's, not through the classifier adapter).
        explanation: what a verification by this statistic did, in a person's words (the ownership report's
            opening).
    """

    name: str
    display: str
    higher_is_copy: bool
    default_threshold: float
    reads: str = "labels"
    explanation: str = ""

    def __post_init__(self) -> None:
        if self.reads not in READS:
            raise ValueError(f"statistic {self.name}: reads must be one of {READS}, got {self.reads!r}")

    @property
    def needs_scores(self) -> bool:
        """Labels are not enough: the suspect's class scores or raw outputs are needed (and the target's)."""
        return self.reads != "labels"

    @property
    def task_agnostic(self) -> bool:
        """Computed on the suspect's raw outputs, whatever its task."""
        return self.reads == "outputs"

    @property
    def same_label_set(self) -> bool:
        """The suspect must label the fingerprint's classes (a matching rate compares labels point by point);
        statistics on scores compare each model's outputs among themselves, so a copy transferred to another
        label set can still be checked (SAC Table 5)."""
        return self.reads == "labels"

    @property
    def rule(self) -> str:
        """The verdict rule's comparison, for a person: ``>=`` or ``<=`` (value against threshold)."""
        return ">=" if self.higher_is_copy else "<="

    def value(self, fingerprint: Fingerprint, answer: Answer, kind: str = "logits") -> float:
        """The statistic of a suspect that answers ``answer(x)`` (what :attr:`reads` says) on the fingerprint;
        ``kind`` says whether class scores are ``logits`` or ``probabilities``."""
        raise NotImplementedError

    def verification(
        self, suspect: str, fingerprint: Fingerprint, answer: Answer, threshold: float, kind: str = "logits"
    ) -> "Verification":
        """The suspect's value and verdict at ``threshold``."""
        return Verification.of_statistic(
            suspect, self, self.value(fingerprint, answer, kind), len(fingerprint), threshold
        )


class MatchingRate(Statistic):
    """IPGuard's statistic (paper Section 4.1): the fraction of fingerprint points the suspect labels the same
    way (:func:`matching_rate`); the verification carries the matches, their 95 % interval and, once calibrated,
    a p-value."""

    def value(self, fingerprint: Fingerprint, answer: Answer, kind: str = "logits") -> float:
        return matching_rate(fingerprint.y, answer(fingerprint.x))

    def verification(
        self, suspect: str, fingerprint: Fingerprint, answer: Answer, threshold: float, kind: str = "logits"
    ) -> "Verification":
        return Verification.of(suspect, answer(fingerprint.x), fingerprint.y, threshold)


class SACDistance(Statistic):
    """SAC's statistic (Guan et al. 2022): mean absolute difference of the suspect's and the target's sample
    correlation matrices (:func:`sac_distance`) on the target's and the suspect's outputs of the same kind
    (:func:`comparable_outputs`)."""

    def value(self, fingerprint: Fingerprint, answer: Answer, kind: str = "logits") -> float:
        ref, sus = comparable_outputs(fingerprint, answer(fingerprint.x), kind)
        return sac_distance(ref, sus)


class OutputCorrelation(Statistic):
    """TAFA's default statistic (reconstruction): Pearson's r of the target's stored and the suspect's outputs at
    the points (:func:`~ipguard_tf.core.tafa_statistics.output_correlation`)."""

    def value(self, fingerprint: Fingerprint, answer: Answer, kind: str = "logits") -> float:
        if fingerprint.outputs is None:
            raise ModelError("the fingerprint holds no target outputs; it was not made by TAFA")
        return output_correlation(answer, fingerprint.x, fingerprint.outputs)


class BendRate(Statistic):
    """TAFA's first statistic (reconstruction): the share of points where the suspect's output bends more than
    at the point's control (:func:`~ipguard_tf.core.tafa_statistics.bend_rate`, the fingerprint's epsilon)."""

    def value(self, fingerprint: Fingerprint, answer: Answer, kind: str = "logits") -> float:
        if fingerprint.control is None or fingerprint.normal is None:
            raise ModelError("the fingerprint holds no TAFA controls and normals; it was not made by TAFA")
        eps = float(fingerprint.metadata.get("epsilon", TAFA_EPSILON))
        return bend_rate(answer, fingerprint.x, fingerprint.control, fingerprint.normal, eps)


#: IPGuard's statistic (paper Section 4.1)
MATCHING_RATE = MatchingRate(
    "matching_rate",
    "matching rate",
    True,
    DEFAULT_THRESHOLD,
    explanation="A suspect model was queried on the fingerprint's points (IPGuard, Cao, Jia & Gong, AsiaCCS 2021: "
    "data points near the fingerprinted model's classification boundary). A suspect that labels many of "
    "them as the fingerprinted model does is verified as a copy of it.",
)

#: SAC's statistic; lower = more likely a copy; default threshold
#: :data:`~ipguard_tf.core.constants.SAC_DEFAULT_THRESHOLD`
SAC_DISTANCE = SACDistance(
    "sac_distance",
    "SAC distance",
    False,
    SAC_DEFAULT_THRESHOLD,
    reads="scores",
    explanation="A suspect model was queried on the fingerprint's samples (SAC, Guan et al. 2022). A suspect whose "
    "outputs correlate among the samples as the fingerprinted model's do (a small distance between the "
    "two correlation matrices) is verified as a copy of it.",
)

#: TAFA's first statistic; higher = more likely a copy; any output shape
BEND_RATE = BendRate(
    "bend_rate",
    "bend rate",
    True,
    TAFA_DEFAULT_THRESHOLD,
    reads="outputs",
    explanation="A suspect model was queried at the fingerprint's points (TAFA, reconstructed: points on the "
    "boundaries of the fingerprinted ReLU network's linear regions). A suspect whose output bends at many "
    "of them, more than at their controls, is verified as a copy of it.",
)

#: TAFA's default statistic; higher = more likely a copy
OUTPUT_CORRELATION = OutputCorrelation(
    "output_correlation",
    "output correlation",
    True,
    TAFA_CORRELATION_THRESHOLD,
    reads="outputs",
    explanation="A suspect model was queried at the fingerprint's points (TAFA, reconstructed: random inputs moved "
    "onto the boundaries of the fingerprinted ReLU network's linear regions). A suspect whose outputs "
    "there vary from point to point as the fingerprinted model's do (Pearson's r of the centred outputs) "
    "is verified as a copy of it.",
)

STATISTICS: Dict[str, Statistic] = {s.name: s for s in (MATCHING_RATE, SAC_DISTANCE, BEND_RATE, OUTPUT_CORRELATION)}


def statistic_of(fingerprint: Fingerprint) -> Statistic:
    """The :class:`Statistic` a fingerprint is verified by (its metadata's ``statistic``; files without one use the
    matching rate); an unknown one is a :class:`ParameterError`."""
    name = fingerprint.metadata.get("statistic", MATCHING_RATE.name)
    if not isinstance(name, str) or name not in STATISTICS:
        raise ParameterError(
            f"fingerprints verified by {name!r} cannot be verified by this version (it knows {', '.join(STATISTICS)})"
        )
    return STATISTICS[name]


def check_statistic(fingerprint: Fingerprint) -> None:
    """Refuse a fingerprint whose statistic this version cannot compute (see :func:`statistic_of`)."""
    statistic_of(fingerprint)
