"""Calibrated verdicts (issue 16): how often independent models agree with a fingerprint, a p-value for a
suspect's matching rate under that null, and the threshold that keeps false accusations below a chosen rate.

The IPGuard paper verifies with a fixed threshold (0.5 in our runs, Section 4.1 leaves it to the owner) and
reports ARUC over all thresholds; a model owner who must defend one verdict needs a threshold with a stated
false-positive bound instead. :func:`calibrate` queries independent models (negatives: trained without the
target) on the fingerprint and records which points each labels like the fingerprint.

**The null model: beta-binomial.** Under H0 ("the suspect was trained independently of the target") a
suspect's number of matches M on n points is modelled as ``M | q ~ Binomial(n, q)``, ``q ~ Beta(a, b)``, with
a and b fitted by the method of moments to the negatives' matching rates (mean ``mu``, variance ``s^2``:
intra-class correlation ``rho = (n s^2 / (mu (1 - mu)) - 1) / (n - 1)``, ``a + b = 1 / rho - 1``; ``rho <= 0``
gives the binomial). Why not the others:

* **Binomial with the negatives' mean agreement** treats the n points as independent coin flips of one rate.
  Independent models differ systematically (a same-architecture model agrees far more than a random forest)
  and points differ in how easy they are, so the negatives' rates spread wider than a binomial allows; its
  tail would give an independently trained same-architecture model a tiny p-value: a false accusation.
* **Empirical** (the share of negatives at least as high) is assumption-free but cannot go below
  ``1 / (k + 1)`` with k negatives (tens here), so it can never state that the target's own copy is
  unlikely under H0 at the 1 % level.
* The beta-binomial keeps the binomial's point-sampling variance and adds the between-model variance the
  negatives show; its tail is an extrapolation from k models, which :attr:`Calibration.empirical_fpr` (the
  share of the calibration negatives the calibrated threshold would accuse) lets a reader check.

Mean agreement 0 or 1 (no negative ever agrees, or all always do) has no beta fit: ``mu`` is kept inside
``[1 / (2 n k), 1 - 1 / (2 n k)]`` (half a match of continuity), which leaves such a p-value small but not 0.

The calibration is stored in the fingerprint's metadata (key ``calibration``, covered by the file's SHA-256
like the rest of it), with each negative's per-point matches (bit-packed, base64), so that a subset of the
points (``--converged-only``) is recalibrated from the same queries without asking the negatives again.
Distance statistics (SAC) are not calibrated by this module (a one-line error says so).
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Dict, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from ipguard_tf.core.checks import check_number
from ipguard_tf.core.constants import CALIBRATION_FPR
from ipguard_tf.core.errors import ParameterError

log = logging.getLogger(__name__)


SCHEMA = "ipguard_tf.calibration/1"


NULL_MODEL = "beta-binomial (method of moments on the negatives' matching rates)"


#: fewest negatives a calibration accepts (a variance needs two; fewer than about 10 is logged as weak)
MIN_NEGATIVES = 2


def smallest_supported_fpr(negatives: int, confidence: float = 0.95) -> float:
    """The smallest false-positive rate ``negatives`` independent models can vouch for: with none of them matching,
    the one-sided ``confidence`` upper bound on the rate at which independent models would match (exact binomial,
    ``1 - (1 - confidence) ** (1 / n)``, about 3/n at 95 %, the "rule of three"). A threshold set at a lower FPR rests
    on the fitted null's tail, not on observed models."""
    n = int(negatives)
    if n < 1:
        return 1.0
    check_number(confidence, "confidence", 0.0, 1.0, low_open=True, high_open=True)
    return float(1.0 - (1.0 - confidence) ** (1.0 / n))


def check_fpr(fpr: float) -> float:
    """``fpr`` if it lies in (0, 0.5), else :class:`ParameterError`."""
    return check_number(fpr, "fpr", 0.0, 0.5, low_open=True, high_open=True)


def _pack(row: np.ndarray) -> str:
    return base64.b64encode(np.packbits(np.asarray(row, bool)).tobytes()).decode("ascii")


def _unpack(s: str, n: int) -> np.ndarray:
    try:
        raw = np.frombuffer(base64.b64decode(s.encode("ascii"), validate=True), np.uint8)
    except (ValueError, TypeError):
        raise ParameterError("calibration: a negative's match record is not valid base64") from None
    bits = np.unpackbits(raw)[:n].astype(bool)
    if bits.size != n:
        raise ParameterError(f"calibration: a negative's match record covers {bits.size} points, expected {n}")
    return bits


