"""Fingerprinting methods, all behind :class:`FingerprintMethod` (constructor = hyperparameters, ``generate`` = data)."""

from .base import FingerprintMethod, default_learning_rate
from .ipguard import IPGuard, ipguard_objective

METHODS = {"ipguard": IPGuard}


def build_method(name: str, **params) -> FingerprintMethod:
    """Build a method by name with its hyperparameters (ValueError on an unknown name or a bad parameter)."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {', '.join(sorted(METHODS))}, got {name!r}")
    return METHODS[name](**params)


__all__ = ["FingerprintMethod", "IPGuard", "ipguard_objective", "default_learning_rate", "METHODS", "build_method"]
