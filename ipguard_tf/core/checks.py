"""The one check of a number given by a user or read from a file: of the right kind, finite, within its range;
anything else is a one-line :class:`~ipguard_tf.core.errors.ParameterError` naming the value (``x must lie in
(0, 1), got 1.5``). Every range check of the package goes through :func:`check_number`."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Optional, Union

from ipguard_tf.core.errors import ParameterError

Number = Union[int, float]


def range_text(
    low: Optional[float] = None, high: Optional[float] = None, *, low_open: bool = False, high_open: bool = False
) -> str:
    """How a range reads in a message: ``in (0, 1]``, ``>= 0``, ``> 0``, ``<= 1`` (empty when unbounded)."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def check_number(
    value: Any,
    name: str,
    low: Optional[float] = None,
    high: Optional[float] = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> Number:
    """``value`` as a float (an int with ``integer``) if it is a finite number within the range, else a
    :class:`ParameterError` saying what ``name`` must be. Booleans are not numbers here; strings are not
    converted (a value read from a file must already be a number)."""
    rng = range_text(low, high, low_open=low_open, high_open=high_open)
    what = ("an integer" if integer else "a finite number") + (f" {rng}" if rng else "")
    ok_kind = isinstance(value, Integral) if integer else isinstance(value, Real)
    if isinstance(value, bool) or not ok_kind:
        raise ParameterError(f"{name} must be {what}, got {value!r}")
    v = int(value) if integer else float(value)
    if not math.isfinite(v):
        raise ParameterError(f"{name} must be {what}, got {value!r}")
    if low is not None and (v <= low if low_open else v < low):
        raise ParameterError(f"{name} must be {what}, got {value!r}")
    if high is not None and (v >= high if high_open else v > high):
        raise ParameterError(f"{name} must be {what}, got {value!r}")
    return v
