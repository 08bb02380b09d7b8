"""ipguard_tf: IPGuard (Cao, Jia, Gong, AsiaCCS 2021) in TensorFlow/Keras.

Fingerprint a trained classifier by data points near its classification boundary (:class:`IPGuard`), then
verify suspects by their matching rate (:func:`verify`) and score methods by ARUC (:mod:`ipguard_tf.metrics`).

The public names below are imported lazily, so that ``import ipguard_tf`` (and the CLI's argument parsing)
does not pay for importing TensorFlow.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "IPGuard": "methods", "RandomPoints": "methods", "FGSM": "methods", "IGSM": "methods", "CWL2": "methods", "build_method": "methods", "ipguard_objective": "methods",
    "ParameterError": "errors",
    "Fingerprint": "fingerprint", "load_fingerprint": "fingerprint", "save_fingerprint": "fingerprint",
    "Classifier": "models", "as_classifier": "models",
    "verify": "verification", "matching_rate": "verification", "Verification": "verification",
    "aruc": "metrics", "auc": "metrics", "gap": "metrics", "robustness": "metrics", "uniqueness": "metrics",
    "IPGuardError": "errors", "DEFAULT_THRESHOLD": "constants", "N_POINTS": "constants",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'ipguard_tf' has no attribute {name!r}")
