"""Fingerprinting methods, all behind :class:`FingerprintMethod` (constructor = hyperparameters, ``generate`` =
data). Each is declared once in :mod:`ipguard_tf.core.registry`; :func:`build_method` builds one by name."""

from ipguard_tf.core.registry import build as build_method
from ipguard_tf.methods.base import FingerprintMethod, SearchOutput, default_learning_rate
from ipguard_tf.methods.baselines import CWL2, FGSM, IGSM, RandomPoints, fgsm_step
from ipguard_tf.methods.ipguard import IPGuard, ipguard_objective

__all__ = [
    "FingerprintMethod",
    "SearchOutput",
    "IPGuard",
    "RandomPoints",
    "FGSM",
    "IGSM",
    "CWL2",
    "fgsm_step",
    "ipguard_objective",
    "default_learning_rate",
    "build_method",
]
