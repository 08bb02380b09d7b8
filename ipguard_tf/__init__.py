"""ipguard_tf: IPGuard (Cao, Jia, Gong, AsiaCCS 2021) in TensorFlow/Keras.

Fingerprint a trained classifier by data points near its classification boundary (:class:`IPGuard`), then
verify suspects by their matching rate (:func:`verify`) and score methods by ARUC (:mod:`ipguard_tf.core.metrics`).
The layers (``core`` -> ``io`` -> ``models`` -> ``methods`` -> ``zoo`` -> ``verification`` -> ``evaluation`` ->
``protect`` -> ``cli``) are drawn in ``docs/architecture.md``.

The public names below are imported lazily, so that ``import ipguard_tf`` (and the CLI's argument parsing)
does not pay for importing TensorFlow.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "IPGuard": "methods",
    "RandomPoints": "methods",
    "FGSM": "methods",
    "IGSM": "methods",
    "CWL2": "methods",
    "build_method": "methods",
    "ipguard_objective": "methods",
    "ParameterError": "core.errors",
    "IPGuardError": "core.errors",
    "Fingerprint": "core.fingerprint",
    "load_fingerprint": "io.fingerprint_file",
    "save_fingerprint": "io.fingerprint_file",
    "Classifier": "models.classifier",
    "as_classifier": "models.classifier",
    "verify": "verification.suspects",
    "verify_suspects": "verification.suspects",
    "matching_rate": "core.statistics",
    "Verification": "core.statistics",
    "aruc": "core.metrics",
    "auc": "core.metrics",
    "gap": "core.metrics",
    "robustness": "core.metrics",
    "uniqueness": "core.metrics",
    "DEFAULT_THRESHOLD": "core.constants",
    "N_POINTS": "core.constants",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'ipguard_tf' has no attribute {name!r}")
