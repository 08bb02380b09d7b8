"""Random-forest suspects (paper Section 5.1.2: scikit-learn defaults with 20 trees) on flattened pixels,
stored with skops (loading cannot run code: only an allow-list of scikit-learn types is accepted)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from ..errors import ModelError
from ..fingerprint import atomic_write_bytes

N_TREES = 20
_ALLOWED_PREFIXES = ("sklearn.ensemble.", "sklearn.tree.", "numpy.", "builtins.")


def train_forest(dataset, seed: int, n_jobs: int = -1):
    """A RandomForestClassifier (20 trees, otherwise scikit-learn defaults) on flattened training images."""
    from sklearn.ensemble import RandomForestClassifier

    rf = RandomForestClassifier(n_estimators=N_TREES, random_state=seed, n_jobs=n_jobs)
    rf.fit(dataset.x_train.reshape(len(dataset.x_train), -1), dataset.y_train)
    rf.set_params(n_jobs=1)
    return rf


def save_forest(rf, path: Union[str, Path]) -> None:
    import skops.io as sio

    atomic_write_bytes(path, sio.dumps(rf))


def load_forest(path: Union[str, Path], unsafe: bool = False):
    """Load a skops file, refusing any type outside scikit-learn's trees/ensembles and NumPy unless ``unsafe``."""
    import skops.io as sio

    from ..safety import UnsafeModelError

    data = Path(path).read_bytes()
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:
        raise ModelError(f"{path} is not a readable skops file ({type(exc).__name__})") from None
    bad = [t for t in untrusted if not t.startswith(_ALLOWED_PREFIXES)]
    if bad and not unsafe:
        raise UnsafeModelError(f"{path} names types outside scikit-learn and NumPy ({', '.join(bad[:3])}), which "
                               "could run code when loaded; re-run with --unsafe only if you trust its author")
    return sio.loads(data, trusted=untrusted)


def forest_accuracy(rf, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(rf.predict(x.reshape(len(x), -1)) == y))
