"""ipguard_tf: IPGuard (Cao, Jia, Gong, AsiaCCS 2021) in TensorFlow/Keras.

Fingerprint a trained classifier by data points near its classification boundary (:class:`IPGuard`), then
verify suspects by their matching rate (:func:`verify`) and score methods by ARUC (:mod:`ipguard_tf.metrics`).
"""

__version__ = "0.1.0"

from .constants import DEFAULT_THRESHOLD, N_POINTS  # noqa: E402
from .errors import IPGuardError  # noqa: E402
from .fingerprint import Fingerprint, load_fingerprint, save_fingerprint  # noqa: E402
from .methods import IPGuard, build_method, ipguard_objective  # noqa: E402
from .metrics import aruc, auc, gap, robustness, uniqueness  # noqa: E402
from .models import Classifier, as_classifier  # noqa: E402
from .verify import Verification, matching_rate, verify  # noqa: E402

__all__ = [
    "__version__", "IPGuard", "build_method", "ipguard_objective", "Fingerprint", "load_fingerprint",
    "save_fingerprint", "Classifier", "as_classifier", "verify", "matching_rate", "Verification", "aruc", "auc",
    "gap", "robustness", "uniqueness", "IPGuardError", "DEFAULT_THRESHOLD", "N_POINTS",
]
