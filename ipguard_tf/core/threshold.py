"""The threshold rule of Verify (paper Section 4.1): a suspect is verified as a copy when its statistic is at
least the threshold (at most, for a statistic where lower means "copy"). Every verdict and every robustness,
uniqueness and ARUC (:mod:`ipguard_tf.core.metrics`) uses :func:`meets_threshold`. NumPy only.
"""

from __future__ import annotations

from typing import Union

import numpy as np

from ipguard_tf.core.checks import check_number
from ipguard_tf.core.constants import DEFAULT_THRESHOLD

#: slack of the threshold rule: statistics are ratios m/n and thresholds often grid values t/r; comparing them
#: with this slack keeps a float rounding from flipping a verdict (m/n and t/r differ by >= 1/(n r) otherwise)
THRESHOLD_EPS = 1e-9


def check_threshold(threshold: float) -> float:
    """``threshold`` if it lies in [0, 1], else :class:`ParameterError`."""
    return check_number(threshold, "threshold", 0.0, 1.0)


def meets_threshold(value: Union[float, np.ndarray], threshold: float, higher_is_copy: bool = True):
    """The threshold rule (paper Section 4.1): a suspect is verified as a copy when its statistic is at least
    the threshold (at most, for a statistic where lower means "copy"). Works on scalars and arrays."""
    v = np.asarray(value, np.float64)
    out = v >= threshold - THRESHOLD_EPS if higher_is_copy else v <= threshold + THRESHOLD_EPS
    return bool(out) if out.ndim == 0 else out


def verdict(rate: float, threshold: float = DEFAULT_THRESHOLD, higher_is_copy: bool = True) -> int:
    """1 (pirated) when the statistic meets the threshold (:func:`meets_threshold`), else 0."""
    return int(meets_threshold(rate, check_threshold(threshold), higher_is_copy))
