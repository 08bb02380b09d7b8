"""Fingerprinting methods, all behind :class:`FingerprintMethod` (constructor = hyperparameters, ``generate`` = data)."""

from .base import FingerprintMethod, default_learning_rate
from .baselines import CWL2, FGSM, IGSM, RandomPoints, fgsm_step
from .ipguard import IPGuard, ipguard_objective

METHODS = {"ipguard": IPGuard, "random": RandomPoints, "fgsm": FGSM, "igsm": IGSM, "cw": CWL2}


def build_method(name: str, **params) -> FingerprintMethod:
    """Build a method by name with its hyperparameters (ValueError on an unknown name or a bad parameter)."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {', '.join(sorted(METHODS))}, got {name!r}")
    return METHODS[name](**params)


__all__ = ["FingerprintMethod", "IPGuard", "RandomPoints", "FGSM", "IGSM", "CWL2", "fgsm_step", "ipguard_objective", "default_learning_rate", "METHODS", "build_method"]