@dataclass(frozen=True)
class BetaBinomialNull:
    """The null distribution of an independent model's matches on ``n`` points (see the module docstring)."""

    n: int
    mean: float
    rho: float

    @classmethod
    def fit(cls, rates: ArrayLike, n: int) -> "BetaBinomialNull":
        """Method of moments on independent models' matching rates (at least 2) measured on ``n`` points."""
        r = np.asarray(rates, np.float64).reshape(-1)
        if r.size < MIN_NEGATIVES or n < 1:
            raise ParameterError(f"a null needs at least {MIN_NEGATIVES} negatives' rates and n >= 1")
        eps = 0.5 / (n * r.size)
        mu = float(np.clip(r.mean(), eps, 1.0 - eps))
        rho = 0.0
        if n >= 2:
            s2 = float(np.var(r, ddof=1))
            rho = float(np.clip((n * s2 / (mu * (1 - mu)) - 1.0) / (n - 1), 0.0, 1.0 - 1e-9))
        return cls(int(n), mu, rho)

    @property
    def beta_params(self) -> Optional[Tuple[float, float]]:
        if self.rho <= 0:
            return None
        s = 1.0 / self.rho - 1.0
        return self.mean * s, (1.0 - self.mean) * s

    def p_value(self, matches: int) -> float:
        """P(M >= matches)."""
        from scipy import stats

        m = int(matches)
        if m <= 0:
            return 1.0
        ab = self.beta_params
        sf = stats.binom.sf(m - 1, self.n, self.mean) if ab is None else stats.betabinom.sf(m - 1, self.n, *ab)
        return float(min(1.0, max(0.0, sf)))

    def threshold_matches(self, fpr: float) -> int:
        """The fewest matches m with P(M >= m) <= fpr (n + 1 when none)."""
        fpr = check_fpr(fpr)
        for m in range(self.n + 1):
            if self.p_value(m) <= fpr:
                return m
        return self.n + 1


@dataclass(frozen=True)
class Calibration:
    """The negatives' per-point agreement with a fingerprint and the beta-binomial null fitted to it.

    ``matches[j, i]``: negative j labels point i as the fingerprint does."""

    negatives: Tuple[str, ...]
    matches: np.ndarray
    fpr: float = CALIBRATION_FPR
    source: str = ""
    created: str = ""
    extra: Dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        m = np.asarray(self.matches, bool)
        if m.ndim != 2 or m.shape[1] == 0:
            raise ParameterError(f"calibration matches must be a (negatives, points) array, got shape {m.shape}")
        if m.shape[0] != len(self.negatives):
            raise ParameterError(f"calibration names {len(self.negatives)} negatives but holds {m.shape[0]} rows")
        if m.shape[0] < MIN_NEGATIVES:
            raise ParameterError(f"calibration needs at least {MIN_NEGATIVES} negatives, got {m.shape[0]}")
        object.__setattr__(self, "matches", m)
        object.__setattr__(self, "negatives", tuple(self.negatives))
        check_fpr(self.fpr)

    # -- the data -----------------------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Points."""
        return int(self.matches.shape[1])

    @property
    def k(self) -> int:
        """Negatives."""
        return int(self.matches.shape[0])

    @property
    def rates(self) -> np.ndarray:
        """Each negative's matching rate."""
        return self.matches.mean(axis=1)

    @property
    def point_agreement(self) -> np.ndarray:
        """Per point: the share of negatives that label it as the fingerprint does."""
        return self.matches.mean(axis=0)

    # -- the null -----------------------------------------------------------------------------------------------
    @cached_property
    def null(self) -> "BetaBinomialNull":
        """The beta-binomial fitted to the negatives' matching rates (fitted once)."""
        return BetaBinomialNull.fit(self.rates, self.n)

    @property
    def mean(self) -> float:
        """The negatives' mean matching rate, kept half a match inside (0, 1) (see the module docstring)."""
        return self.null.mean

    @property
    def rho(self) -> float:
        """Overdispersion (intra-class correlation) of the beta-binomial; 0 = binomial."""
        return self.null.rho

    @property
    def beta_params(self) -> Optional[Tuple[float, float]]:
        """(a, b) of the fitted Beta, None when the binomial fits (rho = 0)."""
        return self.null.beta_params

    def p_value(self, matches: int, n: Optional[int] = None) -> float:
        """P(M >= matches) for an independent model under the fitted null (one-sided: more agreement than
        independent models show is the evidence of copying). ``n`` defaults to the calibrated points."""
        n = self.n if n is None else int(n)
        if n != self.n:
            raise ParameterError(f"calibration covers {self.n} points, the suspect was checked on {n}")
        return self.null.p_value(matches)

    @property
    def threshold_matches(self) -> int:
        """The fewest matches m with P(M >= m) <= fpr (n + 1 when even all n matches are not that unlikely)."""
        return self.null.threshold_matches(self.fpr)

    @property
    def threshold(self) -> float:
        """The calibrated matching-rate threshold: a suspect with rate >= it is rejected as independent at
        level ``fpr`` (above 1 when no rate is: then nothing can be verified at this fpr with these points)."""
        return self.threshold_matches / self.n

    @property
    def empirical_fpr(self) -> float:
        """The share of the calibration negatives the calibrated threshold accuses (in-sample check)."""
        return float(np.mean(self.matches.sum(axis=1) >= self.threshold_matches))

    def subset(self, mask: np.ndarray) -> "Calibration":
        """The calibration of the selected points only (e.g. the converged ones), from the same queries."""
        mask = np.asarray(mask)
        if mask.dtype == bool and mask.shape != (self.n,):
            raise ParameterError(f"mask covers {mask.shape[0]} points, calibration {self.n}")
        return Calibration(self.negatives, self.matches[:, mask], self.fpr, self.source, self.created, dict(self.extra))

    def summary(self) -> str:
        """One line for a person: the null and the threshold it gives."""
        t = self.threshold
        tt = f"{t:.2f}" if t <= 1 else "none (no rate is that unlikely on these points)"
        return (
            f"calibrated on {self.k} negatives ({self.source or 'unnamed'}): mean agreement {self.rates.mean():.3f} "
            f"(range {self.rates.min():.2f}-{self.rates.max():.2f}), beta-binomial overdispersion "
            f"{self.rho:.3f}; threshold at FPR {self.fpr:g}: {tt} (it accuses {self.empirical_fpr:.0%} of "
            f"the calibration negatives)"
        )

    # -- storage ------------------------------------------------------------------------------------------------
    def to_metadata(self) -> Dict[str, Any]:
        """The JSON-able record kept in the fingerprint's metadata (derived numbers for readers; the match bits
        are what :meth:`from_metadata` reads back)."""
        ab = self.beta_params
        return {
            "schema": SCHEMA,
            "null_model": NULL_MODEL,
            "fpr": self.fpr,
            "source": self.source,
            "created": self.created,
            "negatives": list(self.negatives),
            "n_points": self.n,
            "matches": [_pack(r) for r in self.matches],
            "rates": [round(float(r), 6) for r in self.rates],
            "point_agreement": [round(float(p), 6) for p in self.point_agreement],
            "mean": round(self.mean, 6),
            "rho": round(self.rho, 6),
            "beta": None if ab is None else [round(ab[0], 6), round(ab[1], 6)],
            "threshold": round(self.threshold, 6),
            "empirical_fpr": round(self.empirical_fpr, 6),
            **self.extra,
        }

    @classmethod
    def from_metadata(cls, rec: Dict[str, Any]) -> "Calibration":
        if not isinstance(rec, dict) or rec.get("schema") != SCHEMA:
            raise ParameterError(
                f"the fingerprint's calibration is not of schema {SCHEMA} "
                f"(found {rec.get('schema') if isinstance(rec, dict) else type(rec).__name__})"
            )
        try:
            n = int(rec["n_points"])
            rows = np.stack([_unpack(s, n) for s in rec["matches"]]) if rec["matches"] else np.zeros((0, n), bool)
            known = {
                "schema",
                "null_model",
                "fpr",
                "source",
                "created",
                "negatives",
                "n_points",
                "matches",
                "rates",
                "point_agreement",
                "mean",
                "rho",
                "beta",
                "threshold",
                "empirical_fpr",
            }
            return cls(
                tuple(rec["negatives"]),
                rows,
                float(rec["fpr"]),
                rec.get("source", ""),
                rec.get("created", ""),
                {k: v for k, v in rec.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ParameterError(f"the fingerprint's calibration is incomplete ({exc})") from None


def calibration_of(fingerprint: Any) -> Optional[Calibration]:
    """The fingerprint's calibration (None when it has none), checked against its points."""
    rec = fingerprint.metadata.get("calibration")
    if rec is None:
        return None
    cal = Calibration.from_metadata(rec)
    if cal.n != len(fingerprint):
        raise ParameterError(
            f"the fingerprint's calibration covers {cal.n} points, the fingerprint has {len(fingerprint)}"
        )
    return cal


def subset_metadata(metadata: Dict[str, Any], mask: np.ndarray) -> Dict[str, Any]:
    """``metadata`` with its calibration (if any) restricted to the points ``mask`` selects."""
    rec = metadata.get("calibration")
    if rec is None:
        return metadata
    out = dict(metadata)
    out["calibration"] = Calibration.from_metadata(rec).subset(mask).to_metadata()
    return out


def with_calibration(fingerprint: Any, cal: Calibration) -> Any:
    """A copy of ``fingerprint`` whose metadata holds ``cal`` (and the SHA-256 of the file it was made from)."""
    from dataclasses import replace

    meta = dict(fingerprint.metadata)
    rec = cal.to_metadata()
    if fingerprint.sha256:
        rec["fingerprint_sha256_before"] = fingerprint.sha256
    meta["calibration"] = rec
    return replace(fingerprint, metadata=meta, sha256=None)


def format_p(p: Optional[float]) -> str:
    """A p-value for a table."""
    if p is None:
        return "-"
    return "<1e-12" if p < 1e-12 else (f"{p:.2g}" if p < 0.01 else f"{p:.3f}")
